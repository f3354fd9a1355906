//! The checks of an analysis as PromQL, and how their values become verdicts (pure;
//! [`super::prometheus`] runs the queries).
//!
//! Built-in checks select the new revision by the server's own labels (`isvc`,
//! `revision`) plus `namespace`, which the scrape configuration attaches:
//! - `error-rate`: share of requests answered 5xx, or by the fallback because
//!   the model failed, over the window, at most `maxErrorRateRatio` times the
//!   stable revision's (and failing only when also more than `maxErrorRate`
//!   above it, so that `maxErrorRate` is the bound against an error-free stable);
//! - `p99-latency-vs-stable`: p99 of `sluice_inference_request_duration_seconds`
//!   at most `ratio` times the stable revision's (and more than a tolerance above);
//! - `p99-latency` (when `maxP99LatencySeconds` is set): an absolute bound;
//! - `drift` (when `maxDriftScore` is set): the largest feature drift score;
//! - `prediction-agreement` (on by default): the new revision's predictions are
//!   distributed like the stable revision's ([`super::agreement`]);
//! - `accuracy-vs-stable` or `mean-absolute-error-vs-stable` (with
//!   `spec.monitoring.feedback`): quality on labelled rows against the stable
//!   revision's, once both have enough labels ([`super::quality`]).
//!
//! For stream workers (`spec.streaming`) a request is an input record: the error
//! rate is the share of records dead-lettered or skipped (or answered by the
//! fallback), the latency is `sluice_stream_end_to_end_latency_seconds`, from a
//! record's timestamp to its prediction's commit, and `minRequests` counts records.
//!
//! Latency and error checks count only when the new revision served at least
//! `minRequests` in the window; otherwise they are no data. No data holds a
//! rollout and never passes it; a Prometheus error holds it and never promotes.
//!
//! Starvation is no data of its own kind: when the new revision served no
//! request in the window while the stable one served at least `minRequests`,
//! a `traffic` check says so ("the canary received 0 of 12,105 requests in the
//! window"). It is what clients that keep connections opened before the new
//! revision existed cause (kube-proxy balances connections, not requests); the
//! server's connection rotation is the cure (docs/rollouts.md).

use std::fmt::Write as _;

use super::agreement::{self, AgreementPlan, CountsSample};
use super::quality::{self, QualityPlan, QualitySamples};
use crate::crd::FeedbackTask;
use crate::crd::rollout::AnalysisSpec;
use crate::crd::rollout::{CheckResult, CheckVerdict};

/// Which revision is analysed against which.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// InferenceService name (the `isvc` label).
    pub isvc: &'a str,
    /// Its namespace (the `namespace` label).
    pub namespace: &'a str,
    /// The new revision.
    pub revision: &'a str,
    /// The stable revision.
    pub stable: &'a str,
    /// Seconds since production traffic left the stable revision (blue-green after
    /// the switch): its latency is then taken from the window before the switch.
    pub stable_offset_seconds: Option<u64>,
    /// What messages call the new revision: `canary` or `preview`.
    pub role: &'a str,
    /// Whether the revisions are stream workers (`spec.streaming`), whose
    /// requests are records.
    pub streaming: bool,
}

/// The series a revision's traffic is counted from: HTTP and gRPC requests,
/// or, for stream workers, input records (failed ones are those
/// dead-lettered or skipped; latency is from a record's timestamp to its
/// prediction's commit).
#[derive(Clone, Copy)]
struct Series {
    /// Counts every request (with the selector's labels appended).
    requests: &'static str,
    /// The label matcher that picks requests out of `requests`, if any.
    all: &'static str,
    /// The label matcher that picks failed requests.
    failed: &'static str,
    /// The latency histogram's buckets.
    latency_buckets: &'static str,
}

impl Series {
    fn of(t: &Target) -> Series {
        if t.streaming {
            Series {
                requests: "sluice_stream_records_total",
                all: r#",outcome="consumed""#,
                failed: r#",outcome=~"dead_lettered|skipped""#,
                latency_buckets: "sluice_stream_end_to_end_latency_seconds_bucket",
            }
        } else {
            Series {
                requests: "sluice_inference_requests_total",
                all: "",
                failed: r#",code=~"5..""#,
                latency_buckets: "sluice_inference_request_duration_seconds_bucket",
            }
        }
    }
}

/// The bound a check's value is held to.
#[derive(Clone, Debug, PartialEq)]
pub enum Bound {
    /// At most this.
    AtMost(f64),
    /// At least this.
    AtLeast(f64),
    /// Between the two, inclusive.
    Between(f64, f64),
    /// At most `ratio` times the value of `query` (the stable revision), and failing
    /// only when also more than `tolerance` above it.
    Relative {
        /// The stable revision's query.
        query: String,
        /// Largest allowed ratio.
        ratio: f64,
        /// Absolute slack.
        tolerance: f64,
    },
}

/// One check to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// Name in status and Events.
    pub name: String,
    /// PromQL for the new revision.
    pub query: String,
    /// Its bound.
    pub bound: Bound,
    /// Whether it needs `minRequests` requests in the window to count.
    pub needs_traffic: bool,
}

/// Every query of one analysis.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Requests the new revision served in the window.
    pub requests: String,
    /// Requests the stable revision served in the same window, to tell a starved
    /// new revision from one without traffic at all; `None` when the stable
    /// revision no longer takes production traffic (blue-green after the switch).
    pub stable_requests: Option<String>,
    /// What messages call the new revision: `canary` or `preview`.
    pub role: String,
    /// Fewest requests for traffic checks to count.
    pub min_requests: f64,
    /// The checks.
    pub checks: Vec<Planned>,
    /// The prediction-agreement check, when it runs.
    pub agreement: Option<AgreementPlan>,
    /// The quality check from feedback, when it runs.
    pub quality: Option<QualityPlan>,
}

/// A query's answer: a value, no data (`Ok(None)`), or why Prometheus failed.
pub type Sample = Result<Option<f64>, String>;

/// The result of one analysis.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    /// Fail if any check failed; else Error if Prometheus failed; else NoData if a
    /// check had none; else Pass.
    pub verdict: CheckVerdict,
    /// Every check's result.
    pub checks: Vec<CheckResult>,
}

fn selector(t: &Target, revision: &str) -> String {
    format!(
        r#"isvc="{}",namespace="{}",revision="{revision}""#,
        t.isvc, t.namespace
    )
}

fn p99(series: Series, selector: &str, window: &str, offset: Option<u64>) -> String {
    let offset = offset.map_or(String::new(), |seconds| format!(" offset {seconds}s"));
    format!(
        "histogram_quantile(0.99, sum by (le) (rate({}{{{selector}}}[{window}]{offset})))",
        series.latency_buckets
    )
}

/// The share of a revision's requests that failed or were answered by the
/// fallback, over `window` (ending `offset` seconds ago).
fn error_rate(series: Series, selector: &str, window: &str, offset: Option<u64>) -> String {
    let range = match offset {
        Some(seconds) => format!("[{window}] offset {seconds}s"),
        None => format!("[{window}]"),
    };
    let Series {
        requests,
        all,
        failed,
        ..
    } = series;
    format!(
        r#"((sum(rate({requests}{{{selector}{failed}}}{range})) or vector(0)) + (sum(rate(sluice_fallback_requests_total{{{selector}}}{range})) or vector(0))) / sum(rate({requests}{{{selector}{all}}}{range}))"#
    )
}

/// The queries of one analysis of `t` under `spec`; `feedback` is the task of
/// `spec.monitoring.feedback`, when labels come back.
pub fn plan(spec: &AnalysisSpec, t: &Target, feedback: Option<FeedbackTask>) -> Plan {
    let window = format!("{}s", spec.window_seconds);
    let series = Series::of(t);
    let new = selector(t, t.revision);
    let stable = selector(t, t.stable);
    let mut checks = vec![
        Planned {
            name: "error-rate".into(),
            query: error_rate(series, &new, &window, None),
            // A stable revision without requests has no error rate: 0, so that the
            // bound is `maxErrorRate` alone.
            bound: Bound::Relative {
                query: format!(
                    "({}) or vector(0)",
                    error_rate(series, &stable, &window, t.stable_offset_seconds)
                ),
                ratio: spec.max_error_rate_ratio,
                tolerance: spec.max_error_rate,
            },
            needs_traffic: true,
        },
        Planned {
            name: "p99-latency-vs-stable".into(),
            query: p99(series, &new, &window, None),
            bound: Bound::Relative {
                query: p99(series, &stable, &window, t.stable_offset_seconds),
                ratio: spec.max_p99_latency_ratio,
                tolerance: spec.latency_tolerance_seconds,
            },
            needs_traffic: true,
        },
    ];
    if let Some(max) = spec.max_p99_latency_seconds {
        checks.push(Planned {
            name: "p99-latency".into(),
            query: p99(series, &new, &window, None),
            bound: Bound::AtMost(max),
            needs_traffic: true,
        });
    }
    if let Some(max) = spec.max_drift_score {
        checks.push(Planned {
            name: "drift".into(),
            query: format!("max(sluice_feature_drift_score{{{new}}})"),
            bound: Bound::AtMost(max),
            needs_traffic: false,
        });
    }
    for check in &spec.checks {
        let query = check
            .query
            .replace("$isvc", t.isvc)
            .replace("$namespace", t.namespace)
            .replace("$revision", t.revision)
            .replace("$stable", t.stable)
            .replace("$window", &window);
        let bound = match (check.min, check.max) {
            (Some(min), Some(max)) => Bound::Between(min, max),
            (Some(min), None) => Bound::AtLeast(min),
            (None, max) => Bound::AtMost(max.unwrap_or(f64::INFINITY)),
        };
        checks.push(Planned {
            name: check.name.clone(),
            query,
            bound,
            needs_traffic: false,
        });
    }
    let requests = |selector: &str| {
        format!(
            "sum(increase({}{{{selector}{}}}[{window}]))",
            series.requests, series.all
        )
    };
    Plan {
        requests: requests(&new),
        stable_requests: t.stable_offset_seconds.is_none().then(|| requests(&stable)),
        role: t.role.to_string(),
        min_requests: spec.min_requests.into(),
        checks,
        agreement: agreement::plan(
            &spec.prediction_agreement,
            &new,
            &stable,
            t.stable_offset_seconds,
            t.role,
        ),
        quality: quality::plan(
            &spec.quality,
            feedback,
            &new,
            &stable,
            t.stable_offset_seconds,
            t.role,
        ),
    }
}

/// Judges one check from its value (and the stable revision's, for a relative bound).
fn judge(
    planned: &Planned,
    value: &Sample,
    reference: Option<&Sample>,
    traffic: &Sample,
    min_requests: f64,
) -> CheckResult {
    let mut result = CheckResult {
        name: planned.name.clone(),
        query: planned.query.clone(),
        value: None,
        threshold: String::new(),
        verdict: CheckVerdict::NoData,
        detail: None,
    };
    let threshold = match (&planned.bound, reference) {
        (Bound::AtMost(max), _) => Ok((*max, f64::NEG_INFINITY, format!("<= {max}"))),
        (Bound::AtLeast(min), _) => Ok((f64::INFINITY, *min, format!(">= {min}"))),
        (Bound::Between(min, max), _) => Ok((*max, *min, format!("in [{min}, {max}]"))),
        (
            Bound::Relative {
                ratio, tolerance, ..
            },
            Some(Ok(Some(stable))),
        ) => {
            let max = (ratio * stable).max(stable + tolerance);
            Ok((
                max,
                f64::NEG_INFINITY,
                format!("<= {max:.4} (max of {ratio}x and +{tolerance} over stable {stable:.4})"),
            ))
        }
        (Bound::Relative { .. }, Some(Err(e))) => Err((CheckVerdict::Error, e.clone())),
        (Bound::Relative { .. }, _) => Err((
            CheckVerdict::NoData,
            "the stable revision has no data for this check".to_string(),
        )),
    };
    let (max, min) = match threshold {
        Ok((max, min, text)) => {
            result.threshold = text;
            (max, min)
        }
        Err((verdict, detail)) => {
            result.threshold = "relative to stable".into();
            result.value = value.clone().ok().flatten();
            result.verdict = verdict;
            result.detail = Some(detail);
            return result;
        }
    };
    match value {
        Err(e) => {
            result.verdict = CheckVerdict::Error;
            result.detail = Some(e.clone());
        }
        Ok(None) => result.detail = Some("the query returned no samples".into()),
        Ok(Some(v)) => {
            result.value = Some(*v);
            if planned.needs_traffic {
                match traffic {
                    Err(e) => {
                        result.verdict = CheckVerdict::Error;
                        result.detail = Some(e.clone());
                        return result;
                    }
                    Ok(n) if n.unwrap_or(0.0) < min_requests => {
                        result.detail = Some(format!(
                            "{:.0} requests in the window, fewer than minRequests {min_requests}",
                            n.unwrap_or(0.0)
                        ));
                        return result;
                    }
                    Ok(_) => {}
                }
            }
            result.verdict = if *v <= max && *v >= min {
                CheckVerdict::Pass
            } else {
                CheckVerdict::Fail
            };
        }
    }
    result
}

/// The `traffic` check when the new revision is starved: it served no request
/// in the window while the stable revision served at least `minRequests`.
fn starvation(plan: &Plan, requests: &Sample, stable_requests: &Sample) -> Option<CheckResult> {
    let (Ok(new), Ok(Some(stable))) = (requests, stable_requests) else {
        return None;
    };
    let new = new.unwrap_or(0.0);
    (new < 0.5 && *stable >= plan.min_requests).then(|| CheckResult {
        name: STARVATION_CHECK.into(),
        query: plan.requests.clone(),
        value: Some(new),
        threshold: "> 0 while stable serves".into(),
        verdict: CheckVerdict::NoData,
        detail: Some(format!(
            "the {} received 0 of {} requests in the window",
            plan.role,
            grouped(new + stable)
        )),
    })
}

/// A count rounded to a whole number, with thousands separated: `12,105`.
fn grouped(count: f64) -> String {
    let digits = format!("{:.0}", count.max(0.0));
    let mut text = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// The name of the check that reports a starved new revision.
pub const STARVATION_CHECK: &str = "traffic";

/// Turns the answers to `plan`'s queries into an analysis. `values[i]` answers
/// `plan.checks[i]`: its own query, and the stable revision's for a relative
/// bound; `stable_requests` answers `plan.stable_requests` (`Ok(None)` when
/// there is none); `agreement` answers `plan.agreement`'s two queries (new,
/// stable), and `quality` those of `plan.quality`.
pub fn evaluate(
    plan: &Plan,
    requests: &Sample,
    stable_requests: &Sample,
    values: &[(Sample, Option<Sample>)],
    agreement: Option<&(CountsSample, CountsSample)>,
    quality: Option<&QualitySamples>,
) -> Analysis {
    let checks: Vec<CheckResult> = starvation(plan, requests, stable_requests)
        .into_iter()
        .chain(
            plan.checks
                .iter()
                .zip(values)
                .map(|(planned, (value, reference))| {
                    judge(
                        planned,
                        value,
                        reference.as_ref(),
                        requests,
                        plan.min_requests,
                    )
                }),
        )
        .chain(
            plan.agreement
                .as_ref()
                .zip(agreement)
                .map(|(planned, (new, stable))| agreement::judge(planned, new, stable)),
        )
        .chain(
            plan.quality
                .as_ref()
                .zip(quality)
                .map(|(planned, samples)| quality::judge(planned, samples)),
        )
        .collect();
    let any = |v: CheckVerdict| checks.iter().any(|c| c.verdict == v);
    // A Waiting check does not count, either way.
    let counted = checks.iter().any(|c| c.verdict != CheckVerdict::Waiting);
    let verdict = if any(CheckVerdict::Fail) {
        CheckVerdict::Fail
    } else if any(CheckVerdict::Error) {
        CheckVerdict::Error
    } else if any(CheckVerdict::NoData) || !counted {
        CheckVerdict::NoData
    } else {
        CheckVerdict::Pass
    };
    Analysis { verdict, checks }
}

/// A number as a value from Prometheus: NaN and infinities (a quantile of nothing,
/// a ratio of zero requests) are no data.
pub fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}

impl Analysis {
    /// Why the new revision is starved of traffic, when it is.
    pub fn starvation(&self) -> Option<&str> {
        self.checks
            .iter()
            .find(|c| c.name == STARVATION_CHECK && c.verdict == CheckVerdict::NoData)
            .and_then(|c| c.detail.as_deref())
    }

    /// Every check with its value, bound, verdict and query, for an Event.
    pub fn summary(&self) -> String {
        let mut text = format!("analysis {:?}:", self.verdict);
        for c in &self.checks {
            let value = c.value.map_or("none".into(), |v| format!("{v:.4}"));
            let _ = write!(
                text,
                " {} = {value} ({}) {:?}",
                c.name, c.threshold, c.verdict
            );
            if let Some(detail) = &c.detail {
                let _ = write!(text, " [{detail}]");
            }
            let _ = write!(text, " query: {};", c.query);
        }
        text
    }

    /// The checks that did not pass, briefly.
    pub fn failing(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !matches!(c.verdict, CheckVerdict::Pass | CheckVerdict::Waiting))
            .map(|c| {
                let value = c.value.map_or("none".into(), |v| format!("{v:.4}"));
                match &c.detail {
                    Some(d) => format!("{} {:?} ({d})", c.name, c.verdict),
                    None => format!("{} = {value}, want {}", c.name, c.threshold),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::rollout::CustomCheck;

    const T: Target = Target {
        isvc: "fraud",
        namespace: "ml",
        revision: "new1",
        stable: "old1",
        stable_offset_seconds: None,
        role: "canary",
        streaming: false,
    };

    fn spec() -> AnalysisSpec {
        AnalysisSpec::default()
    }

    #[test]
    fn queries_select_the_revision_by_the_servers_labels() {
        let p = plan(&spec(), &T, None);
        assert_eq!(
            p.requests,
            r#"sum(increase(sluice_inference_requests_total{isvc="fraud",namespace="ml",revision="new1"}[30s]))"#
        );
        let names: Vec<_> = p.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["error-rate", "p99-latency-vs-stable"]);
        assert!(p.checks[0].query.contains(r#"code=~"5..""#));
        assert!(
            p.checks[0].query.contains("sluice_fallback_requests_total"),
            "answers from the fallback count as errors"
        );
        assert!(p.checks[0].query.contains("or vector(0)"));
        let Bound::Relative { query, ratio, .. } = &p.checks[1].bound else {
            panic!("relative latency bound expected");
        };
        assert!(query.contains(r#"revision="old1""#));
        assert_eq!(*ratio, 2.0);
    }

    #[test]
    fn a_stream_canary_is_judged_on_its_records() {
        let p = plan(
            &spec(),
            &Target {
                streaming: true,
                ..T
            },
            None,
        );
        assert_eq!(
            p.requests,
            r#"sum(increase(sluice_stream_records_total{isvc="fraud",namespace="ml",revision="new1",outcome="consumed"}[30s]))"#
        );
        assert_eq!(
            p.checks[0].query,
            r#"((sum(rate(sluice_stream_records_total{isvc="fraud",namespace="ml",revision="new1",outcome=~"dead_lettered|skipped"}[30s])) or vector(0)) + (sum(rate(sluice_fallback_requests_total{isvc="fraud",namespace="ml",revision="new1"}[30s])) or vector(0))) / sum(rate(sluice_stream_records_total{isvc="fraud",namespace="ml",revision="new1",outcome="consumed"}[30s]))"#
        );
        assert_eq!(
            p.checks[1].query,
            r#"histogram_quantile(0.99, sum by (le) (rate(sluice_stream_end_to_end_latency_seconds_bucket{isvc="fraud",namespace="ml",revision="new1"}[30s])))"#
        );
        let Bound::Relative { query, .. } = &p.checks[1].bound else {
            panic!("relative latency bound expected");
        };
        assert!(query.contains(r#"revision="old1""#), "{query}");
    }

    #[test]
    fn after_a_blue_green_switch_the_stable_latency_comes_from_before_it() {
        let t = Target {
            stable_offset_seconds: Some(42),
            ..T
        };
        let Bound::Relative { query, .. } = &plan(&spec(), &t, None).checks[1].bound else {
            panic!("relative latency bound expected");
        };
        assert!(
            query.ends_with(r#"revision="old1"}[30s] offset 42s)))"#),
            "{query}"
        );
    }

    #[test]
    fn optional_and_user_checks_are_planned_with_substitutions() {
        let mut s = spec();
        s.max_p99_latency_seconds = Some(0.1);
        s.max_drift_score = Some(0.25);
        s.checks = vec![CustomCheck {
            name: "accuracy".into(),
            query: r#"min(sluice_model_accuracy{isvc="$isvc",revision="$revision",namespace="$namespace"}) - min(sluice_model_accuracy{revision="$stable"}) # $window"#.into(),
            max: None,
            min: Some(-0.05),
        }];
        let p = plan(&s, &T, None);
        let names: Vec<_> = p.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "error-rate",
                "p99-latency-vs-stable",
                "p99-latency",
                "drift",
                "accuracy"
            ]
        );
        assert_eq!(
            p.checks[4].query,
            r#"min(sluice_model_accuracy{isvc="fraud",revision="new1",namespace="ml"}) - min(sluice_model_accuracy{revision="old1"}) # 30s"#
        );
        assert_eq!(p.checks[4].bound, Bound::AtLeast(-0.05));
        assert!(!p.checks[3].needs_traffic);
    }

    /// (requests, error rate, canary p99, stable p99) -> verdict.
    #[test]
    fn verdict_table() {
        let p = plan(&spec(), &T, None);
        let ok = |v: f64| -> Sample { Ok(Some(v)) };
        let none: Sample = Ok(None);
        let down: Sample = Err("connection refused".into());
        let cases: Vec<(Sample, Sample, Sample, Sample, CheckVerdict)> = vec![
            // healthy: same latency, no errors
            (ok(100.0), ok(0.0), ok(0.002), ok(0.002), CheckVerdict::Pass),
            // sub-millisecond noise, 3x the stable p99 but within the tolerance
            (ok(100.0), ok(0.0), ok(0.003), ok(0.001), CheckVerdict::Pass),
            // slow: 40 ms against 2 ms
            (ok(100.0), ok(0.0), ok(0.04), ok(0.002), CheckVerdict::Fail),
            // slow relative to a slow stable: 1.5x of 100 ms is fine, 2.5x is not
            (ok(100.0), ok(0.0), ok(0.15), ok(0.1), CheckVerdict::Pass),
            (ok(100.0), ok(0.0), ok(0.25), ok(0.1), CheckVerdict::Fail),
            // errors
            (ok(100.0), ok(0.5), ok(0.002), ok(0.002), CheckVerdict::Fail),
            (
                ok(100.0),
                ok(0.02),
                ok(0.002),
                ok(0.002),
                CheckVerdict::Pass,
            ),
            // too little traffic: no data, whatever the values
            (ok(3.0), ok(1.0), ok(9.0), ok(0.002), CheckVerdict::NoData),
            (
                none.clone(),
                ok(0.0),
                ok(0.002),
                ok(0.002),
                CheckVerdict::NoData,
            ),
            // the new revision has no samples at all
            (
                ok(100.0),
                none.clone(),
                none.clone(),
                ok(0.002),
                CheckVerdict::NoData,
            ),
            // the stable revision has no latency data
            (
                ok(100.0),
                ok(0.0),
                ok(0.002),
                none.clone(),
                CheckVerdict::NoData,
            ),
            // Prometheus down never passes
            (
                down.clone(),
                down.clone(),
                down.clone(),
                down.clone(),
                CheckVerdict::Error,
            ),
            (
                ok(100.0),
                ok(0.0),
                ok(0.002),
                down.clone(),
                CheckVerdict::Error,
            ),
            // a real failure wins over a partial outage
            (
                ok(100.0),
                ok(0.9),
                ok(0.002),
                down.clone(),
                CheckVerdict::Fail,
            ),
        ];
        for (i, (requests, errors, p99, stable, want)) in cases.into_iter().enumerate() {
            let a = evaluate(
                &p,
                &requests,
                &Ok(None),
                &[(errors, Some(ok(0.0))), (p99, Some(stable))],
                None,
                None,
            );
            assert_eq!(a.verdict, want, "case {i}: {}", a.summary());
            assert_eq!(a.checks.len(), 2);
        }
    }

    #[test]
    fn the_error_rate_is_judged_against_the_stable_revisions() {
        let p = plan(&spec(), &T, None);
        let Bound::Relative { query, .. } = &p.checks[0].bound else {
            panic!("relative error bound expected");
        };
        assert!(query.contains(r#"revision="old1",code=~"5..""#), "{query}");
        assert!(query.ends_with(") or vector(0)"), "{query}");
        let verdict = |canary: f64, stable: f64| {
            evaluate(
                &p,
                &Ok(Some(100.0)),
                &Ok(Some(100.0)),
                &[
                    (Ok(Some(canary)), Some(Ok(Some(stable)))),
                    (Ok(Some(0.002)), Some(Ok(Some(0.002)))),
                ],
                None,
                None,
            )
            .verdict
        };
        // Against an error-free stable, maxErrorRate is the bound.
        assert_eq!(verdict(0.02, 0.0), CheckVerdict::Pass);
        assert_eq!(verdict(0.03, 0.0), CheckVerdict::Fail);
        // Stable fails 10% (a bad dependency): the canary is judged against that.
        assert_eq!(verdict(0.15, 0.1), CheckVerdict::Pass);
        assert_eq!(verdict(0.25, 0.1), CheckVerdict::Fail);
        // After a blue-green switch: the old revision's rate from before it.
        let after = plan(
            &spec(),
            &Target {
                stable_offset_seconds: Some(42),
                ..T
            },
            None,
        );
        let Bound::Relative { query, .. } = &after.checks[0].bound else {
            panic!("relative error bound expected");
        };
        assert!(query.contains("[30s] offset 42s"), "{query}");
    }

    #[test]
    fn results_carry_query_value_threshold_and_verdict() {
        let p = plan(&spec(), &T, None);
        let a = evaluate(
            &p,
            &Ok(Some(50.0)),
            &Ok(Some(50.0)),
            &[
                (Ok(Some(0.25)), Some(Ok(Some(0.0)))),
                (Ok(Some(0.003)), Some(Ok(Some(0.002)))),
            ],
            None,
            None,
        );
        let e = &a.checks[0];
        let threshold = "<= 0.0200 (max of 2x and +0.02 over stable 0.0000)";
        assert_eq!(
            (e.value, e.threshold.as_str(), e.verdict),
            (Some(0.25), threshold, CheckVerdict::Fail)
        );
        assert!(a.summary().contains(&format!(
            "error-rate = 0.2500 ({threshold}) Fail query: ((sum(rate("
        )));
        assert_eq!(
            a.failing(),
            format!("error-rate = 0.2500, want {threshold}")
        );
        assert!(a.checks[1].threshold.starts_with("<= 0.0220"));
    }

    #[test]
    fn the_stable_revisions_requests_are_counted_over_the_same_window() {
        let p = plan(&spec(), &T, None);
        assert_eq!(
            p.stable_requests.as_deref(),
            Some(
                r#"sum(increase(sluice_inference_requests_total{isvc="fraud",namespace="ml",revision="old1"}[30s]))"#
            )
        );
        let after_switch = Target {
            stable_offset_seconds: Some(42),
            ..T
        };
        assert_eq!(plan(&spec(), &after_switch, None).stable_requests, None);
    }

    /// (new requests, stable requests) -> starved?, with every other check healthy
    /// but for the traffic they need.
    #[test]
    fn starvation_is_told_apart_from_other_missing_data() {
        let p = plan(&spec(), &T, None);
        let none: Sample = Ok(None);
        let healthy = || {
            [
                (Ok(Some(0.0)), None),
                (Ok(Some(0.002)), Some(Ok(Some(0.002)))),
            ]
        };
        let cases: Vec<(Sample, Sample, Option<&str>)> = vec![
            // clients pinned to the stable pods: the canary's counter never appeared
            (
                none.clone(),
                Ok(Some(12105.0)),
                Some("the canary received 0 of 12,105 requests in the window"),
            ),
            (
                Ok(Some(0.0)),
                Ok(Some(40.0)),
                Some("the canary received 0 of 40 requests in the window"),
            ),
            // no traffic anywhere: plain no data, not starvation
            (none.clone(), none.clone(), None),
            (Ok(Some(0.0)), Ok(Some(3.0)), None),
            // a little traffic is not starvation (minRequests decides the rest)
            (Ok(Some(4.0)), Ok(Some(12105.0)), None),
            // Prometheus failed: unknown, not starved
            (Err("down".into()), Ok(Some(100.0)), None),
            (Ok(Some(0.0)), Err("down".into()), None),
        ];
        for (i, (new, stable, want)) in cases.into_iter().enumerate() {
            let a = evaluate(&p, &new, &stable, &healthy(), None, None);
            assert_eq!(a.starvation(), want, "case {i}: {}", a.summary());
            assert_ne!(a.verdict, CheckVerdict::Pass, "case {i}: {}", a.summary());
            if want.is_some() {
                assert_eq!(a.verdict, CheckVerdict::NoData, "case {i}");
                assert_eq!(a.checks[0].name, STARVATION_CHECK);
                assert!(
                    a.failing()
                        .starts_with("traffic NoData (the canary received 0 of")
                );
            }
        }
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        let cases = [
            (0.0, "0"),
            (999.0, "999"),
            (1000.0, "1,000"),
            (12105.4, "12,105"),
            (1234567.0, "1,234,567"),
        ];
        for (count, want) in cases {
            assert_eq!(grouped(count), want);
        }
    }

    #[test]
    fn a_starved_canary_never_passes_even_when_every_other_check_does() {
        let mut s = spec();
        s.min_requests = 1;
        s.checks = vec![CustomCheck {
            name: "always".into(),
            query: "vector(1)".into(),
            max: Some(2.0),
            min: None,
        }];
        let p = plan(
            &s,
            &Target {
                role: "preview",
                ..T
            },
            None,
        );
        let a = evaluate(
            &p,
            &Ok(Some(0.0)),
            &Ok(Some(500.0)),
            &[
                (Ok(Some(0.0)), None),
                (Ok(Some(0.002)), Some(Ok(Some(0.002)))),
                (Ok(Some(1.0)), None),
            ],
            None,
            None,
        );
        assert_eq!(a.verdict, CheckVerdict::NoData, "{}", a.summary());
        assert_eq!(
            a.starvation(),
            Some("the preview received 0 of 500 requests in the window")
        );
    }

    #[test]
    fn non_finite_values_are_no_data() {
        assert_eq!(finite(f64::NAN), None);
        assert_eq!(finite(f64::INFINITY), None);
        assert_eq!(finite(0.5), Some(0.5));
    }
}
