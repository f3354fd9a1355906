//! TLS for both listeners with rustls: certificate and key from PEM files,
//! re-read when they change (cert-manager rotates them in place), and optional
//! client-certificate authentication against a CA bundle. A client certificate,
//! when presented, must verify during the handshake; one that is absent is
//! refused by the guard on every endpoint but the health probes, which kubelet
//! calls without one. Handshakes run in their own tasks so that a slow client
//! cannot hold up accepting others.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::error::SecurityError;
use super::watch::WatchedFiles;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files TLS is configured from.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone(), self.key.clone()];
        paths.extend(self.client_ca.clone());
        paths
    }
}

/// The live configurations of the REST (HTTP/2 or HTTP/1.1, as ALPN picks)
/// and gRPC (HTTP/2) listeners.
pub struct TlsConfigs {
    watched: WatchedFiles,
    /// Whether clients must present a certificate (a client CA is configured).
    pub client_auth: bool,
    /// For the REST listener.
    pub rest: Arc<ArcSwap<ServerConfig>>,
    /// For the gRPC listener.
    pub grpc: Arc<ArcSwap<ServerConfig>>,
}

impl TlsConfigs {
    /// Reads the files and builds both configurations.
    pub fn load(files: &TlsFiles) -> Result<TlsConfigs, SecurityError> {
        let (watched, contents) = WatchedFiles::read(files.paths())?;
        let (rest, grpc) = build_pair(&contents)?;
        Ok(TlsConfigs {
            watched,
            client_auth: files.client_ca.is_some(),
            rest: Arc::new(ArcSwap::from_pointee(rest)),
            grpc: Arc::new(ArcSwap::from_pointee(grpc)),
        })
    }

    /// Swaps in new configurations when the files changed; new connections use
    /// them, established ones keep theirs. Broken files leave the old ones.
    pub fn reload(&self) {
        let Some(contents) = self.watched.changed() else {
            return;
        };
        match build_pair(&contents) {
            Ok((rest, grpc)) => {
                self.rest.store(Arc::new(rest));
                self.grpc.store(Arc::new(grpc));
                tracing::info!(cert = %self.watched.path().display(), "TLS certificate reloaded");
            }
            Err(error) => tracing::warn!(%error, "keeping the previous TLS certificate"),
        }
    }
}

fn build_pair(contents: &[Vec<u8>]) -> Result<(ServerConfig, ServerConfig), SecurityError> {
    let rest = build(contents, &[b"h2", b"http/1.1"])?;
    let grpc = build(contents, &[b"h2"])?;
    Ok((rest, grpc))
}

/// One server configuration from the cert, key and optional CA PEM contents.
fn build(contents: &[Vec<u8>], alpn: &[&[u8]]) -> Result<ServerConfig, SecurityError> {
    let error = |what: &str, e: &dyn std::fmt::Display| SecurityError::Tls(format!("{what}: {e}"));
    let certs = CertificateDer::pem_slice_iter(&contents[0])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error("the certificate file", &e))?;
    if certs.is_empty() {
        return Err(SecurityError::Tls(
            "the certificate file holds no certificate".to_string(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&contents[1]).map_err(|e| error("the key file", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| error("protocol versions", &e))?;
    let builder = match contents.get(2) {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| error("the client CA file", &e))?;
                roots
                    .add(cert)
                    .map_err(|e| error("the client CA file", &e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| error("the client CA file", &e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| error("the certificate and key", &e))?;
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}

/// Accepts TCP connections and completes TLS handshakes in separate tasks,
/// delivering finished connections in order of completion.
pub fn accept_tls(
    listener: TcpListener,
    config: Arc<ArcSwap<ServerConfig>>,
) -> mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)> {
    let (sender, receiver) = mpsc::channel(128);
    tokio::spawn(async move {
        while !sender.is_closed() {
            let (tcp, address) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(config.load_full());
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send((stream, address)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%address, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%address, "TLS handshake timed out"),
                }
            });
        }
    });
    receiver
}

/// A REST listener that yields connections after their TLS handshake.
pub struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// TLS over `listener` with the live `config`.
    pub fn new(
        listener: TcpListener,
        config: Arc<ArcSwap<ServerConfig>>,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        Ok(TlsListener {
            connections: accept_tls(listener, config),
            local,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
