//! The stable revision's drift statistics from Prometheus: the queries (pure) and
//! the reading.

use prometheus_http_query::Client;
use prometheus_http_query::response::Data;

use super::decision::{Reading, Statistic, Statistics};
use crate::prometheus::instant_query;
use crate::rollout::analysis::finite;

/// The PromQL behind one reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queries {
    /// PSI and KS statistics per feature, the mean over the revision's pods.
    pub scores: String,
    /// KS and chi-squared p-values per feature, the mean over the revision's pods.
    pub pvalues: String,
}

/// The queries for `revision` of the InferenceService `isvc` in `namespace`
/// (Kubernetes names, which need no escaping in a PromQL string).
pub fn queries(namespace: &str, isvc: &str, revision: &str) -> Queries {
    let selector = format!(r#"isvc="{isvc}",namespace="{namespace}",revision="{revision}""#);
    Queries {
        scores: format!(
            r#"avg by (feature, test) (sluice_feature_drift_score{{{selector},test=~"psi|ks"}})"#
        ),
        pvalues: format!(
            r#"avg by (feature, test) (sluice_feature_drift_pvalue{{{selector},test=~"ks|chi2"}})"#
        ),
    }
}

/// Runs both queries; the error says why there is no reading.
pub async fn read(client: Option<&Client>, queries: &Queries) -> Reading {
    let (scores, pvalues) = futures::join!(
        statistics(client, &queries.scores),
        statistics(client, &queries.pvalues)
    );
    Ok(Statistics {
        scores: scores?,
        pvalues: pvalues?,
    })
}

/// One query aggregated `by (feature, test)`.
async fn statistics(client: Option<&Client>, query: &str) -> Result<Vec<Statistic>, String> {
    let response = instant_query(client, query).await?;
    let Data::Vector(vector) = response.data() else {
        return Err("the query returned no instant vector".into());
    };
    Ok(vector
        .iter()
        .filter_map(|series| {
            let labels = series.metric();
            Some(Statistic {
                feature: labels.get("feature")?.clone(),
                test: labels.get("test")?.clone(),
                value: finite(series.sample().value())?,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_select_the_revision_and_average_over_its_pods() {
        let q = queries("ml", "fraud", "abc123");
        assert_eq!(
            q.scores,
            r#"avg by (feature, test) (sluice_feature_drift_score{isvc="fraud",namespace="ml",revision="abc123",test=~"psi|ks"})"#
        );
        assert_eq!(
            q.pvalues,
            r#"avg by (feature, test) (sluice_feature_drift_pvalue{isvc="fraud",namespace="ml",revision="abc123",test=~"ks|chi2"})"#
        );
    }
}
