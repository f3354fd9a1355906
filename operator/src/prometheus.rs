//! The one Prometheus client that rollout analysis and the autoscaler share.

use std::time::Duration;

use prometheus_http_query::Client;
use prometheus_http_query::response::PromqlResult;

/// How long one Prometheus query may take before it counts as failed (a rollout
/// then holds, and the autoscaler treats the signal as missing).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a Prometheus client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The URL is not a usable base URL.
    #[error("Prometheus URL: {0}")]
    Url(#[from] prometheus_http_query::Error),
}

/// A client for `url` (`--prometheus-url`), checked for syntax only.
pub fn client(url: &str) -> Result<Client, ClientError> {
    let http = reqwest::Client::builder().timeout(QUERY_TIMEOUT).build()?;
    Ok(Client::from(http, url)?)
}

/// Runs one instant query; the error says why there is no answer.
pub async fn instant_query(client: Option<&Client>, query: &str) -> Result<PromqlResult, String> {
    let client = client.ok_or("no Prometheus URL configured (--prometheus-url)")?;
    client
        .query(query)
        .get()
        .await
        .map_err(|e| format!("Prometheus query failed: {e}"))
}
