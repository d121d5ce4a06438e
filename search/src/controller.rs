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

use crate::executor::{Executor, Job, Output};
use crate::pareto;
use anyhow::{Context, Result};
use genas_proxies::calibrate::Ensemble;
use genas_proxies::distill::{DistillConfig, DistillResult};
use genas_proxies::engine::{Cpu, Generator, Model, SampleConfig};
use genas_proxies::zero_cost::ProxyScores;
use genas_space::{
    satisfies, Architecture, Cost, Experiment, Objective, Rng, SearchSpace, Strategy,
};
use genas_store::Archive;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

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

/// The initialisation seed of a candidate: from the run seed and the architecture id, so the
/// same architecture gets the same result whatever order it is evaluated in.
pub fn init_seed(seed: u64, arch_id: &str) -> u64 {
    let h = Sha256::digest(arch_id.as_bytes());
    seed ^ u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))
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

/// A rung result waiting for its turn to be committed: the result, the measured latency and
/// the cache key to store it under (none for a cache hit).
type Finished = (RungResult, Option<f64>, Option<String>);

/// Uniform draws tried for an architecture not yet in the run before the run stops
/// proposing.
const UNIFORM_DRAWS: usize = 100_000;

/// The controller over one run.
pub struct Controller<'a> {
    pub cx: RunContext<'a>,
    pub state: ControllerState,
    pub cands: BTreeMap<String, CandidateRecord>,
}

fn to_value<T: Serialize>(x: &T) -> Result<Value> {
    Ok(serde_json::to_value(x)?)
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
        let state = match cx.archive.state(&cx.run)? {
            Some(v) => serde_json::from_value(v)
                .with_context(|| format!("run {}: unreadable controller state", cx.run))?,
            None => initial_state(cx.experiment.search.seed, rungs),
        };
        let mut cands = BTreeMap::new();
        for (id, v) in cx.archive.candidates(&cx.run)? {
            let c: CandidateRecord = serde_json::from_value(v)
                .with_context(|| format!("run {}: unreadable candidate {id}", cx.run))?;
            cands.insert(id, c);
        }
        Ok(Controller { cx, state, cands })
    }

    fn commit(&self, changed: &[&str], events: &[Value], cache: &[(String, Value)]) -> Result<()> {
        let c: Vec<(String, Value)> = changed
            .iter()
            .map(|id| Ok((id.to_string(), to_value(&self.cands[*id])?)))
            .collect::<Result<_>>()?;
        self.cx
            .archive
            .commit(&self.cx.run, &c, &to_value(&self.state)?, events, cache)?;
        Ok(())
    }

    fn top(&self) -> usize {
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

    fn budget(&self) -> u32 {
        let candidates = self.cx.experiment.search.candidates;
        match &self.cx.exhaustive {
            Some(all) => candidates.min(u32::try_from(all.len()).unwrap_or(u32::MAX)),
            None => candidates,
        }
    }

    /// Draws one architecture within the constraints, not yet in the run; `None` when none
    /// can be found (a space nearly exhausted, or constraints almost nothing meets).
    fn draw(
        &mut self,
        make: &mut dyn FnMut(&mut Self) -> Option<(Architecture, String)>,
    ) -> Option<(Architecture, String)> {
        if let Some(all) = &self.cx.exhaustive {
            // Every architecture once, in the run's order.
            let next = all.get(self.state.proposed as usize)?;
            return Some((next.clone(), "exhaustive".into()));
        }
        for _ in 0..256 {
            if let Some((a, origin)) = make(self) {
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

    fn tournament(&mut self, k: usize) -> Option<String> {
        let pop = self.state.population.clone();
        if pop.is_empty() {
            return None;
        }
        let picks: Vec<String> = (0..k.max(1))
            .map(|_| pop[self.state.rng.index(pop.len())].clone())
            .collect();
        selection_order(&picks, &self.cands, &self.cx.plan.objectives)
            .into_iter()
            .next()
    }

    fn propose(&mut self) -> Result<()> {
        let s = &self.cx.experiment.search;
        if self.state.proposed >= self.budget() {
            self.state.phase = Phase::Done;
            return self.commit(&[], &[serde_json::json!({"event": "done"})], &[]);
        }
        let n = (s.population.max(1)).min(self.budget() - self.state.proposed) as usize;
        let strategy = if self.state.population.is_empty() {
            Strategy::Random
        } else {
            s.strategy
        };
        let tournament = s.tournament as usize;
        let mut batch = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let drawn = self.draw(&mut |c: &mut Self| match strategy {
                Strategy::Random => Some((c.cx.space.sample(&mut c.state.rng), "random".into())),
                Strategy::Evolution => {
                    let p = c.tournament(tournament)?;
                    let a =
                        c.cx.space
                            .mutate(&c.cands[&p].architecture, &mut c.state.rng)?;
                    Some((a, format!("mutation of {p}")))
                }
                Strategy::Nsga2 => {
                    let (p1, p2) = (c.tournament(2)?, c.tournament(2)?);
                    let child = c.cx.space.crossover(
                        &c.cands[&p1].architecture,
                        &c.cands[&p2].architecture,
                        &mut c.state.rng,
                    )?;
                    let a = c.cx.space.mutate(&child, &mut c.state.rng).unwrap_or(child);
                    Some((a, format!("crossover of {p1} and {p2}")))
                }
            });
            let Some((arch, origin)) = drawn else { break };
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

    fn screen(&mut self, progress: &Progress) -> Result<()> {
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

    fn rung_config(&self, rung: usize) -> DistillConfig {
        let steps = self.cx.experiment.fidelity.rung_steps[rung];
        crate::scoring::experiment_distill_config(self.cx.experiment, steps)
    }

    /// Evaluates the current rung's queue; false if stopped before it completed.
    fn rung(&mut self, progress: &Progress) -> Result<bool> {
        let rung = self.state.rung;
        let cfg = self.rung_config(rung);
        let top = rung == self.top();
        let pending: Vec<String> = self
            .state
            .queue
            .iter()
            .filter(|id| !self.cands[*id].rungs.iter().any(|r| r.rung == rung))
            .cloned()
            .collect();
        let label = format!(
            "round {} rung {} ({} steps)",
            self.state.round + 1,
            rung + 1,
            cfg.steps
        );
        let total = self.state.queue.len();
        let already = total - pending.len();
        // Results are committed in queue order: one waits until those before it are in.
        // Cache hits are known at once; the executor runs the rest.
        let finished: Mutex<BTreeMap<usize, Finished>> = Mutex::new(BTreeMap::new());
        let committed = Mutex::new(0usize);
        let error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
        let seed = self.cx.experiment.teacher.seed;
        let (plan, archive, stop, workers, executor) = (
            self.cx.plan.clone(),
            self.cx.archive,
            self.cx.stop,
            self.cx.workers,
            self.cx.executor,
        );
        // The jobs, and for each its place in the queue and its cache key.
        let mut batch: Vec<Job> = Vec::new();
        let mut slots: Vec<(usize, String)> = Vec::new();
        for (i, id) in pending.iter().enumerate() {
            let key = cache_key(id, &plan, &cfg);
            let cached = archive
                .cached(&key)
                .ok()
                .flatten()
                .and_then(|v| serde_json::from_value::<DistillResult>(v).ok());
            match cached {
                // The top rung measures latency, so it always trains.
                Some(result) if !top => {
                    let rr = RungResult {
                        rung,
                        steps: cfg.steps,
                        result,
                        cached: true,
                    };
                    finished.lock().expect("f").insert(i, (rr, None, None));
                }
                _ => {
                    slots.push((i, key));
                    batch.push(Job {
                        id: id.clone(),
                        architecture: self.cands[id].architecture.clone(),
                        init_seed: init_seed(seed, id),
                        rung,
                        config: cfg.clone(),
                        measure_latency: top,
                    });
                }
            }
        }
        let this = Mutex::new(&mut *self);
        // Commits every result that is next in queue order; false once a commit failed.
        let commit_ready = || -> bool {
            let mut c = committed.lock().expect("c");
            loop {
                let item = finished.lock().expect("f").remove(&*c);
                let Some((rr, lat, ck)) = item else { break };
                let pid = pending[*c].clone();
                let mut me = this.lock().expect("controller");
                if let Err(e) = me.record_result(&pid, rr, lat, ck, &plan) {
                    *error.lock().expect("e") = Some(e);
                    return false;
                }
                *c += 1;
                progress(&label, already + *c, total);
            }
            true
        };
        if commit_ready() && !batch.is_empty() {
            executor.run(&batch, workers, stop, &|k, out: Output| {
                let (i, key) = &slots[k];
                finished.lock().expect("f").insert(
                    *i,
                    (
                        RungResult {
                            rung,
                            steps: cfg.steps,
                            result: out.result,
                            cached: false,
                        },
                        out.latency_ms_per_token,
                        Some(key.clone()),
                    ),
                );
                commit_ready()
            });
        }
        if let Some(e) = error.into_inner().expect("e") {
            return Err(e);
        }
        let done = committed.into_inner().expect("c");
        if done < pending.len() {
            return Ok(false);
        }
        self.finish_rung()?;
        Ok(true)
    }

    fn record_result(
        &mut self,
        id: &str,
        rr: RungResult,
        latency: Option<f64>,
        cache: Option<String>,
        plan: &RunPlan,
    ) -> Result<()> {
        let rung = rr.rung;
        let cache_entry = match cache {
            Some(k) => vec![(k, to_value(&rr.result)?)],
            None => vec![],
        };
        {
            let c = self.cands.get_mut(id).expect("queued");
            c.rungs.push(rr);
            if latency.is_some() {
                c.latency_ms_per_token = latency;
            }
        }
        self.state.evaluations += 1;
        self.state.per_rung[rung] += 1;
        let (front, hv) = front_and_hypervolume(&self.cands, self.top(), plan);
        self.state.front = front;
        self.state.hypervolume.push((self.state.evaluations, hv));
        let ev = serde_json::json!({"event": "evaluated", "candidate": id, "rung": rung, "hypervolume": hv});
        self.commit(&[id], &[ev], &cache_entry)
    }

    fn finish_rung(&mut self) -> Result<()> {
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

    fn end_round(&mut self) -> Result<()> {
        let s = &self.cx.experiment.search;
        let evaluated: Vec<String> = self
            .state
            .batch
            .iter()
            .filter(|id| !self.cands[*id].screened_out)
            .cloned()
            .collect();
        let pop = s.population.max(1) as usize;
        match s.strategy {
            Strategy::Random | Strategy::Evolution => {
                self.state.population.extend(evaluated);
                let excess = self.state.population.len().saturating_sub(pop);
                self.state.population.drain(..excess);
            }
            Strategy::Nsga2 => {
                let mut merged = self.state.population.clone();
                merged.extend(evaluated);
                let order = selection_order(&merged, &self.cands, &self.cx.plan.objectives);
                self.state.population = order.into_iter().take(pop).collect();
            }
        }
        self.state.round += 1;
        self.state.batch.clear();
        self.state.queue.clear();
        self.state.rung = 0;
        self.state.phase = Phase::Propose;
        let ev = serde_json::json!({"event": "round_done", "round": self.state.round});
        self.commit(&[], &[ev], &[])
    }
}

/// Generation latency of a trained candidate: one context of tokens, ms/token.
pub fn latency_ms(model: &Model<Cpu<f32>>) -> f64 {
    let mut g = Generator::new(model);
    let n = (model.arch.context as usize).max(32);
    let mut rng = Rng::seed_from_u64(0);
    let start = std::time::Instant::now();
    g.generate(
        &[0],
        n,
        SampleConfig {
            temperature: 1.0,
            top_k: None,
        },
        &mut rng,
    );
    start.elapsed().as_secs_f64() * 1e3 / n as f64
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
