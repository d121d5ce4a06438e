//! The zero-cost screen: every proposal of a round scored by the calibrated ensemble; the
//! `screen_keep` share first by Pareto rank over (predicted quality, cost) goes on to the rungs.

use super::{objectives, CandidateRecord, Controller, Phase, Progress};
use crate::error::Result;
use crate::pareto;
use genas_scoring::zero_cost::ProxyScores;
use genas_space::{Architecture, Objective};
use std::collections::BTreeMap;

/// Orders a screened batch best first: by Pareto rank over the predicted quality (the screen
/// score) and the cost objectives, known before training (latency, measured only after, is
/// stood in for by FLOPs/token), then crowding, then proposal order. Ranking by predicted
/// quality alone threw away the small architectures a cost objective's end of the front
/// needs: on quick32's table the screened searches ended below unscreened ones.
pub fn screen_order(
    ids: &[String],
    cands: &BTreeMap<String, CandidateRecord>,
    objs: &[Objective],
) -> Vec<String> {
    let mut ids: Vec<&String> = ids.iter().collect();
    ids.sort_by_key(|id| cands[*id].index);
    let points: Vec<Vec<f64>> = ids
        .iter()
        .map(|id| {
            let c = &cands[*id];
            let predicted = -c.screen_score.unwrap_or(f64::MIN);
            objs.iter()
                .map(|o| match o {
                    Objective::Quality => predicted,
                    Objective::LatencyMsPerToken => c.cost.flops_per_token,
                    _ => objectives(c, 0.0, std::slice::from_ref(o))[0],
                })
                .collect()
        })
        .collect();
    pareto::order(&points)
        .into_iter()
        .map(|i| ids[i].clone())
        .collect()
}

impl Controller<'_> {
    pub(super) fn screen(&mut self, progress: &Progress) -> Result<()> {
        let batch = self.state.batch.clone();
        let archs: Vec<Architecture> = batch
            .iter()
            .map(|id| self.cands[id].architecture.clone())
            .collect();
        let seed = self.cx.experiment.teacher.seed;
        let label = format!("round {} screen", self.state.round + 1);
        let scores: Vec<ProxyScores> =
            self.cx
                .executor
                .proxies(&archs, seed, self.cx.workers, &|done, total| {
                    progress(&label, done, total)
                });
        for (id, p) in batch.iter().zip(scores) {
            let c = self.cands.get_mut(id).expect("proposed");
            c.screen_score = self.cx.ensemble.as_ref().map(|e| e.score(&p));
            c.proxies = Some(p);
        }
        // Without an ensemble nothing is screened out, and the queue keeps proposal order.
        let (order, keep) = match self.cx.ensemble {
            Some(_) => (
                screen_order(&batch, &self.cands, &self.cx.plan.objectives),
                ((batch.len() as f64 * self.cx.experiment.fidelity.screen_keep).ceil() as usize)
                    .clamp(1, batch.len()),
            ),
            None => (batch.clone(), batch.len()),
        };
        let kept: Vec<String> = order[..keep].to_vec();
        for id in &order[keep..] {
            self.cands.get_mut(id).expect("proposed").screened_out = true;
        }
        self.state.screened += batch.len() as u32;
        self.state.queue = kept.clone();
        self.state.rung = 0;
        self.state.phase = Phase::Rung;
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        self.commit(
            &refs,
            &[serde_json::json!({"event": "screened", "round": self.state.round, "kept": kept})],
            &[],
        )
    }
}
