//! The search controller: proposes architectures (random, regularized evolution with aging,
//! NSGA-II), filters them by the cost-model constraints before any evaluation, screens them with
//! the calibrated zero-cost ensemble, and runs successive halving of brief distillations whose
//! promotion is by Pareto rank (crowding distance breaks ties). It keeps the Pareto front over
//! the experiment's objectives and its hypervolume against a reference point fixed at run start.
//!
//! Exact resume: the controller is a deterministic state machine whose whole state
//! (`ControllerState`, RNG included) is committed to the archive atomically with every result
//! that changes it. Every evaluation's outcome depends only on the architecture and the run's
//! settings (its initialisation seed is derived from the architecture id), candidates are
//! evaluated side by side but committed in queue order, so an interrupted run resumed from the
//! archive makes the same decisions as an uninterrupted one. (A measured objective, latency, is
//! the one exception: it is measured once and stored.)
//!
//! The parts, each in its own module: `propose` (drawing within the constraints, through a
//! `strategy`: one file per strategy), `screen` (the zero-cost screen), `evaluate` (a rung's
//! jobs through the executor, committed in queue order), `schedule` (the fidelity schedule:
//! rung settings, promotion, the end of a round) and `front` (objectives, Pareto front and
//! hypervolume). Where evaluations run is the executor's business (`crate::executor`).

mod evaluate;
mod front;
mod propose;
mod schedule;
mod screen;
pub mod strategy;

pub use front::{front_and_hypervolume, objectives, reference_point, selection_order};
pub use propose::exhaustive_order;
pub use screen::screen_order;

use crate::error::Result;
use crate::job::Executor;
use genas_scoring::calibrate::Ensemble;
use genas_scoring::distill::{DistillConfig, DistillResult};
use genas_scoring::zero_cost::ProxyScores;
use genas_space::{Architecture, Cost, Experiment, Objective, Rng, SearchSpace};
use genas_store::Archive;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// One architecture of a run and everything learnt about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateRecord {
    pub id: String,
    /// Proposal order in the run (0-based).
    pub index: u32,
    pub round: u32,
    pub architecture: Architecture,
    pub cost: Cost,
    /// How it was proposed: "random", "mutation of ID", "crossover of A and B".
    pub origin: String,
    pub proxies: Option<ProxyScores>,
    /// The calibrated ensemble's score (higher = predicted better).
    pub screen_score: Option<f64>,
    pub screened_out: bool,
    /// Brief distillation per rung reached.
    pub rungs: Vec<RungResult>,
    /// Measured generation latency after the top rung, ms/token.
    pub latency_ms_per_token: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RungResult {
    pub rung: usize,
    pub steps: u32,
    pub result: DistillResult,
    /// Taken from the cross-run evaluation cache.
    pub cached: bool,
    /// The executor could not get a result (`Output::failed`): the class of failure;
    /// `result.diverged` says why. A resumed run evaluates it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl CandidateRecord {
    /// The highest rung with a non-diverged result and its validation cross-entropy.
    pub fn best_rung(&self) -> Option<(usize, f64)> {
        self.rungs
            .iter()
            .filter_map(|r| r.result.eval.map(|e| (r.rung, e.val_ce)))
            .next_back()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Propose,
    Screen,
    Rung,
    Done,
}

/// Everything the controller knows between two commits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControllerState {
    pub phase: Phase,
    pub round: u32,
    /// Architectures proposed so far (each within the constraints).
    pub proposed: u32,
    /// Draws the constraints rejected before any evaluation.
    pub rejected_by_constraints: u32,
    pub rng: Rng,
    /// Evolution: the aging population (oldest first); NSGA-II: the parents.
    pub population: Vec<String>,
    /// This round's proposals in order.
    pub batch: Vec<String>,
    /// Current successive-halving rung and its queue (best first).
    pub rung: usize,
    pub queue: Vec<String>,
    /// Brief distillations run (cache hits included).
    pub evaluations: u32,
    /// (evaluations, hypervolume) after every evaluation.
    pub hypervolume: Vec<(u32, f64)>,
    /// Ids of the current Pareto front.
    pub front: Vec<String>,
    /// Candidates per stage, for the report.
    pub screened: u32,
    pub per_rung: Vec<u32>,
}

/// Settings fixed at run start (stored in the run record).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    pub objectives: Vec<Objective>,
    /// Reference point of the hypervolume, in objective units (quality: nats/token).
    pub reference: Vec<f64>,
    pub teacher_key: String,
    pub calibration_key: String,
    pub data_fingerprint: String,
    /// `[constraints] max_latency_ms_per_token`: a top-rung candidate measured slower stays
    /// off the front. (Absent in runs recorded before it was enforced.)
    #[serde(default)]
    pub max_latency_ms_per_token: Option<f64>,
    /// Hugging Face tokenizers: the corpus's tokens per character, which turns nats per token
    /// into bits per character. (Absent for characters, bytes and pixels.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_char: Option<f64>,
}

impl RunPlan {
    /// Nats per token in the run's bits unit (bits per character, byte or pixel).
    pub fn bits(&self, nats: f64) -> f64 {
        nats / std::f64::consts::LN_2 * self.tokens_per_char.unwrap_or(1.0)
    }
}

/// What a search needs at hand while it runs.
pub struct RunContext<'a> {
    pub experiment: &'a Experiment,
    pub space: &'a SearchSpace,
    pub archive: &'a Archive,
    pub run: String,
    pub plan: RunPlan,
    /// The calibrated screen; `None` when the space is too small to calibrate on, and then
    /// every proposal goes on to the rungs.
    pub ensemble: Option<Ensemble>,
    /// When the whole space within the constraints fits the budget: every architecture of
    /// it, in the order the run proposes them (each exactly once).
    pub exhaustive: Option<Vec<Architecture>>,
    /// Runs the brief distillations and the proxy suite.
    pub executor: &'a dyn Executor,
    /// Told of jobs that failed, one line per class of failure and rung.
    pub warn: &'a (dyn Fn(&str) + Sync),
    pub workers: usize,
    pub stop: &'a AtomicBool,
}

/// A progress report from the controller: (stage label, done, total).
pub type Progress<'a> = dyn Fn(&str, usize, usize) + Sync + 'a;

pub fn initial_state(seed: u64, rungs: usize) -> ControllerState {
    ControllerState {
        phase: Phase::Propose,
        round: 0,
        proposed: 0,
        rejected_by_constraints: 0,
        rng: Rng::seed_from_u64(seed ^ 0x005e_a2c4),
        population: Vec::new(),
        batch: Vec::new(),
        rung: 0,
        queue: Vec::new(),
        evaluations: 0,
        hypervolume: Vec::new(),
        front: Vec::new(),
        screened: 0,
        per_rung: vec![0; rungs],
    }
}

/// The cross-run cache key of a brief distillation.
pub fn cache_key(arch_id: &str, plan: &RunPlan, cfg: &DistillConfig) -> String {
    let mut h = Sha256::new();
    h.update(arch_id.as_bytes());
    h.update(plan.data_fingerprint.as_bytes());
    h.update(plan.teacher_key.as_bytes());
    h.update(serde_json::to_string(cfg).unwrap_or_default().as_bytes());
    let d = h.finalize();
    format!(
        "distill-{}",
        d[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// The controller over one run.
pub struct Controller<'a> {
    pub cx: RunContext<'a>,
    pub state: ControllerState,
    pub cands: BTreeMap<String, CandidateRecord>,
}

/// Why `run` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Finished,
    Interrupted,
}

impl<'a> Controller<'a> {
    /// Loads the run's state and candidates from the archive (a fresh state if none).
    pub fn open(cx: RunContext<'a>) -> Result<Controller<'a>> {
        let rungs = cx.experiment.fidelity.rung_steps.len();
        let state = match cx.archive.state::<ControllerState>(&cx.run)? {
            Some(state) => state,
            None => initial_state(cx.experiment.search.seed, rungs),
        };
        let cands: BTreeMap<String, CandidateRecord> =
            cx.archive.candidates(&cx.run)?.into_iter().collect();
        Ok(Controller { cx, state, cands })
    }

    pub(super) fn commit(
        &self,
        changed: &[&str],
        events: &[Value],
        cache: &[(String, Value)],
    ) -> Result<()> {
        let c: Vec<(String, &CandidateRecord)> = changed
            .iter()
            .map(|id| (id.to_string(), &self.cands[*id]))
            .collect();
        self.cx
            .archive
            .commit(&self.cx.run, &c, &self.state, events, cache)?;
        Ok(())
    }

    pub(super) fn top(&self) -> usize {
        self.cx.experiment.fidelity.rung_steps.len() - 1
    }

    /// Runs until the budget is spent or `stop` is set (after the commit in progress).
    pub fn run(&mut self, progress: &Progress) -> Result<Outcome> {
        loop {
            if self.cx.stop.load(Ordering::SeqCst) {
                return Ok(Outcome::Interrupted);
            }
            match self.state.phase {
                Phase::Propose => self.propose()?,
                Phase::Screen => self.screen(progress)?,
                Phase::Rung => {
                    if !self.rung(progress)? {
                        return Ok(Outcome::Interrupted);
                    }
                }
                Phase::Done => return Ok(Outcome::Finished),
            }
        }
    }

    pub(super) fn budget(&self) -> u32 {
        let candidates = self.cx.experiment.search.candidates;
        match &self.cx.exhaustive {
            Some(all) => candidates.min(u32::try_from(all.len()).unwrap_or(u32::MAX)),
            None => candidates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genas_space::{Activation, Attention, Layer, Sparsity};

    fn candidate(i: u32, d_model: u32, score: f64) -> CandidateRecord {
        let architecture = Architecture {
            vocab_size: 16,
            context: 8,
            d_model,
            tie_embeddings: true,
            share_layers: 1,
            layers: vec![Layer::new(
                Attention::Full { heads: 2 },
                2 * d_model,
                Activation::Gelu,
                None,
                Sparsity::Dense,
            )],
            norm: Default::default(),
            position: Default::default(),
            norm_eps: genas_space::Float(genas_space::NORM_EPS),
        };
        CandidateRecord {
            id: format!("c{i}"),
            index: i,
            round: 0,
            cost: Cost::of(&architecture),
            architecture,
            origin: "test".into(),
            proxies: None,
            screen_score: Some(score),
            screened_out: false,
            rungs: Vec::new(),
            latency_ms_per_token: None,
        }
    }

    #[test]
    fn the_screen_keeps_the_small_end_of_the_front_not_only_the_best_predicted() {
        // Predicted quality grows with size: by score alone the two largest would be kept.
        // On (predicted quality, params) every one is non-dominated, so the order spreads
        // along the front: its two ends first (infinite crowding distance).
        let cands: BTreeMap<String, CandidateRecord> = [
            candidate(0, 8, 0.1),
            candidate(1, 16, 0.2),
            candidate(2, 24, 0.3),
            candidate(3, 32, 0.4),
        ]
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
        let ids: Vec<String> = cands.keys().cloned().collect();
        let objs = [Objective::Quality, Objective::Params];
        let order = screen_order(&ids, &cands, &objs);
        let mut first_two = order[..2].to_vec();
        first_two.sort();
        assert_eq!(first_two, ["c0", "c3"]);
        // With quality the only objective, it is the score order.
        assert_eq!(
            screen_order(&ids, &cands, &[Objective::Quality]),
            ["c3", "c2", "c1", "c0"]
        );
        // A dominated candidate (larger and predicted worse) comes after the front.
        let mut cands = cands;
        cands.insert("c4".into(), candidate(4, 40, 0.0));
        let ids: Vec<String> = cands.keys().cloned().collect();
        assert_eq!(screen_order(&ids, &cands, &objs).last().unwrap(), "c4");
    }
}
