//! The statistical tests behind drift detection, as plain functions:
//! two-sample Kolmogorov-Smirnov, the population stability index and Pearson's
//! chi-squared goodness of fit. They follow SciPy's definitions
//! (`scipy.stats.ks_2samp(method="asymp")`, `scipy.stats.chisquare`) so that
//! their results can be checked against it.

/// Smallest proportion used by the population stability index, so that an
/// empty bin does not make it infinite.
pub const PSI_FLOOR: f64 = 1e-4;

/// A test's statistic and, where the test has one, its p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    /// The statistic.
    pub statistic: f64,
    /// The p-value.
    pub pvalue: Option<f64>,
}

/// Two-sample Kolmogorov-Smirnov test of two sorted samples: the largest
/// distance between their empirical distribution functions, and its p-value
/// from the Kolmogorov distribution for `round(n1 n2 / (n1 + n2))` observations.
pub fn ks_two_sample(a: &[f64], b: &[f64]) -> TestResult {
    if a.is_empty() || b.is_empty() {
        return TestResult {
            statistic: 0.0,
            pvalue: Some(1.0),
        };
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut distance: f64 = 0.0;
    while i < a.len() && j < b.len() {
        // Step past every copy of the next value in both samples at once, so
        // that ties are handled as `searchsorted(side="right")` does.
        let value = a[i].min(b[j]);
        while i < a.len() && a[i] <= value {
            i += 1;
        }
        while j < b.len() && b[j] <= value {
            j += 1;
        }
        distance = distance.max((i as f64 / n1 - j as f64 / n2).abs());
    }
    let effective = (n1 * n2 / (n1 + n2)).round().max(1.0) as u64;
    TestResult {
        statistic: distance,
        pvalue: Some(kolmogorov_sf(effective, distance)),
    }
}

/// P(D_n >= d) for the two-sided one-sample Kolmogorov statistic D_n.
///
/// Uses Marsaglia, Tsang and Wang's exact method ("Evaluating Kolmogorov's
/// distribution", J. Stat. Software 8(18), 2003) and, far in the tail where the
/// answer is below about 1e-6, their closed-form approximation.
pub fn kolmogorov_sf(n: u64, d: f64) -> f64 {
    if d <= 0.0 {
        return 1.0;
    }
    if d >= 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    let s = d * d * nf;
    if s > 7.24 {
        let exponent = -(2.000071 + 0.331 / nf.sqrt() + 1.409 / nf) * s;
        return (2.0 * exponent.exp()).clamp(0.0, 1.0);
    }
    (1.0 - kolmogorov_cdf_exact(n, d)).clamp(0.0, 1.0)
}

/// P(D_n < d), exactly, by the matrix power of Marsaglia, Tsang and Wang.
fn kolmogorov_cdf_exact(n: u64, d: f64) -> f64 {
    let nf = n as f64;
    let k = (nf * d) as usize + 1;
    let m = 2 * k - 1;
    let h = k as f64 - nf * d;
    let mut matrix = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..m {
            if i + 1 >= j {
                matrix[i * m + j] = 1.0;
            }
        }
    }
    for i in 0..m {
        matrix[i * m] -= h.powi(i as i32 + 1);
        matrix[(m - 1) * m + i] -= h.powi((m - i) as i32);
    }
    if 2.0 * h - 1.0 > 0.0 {
        matrix[(m - 1) * m] += (2.0 * h - 1.0).powi(m as i32);
    }
    for i in 0..m {
        for j in 0..m {
            if i + 1 > j {
                for g in 1..=(i + 1 - j) {
                    matrix[i * m + j] /= g as f64;
                }
            }
        }
    }
    let (power, mut exponent) = matrix_power(&matrix, m, n);
    let mut s = power[(k - 1) * m + (k - 1)];
    for i in 1..=n {
        s = s * i as f64 / nf;
        if s < 1e-140 {
            s *= 1e140;
            exponent -= 140;
        }
    }
    s * 10f64.powi(exponent)
}

/// `matrix` (m x m) to the power `n`, as a scaled matrix and a power of ten.
fn matrix_power(matrix: &[f64], m: usize, n: u64) -> (Vec<f64>, i32) {
    if n == 1 {
        return (matrix.to_vec(), 0);
    }
    let (half, half_exponent) = matrix_power(matrix, m, n / 2);
    let mut result = multiply(&half, &half, m);
    let mut exponent = 2 * half_exponent;
    if n % 2 == 1 {
        result = multiply(matrix, &result, m);
    }
    if result[(m / 2) * m + m / 2] > 1e140 {
        for value in &mut result {
            *value *= 1e-140;
        }
        exponent += 140;
    }
    (result, exponent)
}

fn multiply(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * m];
    for i in 0..m {
        for l in 0..m {
            let factor = a[i * m + l];
            if factor == 0.0 {
                continue;
            }
            let row = &b[l * m..(l + 1) * m];
            for (out, value) in c[i * m..(i + 1) * m].iter_mut().zip(row) {
                *out += factor * value;
            }
        }
    }
    c
}

/// Index of the bin `value` falls in, for ascending inner `edges` (bins are
/// `(-inf, e0), [e0, e1), ..., [e_last, +inf)`, like `searchsorted(side="right")`).
pub fn bin_index(edges: &[f64], value: f64) -> usize {
    edges.partition_point(|edge| *edge <= value)
}

/// Proportions of `values` in each of the `edges.len() + 1` bins.
pub fn bin_proportions(edges: &[f64], values: &[f64]) -> Vec<f64> {
    let mut counts = vec![0.0; edges.len() + 1];
    for value in values {
        counts[bin_index(edges, *value)] += 1.0;
    }
    let total = values.len().max(1) as f64;
    counts.iter().map(|count| count / total).collect()
}

/// Population stability index of `actual` proportions against `expected`
/// ones, both floored at [`PSI_FLOOR`]: sum((a - e) ln(a / e)).
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(e, a)| {
            let (e, a) = (e.max(PSI_FLOOR), a.max(PSI_FLOOR));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// Pearson's chi-squared test of `observed` counts against `expected` counts
/// (same total), with `len - 1` degrees of freedom.
pub fn chi_squared(observed: &[f64], expected: &[f64]) -> TestResult {
    let statistic: f64 = observed
        .iter()
        .zip(expected)
        .map(|(o, e)| (o - e) * (o - e) / e)
        .sum();
    let freedom = observed.len().saturating_sub(1) as f64;
    let pvalue = if freedom == 0.0 {
        1.0
    } else {
        statrs::function::gamma::gamma_ur(freedom / 2.0, statistic / 2.0)
    };
    TestResult {
        statistic,
        pvalue: Some(pvalue),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "{actual} is not within {tolerance} of {expected}"
        );
    }

    #[test]
    fn kolmogorov_matches_known_values() {
        // scipy.stats.kstwo.sf(d, n)
        close(kolmogorov_sf(10, 0.274), 0.3715203845434957, 1e-9);
        close(kolmogorov_sf(100, 0.1), 0.2526927570063874, 1e-9);
        // For n > 140 SciPy switches to the Pelz-Good approximation; the exact
        // method agrees with it to about 1e-8.
        close(kolmogorov_sf(1000, 0.043), 0.04811098765192656, 1e-7);
        close(kolmogorov_sf(148, 0.5), 0.0, 1e-6);
        assert_eq!(kolmogorov_sf(50, 0.0), 1.0);
        assert_eq!(kolmogorov_sf(50, 1.0), 0.0);
    }

    #[test]
    fn kolmogorov_tail_approximation_joins_the_exact_method() {
        let n = 400;
        let d = (7.24f64 / n as f64).sqrt();
        let exact = 1.0 - kolmogorov_cdf_exact(n, d);
        let approximate = kolmogorov_sf(n, d + 1e-9);
        close(approximate, exact, 1e-7);
    }

    #[test]
    fn ks_statistic_handles_ties_like_searchsorted() {
        let a = [1.0, 2.0, 2.0, 3.0];
        let b = [2.0, 2.0, 4.0];
        // ECDFs after 1: 1/4 vs 0; after 2: 3/4 vs 2/3; after 3: 1 vs 2/3.
        let result = ks_two_sample(&a, &b);
        close(result.statistic, 1.0 / 3.0, 1e-12);
        assert_eq!(ks_two_sample(&a, &a).statistic, 0.0);
    }

    #[test]
    fn psi_is_zero_for_equal_proportions_and_grows_with_shift() {
        let edges = [1.0, 2.0, 3.0];
        assert_eq!(bin_index(&edges, 0.5), 0);
        assert_eq!(bin_index(&edges, 1.0), 1);
        assert_eq!(bin_index(&edges, 3.5), 3);
        let expected = bin_proportions(&edges, &[0.5, 1.5, 2.5, 3.5]);
        assert_eq!(psi(&expected, &expected), 0.0);
        let shifted = bin_proportions(&edges, &[2.5, 3.5, 3.6, 3.7]);
        assert!(psi(&expected, &shifted) > 1.0);
    }

    #[test]
    fn chi_squared_matches_known_values() {
        // scipy.stats.chisquare([16, 18, 16, 14, 12, 12], [16, 16, 16, 16, 16, 8])
        let result = chi_squared(
            &[16., 18., 16., 14., 12., 12.],
            &[16., 16., 16., 16., 16., 8.],
        );
        close(result.statistic, 3.5, 1e-12);
        close(result.pvalue.unwrap(), 0.62338, 1e-5);
    }
}
