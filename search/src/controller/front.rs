//! The objectives of a candidate, the hypervolume's reference point, the Pareto front over
//! the top rung and its hypervolume, and the selection order promotion and parents use.

use super::{CandidateRecord, RunPlan};
use crate::error::Result;
use crate::pareto;
use genas_space::{Experiment, Objective, SearchSpace};
use std::collections::BTreeMap;

/// The objective vector (all minimised) of a candidate with a result at `rung`.
pub fn objectives(c: &CandidateRecord, val_ce: f64, objectives: &[Objective]) -> Vec<f64> {
    objectives
        .iter()
        .map(|o| match o {
            Objective::Quality => val_ce,
            Objective::Params => c.cost.params as f64,
            Objective::NonzeroParams => c.cost.nonzero_params as f64,
            Objective::FlopsPerToken => c.cost.flops_per_token,
            Objective::MemoryBytes => c.cost.memory_bytes as f64,
            Objective::LatencyMsPerToken => c.latency_ms_per_token.unwrap_or(f64::INFINITY),
        })
        .collect()
}

/// The reference point: a uniform predictor's loss, and 1.1 × the largest value the space
/// and constraints allow for every cost objective.
pub fn reference_point(
    objectives: &[Objective],
    space: &SearchSpace,
    exp: &Experiment,
) -> Result<Vec<f64>> {
    let s = space.summary(&exp.constraints)?;
    let c = &exp.constraints;
    let max_params = c.max_params.map_or(s.max_params, |m| m.min(s.max_params)) as f64;
    Ok(objectives
        .iter()
        .map(|o| match o {
            Objective::Quality => (space.vocab_size as f64).ln(),
            Objective::Params => 1.1 * max_params,
            Objective::NonzeroParams => 1.1 * c.max_nonzero_params.map_or(max_params, |m| m as f64),
            Objective::FlopsPerToken => {
                1.1 * c
                    .max_flops_per_token
                    .map_or(s.max_flops_per_token, |m| m.min(s.max_flops_per_token))
            }
            // fp32 weights of the largest model plus a generous state allowance.
            Objective::MemoryBytes => 1.1 * c.max_memory_mb.map_or(8.0 * max_params, |m| m * 1e6),
            Objective::LatencyMsPerToken => c.max_latency_ms_per_token.unwrap_or(10.0) * 1.1,
        })
        .collect())
}

/// Candidates that reached the top rung, with their objective vectors.
fn top_rung_points(
    cands: &BTreeMap<String, CandidateRecord>,
    top: usize,
    objs: &[Objective],
    max_latency: Option<f64>,
) -> (Vec<String>, Vec<Vec<f64>>) {
    let mut ids = Vec::new();
    let mut pts = Vec::new();
    let mut ordered: Vec<&CandidateRecord> = cands.values().collect();
    ordered.sort_by_key(|c| c.index);
    for c in ordered {
        let too_slow = match (max_latency, c.latency_ms_per_token) {
            (Some(limit), Some(ms)) => ms > limit,
            _ => false,
        };
        if too_slow {
            continue;
        }
        if let Some((r, ce)) = c.best_rung() {
            if r == top {
                ids.push(c.id.clone());
                pts.push(objectives(c, ce, objs));
            }
        }
    }
    (ids, pts)
}

/// Front ids and the normalised hypervolume (each objective divided by the reference).
pub fn front_and_hypervolume(
    cands: &BTreeMap<String, CandidateRecord>,
    top: usize,
    plan: &RunPlan,
) -> (Vec<String>, f64) {
    let (ids, pts) = top_rung_points(cands, top, &plan.objectives, plan.max_latency_ms_per_token);
    let front: Vec<usize> = pareto::front(&pts);
    let norm: Vec<Vec<f64>> = front
        .iter()
        .map(|&i| {
            pts[i]
                .iter()
                .zip(&plan.reference)
                .map(|(x, r)| x / r)
                .collect()
        })
        .collect();
    let ones = vec![1.0; plan.reference.len()];
    (
        front.iter().map(|&i| ids[i].clone()).collect(),
        pareto::hypervolume(&norm, &ones),
    )
}

/// Orders candidate ids best first for selection: by highest rung reached (higher first),
/// then Pareto order of their objectives at that rung; candidates with no result last, by
/// screen score.
pub fn selection_order(
    ids: &[String],
    cands: &BTreeMap<String, CandidateRecord>,
    objs: &[Objective],
) -> Vec<String> {
    let mut groups: BTreeMap<std::cmp::Reverse<usize>, Vec<(String, Vec<f64>)>> = BTreeMap::new();
    let mut rest: Vec<(String, f64)> = Vec::new();
    for id in ids {
        let c = &cands[id];
        match c.best_rung() {
            Some((r, ce)) => groups
                .entry(std::cmp::Reverse(r))
                .or_default()
                .push((id.clone(), objectives(c, ce, objs))),
            None => rest.push((id.clone(), c.screen_score.unwrap_or(f64::NEG_INFINITY))),
        }
    }
    let mut out = Vec::new();
    for (_, g) in groups {
        let pts: Vec<Vec<f64>> = g.iter().map(|x| x.1.clone()).collect();
        out.extend(pareto::order(&pts).into_iter().map(|i| g[i].0.clone()));
    }
    rest.sort_by(|a, b| b.1.total_cmp(&a.1));
    out.extend(rest.into_iter().map(|x| x.0));
    out
}
