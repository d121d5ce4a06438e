//! The fidelity schedule: each rung's distillation settings, promotion of the best 1/eta by
//! Pareto rank, and the end of a round (the strategy's next population).

use super::{selection_order, strategy, Controller, Phase};
use crate::error::Result;
use genas_scoring::distill::DistillConfig;

impl Controller<'_> {
    pub(super) fn rung_config(&self, rung: usize) -> DistillConfig {
        let steps = self.cx.experiment.fidelity.rung_steps[rung];
        DistillConfig::of_experiment(self.cx.experiment, steps)
    }

    pub(super) fn finish_rung(&mut self) -> Result<()> {
        let rung = self.state.rung;
        let f = &self.cx.experiment.fidelity;
        if rung + 1 < f.rung_steps.len() {
            // Promote the best 1/eta by Pareto rank at this rung (diverged ones never).
            let objs = &self.cx.plan.objectives;
            let alive: Vec<String> = self
                .state
                .queue
                .iter()
                .filter(|id| {
                    self.cands[*id]
                        .rungs
                        .iter()
                        .any(|r| r.rung == rung && r.result.eval.is_some())
                })
                .cloned()
                .collect();
            let order = selection_order(&alive, &self.cands, objs);
            let keep = (self.state.queue.len().div_ceil(f.eta.max(1) as usize)).min(order.len());
            self.state.queue = order[..keep].to_vec();
            self.state.rung += 1;
            if self.state.queue.is_empty() {
                return self.end_round();
            }
            let ev = serde_json::json!({"event": "promoted", "rung": rung + 1, "candidates": self.state.queue});
            return self.commit(&[], &[ev], &[]);
        }
        self.end_round()
    }

    pub(super) fn end_round(&mut self) -> Result<()> {
        let evaluated: Vec<String> = self
            .state
            .batch
            .iter()
            .filter(|id| !self.cands[*id].screened_out)
            .cloned()
            .collect();
        let kind = self.cx.experiment.search.strategy;
        let next = strategy::of(kind).next_population(&self.pool(), evaluated);
        self.state.population = next;
        self.state.round += 1;
        self.state.batch.clear();
        self.state.queue.clear();
        self.state.rung = 0;
        self.state.phase = Phase::Propose;
        let ev = serde_json::json!({"event": "round_done", "round": self.state.round});
        self.commit(&[], &[ev], &[])
    }
}
