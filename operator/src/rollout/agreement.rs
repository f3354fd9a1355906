//! The `prediction-agreement` check (pure; [`super::prometheus`] runs its queries).
//!
//! A canary and the stable revision receive the same traffic, so what they
//! predict should be distributed alike unless the model changed its behaviour. The
//! server counts every prediction by output and bin (`sluice_predictions_total`:
//! the predicted class, label or value range); the check compares the new
//! revision's counts with the stable revision's over the same window, output by
//! output:
//! - the **population stability index** (PSI) measures how far apart the two
//!   distributions are: `sum((p - q) * ln(p / q))` over the bins, each share
//!   smoothed by half a row so that a bin one side never used stays finite;
//! - a **chi-square test of homogeneity** on the same counts (sparse bins
//!   pooled so that every cell expects at least [`FEWEST_EXPECTED`] rows) says
//!   whether the difference could be chance.
//!
//! An output fails when its PSI is above `maxPsi` **and** its p-value is below
//! `significance`: a large difference that is not chance. Large samples make any
//! tiny difference significant, and small ones make PSI noisy; requiring both
//! keeps a retrained model that agrees on most inputs passing and a model whose
//! predictions moved failing. Such a difference fails at any number of rows (the
//! test accounts for them); passing needs `minRows` predictions on each side,
//! and fewer is no data.
//!
//! Blue-green: the preview's traffic before the switch is whatever testers send
//! it (often smoke rows, whose predictions need not look like production's), so
//! the check runs after the switch, on live traffic, against the previous
//! revision's predictions from the window before the switch.

use std::collections::BTreeMap;

use statrs::distribution::{ChiSquared, ContinuousCDF};

use super::comparison;
use crate::crd::rollout::{CheckResult, CheckVerdict, PredictionAgreementSpec};

/// The check's name in status, Events and rollback reasons.
pub const AGREEMENT_CHECK: &str = "prediction-agreement";

/// Fewest rows the chi-square test may expect in a bin of either revision; sparser
/// bins are pooled.
pub const FEWEST_EXPECTED: f64 = 5.0;

/// Rows per output and bin, as `sum by (output, bin)` returns them.
pub type Counts = BTreeMap<(String, String), f64>;

/// A distribution query's answer: counts, or why Prometheus failed.
pub type CountsSample = Result<Counts, String>;

/// The two queries of the check and how to judge their answers.
#[derive(Clone, Debug, PartialEq)]
pub struct AgreementPlan {
    /// The new revision's counts by output and bin.
    pub new: String,
    /// The stable revision's, over the same window (or the window before the switch).
    pub stable: String,
    /// Largest PSI.
    pub max_psi: f64,
    /// Largest p-value of a failing difference.
    pub significance: f64,
    /// Fewest rows each side needs.
    pub min_rows: f64,
    /// What messages call the new revision: `canary` or `preview`.
    pub role: String,
}

/// The queries of the check, or `None` when it does not run: turned off, or a
/// blue-green preview before the switch. `new` and `stable` are the revisions'
/// label selectors; `stable_offset_seconds` is the time since the switch.
pub fn plan(
    spec: &PredictionAgreementSpec,
    new: &str,
    stable: &str,
    stable_offset_seconds: Option<u64>,
    role: &str,
) -> Option<AgreementPlan> {
    if !spec.enabled {
        return None;
    }
    let ranges = comparison::ranges(spec.window_seconds, stable_offset_seconds, role)?;
    let counts = |selector: &str, range: &str| {
        format!("sum by (output, bin) (increase(sluice_predictions_total{{{selector}}}{range}))")
    };
    Some(AgreementPlan {
        new: counts(new, &ranges.new),
        stable: counts(stable, &ranges.stable),
        max_psi: spec.max_psi,
        significance: spec.significance,
        min_rows: spec.min_rows.into(),
        role: role.to_string(),
    })
}

/// How one output's two distributions compare.
#[derive(Clone, Debug, PartialEq)]
struct Comparison {
    output: String,
    new_rows: f64,
    stable_rows: f64,
    psi: f64,
    p_value: f64,
    /// The bins whose shares moved most: (bin, new share, stable share).
    moved: Vec<(String, f64, f64)>,
}

impl Comparison {
    fn of(output: &str, new: &BTreeMap<&str, f64>, stable: &BTreeMap<&str, f64>) -> Comparison {
        let bins: std::collections::BTreeSet<&str> =
            new.keys().chain(stable.keys()).copied().collect();
        let count = |side: &BTreeMap<&str, f64>, bin: &str| side.get(bin).copied().unwrap_or(0.0);
        let new_rows: f64 = new.values().sum();
        let stable_rows: f64 = stable.values().sum();
        let smoothed = |count: f64, rows: f64| (count + 0.5) / (rows + 0.5 * bins.len() as f64);
        let mut psi = 0.0;
        let mut moved = Vec::new();
        for bin in &bins {
            let p = smoothed(count(new, bin), new_rows);
            let q = smoothed(count(stable, bin), stable_rows);
            psi += (p - q) * (p / q).ln();
            moved.push((
                bin.to_string(),
                count(new, bin) / new_rows,
                count(stable, bin) / stable_rows,
            ));
        }
        moved.sort_by(|a, b| (b.1 - b.2).abs().total_cmp(&(a.1 - a.2).abs()));
        moved.truncate(3);
        let table: Vec<(f64, f64)> = bins
            .iter()
            .map(|bin| (count(new, bin), count(stable, bin)))
            .collect();
        Comparison {
            output: output.to_string(),
            new_rows,
            stable_rows,
            psi,
            p_value: homogeneity_p_value(&table),
            moved,
        }
    }

    fn fails(&self, plan: &AgreementPlan) -> bool {
        self.psi > plan.max_psi && self.p_value < plan.significance
    }

    fn describe(&self, role: &str) -> String {
        let shares = self
            .moved
            .iter()
            .map(|(bin, new, stable)| {
                format!("bin {bin} {:.1}% vs {:.1}%", 100.0 * new, 100.0 * stable)
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "output {}: PSI {:.3}, chi-square p {:.2e} over {:.0} {role} and {:.0} stable predictions ({shares})",
            self.output, self.psi, self.p_value, self.new_rows, self.stable_rows
        )
    }
}

/// The p-value of a chi-square test of homogeneity of two samples' counts per bin
/// (`(new, stable)` per bin); 1 when there is nothing to test. Bins where either
/// sample would expect fewer than [`FEWEST_EXPECTED`] rows are pooled into one (and
/// that pool into the smallest other bin if it is still sparse), the textbook
/// condition for the chi-square approximation to hold at any sample size.
fn homogeneity_p_value(table: &[(f64, f64)]) -> f64 {
    let rows_a: f64 = table.iter().map(|c| c.0).sum();
    let rows_b: f64 = table.iter().map(|c| c.1).sum();
    let total = rows_a + rows_b;
    if rows_a == 0.0 || rows_b == 0.0 {
        return 1.0;
    }
    let sparse = |&(a, b): &(f64, f64)| {
        let column = a + b;
        (rows_a * column / total).min(rows_b * column / total) < FEWEST_EXPECTED
    };
    type Cells = Vec<(f64, f64)>;
    let (sparse_cells, mut cells): (Cells, Cells) =
        table.iter().copied().partition(|cell| sparse(cell));
    let pooled = sparse_cells
        .iter()
        .fold((0.0, 0.0), |pool, cell| (pool.0 + cell.0, pool.1 + cell.1));
    if pooled.0 + pooled.1 > 0.0 {
        if sparse(&pooled) {
            if let Some(smallest) = cells
                .iter_mut()
                .min_by(|x, y| (x.0 + x.1).total_cmp(&(y.0 + y.1)))
            {
                *smallest = (smallest.0 + pooled.0, smallest.1 + pooled.1);
            }
        } else {
            cells.push(pooled);
        }
    }
    if cells.len() < 2 {
        return 1.0;
    }
    let statistic: f64 = cells
        .iter()
        .map(|&(a, b)| {
            let column = a + b;
            let expected_a = rows_a * column / total;
            let expected_b = rows_b * column / total;
            (a - expected_a).powi(2) / expected_a + (b - expected_b).powi(2) / expected_b
        })
        .sum();
    let degrees = (cells.len() - 1) as f64;
    ChiSquared::new(degrees).map_or(1.0, |chi| chi.sf(statistic))
}

/// Counts grouped by output: output -> bin -> rows.
fn by_output(counts: &Counts) -> BTreeMap<&str, BTreeMap<&str, f64>> {
    let mut outputs: BTreeMap<&str, BTreeMap<&str, f64>> = BTreeMap::new();
    for ((output, bin), rows) in counts {
        if *rows > 0.0 {
            *outputs
                .entry(output.as_str())
                .or_default()
                .entry(bin.as_str())
                .or_default() += rows;
        }
    }
    outputs
}

/// Judges the check from the two revisions' counts.
pub fn judge(plan: &AgreementPlan, new: &CountsSample, stable: &CountsSample) -> CheckResult {
    let mut result = CheckResult {
        name: AGREEMENT_CHECK.into(),
        query: format!("{}; stable: {}", plan.new, plan.stable),
        value: None,
        threshold: format!(
            "PSI <= {} unless chi-square p < {}",
            plan.max_psi, plan.significance
        ),
        verdict: CheckVerdict::NoData,
        detail: None,
    };
    let (new, stable) = match (new, stable) {
        (Err(e), _) | (_, Err(e)) => {
            result.verdict = CheckVerdict::Error;
            result.detail = Some(e.clone());
            return result;
        }
        (Ok(new), Ok(stable)) => (by_output(new), by_output(stable)),
    };
    if new.is_empty() || stable.is_empty() {
        let side = if new.is_empty() { &plan.role } else { "stable" };
        result.detail = Some(format!(
            "no predictions of the {side} revision in the window (no traffic yet, or its model has no output the server counts: docs/model-server.md)"
        ));
        return result;
    }
    let comparisons: Vec<Comparison> = new
        .iter()
        .filter_map(|(output, bins)| Some(Comparison::of(output, bins, stable.get(output)?)))
        .collect();
    let Some(worst) = comparisons
        .iter()
        .max_by(|a, b| a.psi.total_cmp(&b.psi))
        .cloned()
    else {
        result.detail = Some(format!(
            "the {} and the stable revision count different outputs ({:?} vs {:?})",
            plan.role,
            new.keys().collect::<Vec<_>>(),
            stable.keys().collect::<Vec<_>>()
        ));
        return result;
    };
    let failing = comparisons.iter().find(|c| c.fails(plan));
    let thinnest = comparisons
        .iter()
        .min_by(|a, b| {
            a.new_rows
                .min(a.stable_rows)
                .total_cmp(&b.new_rows.min(b.stable_rows))
        })
        .expect("at least one comparison");
    if failing.is_none() && thinnest.new_rows.min(thinnest.stable_rows) < plan.min_rows {
        result.value = Some(worst.psi);
        result.detail = Some(format!(
            "{:.0} {} and {:.0} stable predictions in the window, fewer than minRows {}",
            thinnest.new_rows, plan.role, thinnest.stable_rows, plan.min_rows
        ));
        return result;
    }
    result.value = Some(worst.psi);
    result.verdict = if failing.is_some() {
        CheckVerdict::Fail
    } else {
        CheckVerdict::Pass
    };
    let shown = failing.unwrap_or(&worst);
    result.detail = Some(match failing {
        Some(_) => format!(
            "predictions disagree with stable: {}",
            shown.describe(&plan.role)
        ),
        None => format!(
            "predictions agree with stable: {}",
            shown.describe(&plan.role)
        ),
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PredictionAgreementSpec {
        PredictionAgreementSpec::default()
    }

    fn canary_plan() -> AgreementPlan {
        plan(
            &spec(),
            "revision=\"new\"",
            "revision=\"old\"",
            None,
            "canary",
        )
        .unwrap()
    }

    fn counts(output: &str, rows: &[(&str, f64)]) -> Counts {
        rows.iter()
            .map(|(bin, n)| ((output.to_string(), bin.to_string()), *n))
            .collect()
    }

    /// The class shares of the `mlp` fixture on random rows (v1), scaled to `rows`.
    fn mlp_v1(rows: f64) -> Counts {
        counts(
            "logits",
            &[
                ("0", 0.074 * rows),
                ("1", 0.149 * rows),
                ("2", 0.457 * rows),
                ("3", 0.320 * rows),
            ],
        )
    }

    #[test]
    fn the_queries_compare_the_same_window_or_the_window_before_the_switch() {
        let p = canary_plan();
        assert_eq!(
            p.new,
            "sum by (output, bin) (increase(sluice_predictions_total{revision=\"new\"}[120s]))"
        );
        assert_eq!(
            p.stable,
            "sum by (output, bin) (increase(sluice_predictions_total{revision=\"old\"}[120s]))"
        );
        let after = plan(&spec(), "n", "s", Some(40), "preview").unwrap();
        assert_eq!(
            after.new,
            "sum by (output, bin) (increase(sluice_predictions_total{n}[40s]))"
        );
        assert_eq!(
            after.stable,
            "sum by (output, bin) (increase(sluice_predictions_total{s}[120s] offset 40s))"
        );
        // Not on a preview before the switch, nor when turned off.
        assert_eq!(plan(&spec(), "n", "s", None, "preview"), None);
        let off = PredictionAgreementSpec {
            enabled: false,
            ..spec()
        };
        assert_eq!(plan(&off, "n", "s", None, "canary"), None);
    }

    #[test]
    fn inverted_predictions_fail_and_name_the_check_and_its_values() {
        // mlp with its logits negated: the shares of the classes it picks instead.
        let inverted = counts(
            "logits",
            &[("0", 556.0), ("1", 206.0), ("2", 120.0), ("3", 118.0)],
        );
        let r = judge(&canary_plan(), &Ok(inverted), &Ok(mlp_v1(2000.0)));
        assert_eq!(r.verdict, CheckVerdict::Fail, "{r:?}");
        let psi = r.value.unwrap();
        assert!(psi > 1.0, "{psi}");
        let detail = r.detail.unwrap();
        assert!(
            detail.starts_with("predictions disagree with stable: output logits: PSI 1."),
            "{detail}"
        );
        assert!(
            detail.contains("over 1000 canary and 2000 stable"),
            "{detail}"
        );
        assert!(detail.contains("bin 0 55.6% vs 7.4%"), "{detail}");
    }

    #[test]
    fn a_retrained_model_that_mostly_agrees_passes_even_on_many_rows() {
        // The shares of mlp v1 with its weights perturbed by 10% (92% of rows agree):
        // with this many rows the difference is significant, but small.
        let retrained = counts(
            "logits",
            &[
                ("0", 0.0765 * 1e5),
                ("1", 0.1363 * 1e5),
                ("2", 0.4517 * 1e5),
                ("3", 0.3355 * 1e5),
            ],
        );
        let r = judge(&canary_plan(), &Ok(retrained), &Ok(mlp_v1(1e5)));
        assert_eq!(r.verdict, CheckVerdict::Pass, "{r:?}");
        assert!(r.value.unwrap() < 0.01, "{r:?}");
    }

    #[test]
    fn a_large_difference_on_few_rows_that_could_be_chance_passes() {
        // PSI over 0.2, but 3 rows against 3 rows in one moved bin is no evidence.
        let plan = AgreementPlan {
            min_rows: 10.0,
            ..canary_plan()
        };
        let new = counts("y", &[("a", 8.0), ("b", 2.0)]);
        let stable = counts("y", &[("a", 4.0), ("b", 6.0)]);
        let r = judge(&plan, &Ok(new), &Ok(stable));
        assert!(r.value.unwrap() > 0.2, "{r:?}");
        assert_eq!(r.verdict, CheckVerdict::Pass, "{r:?}");
    }

    #[test]
    fn too_few_rows_or_none_is_no_data_and_a_prometheus_error_is_an_error() {
        let p = canary_plan();
        let r = judge(&p, &Ok(mlp_v1(150.0)), &Ok(mlp_v1(5000.0)));
        assert!(r.value.unwrap() < 0.01, "{r:?}");
        assert_eq!(r.verdict, CheckVerdict::NoData);
        assert_eq!(
            r.detail.unwrap(),
            "150 canary and 5000 stable predictions in the window, fewer than minRows 200"
        );
        let r = judge(&p, &Ok(Counts::new()), &Ok(mlp_v1(5000.0)));
        assert_eq!(r.verdict, CheckVerdict::NoData);
        assert!(
            r.detail
                .unwrap()
                .starts_with("no predictions of the canary revision")
        );
        let r = judge(
            &p,
            &Ok(mlp_v1(500.0)),
            &Err("Prometheus query failed".into()),
        );
        assert_eq!(r.verdict, CheckVerdict::Error);
    }

    #[test]
    fn every_output_is_judged_and_a_failing_one_fails_the_check() {
        let mut new = mlp_v1(1000.0);
        new.extend(counts("value", &[("0.178", 900.0), ("0.316", 100.0)]));
        let mut stable = mlp_v1(1000.0);
        stable.extend(counts("value", &[("0.178", 100.0), ("0.316", 900.0)]));
        let r = judge(&canary_plan(), &Ok(new), &Ok(stable));
        assert_eq!(r.verdict, CheckVerdict::Fail, "{r:?}");
        assert!(r.detail.unwrap().contains("output value:"));
    }

    #[test]
    fn sparse_bins_are_pooled_for_the_test() {
        // Two bins of 3 rows each, opposite sides: pooled into one cell of (3, 3).
        let p = homogeneity_p_value(&[(500.0, 500.0), (3.0, 0.0), (0.0, 3.0)]);
        assert!((p - 1.0).abs() < 1e-9, "{p}");
        // A pool still too sparse joins the smallest other bin.
        let p = homogeneity_p_value(&[(500.0, 500.0), (300.0, 300.0), (2.0, 0.0)]);
        assert!(p > 0.5, "{p}");
        assert_eq!(homogeneity_p_value(&[(10.0, 0.0)]), 1.0);
        assert!(homogeneity_p_value(&[(900.0, 100.0), (100.0, 900.0)]) < 1e-100);
    }

    #[test]
    fn a_clear_disagreement_fails_before_min_rows() {
        // 120 canary rows, all in the class stable picks 7% of the time.
        let new = counts("logits", &[("0", 120.0)]);
        let r = judge(&canary_plan(), &Ok(new), &Ok(mlp_v1(2000.0)));
        assert_eq!(r.verdict, CheckVerdict::Fail, "{r:?}");
    }
}
