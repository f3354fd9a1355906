//! The `serve` command's security flags (each also readable from a `SLUICE_*`
//! environment variable).

use std::path::PathBuf;
use std::time::Duration;

use super::SecurityOptions;
use super::audit::AuditOptions;
use super::jwt::{JwksSource, JwtOptions};
use super::limits::RequestLimits;
use super::ratelimit::Rate;
use super::tls::TlsFiles;

/// Authentication, rate limits, request limits, audit log and TLS.
#[derive(Debug, Clone, clap::Args)]
pub struct SecurityArgs {
    /// YAML file of hashed API keys (`keys: [{name, sha256, models}]`); re-read when it changes.
    #[arg(long, env = "SLUICE_API_KEYS_FILE")]
    api_keys_file: Option<PathBuf>,
    /// Required JWT issuer (`iss`); needs --jwt-audience and --jwks-file or --jwks-url.
    #[arg(long, env = "SLUICE_JWT_ISSUER", requires = "jwt_audience")]
    jwt_issuer: Option<String>,
    /// Required JWT audience (`aud`).
    #[arg(long, env = "SLUICE_JWT_AUDIENCE", requires = "jwt_issuer")]
    jwt_audience: Option<String>,
    /// JWKS file with the token signing keys; re-read when it changes.
    #[arg(
        long,
        env = "SLUICE_JWKS_FILE",
        conflicts_with = "jwks_url",
        requires = "jwt_issuer"
    )]
    jwks_file: Option<PathBuf>,
    /// JWKS URL with the token signing keys; fetched again every --jwks-refresh-seconds.
    #[arg(long, env = "SLUICE_JWKS_URL", requires = "jwt_issuer")]
    jwks_url: Option<String>,
    /// Seconds between fetches of --jwks-url.
    #[arg(long, env = "SLUICE_JWKS_REFRESH_SECONDS", default_value_t = 300)]
    jwks_refresh_seconds: u64,
    /// The JWT claim listing the models a token may call (array or space-separated; "*" = all).
    #[arg(long, env = "SLUICE_JWT_MODELS_CLAIM", default_value = "models")]
    jwt_models_claim: String,
    /// Allowed clock skew for JWT `exp` and `nbf`, in seconds.
    #[arg(long, env = "SLUICE_JWT_LEEWAY_SECONDS", default_value_t = 30)]
    jwt_leeway_seconds: u64,
    /// Serve /metrics without credentials even when authentication is on.
    #[arg(long, env = "SLUICE_OPEN_METRICS")]
    open_metrics: bool,
    /// Requests per second each client may make, sustained (token bucket per client identity).
    #[arg(long, env = "SLUICE_RATE_LIMIT")]
    rate_limit: Option<f64>,
    /// Burst size of each client's bucket (default: one second's worth, at least 1).
    #[arg(long, env = "SLUICE_RATE_LIMIT_BURST", requires = "rate_limit")]
    rate_limit_burst: Option<u32>,
    /// Requests per second each model accepts from all clients together.
    #[arg(long, env = "SLUICE_MODEL_RATE_LIMIT")]
    model_rate_limit: Option<f64>,
    /// Burst size of each model's bucket (default: one second's worth, at least 1).
    #[arg(
        long,
        env = "SLUICE_MODEL_RATE_LIMIT_BURST",
        requires = "model_rate_limit"
    )]
    model_rate_limit_burst: Option<u32>,
    /// Most requests one client may have in flight at once.
    #[arg(long, env = "SLUICE_MAX_CONCURRENT_PER_CLIENT")]
    max_concurrent_per_client: Option<usize>,
    /// Most bytes of request headers (names and values together).
    #[arg(long, env = "SLUICE_MAX_HEADER_BYTES")]
    max_header_bytes: Option<usize>,
    /// Most elements in one input tensor.
    #[arg(long, env = "SLUICE_MAX_TENSOR_ELEMENTS")]
    max_tensor_elements: Option<usize>,
    /// Most rows (first dimension) per request.
    #[arg(long, env = "SLUICE_MAX_BATCH_ROWS")]
    max_batch_rows: Option<usize>,
    /// Write one JSON audit line per request to this file ("-" for standard output).
    #[arg(long, env = "SLUICE_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// Fraction of requests (0 to 1) whose payload the audit log includes; 0 never logs payloads.
    #[arg(
        long,
        env = "SLUICE_AUDIT_PAYLOAD_SAMPLE_RATE",
        default_value_t = 0.0,
        requires = "audit_log"
    )]
    audit_payload_sample_rate: f64,
    /// TLS certificate chain (PEM) for both listeners; re-read when it changes.
    #[arg(long, env = "SLUICE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "SLUICE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA bundle (PEM): when set, clients must present a certificate it signed.
    #[arg(long, env = "SLUICE_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Seconds between checks of the key, JWKS and certificate files for changes.
    #[arg(long, env = "SLUICE_SECURITY_RELOAD_SECONDS", default_value_t = 5.0)]
    security_reload_seconds: f64,
}

fn rate(per_second: Option<f64>, burst: Option<u32>, flag: &str) -> Result<Option<Rate>, String> {
    per_second
        .map(|per_second| {
            let burst = burst.unwrap_or_else(|| (per_second.ceil() as u32).max(1));
            Rate::new(per_second, burst).map_err(|e| format!("--{flag}: {e}"))
        })
        .transpose()
}

impl SecurityArgs {
    /// The options these flags describe, or what is wrong with them.
    pub fn options(self) -> Result<SecurityOptions, String> {
        let jwks = match (self.jwks_file, self.jwks_url) {
            (Some(path), None) => Some(JwksSource::File(path)),
            (None, Some(url)) => Some(JwksSource::Url(url)),
            _ => None,
        };
        let jwt = match (self.jwt_issuer, self.jwt_audience, jwks) {
            (Some(issuer), Some(audience), Some(jwks)) => Some(JwtOptions {
                issuer,
                audience,
                jwks,
                models_claim: self.jwt_models_claim,
                refresh: Duration::from_secs(self.jwks_refresh_seconds.max(1)),
                leeway_seconds: self.jwt_leeway_seconds,
            }),
            (None, None, None) => None,
            _ => return Err(
                "JWT validation needs --jwt-issuer, --jwt-audience and --jwks-file or --jwks-url"
                    .to_string(),
            ),
        };
        if self.max_concurrent_per_client == Some(0) {
            return Err("--max-concurrent-per-client must be at least 1".to_string());
        }
        if !(0.0..=1.0).contains(&self.audit_payload_sample_rate) {
            return Err("--audit-payload-sample-rate must be between 0 and 1".to_string());
        }
        let reload_interval = Duration::try_from_secs_f64(self.security_reload_seconds)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or("--security-reload-seconds must be a positive number of seconds")?;
        Ok(SecurityOptions {
            api_keys_file: self.api_keys_file,
            jwt,
            open_metrics: self.open_metrics,
            client_rate: rate(self.rate_limit, self.rate_limit_burst, "rate-limit")?,
            model_rate: rate(
                self.model_rate_limit,
                self.model_rate_limit_burst,
                "model-rate-limit",
            )?,
            max_concurrent_per_client: self.max_concurrent_per_client,
            limits: RequestLimits {
                max_header_bytes: self.max_header_bytes,
                max_tensor_elements: self.max_tensor_elements,
                max_batch_rows: self.max_batch_rows,
            },
            audit: self.audit_log.map(|path| AuditOptions {
                path,
                payload_sample_rate: self.audit_payload_sample_rate,
            }),
            tls: match (self.tls_cert, self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert,
                    key,
                    client_ca: self.tls_client_ca,
                }),
                _ => None,
            },
            reload_interval,
        })
    }
}
