//! Small dense linear algebra in f64 for the zero-cost proxies and the score statistics:
//! the sign and log-magnitude of a determinant (LU with partial pivoting), the eigenvalues of a
//! symmetric matrix (cyclic Jacobi) and the solution of a symmetric positive-definite system
//! (Cholesky).
//!
//! Every matrix is `n × n`, row-major, in a flat `&[f64]` of length `n²`: element (i, j) is
//! `a[i * n + j]`. The sizes these serve are small (a proxy's kernel over one batch, a ridge
//! regression over a handful of proxies), so the algorithms are the plain O(n³) ones, chosen
//! for accuracy and no dependencies rather than speed.

/// Jacobi stops once the off-diagonal Frobenius norm is below this fraction of the whole
/// matrix's; by Weyl's inequality that bounds every eigenvalue's error by the same amount.
const JACOBI_RELATIVE_TOLERANCE: f64 = 1e-12;

/// Jacobi converges quadratically, so a well-posed matrix needs about 10 sweeps; the cap only
/// stops a matrix holding NaN or infinity from looping forever.
const JACOBI_MAX_SWEEPS: usize = 100;

fn check_square(a: &[f64], n: usize) {
    assert_eq!(
        a.len(),
        n * n,
        "matrix has {} elements, expected n² = {}² = {}",
        a.len(),
        n,
        n * n
    );
}

/// The determinant of `a` as `(sign, ln|det|)`, so that large kernels neither overflow nor
/// underflow: `det = sign · exp(ln|det|)`.
///
/// LU factorisation with partial pivoting. A matrix is singular when a pivot is exactly zero
/// (as LAPACK's `getrf` decides); it then returns `(0.0, f64::NEG_INFINITY)`. A matrix that is
/// only numerically singular (rounding leaves a pivot of ~1e-16) gives a finite but very
/// negative `ln|det|`, as NumPy's `slogdet` does. The empty matrix (n = 0) has determinant 1.
/// A matrix holding NaN or infinity gives `(NaN, NaN)`.
///
/// # Panics
/// If `a.len() != n * n`.
pub fn slogdet(a: &[f64], n: usize) -> (f64, f64) {
    check_square(a, n);
    if a.iter().any(|v| !v.is_finite()) {
        return (f64::NAN, f64::NAN);
    }
    let mut lu = a.to_vec();
    let mut sign = 1.0;
    let mut log_abs_det = 0.0;
    for k in 0..n {
        // Partial pivoting: the largest |entry| of column k on or below the diagonal.
        let pivot_row = (k..n)
            .max_by(|&r, &s| lu[r * n + k].abs().total_cmp(&lu[s * n + k].abs()))
            .expect("k < n, so the range is not empty");
        let pivot = lu[pivot_row * n + k];
        if pivot == 0.0 {
            return (0.0, f64::NEG_INFINITY);
        }
        if pivot_row != k {
            for j in 0..n {
                lu.swap(k * n + j, pivot_row * n + j);
            }
            sign = -sign;
        }
        if pivot < 0.0 {
            sign = -sign;
        }
        log_abs_det += pivot.abs().ln();
        let (upper, lower) = lu.split_at_mut((k + 1) * n);
        let pivot_tail = &upper[k * n + k + 1..(k + 1) * n];
        for row in lower.chunks_exact_mut(n) {
            let factor = row[k] / pivot;
            if factor != 0.0 {
                for (x, &p) in row[k + 1..].iter_mut().zip(pivot_tail) {
                    *x -= factor * p;
                }
            }
        }
    }
    (sign, log_abs_det)
}

/// The eigenvalues of the symmetric matrix `a`, in ascending order.
///
/// Cyclic Jacobi rotations until the off-diagonal Frobenius norm is at most 1e-12 of the
/// matrix's Frobenius norm, which bounds each eigenvalue's error by 1e-12·‖A‖_F. O(n³) per
/// sweep and about 10 sweeps: meant for n up to a few hundred. Only the symmetric part
/// `(A + Aᵀ)/2` is used, so a matrix that rounding made slightly asymmetric is fine. A matrix
/// holding NaN gives NaN eigenvalues.
///
/// # Panics
/// If `a.len() != n * n`.
pub fn symmetric_eigenvalues(a: &[f64], n: usize) -> Vec<f64> {
    check_square(a, n);
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            m[i * n + j] = 0.5 * (a[i * n + j] + a[j * n + i]);
        }
    }
    let frobenius = m.iter().map(|v| v * v).sum::<f64>().sqrt();
    let tolerance = JACOBI_RELATIVE_TOLERANCE * frobenius;
    for _sweep in 0..JACOBI_MAX_SWEEPS {
        let off_diagonal = (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .map(|(i, j)| 2.0 * m[i * n + j] * m[i * n + j])
            .sum::<f64>()
            .sqrt();
        // A NaN norm never falls below the tolerance: stop rather than run every sweep.
        if off_diagonal <= tolerance || off_diagonal.is_nan() {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                jacobi_rotate(&mut m, n, p, q);
            }
        }
    }
    let mut eigenvalues: Vec<f64> = (0..n).map(|i| m[i * n + i]).collect();
    eigenvalues.sort_by(f64::total_cmp);
    eigenvalues
}

/// One Jacobi rotation in the (p, q) plane that zeroes `m[p][q]` and `m[q][p]`
/// (Numerical Recipes' formulation, with the small-angle root for stability).
fn jacobi_rotate(m: &mut [f64], n: usize, p: usize, q: usize) {
    let apq = m[p * n + q];
    if apq == 0.0 {
        return;
    }
    let app = m[p * n + p];
    let aqq = m[q * n + q];
    let theta = (aqq - app) / (2.0 * apq);
    // t = tan(φ), the smaller root of t² + 2θt − 1 = 0; for huge θ, θ² would overflow.
    let t = if theta.abs() > 1e150 {
        0.5 / theta
    } else {
        let root = 1.0 / (theta.abs() + (theta * theta + 1.0).sqrt());
        if theta < 0.0 {
            -root
        } else {
            root
        }
    };
    let c = 1.0 / (t * t + 1.0).sqrt();
    let s = t * c;
    m[p * n + p] = app - t * apq;
    m[q * n + q] = aqq + t * apq;
    m[p * n + q] = 0.0;
    m[q * n + p] = 0.0;
    for r in 0..n {
        if r == p || r == q {
            continue;
        }
        let arp = m[r * n + p];
        let arq = m[r * n + q];
        let new_rp = c * arp - s * arq;
        let new_rq = s * arp + c * arq;
        m[r * n + p] = new_rp;
        m[p * n + r] = new_rp;
        m[r * n + q] = new_rq;
        m[q * n + r] = new_rq;
    }
}

/// Solves `A x = b` for a symmetric positive-definite `A` by Cholesky factorisation
/// `A = L Lᵀ`; `None` when `A` is not positive definite: indefinite, singular, or holding NaN.
///
/// Singular is judged numerically: a pivot `≤ n·ε·a_ii` (ε the f64 machine epsilon, `a_ii` the
/// diagonal entry the pivot came from) counts as zero, because rounding alone leaves pivots
/// of that size in exactly singular matrices (`[[2, 2], [2, 2]]` gives 4.4e-16), and the
/// "solution" would be noise of size 1/pivot. Only the lower triangle of `a` is read.
///
/// # Panics
/// If `a.len() != n * n` or `b.len() != n`.
pub fn solve_spd(a: &[f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    check_square(a, n);
    assert_eq!(
        b.len(),
        n,
        "right-hand side has {} entries, expected n = {n}",
        b.len()
    );
    // l: the lower-triangular Cholesky factor, row-major n × n (upper part stays 0).
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let dot: f64 = l[i * n..i * n + j]
                .iter()
                .zip(&l[j * n..j * n + j])
                .map(|(x, y)| x * y)
                .sum();
            let value = a[i * n + j] - dot;
            if i == j {
                let floor = n as f64 * f64::EPSILON * a[i * n + i].abs();
                if !value.is_finite() || value <= floor {
                    return None;
                }
                l[i * n + i] = value.sqrt();
            } else {
                l[i * n + j] = value / l[j * n + j];
            }
        }
    }
    // Forward substitution L y = b, then back substitution Lᵀ x = y, both in place.
    let mut x = b.to_vec();
    for i in 0..n {
        let dot: f64 = l[i * n..i * n + i]
            .iter()
            .zip(&x[..i])
            .map(|(l, x)| l * x)
            .sum();
        x[i] = (x[i] - dot) / l[i * n + i];
    }
    for i in (0..n).rev() {
        let dot: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (x[i] - dot) / l[i * n + i];
    }
    if x.iter().all(|v| v.is_finite()) {
        Some(x)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reproducible uniform sample in [−1, 1) (SplitMix64), so tests need no `rand`.
    fn uniform_matrix(seed: u64, len: usize) -> Vec<f64> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect()
    }

    fn assert_close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "got {actual}, expected {expected} (tolerance {tolerance})"
        );
    }

    #[test]
    fn slogdet_2x2_by_hand() {
        // [[3, 1], [4, 2]]: det = 3·2 − 1·4 = 2.
        let (sign, log_abs) = slogdet(&[3.0, 1.0, 4.0, 2.0], 2);
        assert_eq!(sign, 1.0);
        assert_close(log_abs, 2f64.ln(), 1e-14);
        // [[1, 2], [3, 4]]: det = 1·4 − 2·3 = −2.
        let (sign, log_abs) = slogdet(&[1.0, 2.0, 3.0, 4.0], 2);
        assert_eq!(sign, -1.0);
        assert_close(log_abs, 2f64.ln(), 1e-14);
    }

    #[test]
    fn slogdet_3x3_by_hand() {
        // [[4, 3, 2], [1, 3, 1], [2, 1, 3]], cofactors along row 0:
        // 4·(3·3 − 1·1) − 3·(1·3 − 1·2) + 2·(1·1 − 3·2) = 32 − 3 − 10 = 19.
        let a = [4.0, 3.0, 2.0, 1.0, 3.0, 1.0, 2.0, 1.0, 3.0];
        let (sign, log_abs) = slogdet(&a, 3);
        assert_eq!(sign, 1.0);
        assert_close(log_abs, 19f64.ln(), 1e-13);
        // [[1, 2, 3], [0, 1, 4], [5, 6, 0]]:
        // 1·(1·0 − 4·6) − 2·(0·0 − 4·5) + 3·(0·6 − 1·5) = −24 + 40 − 15 = 1, so ln|det| = 0.
        let b = [1.0, 2.0, 3.0, 0.0, 1.0, 4.0, 5.0, 6.0, 0.0];
        let (sign, log_abs) = slogdet(&b, 3);
        assert_eq!(sign, 1.0);
        assert_close(log_abs, 0.0, 1e-13);
    }

    #[test]
    fn slogdet_needs_pivoting_for_zero_leading_entries() {
        // [[0, 1], [1, 0]]: det = 0·0 − 1·1 = −1; without pivoting the first pivot is 0.
        let (sign, log_abs) = slogdet(&[0.0, 1.0, 1.0, 0.0], 2);
        assert_eq!(sign, -1.0);
        assert_close(log_abs, 0.0, 1e-15);
        // [[0, 0, 2], [0, 3, 0], [5, 0, 0]]: the anti-diagonal, the permutation (0 2) is one
        // swap, so det = −(2·3·5) = −30.
        let a = [0.0, 0.0, 2.0, 0.0, 3.0, 0.0, 5.0, 0.0, 0.0];
        let (sign, log_abs) = slogdet(&a, 3);
        assert_eq!(sign, -1.0);
        assert_close(log_abs, 30f64.ln(), 1e-14);
    }

    #[test]
    fn slogdet_of_singular_matrix_is_zero_sign_and_minus_infinity() {
        // Row 1 = 2 · row 0: 1·4 − 2·2 = 0.
        assert_eq!(slogdet(&[1.0, 2.0, 2.0, 4.0], 2), (0.0, f64::NEG_INFINITY));
        // Rows 0 and 2 equal, and a zero column.
        let a = [1.0, 0.0, 3.0, 4.0, 0.0, 6.0, 1.0, 0.0, 3.0];
        assert_eq!(slogdet(&a, 3), (0.0, f64::NEG_INFINITY));
    }

    #[test]
    fn slogdet_of_empty_matrix_is_one_and_of_nan_is_nan() {
        // det of the 0 × 0 matrix is the empty product, 1.
        assert_eq!(slogdet(&[], 0), (1.0, 0.0));
        let (sign, log_abs) = slogdet(&[1.0, f64::NAN, 0.0, 1.0], 2);
        assert!(sign.is_nan() && log_abs.is_nan());
    }

    #[test]
    #[should_panic(expected = "expected n²")]
    fn slogdet_rejects_wrong_length() {
        slogdet(&[1.0, 2.0, 3.0], 2);
    }

    #[test]
    fn eigenvalues_2x2_and_diagonal_by_hand() {
        // [[2, 1], [1, 2]]: (2 − λ)² − 1 = 0 → λ = 1, 3.
        let values = symmetric_eigenvalues(&[2.0, 1.0, 1.0, 2.0], 2);
        assert_close(values[0], 1.0, 1e-14);
        assert_close(values[1], 3.0, 1e-14);
        // A diagonal matrix is its own spectrum; it comes back ascending.
        assert_eq!(
            symmetric_eigenvalues(&[3.0, 0.0, 0.0, -1.0], 2),
            vec![-1.0, 3.0]
        );
    }

    #[test]
    fn eigenvalues_3x3_tridiagonal_by_hand() {
        // [[2, 1, 0], [1, 2, 1], [0, 1, 2]]: with μ = 2 − λ, det = μ³ − 2μ = μ(μ² − 2) = 0
        // → μ ∈ {0, ±√2} → λ ∈ {2 − √2, 2, 2 + √2}.
        let a = [2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0];
        let values = symmetric_eigenvalues(&a, 3);
        let root2 = 2f64.sqrt();
        assert_eq!(values.len(), 3);
        assert_close(values[0], 2.0 - root2, 1e-13);
        assert_close(values[1], 2.0, 1e-13);
        assert_close(values[2], 2.0 + root2, 1e-13);
    }

    #[test]
    fn eigenvalues_of_large_second_difference_matrix_match_closed_form() {
        // tridiag(−1, 2, −1) of size n has eigenvalues 2 − 2·cos(kπ/(n + 1)), k = 1..n
        // (eigenvectors sin(jkπ/(n + 1))); cos is decreasing on (0, π), so k = 1 is smallest.
        let n = 128;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            a[i * n + i] = 2.0;
            if i + 1 < n {
                a[i * n + i + 1] = -1.0;
                a[(i + 1) * n + i] = -1.0;
            }
        }
        let values = symmetric_eigenvalues(&a, n);
        for (k, &value) in (1..=n).zip(&values) {
            let expected = 2.0 - 2.0 * (k as f64 * std::f64::consts::PI / (n + 1) as f64).cos();
            assert_close(value, expected, 1e-10);
        }
    }

    #[test]
    fn eigenvalues_of_random_symmetric_20x20_keep_trace_and_frobenius_norm() {
        // Similarity transforms keep the trace (Σλ = Σ a_ii) and, being orthogonal, the
        // Frobenius norm (Σλ² = Σ a_ij²).
        let n = 20;
        let raw = uniform_matrix(7, n * n);
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = raw[i * n + j] + raw[j * n + i];
            }
        }
        let values = symmetric_eigenvalues(&a, n);
        let trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
        let frobenius_squared: f64 = a.iter().map(|v| v * v).sum();
        assert_close(values.iter().sum(), trace, 1e-10);
        assert_close(values.iter().map(|v| v * v).sum(), frobenius_squared, 1e-9);
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "not ascending");
        // A random symmetric matrix is indefinite: both signs occur.
        assert!(values[0] < 0.0 && values[n - 1] > 0.0);
    }

    #[test]
    fn eigenvalues_of_spd_20x20_agree_with_slogdet_and_solve() {
        // A = MᵀM + I: xᵀAx = |Mx|² + |x|² ≥ |x|², so every λ ≥ 1 and ln det A = Σ ln λ > 0.
        let n = 20;
        let m = uniform_matrix(11, n * n);
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| m[k * n + i] * m[k * n + j]).sum::<f64>();
            }
            a[i * n + i] += 1.0;
        }
        let values = symmetric_eigenvalues(&a, n);
        assert!(
            values[0] >= 1.0 - 1e-12,
            "smallest eigenvalue {}",
            values[0]
        );
        let (sign, log_abs) = slogdet(&a, n);
        assert_eq!(sign, 1.0);
        let log_product: f64 = values.iter().map(|v| v.ln()).sum();
        assert_close(log_abs, log_product, 1e-10 * log_product);
        // And the Cholesky solve reproduces a chosen x: b = A x, x_i = i − 10.
        let x: Vec<f64> = (0..n).map(|i| i as f64 - 10.0).collect();
        let b: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| a[i * n + j] * x[j]).sum())
            .collect();
        let solved = solve_spd(&a, &b, n).expect("MᵀM + I is SPD");
        for (s, e) in solved.iter().zip(&x) {
            assert_close(*s, *e, 1e-9);
        }
    }

    #[test]
    fn solve_spd_2x2_and_3x3_by_hand() {
        // [[4, 2], [2, 3]] x = [2, 1]: det 8, inverse (1/8)[[3, −2], [−2, 4]],
        // x = (1/8)[3·2 − 2·1, −2·2 + 4·1] = [0.5, 0].
        let x = solve_spd(&[4.0, 2.0, 2.0, 3.0], &[2.0, 1.0], 2).unwrap();
        assert_close(x[0], 0.5, 1e-15);
        assert_close(x[1], 0.0, 1e-15);
        // [[4, 12, −16], [12, 37, −43], [−16, −43, 98]] = L Lᵀ with L = [[2,0,0],[6,1,0],[−8,5,3]].
        // For x = [1, 2, 3]: b = [4 + 24 − 48, 12 + 74 − 129, −16 − 86 + 294] = [−20, −43, 192].
        let a = [4.0, 12.0, -16.0, 12.0, 37.0, -43.0, -16.0, -43.0, 98.0];
        let x = solve_spd(&a, &[-20.0, -43.0, 192.0], 3).unwrap();
        assert_close(x[0], 1.0, 1e-12);
        assert_close(x[1], 2.0, 1e-12);
        assert_close(x[2], 3.0, 1e-12);
    }

    #[test]
    fn solve_spd_rejects_matrices_that_are_not_positive_definite() {
        // [[1, 2], [2, 1]]: eigenvalues 3 and −1, indefinite (pivot 1 − 2²/1 = −3).
        assert_eq!(solve_spd(&[1.0, 2.0, 2.0, 1.0], &[1.0, 1.0], 2), None);
        // [[0, 0], [0, 1]]: semidefinite, first pivot 0.
        assert_eq!(solve_spd(&[0.0, 0.0, 0.0, 1.0], &[1.0, 1.0], 2), None);
        // [[1, 1], [1, 1]]: singular, second pivot 1 − 1 = 0.
        assert_eq!(solve_spd(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0], 2), None);
        // [[2, 2], [2, 2]]: singular, but rounding leaves the second pivot
        // 2 − (2/√2)² = 4.4e-16 > 0, under the floor n·ε·a_11 = 2 · 2.2e-16 · 2 = 8.9e-16.
        assert_eq!(solve_spd(&[2.0, 2.0, 2.0, 2.0], &[1.0, 1.0], 2), None);
        assert_eq!(solve_spd(&[-1.0], &[1.0], 1), None);
        assert_eq!(solve_spd(&[f64::NAN], &[1.0], 1), None);
        // The floor is relative to each diagonal entry, so a badly scaled but well-posed
        // diagonal system still solves: diag(1, 1e-20) x = [1, 1e-20] → x = [1, 1].
        let x = solve_spd(&[1.0, 0.0, 0.0, 1e-20], &[1.0, 1e-20], 2).unwrap();
        assert_close(x[0], 1.0, 1e-15);
        assert_close(x[1], 1.0, 1e-15);
        // The empty system has the empty solution.
        assert_eq!(solve_spd(&[], &[], 0), Some(vec![]));
    }
}
