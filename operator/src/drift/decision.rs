//! From the stable revision's drift statistics to the `InputDrift` condition, the
//! drift episode in `status.drift`, and whether a retraining Job starts. Pure.
//!
//! - A numeric feature drifts when its PSI or KS statistic is above its maximum
//!   (`spec.monitoring.drift`) and its KS p-value is below `significance`: large
//!   and not chance. A categorical feature drifts when its chi-squared p-value is
//!   below `significance`. The statistics are the mean over the revision's pods.
//! - An episode starts at the first reading with a drifting feature and ends after
//!   `clearAfterSeconds` of readings without one, so a statistic that wavers
//!   around its threshold makes one episode, not many. A new stable revision
//!   (a new model) starts afresh.
//! - With `onDrift`, an episode gets one Job, named after the episode's start, and
//!   only once `cooldownSeconds` have passed since the newest retraining Job.

use jiff::{Timestamp, ToSpan};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{
    DriftEpisode, DriftSpec, DriftStatus, JobOutcome, MonitoringSpec, RetrainingStatus,
};
use crate::rollout::machine::Note;
use crate::status::Verdict;

/// Drifting features named in a message before "and N more".
const LISTED: usize = 5;
/// Longest Job name: the Job controller copies it into a label value.
const MAX_JOB_NAME: usize = 63;

/// One statistic of one feature, averaged over the revision's pods.
#[derive(Clone, Debug, PartialEq)]
pub struct Statistic {
    /// The feature (a profile column).
    pub feature: String,
    /// `psi`, `ks` or `chi2`.
    pub test: String,
    /// The statistic (`scores`) or the p-value (`pvalues`).
    pub value: f64,
}

/// The stable revision's drift, as Prometheus holds it now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Statistics {
    /// `sluice_feature_drift_score` of the PSI and KS tests.
    pub scores: Vec<Statistic>,
    /// `sluice_feature_drift_pvalue` of the chi-squared test.
    pub pvalues: Vec<Statistic>,
}

/// A reading, or why Prometheus could not give one.
pub type Reading = Result<Statistics, String>;

/// A retraining Job as the API server lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedJob {
    /// Its name.
    pub name: String,
    /// Its creation time.
    pub created: Timestamp,
    /// Where it stands (never `Missing`).
    pub outcome: JobOutcome,
}

/// What the decision needs.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// `spec.monitoring`.
    pub spec: &'a MonitoringSpec,
    /// The InferenceService's name (the Job's name starts with it).
    pub isvc: &'a str,
    /// The stable revision, whose drift is read; `None` before the first one.
    pub revision: Option<&'a str>,
    /// `status.drift` as it was.
    pub previous: Option<&'a DriftStatus>,
    /// The reading; `None` when there is nothing to read (no stable revision).
    pub reading: Option<&'a Reading>,
    /// The newest retraining Job of this InferenceService, if any is left.
    pub newest_job: Option<&'a ObservedJob>,
    /// Now.
    pub now: Timestamp,
}

/// A retraining Job to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The Job's name: the InferenceService's, `-retrain-` and the episode's start.
    pub name: String,
    /// The stable revision that drifts.
    pub revision: String,
    /// The drifting features, worst first.
    pub features: Vec<String>,
}

/// What this reconcile makes of drift.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The next `status.drift`.
    pub status: DriftStatus,
    /// The `InputDrift` condition: `True` (drifting, reason `Drifting`), `False`
    /// (`NoDrift`) or `Unknown` (`NoData`, `MetricsUnavailable`).
    pub verdict: Verdict,
    /// The Job to create, when one starts now.
    pub launch: Option<Launch>,
    /// Events: a Job started, deferred by the cooldown, or finished.
    pub notes: Vec<Note>,
}

/// One feature past a threshold.
#[derive(Clone, Debug, PartialEq)]
struct Drifting {
    feature: String,
    /// `psi 1.9 > 0.25`, one per test crossed.
    crossed: Vec<String>,
    /// How far past its threshold (1 at the threshold): sorts the worst first.
    severity: f64,
}

/// Decides the condition, the episode and the Job.
pub fn decide(input: &Input) -> Plan {
    let thresholds = input.spec.drift();
    // Whole seconds, as status stores times: a round trip changes nothing.
    let now = Timestamp::from_second(input.now.as_second()).unwrap_or(input.now);
    let previous = input.previous.cloned().unwrap_or_default();
    let revision = input.revision.map(str::to_string);
    // A new stable revision is a new model: its drift starts afresh.
    let open = previous
        .episode
        .clone()
        .filter(|_| previous.revision == revision);
    let retraining = retraining(previous.retraining.as_ref(), input.newest_job);
    let mut notes = finished(previous.retraining.as_ref(), retraining.as_ref());

    let (episode, verdict) = match (input.revision, input.reading) {
        (None, _) | (_, None) => (
            None,
            Verdict {
                status: "Unknown",
                reason: "NoData",
                message: "no stable revision serves yet".into(),
            },
        ),
        (Some(revision), Some(Err(error))) => match open {
            Some(episode) => {
                let message = format!(
                    "{} (drift cannot be read now: {error})",
                    drifting_since(&episode, revision)
                );
                (Some(episode), drifting(message))
            }
            None => (
                None,
                Verdict {
                    status: "Unknown",
                    reason: "MetricsUnavailable",
                    message: format!("drift of revision {revision} cannot be read: {error}"),
                },
            ),
        },
        (Some(revision), Some(Ok(statistics))) => {
            let features = feature_count(statistics);
            let crossing = judge(&thresholds, statistics);
            if !crossing.is_empty() {
                let episode = DriftEpisode {
                    since: open.map_or(Time(now), |e| e.since),
                    last_detected: Time(now),
                    features: crossing.iter().map(|d| d.feature.clone()).collect(),
                };
                let message = format!(
                    "{} of {features} features of revision {revision} drift from the profile: {}; since {}",
                    crossing.len(),
                    listed(&crossing),
                    episode.since.0
                );
                (Some(episode), drifting(message))
            } else if let Some(episode) = open.filter(|e| {
                now < e.last_detected.0 + i64::from(thresholds.clear_after_seconds).seconds()
            }) {
                let message = format!(
                    "{}; no feature past its threshold since {}, clears after {} s without drift",
                    drifting_since(&episode, revision),
                    episode.last_detected.0,
                    thresholds.clear_after_seconds
                );
                (Some(episode), drifting(message))
            } else if features == 0 {
                (
                    None,
                    Verdict {
                        status: "Unknown",
                        reason: "NoData",
                        message: format!(
                            "no drift series for revision {revision} yet: each pod exports them once its window holds minRows ({}) rows",
                            input.spec.min_rows
                        ),
                    },
                )
            } else {
                (
                    None,
                    Verdict {
                        status: "False",
                        reason: "NoDrift",
                        message: format!(
                            "the {features} features of revision {revision} are within their thresholds ({})",
                            bounds(&thresholds, features)
                        ),
                    },
                )
            }
        }
    };

    let mut status = DriftStatus {
        revision,
        episode,
        retraining,
    };
    let launch = match (&input.spec.on_drift, &status.episode, input.revision) {
        (Some(on_drift), Some(episode), Some(revision)) => {
            let newly_open = input
                .previous
                .and_then(|p| p.episode.as_ref())
                .is_none_or(|p| p.since != episode.since);
            launch(
                &LaunchContext {
                    isvc: input.isvc,
                    revision,
                    episode,
                    cooldown_seconds: on_drift.cooldown_seconds,
                    newly_open,
                    now,
                },
                status.retraining.as_ref(),
                &mut notes,
            )
        }
        _ => None,
    };
    if let Some(launch) = &launch {
        notes.push(Note {
            warning: false,
            reason: "RetrainingStarted",
            message: format!(
                "revision {} drifts ({}): created retraining Job {}",
                launch.revision,
                launch.features.join(", "),
                launch.name
            ),
        });
        status.retraining = Some(RetrainingStatus {
            job: launch.name.clone(),
            created: Time(now),
            outcome: JobOutcome::Running,
        });
    }
    let verdict = match (&status.retraining, verdict.status) {
        (Some(job), "True") => Verdict {
            message: format!(
                "{}; retraining Job {} {}",
                verdict.message,
                job.job,
                outcome_word(job.outcome)
            ),
            ..verdict
        },
        _ => verdict,
    };
    Plan {
        status,
        verdict,
        launch,
        notes,
    }
}

/// What [`launch`] decides from.
struct LaunchContext<'a> {
    isvc: &'a str,
    revision: &'a str,
    episode: &'a DriftEpisode,
    cooldown_seconds: u32,
    /// The episode began at this reading.
    newly_open: bool,
    now: Timestamp,
}

/// The Job this episode starts: none when it has one already, or when the
/// cooldown since the newest Job still runs (said once, as the episode opens).
fn launch(
    c: &LaunchContext,
    newest: Option<&RetrainingStatus>,
    notes: &mut Vec<Note>,
) -> Option<Launch> {
    let name = job_name(c.isvc, &c.episode.since);
    if let Some(last) = newest {
        if last.job == name {
            return None;
        }
        let next = last.created.0 + i64::from(c.cooldown_seconds).seconds();
        if c.now < next {
            if c.newly_open {
                notes.push(Note {
                    warning: false,
                    reason: "RetrainingDeferred",
                    message: format!(
                        "drift began, but retraining Job {} started at {}; the cooldown ({} s) allows the next after {next}",
                        last.job, last.created.0, c.cooldown_seconds
                    ),
                });
            }
            return None;
        }
    }
    Some(Launch {
        name,
        revision: c.revision.to_string(),
        features: c.episode.features.clone(),
    })
}

/// The name of the Job for the episode that began at `since`; the same for every
/// reconcile of that episode, so a Job is never created twice for it.
pub fn job_name(isvc: &str, since: &Time) -> String {
    let suffix = format!("-retrain-{}", since.0.as_second());
    let keep = MAX_JOB_NAME.saturating_sub(suffix.len()).min(isvc.len());
    format!("{}{suffix}", isvc[..keep].trim_end_matches(['-', '.']))
}

/// The drifting features, worst first: a numeric feature past its PSI or KS
/// maximum whose KS p-value (when exported) is below the per-feature
/// significance, and a categorical one whose chi-squared p-value is. The
/// per-feature significance is `significance` divided by the number of features
/// (Bonferroni), so that `significance` bounds the chance of any false alarm in
/// a reading, however many features the profile has.
fn judge(thresholds: &DriftSpec, statistics: &Statistics) -> Vec<Drifting> {
    let significance = per_feature(thresholds, statistics);
    let p_value = |feature: &str, test: &str| {
        statistics
            .pvalues
            .iter()
            .find(|s| s.feature == feature && s.test == test)
            .map(|s| s.value)
    };
    let mut drifting: Vec<Drifting> = Vec::new();
    for s in &statistics.scores {
        let max = match s.test.as_str() {
            "psi" => thresholds.max_psi,
            "ks" => thresholds.max_ks,
            _ => continue,
        };
        // Large, but possibly chance (a small window): not drift.
        if s.value <= max || p_value(&s.feature, "ks").is_some_and(|p| p >= significance) {
            continue;
        }
        let crossed = format!("{} {:.3} > {max}", s.test, s.value);
        match drifting.iter_mut().find(|d| d.feature == s.feature) {
            Some(d) => {
                d.crossed.push(crossed);
                d.severity = d.severity.max(s.value / max);
            }
            None => drifting.push(Drifting {
                feature: s.feature.clone(),
                crossed: vec![crossed],
                severity: s.value / max,
            }),
        }
    }
    for d in &mut drifting {
        if let Some(p) = p_value(&d.feature, "ks") {
            d.crossed.push(format!("ks p {p:.1e}"));
        }
    }
    for s in statistics.pvalues.iter().filter(|s| s.test == "chi2") {
        if s.value < significance {
            drifting.push(Drifting {
                feature: s.feature.clone(),
                crossed: vec![format!("chi2 p {:.1e} < {significance:.1e}", s.value)],
                severity: significance / s.value.max(f64::MIN_POSITIVE),
            });
        }
    }
    drifting.sort_by(|a, b| {
        b.severity
            .total_cmp(&a.severity)
            .then_with(|| a.feature.cmp(&b.feature))
    });
    drifting
}

/// `significance` shared among the features (Bonferroni).
fn per_feature(thresholds: &DriftSpec, statistics: &Statistics) -> f64 {
    thresholds.significance / feature_count(statistics).max(1) as f64
}

/// Distinct features with any statistic.
fn feature_count(statistics: &Statistics) -> usize {
    let mut features: Vec<&str> = statistics
        .scores
        .iter()
        .chain(&statistics.pvalues)
        .map(|s| s.feature.as_str())
        .collect();
    features.sort_unstable();
    features.dedup();
    features.len()
}

/// `radius (psi 1.900 > 0.25, ks 0.710 > 0.2), texture (...) and 3 more`.
fn listed(drifting: &[Drifting]) -> String {
    let named: Vec<String> = drifting
        .iter()
        .take(LISTED)
        .map(|d| format!("{} ({})", d.feature, d.crossed.join(", ")))
        .collect();
    match drifting.len().saturating_sub(LISTED) {
        0 => named.join(", "),
        more => format!("{} and {more} more", named.join(", ")),
    }
}

fn bounds(t: &DriftSpec, features: usize) -> String {
    format!(
        "psi <= {} and ks <= {}, or ks and chi2 p >= {} / {features} features",
        t.max_psi, t.max_ks, t.significance
    )
}

fn drifting(message: String) -> Verdict {
    Verdict {
        status: "True",
        reason: "Drifting",
        message,
    }
}

fn drifting_since(episode: &DriftEpisode, revision: &str) -> String {
    format!(
        "revision {revision} drifts from the profile since {} ({})",
        episode.since.0,
        episode.features.join(", ")
    )
}

/// The newest retraining Job as status shows it: the one listed, else the one
/// status recorded, now `Missing` (its record still counts for the cooldown).
fn retraining(
    previous: Option<&RetrainingStatus>,
    newest: Option<&ObservedJob>,
) -> Option<RetrainingStatus> {
    let listed = newest.map(|job| RetrainingStatus {
        job: job.name.clone(),
        created: Time(job.created),
        outcome: job.outcome,
    });
    match (previous, listed) {
        (Some(recorded), Some(listed)) if recorded.created.0 > listed.created.0 => {
            Some(missing(recorded))
        }
        (_, Some(listed)) => Some(listed),
        (Some(recorded), None) => Some(missing(recorded)),
        (None, None) => None,
    }
}

fn missing(recorded: &RetrainingStatus) -> RetrainingStatus {
    RetrainingStatus {
        outcome: JobOutcome::Missing,
        ..recorded.clone()
    }
}

/// An Event when the recorded Job finished since the last reconcile.
fn finished(before: Option<&RetrainingStatus>, now: Option<&RetrainingStatus>) -> Vec<Note> {
    let (Some(before), Some(now)) = (before, now) else {
        return Vec::new();
    };
    if before.job != now.job || before.outcome != JobOutcome::Running {
        return Vec::new();
    }
    let (warning, reason) = match now.outcome {
        JobOutcome::Succeeded => (false, "RetrainingSucceeded"),
        JobOutcome::Failed => (true, "RetrainingFailed"),
        JobOutcome::Running | JobOutcome::Missing => return Vec::new(),
    };
    vec![Note {
        warning,
        reason,
        message: format!("retraining Job {} {}", now.job, outcome_word(now.outcome)),
    }]
}

fn outcome_word(outcome: JobOutcome) -> &'static str {
    match outcome {
        JobOutcome::Running => "is running",
        JobOutcome::Succeeded => "succeeded",
        JobOutcome::Failed => "failed",
        JobOutcome::Missing => "is gone",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: i64 = 1_764_000_000;

    fn spec(on_drift: bool) -> MonitoringSpec {
        let mut spec = json!({
            "profileUri": "s3://m/profile.json",
            "drift": {"clearAfterSeconds": 60},
        });
        if on_drift {
            spec["onDrift"] = json!({"jobTemplate": {}, "cooldownSeconds": 600});
        }
        serde_json::from_value(spec).unwrap()
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(T0 + seconds).unwrap()
    }

    fn stat(feature: &str, test: &str, value: f64) -> Statistic {
        Statistic {
            feature: feature.into(),
            test: test.into(),
            value,
        }
    }

    /// Thirty quiet features (KS p 0.5), and `drifting` on top: its scores, and
    /// its p-values (tests named `ks-p` or `chi2`).
    fn reading(drifting: &[Statistic]) -> Reading {
        let mut scores: Vec<Statistic> = (0..30)
            .flat_map(|i| {
                [
                    stat(&format!("f{i}"), "psi", 0.03),
                    stat(&format!("f{i}"), "ks", 0.05),
                ]
            })
            .collect();
        let mut pvalues: Vec<Statistic> =
            (0..30).map(|i| stat(&format!("f{i}"), "ks", 0.5)).collect();
        for s in drifting {
            match s.test.as_str() {
                "ks-p" => {
                    pvalues.retain(|p| p.feature != s.feature);
                    pvalues.push(stat(&s.feature, "ks", s.value));
                }
                "chi2" => pvalues.push(s.clone()),
                _ => scores.push(s.clone()),
            }
        }
        Ok(Statistics { scores, pvalues })
    }

    fn drifted() -> Reading {
        reading(&[
            stat("f3", "psi", 1.9),
            stat("f3", "ks", 0.7),
            stat("f3", "ks-p", 1e-30),
            stat("f7", "psi", 0.4),
            stat("f7", "ks-p", 1e-5),
        ])
    }

    struct World {
        spec: MonitoringSpec,
        status: Option<DriftStatus>,
        job: Option<ObservedJob>,
    }

    impl World {
        fn new(on_drift: bool) -> Self {
            Self {
                spec: spec(on_drift),
                status: None,
                job: None,
            }
        }

        /// One reconcile at `seconds` after T0: decides, then keeps the status and
        /// "creates" the Job it asks for, as apply would.
        fn step(&mut self, seconds: i64, reading: &Reading) -> Plan {
            let plan = decide(&Input {
                spec: &self.spec,
                isvc: "fraud",
                revision: Some("abc"),
                previous: self.status.as_ref(),
                reading: Some(reading),
                newest_job: self.job.as_ref(),
                now: at(seconds),
            });
            if let Some(launch) = &plan.launch {
                self.job = Some(ObservedJob {
                    name: launch.name.clone(),
                    created: at(seconds),
                    outcome: JobOutcome::Running,
                });
            }
            self.status = Some(plan.status.clone());
            plan
        }
    }

    fn reasons(plan: &Plan) -> Vec<&'static str> {
        plan.notes.iter().map(|n| n.reason).collect()
    }

    #[test]
    fn quiet_features_are_no_drift_and_missing_series_are_no_data() {
        let mut world = World::new(true);
        let plan = world.step(0, &reading(&[]));
        assert_eq!(
            (plan.verdict.status, plan.verdict.reason),
            ("False", "NoDrift")
        );
        assert_eq!(
            plan.verdict.message,
            "the 30 features of revision abc are within their thresholds (psi <= 0.25 and ks <= 0.2, or ks and chi2 p >= 0.001 / 30 features)"
        );
        assert_eq!(plan.launch, None);
        let empty = world.step(30, &Ok(Statistics::default()));
        assert_eq!(
            (empty.verdict.status, empty.verdict.reason),
            ("Unknown", "NoData")
        );
        assert!(
            empty.verdict.message.contains("minRows (100)"),
            "{}",
            empty.verdict.message
        );
        let none = decide(&Input {
            spec: &world.spec,
            isvc: "fraud",
            revision: None,
            previous: None,
            reading: None,
            newest_job: None,
            now: at(0),
        });
        assert_eq!(
            (none.verdict.status, none.verdict.reason),
            ("Unknown", "NoData")
        );
    }

    #[test]
    fn an_episode_names_the_worst_features_and_runs_one_job() {
        let mut world = World::new(true);
        world.step(0, &reading(&[]));
        let start = world.step(30, &drifted());
        assert_eq!(
            (start.verdict.status, start.verdict.reason),
            ("True", "Drifting")
        );
        let since = at(30);
        assert_eq!(
            start.verdict.message,
            format!(
                "2 of 30 features of revision abc drift from the profile: f3 (psi 1.900 > 0.25, ks 0.700 > 0.2, ks p 1.0e-30), f7 (psi 0.400 > 0.25, ks p 1.0e-5); since {since}; retraining Job fraud-retrain-{} is running",
                T0 + 30
            )
        );
        let launch = start.launch.clone().unwrap();
        assert_eq!(launch.name, format!("fraud-retrain-{}", T0 + 30));
        assert_eq!(launch.features, ["f3", "f7"]);
        assert_eq!(reasons(&start), ["RetrainingStarted"]);

        // The same episode, read again and again: no second Job.
        for t in [60, 90, 120] {
            let again = world.step(t, &drifted());
            assert_eq!(again.launch, None, "t={t}");
            assert_eq!(again.verdict.status, "True");
            assert_eq!(again.status.episode.as_ref().unwrap().since, Time(since));
        }
        // The Job finishes: one Event, once.
        world.job.as_mut().unwrap().outcome = JobOutcome::Succeeded;
        let done = world.step(150, &drifted());
        assert_eq!(reasons(&done), ["RetrainingSucceeded"]);
        assert!(
            done.verdict.message.ends_with("succeeded"),
            "{}",
            done.verdict.message
        );
        assert!(reasons(&world.step(160, &drifted())).is_empty());
    }

    #[test]
    fn an_episode_clears_only_after_the_quiet_time() {
        let mut world = World::new(false);
        world.step(0, &drifted());
        let quiet = world.step(30, &reading(&[]));
        assert_eq!(quiet.verdict.status, "True", "{}", quiet.verdict.message);
        assert!(
            quiet
                .verdict
                .message
                .contains("clears after 60 s without drift")
        );
        // Wavering back over the threshold stays the same episode.
        let back = world.step(50, &drifted());
        assert_eq!(back.status.episode.as_ref().unwrap().since, Time(at(0)));
        assert_eq!(world.step(100, &reading(&[])).verdict.status, "True");
        let cleared = world.step(111, &reading(&[]));
        assert_eq!(
            (cleared.verdict.status, cleared.verdict.reason),
            ("False", "NoDrift")
        );
        assert_eq!(cleared.status.episode, None);
        assert_eq!(cleared.launch, None, "no onDrift, no Job");
    }

    #[test]
    fn a_new_episode_waits_for_the_cooldown() {
        let mut world = World::new(true);
        world.step(0, &drifted());
        world.step(100, &reading(&[]));
        world.step(200, &reading(&[]));
        // Episode 2 at 300 s: the first Job was created at 0, the cooldown is 600 s.
        let deferred = world.step(300, &drifted());
        assert_eq!(deferred.launch, None);
        assert_eq!(reasons(&deferred), ["RetrainingDeferred"]);
        assert!(
            deferred.notes[0]
                .message
                .contains(&format!("fraud-retrain-{T0}")),
            "{}",
            deferred.notes[0].message
        );
        assert!(
            reasons(&world.step(330, &drifted())).is_empty(),
            "deferred once"
        );
        // Still episode 2 when the cooldown ends: it gets its Job then.
        let late = world.step(600, &drifted());
        assert_eq!(
            late.launch.unwrap().name,
            format!("fraud-retrain-{}", T0 + 300)
        );
    }

    #[test]
    fn unreadable_drift_keeps_an_open_episode_and_a_new_revision_starts_afresh() {
        let mut world = World::new(false);
        let failed: Reading = Err("Prometheus query failed: timeout".into());
        let unknown = world.step(0, &failed);
        assert_eq!(
            (unknown.verdict.status, unknown.verdict.reason),
            ("Unknown", "MetricsUnavailable")
        );
        world.step(10, &drifted());
        let kept = world.step(20, &failed);
        assert_eq!(kept.verdict.status, "True");
        assert!(
            kept.verdict
                .message
                .contains("cannot be read now: Prometheus query failed")
        );
        let fresh = decide(&Input {
            spec: &world.spec,
            isvc: "fraud",
            revision: Some("def"),
            previous: world.status.as_ref(),
            reading: Some(&reading(&[])),
            newest_job: None,
            now: at(30),
        });
        assert_eq!(
            (fresh.verdict.status, fresh.status.episode),
            ("False", None)
        );
    }

    #[test]
    fn categorical_features_drift_on_their_p_value_and_jobs_that_vanish_stay_recorded() {
        let mut world = World::new(true);
        let plan = world.step(0, &reading(&[stat("region", "chi2", 1e-9)]));
        assert!(
            plan.verdict
                .message
                .contains("region (chi2 p 1.0e-9 < 3.2e-5)"),
            "{}",
            plan.verdict.message
        );
        world.job = None;
        let gone = world.step(30, &drifted());
        let retraining = gone.status.retraining.unwrap();
        assert_eq!(retraining.outcome, JobOutcome::Missing);
        assert_eq!(gone.launch, None, "the episode had its Job");
    }

    #[test]
    fn a_large_statistic_that_could_be_chance_is_not_drift() {
        // A small window: PSI and KS past their maxima, but KS p 0.02.
        let mut world = World::new(false);
        let noisy = reading(&[
            stat("f1", "psi", 0.3),
            stat("f1", "ks", 0.21),
            stat("f1", "ks-p", 0.02),
        ]);
        assert_eq!(world.step(0, &noisy).verdict.status, "False");
        // p 1e-4 is below 0.001, but not below 0.001 shared among 30 features.
        let one_of_thirty = reading(&[stat("f1", "psi", 0.3), stat("f1", "ks-p", 1e-4)]);
        assert_eq!(world.step(10, &one_of_thirty).verdict.status, "False");
        let alone = Ok(Statistics {
            scores: vec![stat("f1", "psi", 0.3)],
            pvalues: vec![stat("f1", "ks", 1e-4)],
        });
        assert_eq!(
            world.step(20, &alone).verdict.status,
            "True",
            "one feature: 0.001 is its own"
        );
        // Without a KS p-value (a server that exports none), the statistic decides.
        let mut bare = noisy.clone().unwrap();
        bare.pvalues.clear();
        assert_eq!(world.step(30, &Ok(bare)).verdict.status, "True");
    }

    #[test]
    fn job_names_fit_a_label_value() {
        let long = "a".repeat(52);
        let name = job_name(&long, &Time(at(0)));
        assert!(name.len() <= MAX_JOB_NAME, "{name}");
        assert!(name.ends_with(&format!("-retrain-{T0}")));
        let dashed = format!("{}-b", "a".repeat(43));
        assert!(!job_name(&dashed, &Time(at(0))).contains("--"));
    }
}
