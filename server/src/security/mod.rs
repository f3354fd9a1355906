//! Security of the serving path: who may call (API keys, JWT bearer tokens),
//! which models they may call, how fast and how many at once (token buckets and a
//! concurrency limit per client, token buckets per model), request limits, TLS,
//! and one audit line per request.
//!
//! The protocol code calls in at two places: `crate::protocol::guard` wraps the
//! REST router, and [`Security::admit_grpc`] starts every guarded gRPC call. Secrets
//! and certificates are re-read by [`Security::spawn_reloader`], which swaps
//! the new state in behind an `ArcSwap`, so requests never take a lock for it.

pub mod audit;
pub mod auth;
pub mod error;
pub mod flags;
pub mod grpc;
pub mod jwt;
pub mod keys;
pub mod limits;
pub mod principal;
pub mod ratelimit;
pub mod recent;
pub mod tls;
pub mod token_cache;
pub mod watch;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use self::error::{Denial, SecurityError};

use self::audit::{AuditLog, AuditOptions};
use self::auth::{Authenticator, Credentials};
use self::jwt::JwtOptions;
use self::limits::RequestLimits;
use self::principal::Principal;
use self::ratelimit::{Permit, Rate, RateLimits};
use self::tls::{TlsConfigs, TlsFiles};

/// Everything the operator of a server configures about its security.
#[derive(Debug, Clone, Default)]
pub struct SecurityOptions {
    /// A YAML file of hashed API keys (see [`keys`]).
    pub api_keys_file: Option<PathBuf>,
    /// JWT bearer token validation.
    pub jwt: Option<JwtOptions>,
    /// Serve `/metrics` without credentials even when authentication is on.
    pub open_metrics: bool,
    /// Token bucket per client identity.
    pub client_rate: Option<Rate>,
    /// Token bucket per model.
    pub model_rate: Option<Rate>,
    /// Most requests one client may have in flight.
    pub max_concurrent_per_client: Option<usize>,
    /// Size limits on requests.
    pub limits: RequestLimits,
    /// Where audit lines go, if anywhere.
    pub audit: Option<AuditOptions>,
    /// Certificate, key and optional client CA for TLS on both listeners.
    pub tls: Option<TlsFiles>,
    /// How often key, JWKS and certificate files are checked for changes.
    pub reload_interval: Duration,
}

/// The security state every protocol handler consults.
pub struct Security {
    authenticator: Option<Authenticator>,
    open_metrics: bool,
    rates: RateLimits,
    /// Size limits on requests.
    pub limits: RequestLimits,
    audit: Option<AuditLog>,
    /// The TLS configurations of the two listeners, when TLS is on.
    pub tls: Option<TlsConfigs>,
    reload_interval: Duration,
}

/// An admitted request: who it is, and its concurrency slot until dropped.
pub struct Admission {
    /// The caller.
    pub principal: Arc<Principal>,
    /// The concurrency slot, freed when dropped.
    pub permit: Permit,
}

impl Security {
    /// Loads keys, JWKS, certificates and opens the audit log.
    pub async fn load(options: &SecurityOptions) -> Result<Security, SecurityError> {
        let authenticator =
            Authenticator::load(options.api_keys_file.as_deref(), options.jwt.as_ref()).await?;
        let audit = options.audit.as_ref().map(AuditLog::open).transpose()?;
        let tls = options.tls.as_ref().map(TlsConfigs::load).transpose()?;
        Ok(Security {
            authenticator,
            open_metrics: options.open_metrics,
            rates: RateLimits::new(
                options.client_rate,
                options.model_rate,
                options.max_concurrent_per_client,
            ),
            limits: options.limits,
            audit,
            tls,
            reload_interval: options.reload_interval,
        })
    }

    /// Whether requests must carry credentials.
    pub fn authentication_required(&self) -> bool {
        self.authenticator.is_some()
    }

    /// Whether TLS clients must present a certificate signed by the client CA.
    pub fn requires_client_certificate(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.client_auth)
    }

    /// Whether admitting a request needs its peer: for the client certificate,
    /// or as the caller's identity when authentication is off.
    pub fn needs_peer(&self) -> bool {
        self.authenticator.is_none() || self.requires_client_certificate()
    }

    /// Whether any check applies to requests (otherwise the guard passes them
    /// straight to the router).
    pub fn guards_requests(&self) -> bool {
        self.authenticator.is_some()
            || self.requires_client_certificate()
            || self.rates.is_active()
            || self.audit.is_some()
            || self.limits.max_header_bytes.is_some()
    }

    /// Whether `/metrics` needs credentials.
    pub fn metrics_need_credentials(&self) -> bool {
        self.authenticator.is_some() && !self.open_metrics
    }

    /// The audit log, when one is configured.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// Authenticates the caller, checks it may call `model` (when the request
    /// names one), then takes a concurrency slot and a token from its bucket and
    /// the model's.
    pub fn admit(
        &self,
        credentials: &Credentials<'_>,
        peer: Option<IpAddr>,
        model: Option<&str>,
    ) -> Result<Admission, (Denial, Option<Arc<Principal>>)> {
        if self.requires_client_certificate() && !credentials.client_certificate {
            return Err((
                Denial::Unauthenticated(
                    "a client certificate signed by the configured CA is required (--tls-client-ca)"
                        .to_string(),
                ),
                None,
            ));
        }
        let principal = match &self.authenticator {
            Some(authenticator) => authenticator
                .authenticate(credentials)
                .map_err(|denial| (denial, None))?,
            None => Principal::anonymous(peer),
        };
        let checks = || {
            if let Some(model) = model {
                principal.authorize(model)?;
            }
            self.rates.admit(&principal.id, model)
        };
        match checks() {
            Ok(permit) => Ok(Admission { principal, permit }),
            Err(denial) => Err((denial, Some(principal))),
        }
    }

    /// Re-reads changed key, JWKS and certificate files every reload interval,
    /// and forgets idle rate-limit buckets.
    pub fn spawn_reloader(self: &Arc<Self>) {
        let security = Arc::downgrade(self);
        let interval = self.reload_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(security) = security.upgrade() else {
                    return;
                };
                if let Some(authenticator) = &security.authenticator {
                    authenticator.reload().await;
                }
                if let Some(tls) = &security.tls {
                    tls.reload();
                }
                security.rates.forget_idle();
            }
        });
    }
}
