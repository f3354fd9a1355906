//! The quality check from ground truth (pure; [`super::prometheus`] runs its
//! queries).
//!
//! With `spec.monitoring.feedback`, the server counts every labelled row it scores
//! (`sluice_feedback_rows_total`) and, by task, the right ones
//! (`sluice_feedback_correct_rows_total`) or the sum of absolute errors
//! (`sluice_feedback_absolute_error_total`). The check compares the new revision's
//! quality with the stable revision's over the same window:
//! - **classification** (`accuracy-vs-stable`): fails when the new accuracy is more
//!   than `maxAccuracyDrop` below stable's **and** a one-sided two-proportion
//!   z-test says the drop is not chance (p below `significance`), or when it is
//!   under `minAccuracy`;
//! - **regression** (`mean-absolute-error-vs-stable`): fails when the new mean
//!   absolute error is above `maxErrorRatio` times stable's, or above
//!   `maxMeanAbsoluteError`.
//!
//! Labels come late, or never. Until both revisions have `minRows` labelled rows
//! in the window, the check is `Waiting`: it neither holds nor passes the rollout,
//! so a service without feedback traffic rolls out on its other checks.

use statrs::distribution::{ContinuousCDF, Normal};

use super::comparison;
use crate::crd::FeedbackTask;
use crate::crd::rollout::{CheckResult, CheckVerdict, QualitySpec};

/// The check's name for a classifier.
pub const ACCURACY_CHECK: &str = "accuracy-vs-stable";
/// The check's name for a regressor.
pub const ERROR_CHECK: &str = "mean-absolute-error-vs-stable";

/// The four queries of the check and how to judge their answers.
#[derive(Clone, Debug, PartialEq)]
pub struct QualityPlan {
    /// What the model predicts.
    pub task: FeedbackTask,
    /// Labelled rows of the new revision in the window.
    pub new_rows: String,
    /// Their score: right rows, or the sum of absolute errors.
    pub new_score: String,
    /// Labelled rows of the stable revision over the same window.
    pub stable_rows: String,
    /// Their score.
    pub stable_score: String,
    /// The bounds.
    pub spec: QualitySpec,
}

/// A query's answer: a value, no samples (`Ok(None)`), or why Prometheus failed
/// (the shape of `analysis::Sample`, which builds on this module).
type Sample = Result<Option<f64>, String>;

/// The answers to a [`QualityPlan`]'s queries, in its order.
#[derive(Clone, Debug, PartialEq)]
pub struct QualitySamples {
    /// Labelled rows of the new revision.
    pub new_rows: Sample,
    /// Their score.
    pub new_score: Sample,
    /// Labelled rows of the stable revision.
    pub stable_rows: Sample,
    /// Their score.
    pub stable_score: Sample,
}

/// The queries, or `None` when the check does not run: no feedback, turned off,
/// or a blue-green preview before the switch (its labelled rows are the
/// testers', not production's). `new` and `stable` are the revisions' label
/// selectors; `stable_offset_seconds` is the time since the switch.
pub fn plan(
    spec: &QualitySpec,
    task: Option<FeedbackTask>,
    new: &str,
    stable: &str,
    stable_offset_seconds: Option<u64>,
    role: &str,
) -> Option<QualityPlan> {
    let task = task?;
    if !spec.enabled {
        return None;
    }
    let ranges = comparison::ranges(spec.window_seconds, stable_offset_seconds, role)?;
    let score = match task {
        FeedbackTask::Classification => "sluice_feedback_correct_rows_total",
        FeedbackTask::Regression => "sluice_feedback_absolute_error_total",
    };
    let query = |metric: &str, selector: &str, range: &str| {
        format!("sum(increase({metric}{{{selector}}}{range}))")
    };
    Some(QualityPlan {
        task,
        new_rows: query("sluice_feedback_rows_total", new, &ranges.new),
        new_score: query(score, new, &ranges.new),
        stable_rows: query("sluice_feedback_rows_total", stable, &ranges.stable),
        stable_score: query(score, stable, &ranges.stable),
        spec: spec.clone(),
    })
}

/// Judges the answers.
pub fn judge(plan: &QualityPlan, samples: &QualitySamples) -> CheckResult {
    let spec = &plan.spec;
    let (name, threshold) = match plan.task {
        FeedbackTask::Classification => (
            ACCURACY_CHECK,
            match spec.min_accuracy {
                Some(min) => format!(
                    ">= stable - {} (unless chance), >= {min}",
                    spec.max_accuracy_drop
                ),
                None => format!(">= stable - {} (unless chance)", spec.max_accuracy_drop),
            },
        ),
        FeedbackTask::Regression => (
            ERROR_CHECK,
            match spec.max_mean_absolute_error {
                Some(max) => format!("<= {}x stable, <= {max}", spec.max_error_ratio),
                None => format!("<= {}x stable", spec.max_error_ratio),
            },
        ),
    };
    let mut result = CheckResult {
        name: name.into(),
        query: plan.new_score.clone(),
        value: None,
        threshold,
        verdict: CheckVerdict::Waiting,
        detail: None,
    };
    let read = |sample: &Sample| sample.clone().map(|v| v.unwrap_or(0.0).max(0.0));
    let answers = (|| {
        Ok::<_, String>((
            read(&samples.new_rows)?,
            read(&samples.new_score)?,
            read(&samples.stable_rows)?,
            read(&samples.stable_score)?,
        ))
    })();
    let (new_rows, new_score, stable_rows, stable_score) = match answers {
        Ok(answers) => answers,
        Err(error) => {
            result.verdict = CheckVerdict::Error;
            result.detail = Some(error);
            return result;
        }
    };
    let min_rows = f64::from(spec.min_rows);
    if new_rows < min_rows || stable_rows < min_rows {
        result.detail = Some(format!(
            "waiting for labels: {new_rows:.0} labelled rows of the new revision and {stable_rows:.0} of stable in the window, {min_rows:.0} needed on each side; not counted"
        ));
        return result;
    }
    let new = new_score / new_rows;
    let stable = stable_score / stable_rows;
    result.value = Some(new);
    let (failed, detail) = match plan.task {
        FeedbackTask::Classification => {
            let new = new.min(1.0);
            let stable = stable.min(1.0);
            let p_value = drop_p_value(new, new_rows, stable, stable_rows);
            let dropped = new < stable - spec.max_accuracy_drop && p_value < spec.significance;
            let floor = spec.min_accuracy.is_some_and(|min| new < min);
            (
                dropped || floor,
                format!(
                    "accuracy {new:.3} vs stable {stable:.3} over {new_rows:.0} and {stable_rows:.0} labelled rows; one-sided p {p_value:.2e}"
                ),
            )
        }
        FeedbackTask::Regression => {
            let relative = new > spec.max_error_ratio * stable;
            let ceiling = spec.max_mean_absolute_error.is_some_and(|max| new > max);
            (
                relative || ceiling,
                format!(
                    "mean absolute error {new:.4} vs stable {stable:.4} over {new_rows:.0} and {stable_rows:.0} labelled rows"
                ),
            )
        }
    };
    result.verdict = if failed {
        CheckVerdict::Fail
    } else {
        CheckVerdict::Pass
    };
    result.detail = Some(detail);
    result
}

/// The p-value of "the new accuracy is below stable's" by chance: a one-sided
/// two-proportion z-test with the pooled proportion.
fn drop_p_value(new: f64, new_rows: f64, stable: f64, stable_rows: f64) -> f64 {
    let pooled = (new * new_rows + stable * stable_rows) / (new_rows + stable_rows);
    let spread = (pooled * (1.0 - pooled) * (1.0 / new_rows + 1.0 / stable_rows)).sqrt();
    if spread == 0.0 {
        // Every row right (or wrong) on both sides: no drop, or a certain one.
        return if new < stable { 0.0 } else { 1.0 };
    }
    let z = (stable - new) / spread;
    let normal = Normal::standard();
    1.0 - normal.cdf(z)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = r#"isvc="fraud",namespace="ml",revision="new1""#;
    const STABLE: &str = r#"isvc="fraud",namespace="ml",revision="old1""#;

    fn samples(new: (f64, f64), stable: (f64, f64)) -> QualitySamples {
        QualitySamples {
            new_rows: Ok(Some(new.0)),
            new_score: Ok(Some(new.1)),
            stable_rows: Ok(Some(stable.0)),
            stable_score: Ok(Some(stable.1)),
        }
    }

    fn classifier() -> QualityPlan {
        plan(
            &QualitySpec::default(),
            Some(FeedbackTask::Classification),
            NEW,
            STABLE,
            None,
            "canary",
        )
        .unwrap()
    }

    #[test]
    fn the_check_runs_only_with_feedback_and_on_live_traffic() {
        let spec = QualitySpec::default();
        assert_eq!(plan(&spec, None, NEW, STABLE, None, "canary"), None);
        let classification = Some(FeedbackTask::Classification);
        assert_eq!(
            plan(&spec, classification, NEW, STABLE, None, "preview"),
            None
        );
        let off = QualitySpec {
            enabled: false,
            ..QualitySpec::default()
        };
        assert_eq!(
            plan(&off, classification, NEW, STABLE, None, "canary"),
            None
        );
        let p = classifier();
        assert_eq!(
            p.new_score,
            format!("sum(increase(sluice_feedback_correct_rows_total{{{NEW}}}[600s]))")
        );
        assert_eq!(
            p.stable_rows,
            format!("sum(increase(sluice_feedback_rows_total{{{STABLE}}}[600s]))")
        );
        let switched = plan(&spec, classification, NEW, STABLE, Some(42), "preview").unwrap();
        assert_eq!(
            switched.new_rows,
            format!("sum(increase(sluice_feedback_rows_total{{{NEW}}}[42s]))")
        );
        assert!(switched.stable_score.ends_with("[600s] offset 42s))"));
        let regression = plan(
            &spec,
            Some(FeedbackTask::Regression),
            NEW,
            STABLE,
            None,
            "canary",
        )
        .unwrap();
        assert!(
            regression
                .new_score
                .contains("sluice_feedback_absolute_error_total")
        );
    }

    #[test]
    fn accuracy_fails_on_a_real_drop_and_waits_for_labels() {
        let p = classifier();
        let waiting = judge(&p, &samples((40.0, 10.0), (500.0, 470.0)));
        assert_eq!(waiting.verdict, CheckVerdict::Waiting);
        assert!(
            waiting
                .detail
                .unwrap()
                .contains("waiting for labels: 40 labelled rows")
        );
        let none = judge(
            &p,
            &QualitySamples {
                new_rows: Ok(None),
                new_score: Ok(None),
                stable_rows: Ok(Some(500.0)),
                stable_score: Ok(Some(470.0)),
            },
        );
        assert_eq!(none.verdict, CheckVerdict::Waiting);
        // 94% against 94%, and a retrain at 92%: within the drop allowed.
        assert_eq!(
            judge(&p, &samples((300.0, 282.0), (900.0, 846.0))).verdict,
            CheckVerdict::Pass
        );
        assert_eq!(
            judge(&p, &samples((300.0, 276.0), (900.0, 846.0))).verdict,
            CheckVerdict::Pass
        );
        // Flipped labels: 15% against 94%.
        let flipped = judge(&p, &samples((200.0, 30.0), (600.0, 564.0)));
        assert_eq!(flipped.verdict, CheckVerdict::Fail);
        assert_eq!(flipped.value, Some(0.15));
        let detail = flipped.detail.unwrap();
        assert!(
            detail.starts_with("accuracy 0.150 vs stable 0.940 over 200 and 600 labelled rows"),
            "{detail}"
        );
        // A drop past 0.05 that could be chance at 100 rows a side passes...
        assert_eq!(
            judge(&p, &samples((100.0, 86.0), (100.0, 93.0))).verdict,
            CheckVerdict::Pass
        );
        // ...and fails once the rows make it certain.
        assert_eq!(
            judge(&p, &samples((2000.0, 1720.0), (2000.0, 1860.0))).verdict,
            CheckVerdict::Fail
        );
        let floored = QualityPlan {
            spec: QualitySpec {
                min_accuracy: Some(0.95),
                ..QualitySpec::default()
            },
            ..classifier()
        };
        assert_eq!(
            judge(&floored, &samples((300.0, 282.0), (900.0, 846.0))).verdict,
            CheckVerdict::Fail
        );
        let broken = QualitySamples {
            stable_score: Err("Prometheus query failed: timeout".into()),
            ..samples((300.0, 282.0), (900.0, 846.0))
        };
        assert_eq!(judge(&p, &broken).verdict, CheckVerdict::Error);
    }

    #[test]
    fn mean_absolute_error_is_held_to_stable_and_a_ceiling() {
        let p = QualityPlan {
            spec: QualitySpec {
                max_mean_absolute_error: Some(3.0),
                ..QualitySpec::default()
            },
            ..plan(
                &QualitySpec::default(),
                Some(FeedbackTask::Regression),
                NEW,
                STABLE,
                None,
                "canary",
            )
            .unwrap()
        };
        assert_eq!(p.spec.max_error_ratio, 1.2);
        let at = |new: f64| judge(&p, &samples((200.0, 200.0 * new), (400.0, 400.0 * 2.0))).verdict;
        assert_eq!(at(2.2), CheckVerdict::Pass);
        assert_eq!(at(2.5), CheckVerdict::Fail);
        let high_stable = judge(&p, &samples((200.0, 200.0 * 3.5), (400.0, 400.0 * 3.4)));
        assert_eq!(high_stable.verdict, CheckVerdict::Fail, "over the ceiling");
        assert_eq!(high_stable.name, ERROR_CHECK);
    }
}
