//! The kubelet's log endpoint, so `kubectl logs` works: the API server calls
//! `GET https://<node>:10250/containerLogs/<namespace>/<pod>/<container>` with its
//! client certificate, and the agent answers from the container's log files.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::warn;

use crate::error::{Error, Result};

/// TLS material of the endpoint.
pub struct TlsFiles {
    /// Serving certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// CA that client certificates must chain to (PEM).
    pub client_ca: PathBuf,
}

type Body = BoxBody<Bytes, Infallible>;

/// Serves container logs from `logs` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, tls: TlsFiles, logs: PathBuf) -> Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(server_config(&tls)?));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(Error::io(format!("listening on {addr}")))?;
    let logs = Arc::new(logs);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let logs = logs.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |req| {
                let logs = logs.clone();
                async move { Ok::<_, Infallible>(handle(&logs, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                warn!(error = %e, "log endpoint connection failed");
            }
        });
    }
}

fn server_config(tls: &TlsFiles) -> Result<rustls::ServerConfig> {
    let bad = |what: &Path, e: &dyn std::fmt::Display| Error::State {
        path: what.to_owned(),
        message: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|it| it.collect())
        .map_err(|e| bad(&tls.cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| bad(&tls.key, &e))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&tls.client_ca).map_err(|e| bad(&tls.client_ca, &e))? {
        let ca = ca.map_err(|e| bad(&tls.client_ca, &e))?;
        roots.add(ca).map_err(|e| bad(&tls.client_ca, &e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bad(&tls.client_ca, &e))?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&tls.cert, &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| bad(&tls.cert, &e))
}

/// Query options of `containerLogs` that the agent honours.
#[derive(Debug, Default, PartialEq)]
struct LogQuery {
    follow: bool,
    previous: bool,
    tail_lines: Option<usize>,
}

fn parse_query(query: &str) -> LogQuery {
    let mut q = LogQuery::default();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
        match key {
            "follow" => q.follow = value == "true",
            "previous" => q.previous = value == "true",
            "tailLines" => q.tail_lines = value.parse().ok(),
            _ => {}
        }
    }
    q
}

async fn handle(logs: &Path, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = parse_query(req.uri().query().unwrap_or_default());
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["containerLogs", namespace, pod, container] = parts[..] else {
        return text(
            StatusCode::NOT_FOUND,
            "only /containerLogs/{ns}/{pod}/{container}\n",
        );
    };
    let Some(file) = log_file(logs, namespace, pod, container, query.previous) else {
        let message = format!("no logs for container {container} of pod {namespace}/{pod}\n");
        return text(StatusCode::NOT_FOUND, &message);
    };
    let content = tokio::fs::read(&file).await.unwrap_or_default();
    let start = match query.tail_lines {
        Some(n) => tail_offset(&content, n),
        None => 0,
    };
    if !query.follow {
        return Response::new(Full::new(Bytes::copy_from_slice(&content[start..])).boxed());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let first = Bytes::copy_from_slice(&content[start..]);
    let mut offset = content.len() as u64;
    tokio::spawn(async move {
        if tx.send(Ok(Frame::data(first))).await.is_err() {
            return;
        }
        // Follow by polling: the file only grows while the container runs.
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let Ok(mut f) = tokio::fs::File::open(&file).await else {
                return;
            };
            if f.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
                return;
            }
            let mut more = Vec::new();
            if f.read_to_end(&mut more).await.is_err() {
                return;
            }
            offset += more.len() as u64;
            if !more.is_empty() && tx.send(Ok(Frame::data(Bytes::from(more)))).await.is_err() {
                return;
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    let stream = tokio_stream_from(rx);
    Response::new(StreamBody::new(stream).boxed())
}

fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + Sync + 'static
where
    T: Send + Sync + 'static,
{
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(message.to_owned())).boxed());
    *response.status_mut() = status;
    response
}

/// The newest log file of the container (`previous`: the one before it), across
/// the pod directories of `<namespace>_<pod>_<uid>`.
fn log_file(
    logs: &Path,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Option<PathBuf> {
    let prefix = format!("{namespace}_{pod}_");
    let pod_dir = std::fs::read_dir(logs)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())?
        .path();
    let mut runs: Vec<(u32, PathBuf)> = std::fs::read_dir(pod_dir.join(container))
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_suffix(".log")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    runs.sort();
    let index = runs.len().checked_sub(if previous { 2 } else { 1 })?;
    runs.into_iter().nth(index).map(|(_, p)| p)
}

/// Byte offset where the last `lines` lines of `content` begin.
fn tail_offset(content: &[u8], lines: usize) -> usize {
    if lines == 0 {
        return content.len();
    }
    let body = content.strip_suffix(b"\n").unwrap_or(content);
    body.iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(lines - 1)
        .map_or(0, |(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubectl_query() {
        let q = parse_query("follow=true&tailLines=10&timestamps=false");
        assert_eq!(
            q,
            LogQuery {
                follow: true,
                previous: false,
                tail_lines: Some(10)
            }
        );
    }

    #[test]
    fn tails_lines() {
        let log = b"a\nb\nc\n";
        assert_eq!(&log[tail_offset(log, 2)..], b"b\nc\n");
        assert_eq!(&log[tail_offset(log, 5)..], log);
        assert_eq!(tail_offset(log, 0), log.len());
    }

    #[test]
    fn picks_newest_or_previous_run() {
        let dir = std::env::temp_dir().join(format!("sluice-logs-{}", std::process::id()));
        let c = dir.join("ns_p_uid").join("c");
        std::fs::create_dir_all(&c).unwrap();
        for n in [0, 1, 10] {
            std::fs::write(c.join(format!("{n}.log")), n.to_string()).unwrap();
        }
        assert_eq!(
            log_file(&dir, "ns", "p", "c", false),
            Some(c.join("10.log"))
        );
        assert_eq!(log_file(&dir, "ns", "p", "c", true), Some(c.join("1.log")));
        assert_eq!(log_file(&dir, "ns", "q", "c", false), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
