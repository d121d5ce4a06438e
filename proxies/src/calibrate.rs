//! Calibration of the zero-cost proxies on one search space: how well each proxy ranks
//! architectures by their brief-distillation quality (Spearman ρ and Kendall τ-b against
//! −validation cross-entropy), and two ensembles fitted with k-fold cross-validation, so their
//! figures are out-of-fold predictions, not fits:
//! - `rank_average`: the mean rank feature of the proxies whose training-fold τ is at least
//!   half the best one's;
//! - `ridge`: ridge regression from every proxy's rank feature to the quality's rank feature;
//! - `ridge_arch`: the same over the proxies and the cost model's architecture descriptors
//!   (`zero_cost::DESCRIPTOR_NAMES`: tied head, depth, width, attention kinds, FFN rank, ...),
//!   for spaces where a design choice the proxies do not see (such as tying, or attention
//!   against none) decides quality.
//!
//! A ridge ensemble's penalty is chosen from [`RIDGE_LAMBDAS`] by cross-validation inside the
//! rows it is fitted on, so the out-of-fold figures stay honest.
//!
//! A rank feature is a value's position in the calibration set, (rank − ½)/n in [0, 1]; for a
//! new candidate it is its position among the stored calibration values, so an `Ensemble`
//! scores candidates the calibration never saw. A missing proxy value (undefined) or quality
//! (diverged) counts as the worst.

use crate::stats::{kendall_tau_b, kfold, ridge, spearman};
use crate::zero_cost::{ProxyScores, DESCRIPTOR_NAMES, PROXY_NAMES};
use serde::{Deserialize, Serialize};

/// Folds of the cross-validation.
pub const FOLDS: usize = 5;
/// Ridge penalty on rank features in [0, 1] where too few rows to choose one.
pub const RIDGE_LAMBDA: f64 = 1.0;
/// The penalties a ridge ensemble chooses from (inner cross-validation, best τ; ties go to
/// the larger penalty). Measured on quick32's table (`genas bench search`): fitted to the
/// final fidelity on 100 architectures, the held-out τ of `ridge_arch` is 0.74 at λ = 3,
/// 0.79 at 1 and 0.82 at 0.1.
pub const RIDGE_LAMBDAS: [f64; 4] = [3.0, 1.0, 0.3, 0.1];
/// Fewer rows than this fit a ridge ensemble at [`RIDGE_LAMBDA`] without choosing.
const CHOOSE_LAMBDA_MIN_ROWS: usize = 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Correlation {
    pub name: String,
    pub spearman: f64,
    pub kendall: f64,
}

/// A fitted predictor of quality from proxy scores (higher = predicted better).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ensemble {
    pub kind: String,
    /// The proxies it reads, with the sorted calibration values that define their rank
    /// features.
    pub members: Vec<String>,
    pub reference: Vec<Vec<f64>>,
    /// Weights per member and intercept (rank average: 1/m each, 0).
    pub weights: Vec<f64>,
    pub intercept: f64,
    /// The ridge penalty it was fitted with (none for a rank average, or one stored by an
    /// older genas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
}

impl Ensemble {
    pub fn score(&self, p: &ProxyScores) -> f64 {
        self.intercept
            + self
                .members
                .iter()
                .zip(&self.reference)
                .zip(&self.weights)
                .map(|((name, r), w)| w * rank_feature(r, value(p, name)))
                .sum::<f64>()
    }
}

/// The calibration of one space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub n: usize,
    pub diverged: usize,
    /// Per proxy, over all n architectures.
    pub proxies: Vec<Correlation>,
    /// Per ensemble kind, of its out-of-fold predictions.
    pub ensembles: Vec<Correlation>,
    /// The ensemble with the best out-of-fold τ, refitted on all n; the search screens with it.
    pub chosen: Ensemble,
}

fn value(p: &ProxyScores, name: &str) -> f64 {
    p.get(name).unwrap_or(f64::NEG_INFINITY)
}

/// (count below + ½ count equal) / n of `x` among the sorted `reference`.
pub fn rank_feature(reference: &[f64], x: f64) -> f64 {
    if reference.is_empty() {
        return 0.5;
    }
    let below = reference.partition_point(|&r| r < x);
    let upto = reference.partition_point(|&r| r <= x);
    (below as f64 + 0.5 * (upto - below) as f64) / reference.len() as f64
}

fn sorted(x: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = x.collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The ensembles `calibrate` cross-validates, in report order.
pub const ENSEMBLE_KINDS: [&str; 3] = ["rank_average", "ridge", "ridge_arch"];

fn fit(kind: &str, rows: &[&ProxyScores], quality: &[f64]) -> Ensemble {
    match kind {
        "ridge" | "ridge_arch" => fit_at(kind, rows, quality, choose_lambda(kind, rows, quality)),
        _ => fit_at(kind, rows, quality, RIDGE_LAMBDA),
    }
}

/// The penalty of [`RIDGE_LAMBDAS`] whose out-of-fold τ over `rows` is best.
fn choose_lambda(kind: &str, rows: &[&ProxyScores], quality: &[f64]) -> f64 {
    let n = rows.len();
    if n < CHOOSE_LAMBDA_MIN_ROWS {
        return RIDGE_LAMBDA;
    }
    let mut best = (f64::NEG_INFINITY, RIDGE_LAMBDA);
    for lambda in RIDGE_LAMBDAS {
        let pred = out_of_fold(rows, quality, |tr, tq| fit_at(kind, tr, tq, lambda));
        let tau = kendall_tau_b(&pred, quality);
        if tau > best.0 {
            best = (tau, lambda);
        }
    }
    best.1
}

/// Each row's score by the ensemble `fit` makes from the other folds ([`FOLDS`]-fold).
fn out_of_fold(
    rows: &[&ProxyScores],
    quality: &[f64],
    fit: impl Fn(&[&ProxyScores], &[f64]) -> Ensemble,
) -> Vec<f64> {
    let n = rows.len();
    let mut pred = vec![0.0; n];
    for test in kfold(n, FOLDS) {
        let train: Vec<usize> = (0..n).filter(|i| !test.contains(i)).collect();
        let tr: Vec<&ProxyScores> = train.iter().map(|&i| rows[i]).collect();
        let tq: Vec<f64> = train.iter().map(|&i| quality[i]).collect();
        let e = fit(&tr, &tq);
        for &i in &test {
            pred[i] = e.score(rows[i]);
        }
    }
    pred
}

fn fit_at(kind: &str, rows: &[&ProxyScores], quality: &[f64], lambda: f64) -> Ensemble {
    let names: Vec<&str> = match kind {
        "ridge_arch" => PROXY_NAMES
            .iter()
            .chain(&DESCRIPTOR_NAMES)
            .copied()
            .collect(),
        _ => PROXY_NAMES.to_vec(),
    };
    let reference: Vec<Vec<f64>> = names
        .iter()
        .map(|n| sorted(rows.iter().map(|p| value(p, n))))
        .collect();
    let features: Vec<Vec<f64>> = rows
        .iter()
        .map(|p| {
            names
                .iter()
                .zip(&reference)
                .map(|(n, r)| rank_feature(r, value(p, n)))
                .collect()
        })
        .collect();
    let qref = sorted(quality.iter().copied());
    let target: Vec<f64> = quality.iter().map(|&q| rank_feature(&qref, q)).collect();
    let names = names.iter().map(|s| s.to_string());
    match kind {
        "ridge" | "ridge_arch" => {
            let (weights, intercept) = ridge(&features, &target, lambda);
            Ensemble {
                kind: kind.into(),
                members: names.collect(),
                reference,
                weights,
                intercept,
                lambda: Some(lambda),
            }
        }
        _ => {
            let taus: Vec<f64> = (0..PROXY_NAMES.len())
                .map(|j| {
                    let col: Vec<f64> = features.iter().map(|f| f[j]).collect();
                    kendall_tau_b(&col, &target)
                })
                .collect();
            let best = taus.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let keep: Vec<usize> = (0..PROXY_NAMES.len())
                .filter(|&j| best > 0.0 && taus[j] >= 0.5 * best)
                .collect();
            let m = keep.len().max(1) as f64;
            Ensemble {
                kind: "rank_average".into(),
                members: keep.iter().map(|&j| PROXY_NAMES[j].to_string()).collect(),
                reference: keep.iter().map(|&j| reference[j].clone()).collect(),
                weights: vec![1.0 / m; keep.len()],
                intercept: 0.0,
                lambda: None,
            }
        }
    }
}

/// Calibrates on `rows`: each candidate's proxy scores and its quality (higher = better,
/// `None` if its distillation diverged).
pub fn calibrate(rows: &[(ProxyScores, Option<f64>)]) -> Calibration {
    let n = rows.len();
    let quality: Vec<f64> = rows
        .iter()
        .map(|(_, q)| q.unwrap_or(f64::NEG_INFINITY))
        .collect();
    // Diverged (−∞) ties at the bottom; the statistics need finite values.
    let floor = quality
        .iter()
        .copied()
        .filter(|q| q.is_finite())
        .fold(0.0f64, f64::min)
        - 1.0;
    let finite = |x: &[f64]| -> Vec<f64> {
        let lo = x
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::min);
        x.iter()
            .map(|&v| if v.is_finite() { v } else { lo - 1.0 })
            .collect()
    };
    let quality: Vec<f64> = quality
        .iter()
        .map(|&q| if q.is_finite() { q } else { floor })
        .collect();
    let proxies = PROXY_NAMES
        .iter()
        .map(|name| {
            let x = finite(&rows.iter().map(|(p, _)| value(p, name)).collect::<Vec<_>>());
            Correlation {
                name: name.to_string(),
                spearman: spearman(&x, &quality),
                kendall: kendall_tau_b(&x, &quality),
            }
        })
        .collect();
    let all: Vec<&ProxyScores> = rows.iter().map(|(p, _)| p).collect();
    let mut ensembles = Vec::new();
    let mut best: Option<(f64, &str)> = None;
    for kind in ENSEMBLE_KINDS {
        let pred = out_of_fold(&all, &quality, |tr, tq| fit(kind, tr, tq));
        let c = Correlation {
            name: kind.into(),
            spearman: spearman(&pred, &quality),
            kendall: kendall_tau_b(&pred, &quality),
        };
        if best.is_none_or(|(t, _)| c.kendall > t) {
            best = Some((c.kendall, kind));
        }
        ensembles.push(c);
    }
    Calibration {
        n,
        diverged: rows.iter().filter(|(_, q)| q.is_none()).count(),
        proxies,
        ensembles,
        chosen: fit(best.map_or("ridge", |b| b.1), &all, &quality),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn scores(pairs: &[(&str, f64)]) -> ProxyScores {
        let mut scores: BTreeMap<String, Option<f64>> =
            PROXY_NAMES.iter().map(|n| (n.to_string(), None)).collect();
        for (k, v) in pairs {
            scores.insert(k.to_string(), Some(*v));
        }
        ProxyScores {
            scores,
            millis: 0.0,
        }
    }

    #[test]
    fn rank_features_place_values_among_the_reference() {
        let r = [1.0, 2.0, 2.0, 5.0];
        // Below 1: 0/4. At 2: one below, two equal → (1 + 1)/4. Above all: 4/4.
        assert_eq!(rank_feature(&r, 0.0), 0.0);
        assert_eq!(rank_feature(&r, 2.0), 0.5);
        assert_eq!(rank_feature(&r, 9.0), 1.0);
        assert_eq!(rank_feature(&r, 1.0), 0.125);
    }

    #[test]
    fn a_proxy_that_orders_quality_exactly_gets_tau_one_and_leads_the_ensembles() {
        // Quality = snip exactly; params is anti-correlated; synflow is noise. 40 candidates.
        let rows: Vec<(ProxyScores, Option<f64>)> = (0..40)
            .map(|i| {
                let q = i as f64;
                let noise = ((i * 37) % 11) as f64;
                (
                    scores(&[("snip", q * 2.0), ("params", -q), ("synflow", noise)]),
                    Some(q / 10.0),
                )
            })
            .collect();
        let c = calibrate(&rows);
        let get = |n: &str| c.proxies.iter().find(|p| p.name == n).unwrap().clone();
        assert!((get("snip").kendall - 1.0).abs() < 1e-12);
        assert!((get("params").kendall + 1.0).abs() < 1e-12);
        assert!(get("synflow").kendall.abs() < 0.5);
        for e in &c.ensembles {
            assert!(e.kendall > 0.95, "{e:?}");
        }
        // The fitted ensemble ranks new candidates by snip.
        let lo = c.chosen.score(&scores(&[("snip", 5.0), ("params", -2.5)]));
        let hi = c
            .chosen
            .score(&scores(&[("snip", 70.0), ("params", -35.0)]));
        assert!(hi > lo);
    }

    #[test]
    fn diverged_candidates_rank_last() {
        let mut rows: Vec<(ProxyScores, Option<f64>)> = (0..10)
            .map(|i| (scores(&[("snip", i as f64)]), Some(i as f64)))
            .collect();
        // The lowest snip diverged: still consistent with snip's order.
        rows[0].1 = None;
        let c = calibrate(&rows);
        assert_eq!(c.diverged, 1);
        let snip = c.proxies.iter().find(|p| p.name == "snip").unwrap();
        assert!((snip.kendall - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ridge_ensembles_choose_their_penalty_by_inner_cross_validation() {
        // Quality is snip plus a little of zico; the other proxies are noise. With 60 rows
        // the inner cross-validation runs and picks one of the grid; with 12 it cannot.
        let rows = |n: usize| -> Vec<(ProxyScores, Option<f64>)> {
            (0..n)
                .map(|i| {
                    let x = ((i * 17) % 23) as f64;
                    let z = ((i * 7) % 5) as f64;
                    let noise = ((i * 31) % 13) as f64;
                    (
                        scores(&[("snip", x), ("zico", z), ("synflow", noise)]),
                        Some(x + 0.3 * z),
                    )
                })
                .collect()
        };
        let data = rows(60);
        let all: Vec<&ProxyScores> = data.iter().map(|r| &r.0).collect();
        let q: Vec<f64> = data.iter().map(|r| r.1.unwrap()).collect();
        for kind in ["ridge", "ridge_arch"] {
            let e = fit(kind, &all, &q);
            let lambda = e.lambda.expect("a ridge ensemble records its penalty");
            assert!(RIDGE_LAMBDAS.contains(&lambda), "{lambda}");
            assert_eq!(lambda, choose_lambda(kind, &all, &q));
            assert_eq!(e, fit_at(kind, &all, &q, lambda));
            // It ranks new candidates by the quality's recipe.
            let lo = e.score(&scores(&[("snip", 1.0), ("zico", 0.0), ("synflow", 3.0)]));
            let hi = e.score(&scores(&[("snip", 20.0), ("zico", 4.0), ("synflow", 3.0)]));
            assert!(hi > lo);
        }
        let few = rows(12);
        let all: Vec<&ProxyScores> = few.iter().map(|r| &r.0).collect();
        let q: Vec<f64> = few.iter().map(|r| r.1.unwrap()).collect();
        assert_eq!(fit("ridge", &all, &q).lambda, Some(RIDGE_LAMBDA));
        let c = calibrate(&data);
        // An ensemble stored by an older genas, without a penalty, still reads.
        let mut v = serde_json::to_value(&c.chosen).unwrap();
        v.as_object_mut().unwrap().remove("lambda");
        let old: Ensemble = serde_json::from_value(v).unwrap();
        assert_eq!(old.lambda, None);
        assert_eq!(old.score(&rows(1)[0].0), c.chosen.score(&rows(1)[0].0));
    }
}
