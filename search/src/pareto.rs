//! Pareto machinery over minimised objective vectors: dominance, non-dominated sorting (NSGA-II's
//! fronts), crowding distance, the Pareto front, and the exact hypervolume against a fixed
//! reference point. Every function is deterministic: ties keep index order.

/// `a` dominates `b`: no worse in every objective and better in one (all minimised).
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut better = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        if x < y {
            better = true;
        }
    }
    better
}

/// Non-dominated sorting: the indices of `points` in fronts, best first (each front in index
/// order). O(n² m), which is plenty for populations of hundreds.
pub fn fronts(points: &[Vec<f64>]) -> Vec<Vec<usize>> {
    let n = points.len();
    let mut dominated_by = vec![0usize; n];
    let mut dominates_list: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in 0..n {
            if i != j && dominates(&points[i], &points[j]) {
                dominates_list[i].push(j);
            } else if i != j && dominates(&points[j], &points[i]) {
                dominated_by[i] += 1;
            }
        }
    }
    let mut out = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| dominated_by[i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominates_list[i] {
                dominated_by[j] -= 1;
                if dominated_by[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        out.push(current);
        current = next;
    }
    out
}

/// Pareto rank of every point (0 = non-dominated).
pub fn ranks(points: &[Vec<f64>]) -> Vec<usize> {
    let mut r = vec![0; points.len()];
    for (k, f) in fronts(points).iter().enumerate() {
        for &i in f {
            r[i] = k;
        }
    }
    r
}

#[allow(clippy::needless_range_loop)] // k indexes objectives across many points
/// NSGA-II crowding distance of each member of one front (`front` indexes `points`); the
/// extremes of every objective get infinity.
pub fn crowding(points: &[Vec<f64>], front: &[usize]) -> Vec<f64> {
    let n = front.len();
    let mut d = vec![0.0; n];
    if n == 0 {
        return d;
    }
    let m = points[front[0]].len();
    for k in 0..m {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            points[front[a]][k]
                .total_cmp(&points[front[b]][k])
                .then(a.cmp(&b))
        });
        let (lo, hi) = (points[front[order[0]]][k], points[front[order[n - 1]]][k]);
        d[order[0]] = f64::INFINITY;
        d[order[n - 1]] = f64::INFINITY;
        if hi > lo {
            for w in 1..n.saturating_sub(1) {
                let (prev, next) = (
                    points[front[order[w - 1]]][k],
                    points[front[order[w + 1]]][k],
                );
                d[order[w]] += (next - prev) / (hi - lo);
            }
        }
    }
    d
}

/// Indices of `points` ordered best first: by Pareto rank, then by crowding distance
/// (larger first), then by index. This is the promotion order of successive halving and
/// NSGA-II's survival order.
pub fn order(points: &[Vec<f64>]) -> Vec<usize> {
    let mut out = Vec::with_capacity(points.len());
    for f in fronts(points) {
        let c = crowding(points, &f);
        let mut idx: Vec<usize> = (0..f.len()).collect();
        idx.sort_by(|&a, &b| c[b].total_cmp(&c[a]).then(f[a].cmp(&f[b])));
        out.extend(idx.into_iter().map(|i| f[i]));
    }
    out
}

/// The non-dominated points' indices (duplicates of a point are kept once, the first).
pub fn front(points: &[Vec<f64>]) -> Vec<usize> {
    let first = fronts(points).into_iter().next().unwrap_or_default();
    let mut out: Vec<usize> = Vec::new();
    for i in first {
        if !out.iter().any(|&j| points[j] == points[i]) {
            out.push(i);
        }
    }
    out
}

/// Exact hypervolume dominated by `points` and bounded by `reference` (all minimised): the
/// measure of {x : some p ≤ x ≤ reference}. Points not strictly better than the reference in
/// every objective add nothing. Recursive slicing along the last objective; exact for any
/// number of objectives, fast for the small fronts of a search.
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let pts: Vec<Vec<f64>> = points
        .iter()
        .filter(|p| p.iter().zip(reference).all(|(x, r)| x < r))
        .cloned()
        .collect();
    hv(&pts, reference)
}

fn hv(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let m = reference.len();
    if points.is_empty() {
        return 0.0;
    }
    if m == 1 {
        let best = points.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min);
        return reference[0] - best;
    }
    // Slice along the last objective: between consecutive values, the cross-section is the
    // (m−1)-dimensional hypervolume of the points at or below the slice.
    let mut sorted: Vec<&Vec<f64>> = points.iter().collect();
    sorted.sort_by(|a, b| a[m - 1].total_cmp(&b[m - 1]));
    let mut total = 0.0;
    for i in 0..sorted.len() {
        let lo = sorted[i][m - 1];
        let hi = if i + 1 < sorted.len() {
            sorted[i + 1][m - 1]
        } else {
            reference[m - 1]
        };
        if hi <= lo {
            continue;
        }
        let section: Vec<Vec<f64>> = sorted[..=i].iter().map(|p| p[..m - 1].to_vec()).collect();
        total += (hi - lo) * hv(&section, &reference[..m - 1]);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&[f64]]) -> Vec<Vec<f64>> {
        v.iter().map(|x| x.to_vec()).collect()
    }

    #[test]
    fn dominance_and_fronts() {
        assert!(dominates(&[1.0, 2.0], &[1.0, 3.0]));
        assert!(!dominates(&[1.0, 2.0], &[1.0, 2.0]));
        assert!(!dominates(&[1.0, 3.0], &[2.0, 2.0]));
        // (1,4) (2,2) (4,1) are mutually non-dominated; (3,3) is dominated by (2,2); (5,5) by all.
        let pts = p(&[
            &[3.0, 3.0],
            &[1.0, 4.0],
            &[5.0, 5.0],
            &[2.0, 2.0],
            &[4.0, 1.0],
        ]);
        assert_eq!(fronts(&pts), vec![vec![1, 3, 4], vec![0], vec![2]]);
        assert_eq!(ranks(&pts), vec![1, 0, 2, 0, 0]);
        assert_eq!(front(&pts), vec![1, 3, 4]);
    }

    #[test]
    fn crowding_by_hand() {
        // Front (0,4) (1,2) (2,1) (4,0): extremes infinite; (1,2): (2−0)/4 + (4−1)/4 = 1.25;
        // (2,1): (4−1)/4 + (2−0)/4 = 1.25.
        let pts = p(&[&[0.0, 4.0], &[1.0, 2.0], &[2.0, 1.0], &[4.0, 0.0]]);
        let c = crowding(&pts, &[0, 1, 2, 3]);
        assert!(c[0].is_infinite() && c[3].is_infinite());
        assert!((c[1] - 1.25).abs() < 1e-12 && (c[2] - 1.25).abs() < 1e-12);
        assert_eq!(order(&pts), vec![0, 3, 1, 2]);
    }

    #[test]
    fn hypervolume_by_hand() {
        // 2-D, reference (4,4): (1,3) and (3,1) cover 3·1 + 1·3 − overlap... by slices:
        // y ∈ [1,3): x from 3 → width 1, height 2 → 2; y ∈ [3,4): x from 1 → width 3 → 3. Total 5.
        let pts = p(&[&[1.0, 3.0], &[3.0, 1.0]]);
        assert!((hypervolume(&pts, &[4.0, 4.0]) - 5.0).abs() < 1e-12);
        // A dominated point and a point outside the reference add nothing.
        let more = p(&[&[1.0, 3.0], &[3.0, 1.0], &[3.5, 3.5], &[0.5, 9.0]]);
        assert!((hypervolume(&more, &[4.0, 4.0]) - 5.0).abs() < 1e-12);
        // 3-D: one point (1,1,1) in the cube to (2,3,4) → 1·2·3 = 6; adding (0,2,2) adds
        // its box 2·1·2 = 4 minus the overlap with the first, [1,2]×[2,3]×[2,4] = 1·1·2 = 2.
        let pts3 = p(&[&[1.0, 1.0, 1.0], &[0.0, 2.0, 2.0]]);
        assert!((hypervolume(&pts3, &[2.0, 3.0, 4.0]) - 8.0).abs() < 1e-12);
        assert_eq!(hypervolume(&[], &[1.0, 1.0]), 0.0);
    }
}
