//! The thin layer that runs an analysis [`Plan`] against Prometheus's HTTP API.

use prometheus_http_query::Client;
use prometheus_http_query::response::Data;

use super::agreement::{Counts, CountsSample};
use super::analysis::{self, Analysis, Plan, Sample};
use super::quality::QualitySamples;
use crate::prometheus::instant_query;

/// Runs every query of `plan` and judges the answers. Without a client (no
/// `--prometheus-url`) every query is an error, so the rollout holds.
pub async fn run(client: Option<&Client>, plan: &Plan) -> Analysis {
    // Every query at once: an unreachable Prometheus costs one timeout, not one per query.
    let checks = plan.checks.iter().map(|check| async move {
        let reference = match &check.bound {
            analysis::Bound::Relative { query, .. } => Some(query.as_str()),
            _ => None,
        };
        let (value, reference) = futures::join!(sample(client, &check.query), async {
            match reference {
                Some(query) => Some(sample(client, query).await),
                None => None,
            }
        });
        (value, reference)
    });
    let stable_requests = async {
        match &plan.stable_requests {
            Some(query) => sample(client, query).await,
            None => Ok(None),
        }
    };
    let agreement = async {
        match &plan.agreement {
            Some(planned) => Some(futures::join!(
                counts(client, &planned.new),
                counts(client, &planned.stable)
            )),
            None => None,
        }
    };
    let quality = async {
        match &plan.quality {
            Some(planned) => {
                let (new_rows, new_score, stable_rows, stable_score) = futures::join!(
                    sample(client, &planned.new_rows),
                    sample(client, &planned.new_score),
                    sample(client, &planned.stable_rows),
                    sample(client, &planned.stable_score)
                );
                Some(QualitySamples {
                    new_rows,
                    new_score,
                    stable_rows,
                    stable_score,
                })
            }
            None => None,
        }
    };
    let (requests, stable_requests, values, agreement, quality) = futures::join!(
        sample(client, &plan.requests),
        stable_requests,
        futures::future::join_all(checks),
        agreement,
        quality
    );
    analysis::evaluate(
        plan,
        &requests,
        &stable_requests,
        &values,
        agreement.as_ref(),
        quality.as_ref(),
    )
}

/// One instant query aggregated `by (output, bin)`: rows per output and bin.
async fn counts(client: Option<&Client>, query: &str) -> CountsSample {
    let response = instant_query(client, query).await?;
    let Data::Vector(vector) = response.data() else {
        return Err("the query returned no instant vector".into());
    };
    let mut counts = Counts::new();
    for series in vector {
        let labels = series.metric();
        let label = |name: &str| labels.get(name).cloned().unwrap_or_default();
        if let Some(rows) = analysis::finite(series.sample().value()) {
            counts.insert((label("output"), label("bin")), rows);
        }
    }
    Ok(counts)
}

/// One instant query: the value of its single sample, `None` when it returned no
/// samples (or a non-finite value), an error when Prometheus failed or the query
/// returned several series.
async fn sample(client: Option<&Client>, query: &str) -> Sample {
    let response = instant_query(client, query).await?;
    match response.data() {
        Data::Vector(v) if v.is_empty() => Ok(None),
        Data::Vector(v) if v.len() == 1 => Ok(analysis::finite(v[0].sample().value())),
        Data::Vector(v) => Err(format!(
            "the query returned {} series, not one; aggregate it (sum, max)",
            v.len()
        )),
        Data::Scalar(s) => Ok(analysis::finite(s.value())),
        _ => Err("the query returned a range vector or a string, not a number".into()),
    }
}
