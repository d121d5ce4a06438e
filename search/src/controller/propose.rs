//! Proposing a round: the strategy's proposals (the first round uniform), each checked
//! against the constraints and the run's known architectures before it costs anything.

use super::strategy::{self, Pool, Strategy};
use super::{CandidateRecord, Controller, Phase};
use crate::error::Result;
use genas_space::{satisfies, Architecture, Cost};

/// Uniform draws tried for an architecture not yet in the run before the run stops
/// proposing.
const UNIFORM_DRAWS: usize = 100_000;

/// The order an exhaustive run proposes the whole space in: fixed by the search seed.
pub fn exhaustive_order(mut all: Vec<Architecture>, seed: u64) -> Vec<Architecture> {
    genas_space::Rng::seed_from_u64(seed ^ 0xe4a0_5717).shuffle(&mut all);
    all
}

impl<'a> Controller<'a> {
    /// What the strategy sees of the run.
    pub(super) fn pool(&mut self) -> Pool<'_> {
        let s = &self.cx.experiment.search;
        Pool {
            space: self.cx.space,
            rng: &mut self.state.rng,
            population: &self.state.population,
            cands: &self.cands,
            objectives: &self.cx.plan.objectives,
            size: s.population as usize,
            tournament: s.tournament as usize,
        }
    }

    /// Draws one architecture within the constraints, not yet in the run; `None` when none
    /// can be found (a space nearly exhausted, or constraints almost nothing meets).
    fn draw(&mut self, strategy: &dyn Strategy) -> Option<(Architecture, String)> {
        if let Some(all) = &self.cx.exhaustive {
            // Every architecture once, in the run's order.
            let next = all.get(self.state.proposed as usize)?;
            return Some((next.clone(), "exhaustive".into()));
        }
        for _ in 0..256 {
            if let Some((a, origin)) = strategy.propose(&mut self.pool()) {
                if !satisfies(&Cost::of(&a), &self.cx.experiment.constraints) {
                    self.state.rejected_by_constraints += 1;
                    continue;
                }
                if !self.cands.contains_key(&a.id()) {
                    return Some((a, origin));
                }
            }
        }
        // The strategy keeps proposing known architectures: a fresh uniform draw instead.
        for _ in 0..UNIFORM_DRAWS {
            let a = self.cx.space.sample(&mut self.state.rng);
            if !satisfies(&Cost::of(&a), &self.cx.experiment.constraints) {
                self.state.rejected_by_constraints += 1;
                continue;
            }
            if !self.cands.contains_key(&a.id()) {
                return Some((a, "random".into()));
            }
        }
        None
    }

    pub(super) fn propose(&mut self) -> Result<()> {
        let s = &self.cx.experiment.search;
        if self.state.proposed >= self.budget() {
            self.state.phase = Phase::Done;
            return self.commit(&[], &[serde_json::json!({"event": "done"})], &[]);
        }
        let n = (s.population.max(1)).min(self.budget() - self.state.proposed) as usize;
        // The first round has no population to draw from.
        let strategy: &dyn Strategy = if self.state.population.is_empty() {
            &strategy::Random
        } else {
            strategy::of(s.strategy)
        };
        let mut batch = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let Some((arch, origin)) = self.draw(strategy) else {
                break;
            };
            let id = arch.id();
            let rec = CandidateRecord {
                id: id.clone(),
                index: self.state.proposed,
                round: self.state.round,
                cost: Cost::of(&arch),
                architecture: arch,
                origin,
                proxies: None,
                screen_score: None,
                screened_out: false,
                rungs: Vec::new(),
                latency_ms_per_token: None,
            };
            self.state.proposed += 1;
            self.cands.insert(id.clone(), rec);
            ids.push(id.clone());
            batch.push(id);
        }
        if batch.is_empty() {
            // Nothing new could be drawn: the run ends with what it has.
            self.state.phase = Phase::Done;
            return self.commit(
                &[],
                &[serde_json::json!({"event": "done", "reason": "no new architecture could be drawn within the constraints"})],
                &[],
            );
        }
        self.state.batch = batch;
        self.state.phase = Phase::Screen;
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.commit(
            &refs,
            &[serde_json::json!({"event": "proposed", "round": self.state.round, "candidates": ids})],
            &[],
        )
    }
}
