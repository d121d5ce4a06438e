//! Statistics for judging and combining proxy scores: ranks with averaged ties, the Pearson,
//! Spearman and Kendall tau-b correlations between a proxy and the trained quality, ridge
//! regression with an intercept (to combine several proxies into one predictor), and a
//! deterministic k-fold split for cross-validating that regression.
//!
//! NaN is not a score: every function here expects finite inputs, and callers drop candidates
//! whose proxy failed before calling (debug builds assert it where a NaN would silently
//! corrupt an order).

use crate::linalg;

fn debug_assert_no_nan(values: &[f64]) {
    debug_assert!(
        values.iter().all(|v| !v.is_nan()),
        "NaN in a statistic's input: callers filter failed scores first"
    );
}

/// 1-based ranks of `x`, ties sharing the average of the ranks they span
/// (`[3, 1, 4, 1, 5]` → `[3, 1.5, 4, 1.5, 5]`), as Spearman's correlation needs.
///
/// `x` must hold no NaN (callers filter; debug builds assert). ±∞ rank as the extremes.
pub fn ranks(x: &[f64]) -> Vec<f64> {
    debug_assert_no_nan(x);
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
    let mut result = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        // `==` rather than total_cmp so that −0.0 and +0.0 tie.
        let end = start
            + order[start..]
                .iter()
                .take_while(|&&i| x[i] == x[order[start]])
                .count();
        // Positions start..end (0-based) are ranks start+1..=end; their mean is (start+1+end)/2.
        let average_rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            result[i] = average_rank;
        }
        start = end;
    }
    result
}

/// Pearson's linear correlation coefficient of `x` and `y`, in [−1, 1]; 0.0 when either side
/// is constant (or there are fewer than two points), where the coefficient is undefined.
///
/// # Panics
/// If `x.len() != y.len()`.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "pearson: x and y differ in length");
    debug_assert_no_nan(x);
    debug_assert_no_nan(y);
    // Constancy tested exactly: the mean of equal values can round away from them, which
    // would leave a rounding-noise variance and a meaningless coefficient.
    let constant = |v: &[f64]| v.iter().all(|&e| e == v[0]);
    if x.len() < 2 || constant(x) || constant(y) {
        return 0.0;
    }
    let n = x.len() as f64;
    let mean_x = x.iter().sum::<f64>() / n;
    let mean_y = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (dx, dy) = (a - mean_x, b - mean_y);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0)
}

/// Spearman's rank correlation: Pearson's coefficient of the tie-averaged ranks, in [−1, 1];
/// 0.0 when either side is constant.
///
/// # Panics
/// If `x.len() != y.len()`.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "spearman: x and y differ in length");
    pearson(&ranks(x), &ranks(y))
}

/// Kendall's tau-b, the rank correlation over pairs corrected for ties:
/// `(concordant − discordant) / √((n₀ − tied_x)(n₀ − tied_y))` with `n₀ = n(n−1)/2` and
/// `tied_x` / `tied_y` the pairs tied in x / in y (a pair tied in both counts in each).
/// In [−1, 1]; 0.0 when undefined (fewer than two points, or either side constant).
///
/// O(n²) over all pairs, fine for the few thousand candidates of a search.
///
/// # Panics
/// If `x.len() != y.len()`.
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "kendall_tau_b: x and y differ in length");
    debug_assert_no_nan(x);
    debug_assert_no_nan(y);
    let n = x.len();
    // Counts of pairs; u64 since n² overflows u32 beyond n ≈ 65 000.
    let (mut concordant, mut discordant, mut tied_x, mut tied_y) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..n {
        for j in i + 1..n {
            let dx = x[i] - x[j];
            let dy = y[i] - y[j];
            if dx == 0.0 {
                tied_x += 1;
            }
            if dy == 0.0 {
                tied_y += 1;
            }
            if dx != 0.0 && dy != 0.0 {
                if (dx > 0.0) == (dy > 0.0) {
                    concordant += 1;
                } else {
                    discordant += 1;
                }
            }
        }
    }
    let pairs = (n * n.saturating_sub(1) / 2) as u64;
    let denominator = ((pairs - tied_x) as f64 * (pairs - tied_y) as f64).sqrt();
    if denominator == 0.0 {
        return 0.0;
    }
    ((concordant as f64 - discordant as f64) / denominator).clamp(-1.0, 1.0)
}

/// Ridge regression with an intercept: minimises `Σᵢ (yᵢ − b − wᵀxᵢ)² + λ‖w‖²` and returns
/// `(w, b)`. `x[i]` is sample i's feature vector (n samples × p features, every row the same
/// length); the intercept is not penalised, which is done by centring each feature column and
/// `y` and recovering `b = ȳ − wᵀx̄`. Features are not rescaled: λ weighs each weight in the
/// units of its feature, so standardise first when features differ in scale.
///
/// The normal equations `(XcᵀXc + λI) w = Xcᵀyc` are solved by Cholesky
/// ([`linalg::solve_spd`]). When they are singular (λ = 0 with collinear or constant columns,
/// or fewer samples than features) a tiny ridge, 1e-12 of the mean diagonal, is added and grown
/// tenfold until the factorisation succeeds: the weights then approach the minimum-norm least
/// squares solution and a constant column gets weight 0. No samples gives `(vec![], 0.0)`;
/// non-finite inputs give NaN weights and intercept.
///
/// # Panics
/// If `x.len() != y.len()`, the rows differ in length, or `lambda` is negative or not finite.
pub fn ridge(x: &[Vec<f64>], y: &[f64], lambda: f64) -> (Vec<f64>, f64) {
    assert_eq!(
        x.len(),
        y.len(),
        "ridge: {} samples but {} targets",
        x.len(),
        y.len()
    );
    assert!(
        lambda >= 0.0 && lambda.is_finite(),
        "ridge: lambda must be finite and ≥ 0, got {lambda}"
    );
    let samples = x.len();
    if samples == 0 {
        return (Vec::new(), 0.0);
    }
    let features = x[0].len();
    assert!(
        x.iter().all(|row| row.len() == features),
        "ridge: rows differ in length"
    );
    let count = samples as f64;
    let mean_y = y.iter().sum::<f64>() / count;
    let mut mean_x = vec![0.0; features];
    for row in x {
        for (m, v) in mean_x.iter_mut().zip(row) {
            *m += v;
        }
    }
    for m in &mut mean_x {
        *m /= count;
    }
    // gram: XcᵀXc, p × p row-major; moment: Xcᵀyc, length p.
    let mut gram = vec![0.0; features * features];
    let mut moment = vec![0.0; features];
    let mut centred = vec![0.0; features];
    for (row, &target) in x.iter().zip(y) {
        for ((c, v), m) in centred.iter_mut().zip(row).zip(&mean_x) {
            *c = v - m;
        }
        let centred_y = target - mean_y;
        for (j, &cj) in centred.iter().enumerate() {
            moment[j] += cj * centred_y;
            for (g, &ck) in gram[j * features..(j + 1) * features]
                .iter_mut()
                .zip(&centred)
            {
                *g += cj * ck;
            }
        }
    }
    let mean_diagonal =
        (0..features).map(|j| gram[j * features + j]).sum::<f64>() / features.max(1) as f64;
    let jitter_base = if mean_diagonal > 0.0 {
        mean_diagonal
    } else {
        1.0
    };
    let mut extra = 0.0;
    // 1e-12 · 10^k for k < 30 reaches 1e17 of the mean diagonal: far past any rounding trouble.
    for attempt in 0..=30 {
        let mut system = gram.clone();
        for j in 0..features {
            system[j * features + j] += lambda + extra;
        }
        if let Some(weights) = linalg::solve_spd(&system, &moment, features) {
            let intercept = mean_y - weights.iter().zip(&mean_x).map(|(w, m)| w * m).sum::<f64>();
            return (weights, intercept);
        }
        extra = jitter_base * 1e-12 * 10f64.powi(attempt);
    }
    (vec![f64::NAN; features], f64::NAN)
}

/// A deterministic k-fold split of `n` samples: fold f holds the test indices `i` with
/// `i % k == f`, ascending, so every index is in exactly one fold and fold sizes differ by at
/// most one. `k` is clamped to `[2, n]`; hence `n = 1` gives the single fold `[[0]]` and
/// `n = 0` no folds. Interleaving (rather than contiguous blocks) keeps each fold spread over
/// the order the samples were evaluated in.
pub fn kfold(n: usize, k: usize) -> Vec<Vec<usize>> {
    let k = k.max(2).min(n);
    let mut folds = vec![Vec::with_capacity(n.div_ceil(k.max(1))); k];
    for i in 0..n {
        folds[i % k].push(i);
    }
    folds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "got {actual}, expected {expected} (tolerance {tolerance})"
        );
    }

    #[test]
    fn ranks_average_ties() {
        // Sorted: 1, 1, 3, 4, 5 at positions 1..5; the two 1s share (1 + 2)/2 = 1.5.
        assert_eq!(
            ranks(&[3.0, 1.0, 4.0, 1.0, 5.0]),
            vec![3.0, 1.5, 4.0, 1.5, 5.0]
        );
        // All equal: every value shares (1 + 2 + 3)/3 = 2.
        assert_eq!(ranks(&[7.0, 7.0, 7.0]), vec![2.0, 2.0, 2.0]);
        // Three-way tie in the middle: 10 → 1, the 20s share (2 + 3 + 4)/3 = 3, 30 → 5.
        assert_eq!(
            ranks(&[20.0, 30.0, 20.0, 10.0, 20.0]),
            vec![3.0, 5.0, 3.0, 1.0, 3.0]
        );
        // −0.0 and +0.0 are equal values, so they tie: (1 + 2)/2.
        assert_eq!(ranks(&[0.0, -0.0]), vec![1.5, 1.5]);
        assert!(ranks(&[]).is_empty());
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "NaN")]
    fn ranks_reject_nan_in_debug_builds() {
        ranks(&[1.0, f64::NAN]);
    }

    #[test]
    fn pearson_by_hand() {
        // x = [1, 2, 3], y = [2, 4, 7]: means 2 and 13/3; dx = [−1, 0, 1],
        // dy = [−7/3, −1/3, 8/3]; Sxy = 7/3 + 8/3 = 5, Sxx = 2, Syy = (49 + 1 + 64)/9 = 38/3;
        // r = 5/√(2 · 38/3) = 5/√(76/3) = √(75/76).
        assert_close(
            pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 7.0]),
            (75.0f64 / 76.0).sqrt(),
            1e-15,
        );
        // Exact lines: y = 3x − 1 → 1, y = −x → −1.
        assert_close(pearson(&[1.0, 2.0, 4.0], &[2.0, 5.0, 11.0]), 1.0, 1e-15);
        assert_close(pearson(&[1.0, 2.0, 4.0], &[-1.0, -2.0, -4.0]), -1.0, 1e-15);
    }

    #[test]
    fn pearson_is_zero_when_undefined() {
        // 0.1 three times: its mean rounds to 0.10000000000000002, so only an exact constancy
        // test avoids a rounding-noise coefficient.
        assert_eq!(pearson(&[0.1, 0.1, 0.1], &[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(pearson(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0]), 0.0);
        assert_eq!(pearson(&[1.0], &[2.0]), 0.0);
        assert_eq!(pearson(&[], &[]), 0.0);
    }

    #[test]
    fn spearman_of_monotone_is_one_and_of_reversed_is_minus_one() {
        // y = x³ is not linear but strictly increasing: identical ranks → 1.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let cubes = [1.0, 8.0, 27.0, 64.0, 125.0];
        assert_close(spearman(&x, &cubes), 1.0, 1e-15);
        // y = −exp(x) is strictly decreasing: ranks reversed → −1.
        let falling: Vec<f64> = x.iter().map(|v: &f64| -v.exp()).collect();
        assert_close(spearman(&x, &falling), -1.0, 1e-15);
    }

    #[test]
    fn spearman_with_ties_by_hand() {
        // x = [1, 2, 2, 3] → ranks [1, 2.5, 2.5, 4]; y = [1, 3, 2, 2] → ranks [1, 4, 2.5, 2.5].
        // Both rank means are 2.5: dx = [−1.5, 0, 0, 1.5], dy = [−1.5, 1.5, 0, 0];
        // Sxy = 2.25, Sxx = Syy = 4.5, so ρ = 2.25 / 4.5 = 0.5.
        assert_close(
            spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 2.0]),
            0.5,
            1e-15,
        );
    }

    #[test]
    fn kendall_tau_b_with_ties_by_hand() {
        // x = [1, 2, 2, 3], y = [1, 3, 2, 2]; the 6 pairs (i, j):
        // (0,1) x↑ y↑ concordant   (0,2) x↑ y↑ concordant   (0,3) x↑ y↑ concordant
        // (1,2) x tied (2 = 2)     (1,3) x↑ y↓ discordant   (2,3) y tied (2 = 2)
        // C = 3, D = 1, n₀ = 6, tied_x = 1, tied_y = 1:
        // τ_b = (3 − 1)/√((6 − 1)(6 − 1)) = 2/5 = 0.4.
        assert_close(
            kendall_tau_b(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 2.0]),
            0.4,
            1e-15,
        );
        // A pair tied in both counts in both tie totals: x = [1, 1, 2], y = [5, 5, 6]:
        // (0,1) tied in x and y, (0,2) and (1,2) concordant; C = 2, D = 0, n₀ = 3,
        // tied_x = tied_y = 1: τ_b = 2/√(2 · 2) = 1.
        assert_close(
            kendall_tau_b(&[1.0, 1.0, 2.0], &[5.0, 5.0, 6.0]),
            1.0,
            1e-15,
        );
    }

    #[test]
    fn kendall_tau_b_without_ties_by_hand() {
        // x = [1, 2, 3, 4], y = [1, 3, 2, 4]: of the 6 pairs only (1,2) is discordant
        // (x 2 < 3, y 3 > 2): τ = (5 − 1)/6 = 2/3.
        assert_close(
            kendall_tau_b(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]),
            2.0 / 3.0,
            1e-15,
        );
        // Fully reversed: all 6 pairs discordant → −1.
        assert_close(
            kendall_tau_b(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]),
            -1.0,
            1e-15,
        );
    }

    #[test]
    fn kendall_tau_b_is_zero_when_undefined() {
        // Every pair tied in x: n₀ − tied_x = 0.
        assert_eq!(kendall_tau_b(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(kendall_tau_b(&[1.0], &[1.0]), 0.0);
        assert_eq!(kendall_tau_b(&[], &[]), 0.0);
    }

    #[test]
    fn ridge_without_penalty_recovers_exact_linear_data() {
        // y = 2a − 3b + 1 at six points that span the plane:
        // (0,0) → 1, (1,0) → 3, (0,1) → −2, (1,1) → 0, (2,1) → 2, (3,5) → −8.
        let x = vec![
            vec![0.0, 0.0],
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![1.0, 1.0],
            vec![2.0, 1.0],
            vec![3.0, 5.0],
        ];
        let y = [1.0, 3.0, -2.0, 0.0, 2.0, -8.0];
        let (weights, intercept) = ridge(&x, &y, 0.0);
        assert_eq!(weights.len(), 2);
        assert_close(weights[0], 2.0, 1e-12);
        assert_close(weights[1], -3.0, 1e-12);
        assert_close(intercept, 1.0, 1e-12);
    }

    #[test]
    fn ridge_one_feature_by_hand() {
        // x = [0, 1, 2], y = [0, 1, 2]: centred x = [−1, 0, 1], centred y the same;
        // Sxx = 2, Sxy = 2, so w = Sxy/(Sxx + λ) = 2/(2 + 2) = 0.5 at λ = 2, and the
        // unpenalised intercept is ȳ − w·x̄ = 1 − 0.5·1 = 0.5.
        let x = vec![vec![0.0], vec![1.0], vec![2.0]];
        let (weights, intercept) = ridge(&x, &[0.0, 1.0, 2.0], 2.0);
        assert_close(weights[0], 0.5, 1e-15);
        assert_close(intercept, 0.5, 1e-15);
    }

    #[test]
    fn ridge_with_large_penalty_shrinks_weights_to_zero() {
        // As λ → ∞, w ≈ Xcᵀyc/λ → 0 and the intercept → ȳ. Same data as the exact fit:
        // ȳ = (1 + 3 − 2 + 0 + 2 − 8)/6 = −4/6 = −2/3.
        let x = vec![
            vec![0.0, 0.0],
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![1.0, 1.0],
            vec![2.0, 1.0],
            vec![3.0, 5.0],
        ];
        let y = [1.0, 3.0, -2.0, 0.0, 2.0, -8.0];
        let norm = |w: &[f64]| w.iter().map(|v| v * v).sum::<f64>().sqrt();
        let (small, _) = ridge(&x, &y, 0.0);
        let (medium, _) = ridge(&x, &y, 10.0);
        let (large, intercept) = ridge(&x, &y, 1e9);
        assert!(norm(&medium) < norm(&small), "λ = 10 did not shrink");
        assert!(norm(&large) < 1e-7, "λ = 1e9 left weights {large:?}");
        assert_close(intercept, -2.0 / 3.0, 1e-7);
    }

    #[test]
    fn ridge_without_penalty_survives_collinear_and_constant_columns() {
        // Columns 0 and 1 identical (a), column 2 constant, y = 2a: XᵀX is singular, the tiny
        // added ridge splits the slope evenly (the minimum-norm solution w = [1, 1, 0]),
        // and the intercept is ȳ − w·x̄ = 4 − (2 + 2 + 0) = 0 (x̄ = [2, 2, 7], ȳ = 4).
        let x = vec![
            vec![1.0, 1.0, 7.0],
            vec![2.0, 2.0, 7.0],
            vec![3.0, 3.0, 7.0],
        ];
        let (weights, intercept) = ridge(&x, &[2.0, 4.0, 6.0], 0.0);
        assert_close(weights[0], 1.0, 1e-9);
        assert_close(weights[1], 1.0, 1e-9);
        assert_eq!(weights[2], 0.0);
        assert_close(intercept, 0.0, 1e-8);
    }

    #[test]
    fn ridge_edge_cases() {
        assert_eq!(ridge(&[], &[], 1.0), (vec![], 0.0));
        // No features: the best constant is the mean, (1 + 2 + 6)/3 = 3.
        let (weights, intercept) = ridge(&[vec![], vec![], vec![]], &[1.0, 2.0, 6.0], 0.0);
        assert!(weights.is_empty());
        assert_close(intercept, 3.0, 1e-15);
    }

    #[test]
    fn kfold_interleaves_indices_by_modulo() {
        // i % 3: 0,3,6,9 | 1,4,7 | 2,5,8.
        assert_eq!(
            kfold(10, 3),
            vec![vec![0, 3, 6, 9], vec![1, 4, 7], vec![2, 5, 8]]
        );
        // k = 1 is clamped up to 2; k = 100 down to n = 4 (leave-one-out).
        assert_eq!(kfold(5, 1), vec![vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(kfold(4, 100), vec![vec![0], vec![1], vec![2], vec![3]]);
        assert_eq!(kfold(1, 5), vec![vec![0]]);
        assert!(kfold(0, 5).is_empty());
    }

    #[test]
    fn kfold_covers_every_index_exactly_once() {
        for n in 0..40 {
            for k in 0..12 {
                let folds = kfold(n, k);
                let mut seen = vec![0usize; n];
                for fold in &folds {
                    for &i in fold {
                        seen[i] += 1;
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "n = {n}, k = {k}: {seen:?}");
                let sizes: Vec<usize> = folds.iter().map(Vec::len).collect();
                let (min, max) = (sizes.iter().min(), sizes.iter().max());
                if let (Some(min), Some(max)) = (min, max) {
                    assert!(max - min <= 1, "n = {n}, k = {k}: sizes {sizes:?}");
                }
            }
        }
    }
}
