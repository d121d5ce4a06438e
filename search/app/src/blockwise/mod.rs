//! Blockwise search (`[search] mode = "blockwise"`, after Puzzle's blockwise local
//! distillation): the student keeps the teacher's depth and width, and each layer's attention
//! and FFN sub-block is one of the variants the space offers at that width (the teacher's own
//! among them). Every variant of every layer is distilled once, in place in the teacher's
//! network with every other weight held at the teacher's (on the normalised error of its
//! output against the teacher's sub-block's, `genas_scoring::local`, or on the KL at the
//! model's output: `[search] block_objective`), and scored by what replacing that one
//! sub-block costs: its KL to the teacher and its validation loss. The exact choice over every combination (`genas_search::blockwise`) then
//! gives the front of summed score against parameters within the constraints; members spread
//! over it are assembled from their trained sub-blocks (the init weights `genas distill`,
//! `export` and `sample` start from), distilled at the top rung and committed as the run's
//! candidates, so the report, the final distillation and export treat them as any others.
//!
//! Everything a blockwise run trains is stored as it finishes (`Archive::put_block`, the
//! assembled weights under `init-ID`, candidates committed one by one); a resumed run skips
//! what is stored, and since every job is seeded from its architecture, it ends exactly as an
//! uninterrupted one. Blocks are jobs of the run's executor (`Executor::blocks`) and so are
//! the members' top-rung distillations (`Executor::run`, each job naming its assembled
//! weights): on local threads or as Slurm tasks, on the CPU engine or through the PyTorch
//! runner.

pub mod bench;

use crate::experiment::{distill_config, LoadedExperiment};
use anyhow::{anyhow, bail, Context, Result};
use genas_engine::{checkpoint, Cpu, Model, SubBlockLatency};
use genas_scoring::distill::{DistillResult, TeacherTargets};
use genas_scoring::local::cache_activations;
use genas_search::blockwise::{front, Choice, Variant};
use genas_search::controller::{
    front_and_hypervolume, initial_state, CandidateRecord, ControllerState, Phase, RunPlan,
    RungResult,
};
use genas_search::init_seed;
use genas_search::job::{initial_name, BlockJob, BlockOutput, Executor, Job, Output};
use genas_space::{
    satisfies, Architecture, Attention, BlockObjective, BlockScore, Cost, Layer, Objective,
    Sparsity,
};
use genas_store::Archive;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Which half of a layer a variant replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubBlock {
    Attention,
    Ffn,
}

impl SubBlock {
    fn name(self) -> &'static str {
        match self {
            SubBlock::Attention => "attn",
            SubBlock::Ffn => "ffn",
        }
    }

    /// The parameters of layer `i`'s sub-block (its norm included), by name prefix.
    pub fn prefixes(self, i: usize) -> Vec<String> {
        match self {
            SubBlock::Attention => vec![format!("h.{i}.attn."), format!("h.{i}.ln_1.")],
            SubBlock::Ffn => vec![format!("h.{i}.mlp."), format!("h.{i}.ln_2.")],
        }
    }

    /// `base` with this sub-block taken from `donor`, its sparsity included (the other
    /// half keeps its own).
    pub fn apply(self, base: &Layer, donor: &Layer) -> Layer {
        let mut out = base.clone();
        let (attention, ffn) = match self {
            SubBlock::Attention => {
                out.attention = donor.attention.clone();
                out.attention_bias = donor.attention_bias;
                out.qkv_bias = donor.qkv_bias;
                out.qk_norm = donor.qk_norm;
                out.head_dim = donor.head_dim;
                (donor.attention_sparsity(), base.ffn_sparsity())
            }
            SubBlock::Ffn => {
                out.ffn = donor.ffn.clone();
                (base.attention_sparsity(), donor.ffn_sparsity())
            }
        };
        out.with_sparsities(attention, ffn)
    }

    /// The variant's short name (its sparsity at the end unless dense).
    pub fn describe(self, layer: &Layer) -> String {
        let (name, sparsity) = match self {
            SubBlock::Attention => (layer.attention.to_string(), layer.attention_sparsity()),
            SubBlock::Ffn => match &layer.ffn {
                None => return "no ffn".to_string(),
                Some(f) => (
                    match f.rank {
                        Some(r) => format!("ffn {} {} r{r}", f.hidden, f.activation.name()),
                        None => format!("ffn {} {}", f.hidden, f.activation.name()),
                    },
                    layer.ffn_sparsity(),
                ),
            },
        };
        match (sparsity, self, &layer.attention) {
            (Sparsity::Dense, ..) | (_, SubBlock::Attention, Attention::None) => name,
            (s, ..) => format!("{name} {s}"),
        }
    }
}

/// A cost the exact choice keeps apart (each additive over sub-blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    Params,
    NonzeroParams,
    Flops,
}

impl Axis {
    fn of(self, k: &Cost) -> f64 {
        match self {
            Axis::Params => k.params as f64,
            Axis::NonzeroParams => k.nonzero_params as f64,
            Axis::Flops => k.flops_per_token,
        }
    }

    fn limit(self, c: &genas_space::Constraints) -> f64 {
        let bound = |x: Option<u64>| x.map_or(f64::INFINITY, |x| x as f64);
        match self {
            Axis::Params => bound(c.max_params),
            Axis::NonzeroParams => bound(c.max_nonzero_params),
            Axis::Flops => c.max_flops_per_token.unwrap_or(f64::INFINITY),
        }
    }
}

/// The costs the choice keeps apart: the front's size first (the members spread over it):
/// non-zero parameters where the objectives weigh those and not all parameters (a sparse
/// variant is smaller only there), else parameters; then the other count and FLOPs per token
/// where the constraints bound them.
pub fn cost_axes(objectives: &[Objective], c: &genas_space::Constraints) -> Vec<Axis> {
    let nonzero =
        objectives.contains(&Objective::NonzeroParams) && !objectives.contains(&Objective::Params);
    let mut v = if nonzero {
        vec![Axis::NonzeroParams]
    } else {
        vec![Axis::Params]
    };
    if nonzero && c.max_params.is_some() {
        v.push(Axis::Params);
    }
    if !nonzero && c.max_nonzero_params.is_some() {
        v.push(Axis::NonzeroParams);
    }
    if c.max_flops_per_token.is_some() {
        v.push(Axis::Flops);
    }
    v
}

/// One slot of the choice: a layer's sub-block and the donors of its variants (the
/// teacher's own first).
#[derive(Clone, Debug)]
pub struct Slot {
    pub layer: usize,
    pub sub: SubBlock,
    pub variants: Vec<Layer>,
}

/// The slots of a blockwise search of `l` over `base` (the teacher's architecture), or why
/// the space cannot be searched blockwise (one line).
pub fn slots(l: &LoadedExperiment, base: &Architecture) -> Result<Vec<Slot>> {
    let space = &l.space;
    let file = l.experiment.source.display();
    if space.depth != [base.layers.len() as u32] || space.d_model != [base.d_model] {
        bail!(
            "{file}: mode = \"blockwise\" keeps the teacher's depth and width: set [space] depth = [{}] and d_model = [{}]",
            base.layers.len(),
            base.d_model
        );
    }
    if base.share_layers != 1 {
        bail!("{file}: mode = \"blockwise\" needs a teacher whose layers share no weights");
    }
    let options = space.layers_at(base.d_model);
    let mut out = Vec::new();
    for (i, layer) in base.layers.iter().enumerate() {
        for sub in [SubBlock::Attention, SubBlock::Ffn] {
            let mut variants = vec![layer.clone()];
            for o in &options {
                let v = sub.apply(layer, o);
                let mut probe = base.clone();
                probe.layers[i] = v.clone();
                if !variants.contains(&v) && probe.validate().is_ok() {
                    variants.push(v);
                }
            }
            out.push(Slot {
                layer: i,
                sub,
                variants,
            });
        }
    }
    Ok(out)
}

/// A finished blockwise local distillation: one variant of one slot, trained in the
/// teacher's network with everything else held.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockRecord {
    pub layer: usize,
    pub sub_block: SubBlock,
    pub variant: String,
    /// The teacher with this one sub-block replaced.
    pub architecture: Architecture,
    pub steps: u32,
    /// What it trained on (its `train_loss` is that objective's).
    pub objective: BlockObjective,
    /// Its eval is the replace-one score: KL to the teacher and validation loss.
    pub result: DistillResult,
    /// Its network's generation latency, sub-block by sub-block, timed where it trained
    /// (none for a block that diverged, or trained before genas timed blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<SubBlockLatency>,
}

/// The score of a variant whose replacement alone moves the teacher's output by `kl`
/// (nats/token), as `kind` says (`BlockScore`: minus √KL, a distance, or minus the KL); an
/// architecture's score is the sum over its sub-blocks.
pub fn block_score(kind: BlockScore, kl: f64) -> f64 {
    match kind {
        BlockScore::Distance => -kl.max(0.0).sqrt(),
        BlockScore::Kl => -kl.max(0.0),
    }
}

/// The archive key of slot `s`'s variant `v`.
pub fn block_key(s: &Slot, base: &Architecture, v: usize) -> String {
    format!("{}-{}-{}", s.layer, s.sub.name(), replaced(base, s, v).id())
}

fn replaced(base: &Architecture, s: &Slot, v: usize) -> Architecture {
    let mut a = base.clone();
    a.layers[s.layer] = s.variants[v].clone();
    a
}

/// Refuses, in one line, a blockwise experiment this genas cannot run: checked before a run
/// is created.
pub fn check(l: &LoadedExperiment) -> Result<()> {
    slots(l, &l.teacher_architecture()?)?;
    Ok(())
}

/// What a blockwise run needs at hand.
pub struct Blockwise<'a> {
    pub l: &'a LoadedExperiment,
    pub archive: &'a Archive,
    pub run: &'a str,
    pub plan: &'a RunPlan,
    pub teacher: &'a Model<Cpu<f32>>,
    pub targets: &'a TeacherTargets,
    pub workers: usize,
    pub stop: &'a AtomicBool,
}

/// How a blockwise run ended.
pub enum Ended {
    Finished,
    Interrupted,
}

impl Blockwise<'_> {
    /// Trains what is not stored yet through `executor`, chooses, realises and commits;
    /// `Interrupted` when `stop` was set (what finished is stored).
    pub fn run(
        &self,
        executor: &dyn Executor,
        say: &mut dyn FnMut(&str),
        progress: &(dyn Fn(&str, usize, usize) + Sync),
    ) -> Result<Ended> {
        let base = self.teacher.arch.clone();
        let slots = slots(self.l, &base)?;
        let total: usize = slots.iter().map(|s| s.variants.len() - 1).sum();
        let reachable: f64 = slots.iter().map(|s| s.variants.len() as f64).product();
        say(&format!(
            "blockwise: {} slots, {total} sub-block variants to distil against the teacher, {reachable:.3e} architectures reachable",
            slots.len()
        ));
        if !self.train_blocks(executor, &slots, &base, total, progress)? {
            return Ok(Ended::Interrupted);
        }
        let blocks: BTreeMap<String, BlockRecord> =
            self.archive.blocks(self.run)?.into_iter().collect();
        let chosen = self.choose(&slots, &base, &blocks)?;
        say(&format!(
            "blockwise: the exact front holds {} architectures; realising {}",
            chosen.1,
            chosen.0.len()
        ));
        self.realise(executor, &slots, &base, &chosen.0, &blocks, say, progress)
    }

    /// Distils every variant not stored yet through `executor` (`workers` at a time where it
    /// runs them here), storing each as it comes back; false when stopped.
    fn train_blocks(
        &self,
        executor: &dyn Executor,
        slots: &[Slot],
        base: &Architecture,
        total: usize,
        progress: &(dyn Fn(&str, usize, usize) + Sync),
    ) -> Result<bool> {
        let done: BTreeMap<String, BlockRecord> =
            self.archive.blocks(self.run)?.into_iter().collect();
        let pending: Vec<(&Slot, usize, String)> = slots
            .iter()
            .flat_map(|s| (1..s.variants.len()).map(move |v| (s, v)))
            .map(|(s, v)| (s, v, block_key(s, base, v)))
            .filter(|(_, _, k)| !done.contains_key(k))
            .collect();
        let steps = self.l.experiment.search.block_steps;
        let cfg = distill_config(self.l, steps);
        let seed0 = self.l.experiment.teacher.seed;
        let objective = self.l.experiment.search.block_objective;
        // The normalised error trains on the teacher's activations, cached once for every
        // layer (found again on a resume) and dropped once every block is stored.
        let cache = if objective.is_mse() && !pending.is_empty() {
            let mut teacher = genas_exec::local::engine_copy(self.teacher, self.workers.max(1));
            let dir = self.archive.path().join("activations");
            Some(
                cache_activations(&mut teacher, self.targets, cfg.steps as usize, &dir)
                    .map_err(|e| anyhow!("blockwise: {e}"))?
                    .0,
            )
        } else {
            None
        };
        let jobs: Vec<BlockJob> = pending
            .iter()
            .map(|(s, v, key)| {
                let architecture = replaced(base, s, *v);
                let mut config = cfg.clone();
                config.train_only = s.sub.prefixes(s.layer);
                BlockJob {
                    id: key.clone(),
                    init_seed: init_seed(seed0, &architecture.id()),
                    architecture,
                    config,
                    layer: s.layer,
                    attention: s.sub == SubBlock::Attention,
                    objective,
                    activations: cache.as_ref().map(|c| c[s.layer].clone()),
                }
            })
            .collect();
        let stored = AtomicUsize::new(done.len().min(total));
        progress(
            "distilling sub-blocks",
            stored.load(Ordering::SeqCst),
            total,
        );
        // The first block that could not be stored or trained ends the run (what finished
        // stays stored); the rest are not waited for.
        let failure: std::sync::Mutex<Option<anyhow::Error>> = std::sync::Mutex::new(None);
        executor.blocks(&jobs, self.workers, self.stop, &|i, out: BlockOutput| {
            let (s, v, key) = &pending[i];
            let stored_ok = match &out.failed {
                Some(why) => Err(anyhow!(
                    "blockwise: block {key} could not be trained: {}",
                    out.result.diverged.as_deref().unwrap_or(why)
                )),
                None => {
                    let rec = BlockRecord {
                        layer: s.layer,
                        sub_block: s.sub,
                        variant: s.sub.describe(&s.variants[*v]),
                        architecture: jobs[i].architecture.clone(),
                        steps: jobs[i].config.steps,
                        objective,
                        result: out.result,
                        latency: out.latency,
                    };
                    self.archive
                        .put_block(self.run, key, &rec, &out.weights)
                        .map_err(anyhow::Error::from)
                }
            };
            match stored_ok {
                Ok(()) => {
                    progress(
                        "distilling sub-blocks",
                        stored.fetch_add(1, Ordering::SeqCst) + 1,
                        total,
                    );
                    true
                }
                Err(e) => {
                    failure
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                    false
                }
            }
        })?;
        if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let finished = !self.stop.load(Ordering::SeqCst);
        if finished {
            for p in cache.iter().flatten() {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(finished)
    }

    /// Every slot's variants' replace-one KL to the teacher (the teacher's own 0; `None` for a
    /// variant with no finished, finite result).
    pub fn kls(
        slots: &[Slot],
        base: &Architecture,
        blocks: &BTreeMap<String, BlockRecord>,
    ) -> Vec<Vec<Option<f64>>> {
        slots
            .iter()
            .map(|s| {
                (0..s.variants.len())
                    .map(|v| {
                        if v == 0 {
                            Some(0.0)
                        } else {
                            blocks
                                .get(&block_key(s, base, v))
                                .and_then(|b| b.result.eval)
                                .map(|e| e.kl_to_teacher.max(0.0))
                                .filter(|k| k.is_finite())
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Every slot's variants' replace-one scores, [`block_score`] of their KL (the teacher's
    /// own 0; `None` for a variant with no finished, finite result).
    pub fn scores(
        kind: BlockScore,
        slots: &[Slot],
        base: &Architecture,
        blocks: &BTreeMap<String, BlockRecord>,
    ) -> Vec<Vec<Option<f64>>> {
        Self::kls(slots, base, blocks)
            .into_iter()
            .map(|s| {
                s.into_iter()
                    .map(|k| k.map(|k| block_score(kind, k)))
                    .collect()
            })
            .collect()
    }

    /// The replace-one score of every variant ([`block_score`]; the teacher's own is 0; a
    /// variant that diverged is left out), the exact front of summed score
    /// against the constrained costs, and the members realised: spread evenly over the
    /// front's parameter range. Returns them and the front's size.
    fn choose(
        &self,
        slots: &[Slot],
        base: &Architecture,
        blocks: &BTreeMap<String, BlockRecord>,
    ) -> Result<(Vec<Vec<usize>>, usize)> {
        let c = &self.l.experiment.constraints;
        let axes = cost_axes(&self.l.experiment.search.objectives, c);
        let costs = |a: &Architecture| -> Vec<f64> {
            let k = Cost::of(a);
            axes.iter().map(|x| x.of(&k)).collect()
        };
        // Generation latency where the constraints bound it: each variant's sub-block as timed
        // in its own job, the teacher's as timed in the others', and the rest (embedding, head)
        // alike; summed, as Puzzle sums per-block latencies.
        let latency = match c.max_latency_ms_per_token {
            Some(_) => Some(latency_table(slots, base, blocks)?),
            None => None,
        };
        let base_cost = costs(base);
        let mut limits: Vec<f64> = axes.iter().map(|x| x.limit(c)).collect();
        let mut offset = base_cost.clone();
        if let (Some((_, rest)), Some(max)) = (&latency, c.max_latency_ms_per_token) {
            offset.push(*rest);
            limits.push(max);
        }
        let mut kept: Vec<Vec<usize>> = Vec::new();
        let mut table: Vec<Vec<Variant>> = Vec::new();
        let scores = Blockwise::scores(self.l.experiment.search.block_score, slots, base, blocks);
        for (si, (s, slot_scores)) in slots.iter().zip(&scores).enumerate() {
            let mut vars = Vec::new();
            let mut idx = Vec::new();
            for (v, score) in slot_scores.iter().enumerate() {
                let Some(score) = *score else {
                    continue;
                };
                let mut delta: Vec<f64> = costs(&replaced(base, s, v))
                    .iter()
                    .zip(&base_cost)
                    .map(|(x, b)| x - b)
                    .collect();
                if let Some((table, _)) = &latency {
                    let Some(ms) = table[si][v] else {
                        continue; // untimed: it cannot be held to the bound
                    };
                    delta.push(ms);
                }
                vars.push(Variant { score, cost: delta });
                idx.push(v);
            }
            if vars.is_empty() {
                bail!(
                    "blockwise: no variant of layer {}'s {} has a finite score{}",
                    s.layer,
                    s.sub.name(),
                    if latency.is_some() {
                        " and a timing"
                    } else {
                        ""
                    }
                );
            }
            // Shifted so that every cost is nonnegative; the shift goes to the offset.
            for (d, off) in offset.iter_mut().enumerate() {
                let least = vars.iter().map(|x| x.cost[d]).fold(f64::INFINITY, f64::min);
                for x in &mut vars {
                    x.cost[d] -= least;
                }
                *off += least;
            }
            table.push(vars);
            kept.push(idx);
        }
        for (lim, off) in limits.iter_mut().zip(&offset) {
            *lim -= off;
        }
        let all: Vec<Choice> = front(&table, &limits).map_err(|e| anyhow!("blockwise: {e}"))?;
        // Every architecture must also meet what the choice does not model (memory, …).
        let picks: Vec<Vec<usize>> = all
            .iter()
            .map(|ch| {
                ch.picks
                    .iter()
                    .enumerate()
                    .map(|(s, &p)| kept[s][p])
                    .collect::<Vec<usize>>()
            })
            .filter(|p| satisfies(&Cost::of(&assemble_arch(base, slots, p)), c))
            .collect();
        if picks.is_empty() {
            bail!("blockwise: no combination of the variants meets the constraints");
        }
        // The front's (score, size) corners, spread by size.
        let n = picks.len();
        let k = (self.l.experiment.search.realise as usize).min(n);
        let mut chosen: Vec<Vec<usize>> = Vec::new();
        for j in 0..k {
            let at = if k == 1 { n - 1 } else { j * (n - 1) / (k - 1) };
            if !chosen.contains(&picks[at]) {
                chosen.push(picks[at].clone());
            }
        }
        Ok((chosen, n))
    }

    /// Assembles and stores the chosen architectures, and distils them at the top rung as
    /// jobs of `executor` (`workers` at a time where it runs them here), each starting from
    /// its assembled weights; each result is committed as a candidate in the order chosen,
    /// whatever order they finish in. A member the executor could not distil is recorded as
    /// failed (said, one line per class of failure) and distilled again on a resume, as the
    /// search's jobs are; `Interrupted` when stopped.
    #[allow(clippy::too_many_arguments)]
    fn realise(
        &self,
        executor: &dyn Executor,
        slots: &[Slot],
        base: &Architecture,
        chosen: &[Vec<usize>],
        blocks: &BTreeMap<String, BlockRecord>,
        say: &mut dyn FnMut(&str),
        progress: &(dyn Fn(&str, usize, usize) + Sync),
    ) -> Result<Ended> {
        // What the blocks' timings predict, said beside what each member measures.
        let timings = latency_table(slots, base, blocks).ok();
        let exp = &self.l.experiment;
        let top = exp.fidelity.rung_steps.len() - 1;
        let steps = exp.fidelity.rung_steps[top];
        let cfg = distill_config(self.l, steps);
        let state: ControllerState = self
            .archive
            .state(self.run)?
            .unwrap_or_else(|| initial_state(exp.search.seed, top + 1));
        let cands: BTreeMap<String, CandidateRecord> =
            self.archive.candidates(self.run)?.into_iter().collect();
        let settled = |id: &str| {
            cands
                .get(id)
                .is_some_and(|c| c.rungs.iter().any(|r| r.failed.is_none()))
        };
        // Each member still to distil: its assembled weights stored under `init-ID` (where
        // `genas distill`, export and sample start from) and written beside the archive,
        // named by their content, for its job.
        let dir = self.archive.path().join("members");
        let mut jobs: Vec<Job> = Vec::new();
        let mut picked: Vec<&[usize]> = Vec::new();
        for (j, picks) in chosen.iter().enumerate() {
            progress("assembling the front", j, chosen.len());
            if self.stop.load(Ordering::SeqCst) {
                return Ok(Ended::Interrupted);
            }
            let arch = assemble_arch(base, slots, picks);
            let id = arch.id();
            if settled(&id) || jobs.iter().any(|job| job.id == id) {
                continue;
            }
            let model = self.assemble(slots, base, picks, 1)?;
            let bytes = checkpoint::to_bytes(&model, &[("genas.blockwise", "init".into())])
                .map_err(|e| anyhow!("blockwise: the weights of {id}: {e}"))?;
            self.archive
                .put_weights(self.run, &crate::winners::init_key(&id), &bytes)?;
            let path = dir.join(initial_name(&bytes));
            write_once(&path, &bytes)?;
            jobs.push(Job {
                init_seed: init_seed(exp.teacher.seed, &id),
                id,
                architecture: arch,
                rung: top,
                config: cfg.clone(),
                measure_latency: true,
                initial: Some(path),
            });
            picked.push(picks);
        }
        progress("assembling the front", chosen.len(), chosen.len());
        let already = chosen.len() - jobs.len();
        progress("realising the front", already, chosen.len());
        let commits = std::sync::Mutex::new(Commits {
            next: 0,
            finished: BTreeMap::new(),
            state,
            cands,
            said: Vec::new(),
            failures: BTreeMap::new(),
            error: None,
        });
        let ran = if jobs.is_empty() {
            Ok(())
        } else {
            executor.run(&jobs, self.workers, self.stop, &|i, out: Output| {
                let mut c = commits.lock().unwrap_or_else(|p| p.into_inner());
                c.finished.insert(i, out);
                // Every result next in the order chosen is committed.
                while let Some(out) = {
                    let next = c.next;
                    c.finished.remove(&next)
                } {
                    let k = c.next;
                    if let Err(e) = self.commit_member(
                        &mut c,
                        &jobs[k],
                        picked[k],
                        slots,
                        out,
                        timings.as_ref(),
                    ) {
                        c.error = Some(e);
                        return false;
                    }
                    c.next += 1;
                    progress("realising the front", already + c.next, chosen.len());
                }
                true
            })
        };
        let c = commits.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = c.error {
            return Err(e);
        }
        ran.map_err(|e| anyhow!("{e}"))?;
        for line in &c.said {
            say(line);
        }
        let failed: usize = c.failures.values().map(|(n, _)| n).sum();
        if failed > 0 && failed == jobs.len() {
            let why = c.failures.values().map(|(_, why)| why.as_str());
            bail!(
                "blockwise: none of the {failed} member(s) of the front could be distilled: {}",
                why.collect::<Vec<_>>().join("; ")
            );
        }
        // Said whatever the output, as the search's failed jobs are.
        for (n, why) in c.failures.values() {
            eprintln!(
                "warning: {n} of {} member(s) of the front could not be distilled: {why}",
                jobs.len()
            );
        }
        if c.next < jobs.len() {
            return Ok(Ended::Interrupted);
        }
        let mut state = c.state;
        state.phase = Phase::Done;
        let (events, cache) = nothing();
        let unchanged: [(String, CandidateRecord); 0] = [];
        self.archive
            .commit(self.run, &unchanged, &state, events, cache)?;
        // No job reads them any more (the archive keeps each under `init-ID`).
        let _ = std::fs::remove_dir_all(&dir);
        Ok(Ended::Finished)
    }

    /// Commits member `job` (the variants `picks`) with what its distillation gave: a new
    /// candidate, or the one whose earlier try failed.
    fn commit_member(
        &self,
        c: &mut Commits,
        job: &Job,
        picks: &[usize],
        slots: &[Slot],
        out: Output,
        timings: Option<&(Vec<Vec<Option<f64>>>, f64)>,
    ) -> Result<()> {
        let id = &job.id;
        if let Some(class) = &out.failed {
            let why = out.result.diverged.clone().unwrap_or_default();
            c.failures.entry(class.clone()).or_insert((0, why)).0 += 1;
        }
        if let (Some(t), Some(ms)) = (timings, out.latency_ms_per_token) {
            if let Some(p) = predicted_latency(t, picks) {
                c.said.push(format!(
                    "blockwise: {id} generates at {ms:.4} ms/token; its blocks' timings predict {p:.4}"
                ));
            }
        }
        let rung = RungResult {
            rung: job.rung,
            steps: job.config.steps,
            result: out.result,
            cached: false,
            failed: out.failed,
        };
        let new = !c.cands.contains_key(id);
        let index = c.cands.len() as u32;
        let rec = c
            .cands
            .entry(id.clone())
            .or_insert_with(|| CandidateRecord {
                id: id.clone(),
                index,
                round: 0,
                cost: Cost::of(&job.architecture),
                architecture: job.architecture.clone(),
                origin: origin(slots, picks),
                proxies: None,
                screen_score: None,
                screened_out: false,
                rungs: Vec::new(),
                latency_ms_per_token: None,
            });
        // A failure, distilled again, gives way to the new result.
        rec.rungs
            .retain(|r| r.rung != job.rung || r.failed.is_none());
        rec.rungs.push(rung);
        if out.latency_ms_per_token.is_some() {
            rec.latency_ms_per_token = out.latency_ms_per_token;
        }
        let state = &mut c.state;
        state.proposed += u32::from(new);
        state.evaluations += 1;
        state.per_rung[job.rung] += 1;
        state.phase = Phase::Rung;
        let (f, hv) = front_and_hypervolume(&c.cands, job.rung, self.plan);
        state.front = f;
        state.hypervolume.push((state.evaluations, hv));
        let (events, cache) = nothing();
        self.archive.commit(
            self.run,
            &[(id.clone(), &c.cands[id])],
            state,
            events,
            cache,
        )?;
        Ok(())
    }

    /// The network of `picks` with every sub-block's weights from its trained block (the
    /// teacher's where the teacher's own variant is picked) and the rest from the teacher.
    pub fn assemble(
        &self,
        slots: &[Slot],
        base: &Architecture,
        picks: &[usize],
        threads: usize,
    ) -> Result<Model<Cpu<f32>>> {
        let arch = assemble_arch(base, slots, picks);
        let mut model = Model::new(&arch, Cpu::<f32>::new(threads), 0);
        let mut trained: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (s, &p) in slots.iter().zip(picks) {
            if p == 0 {
                continue;
            }
            let key = block_key(s, base, p);
            let bytes = self
                .archive
                .block_weights(self.run, &key)?
                .with_context(|| format!("blockwise: block {key} is not trained"))?;
            trained.extend(checkpoint::tensors(&bytes, &format!("block {key}"))?);
        }
        for i in 0..model.params.len() {
            let (name, numel) = (&model.params[i].name, model.params[i].numel());
            let w = match trained.remove(name) {
                Some(w) => w,
                None => {
                    let j = self.teacher.param_index(name).with_context(|| {
                        format!("blockwise: {name} is neither the teacher's nor a trained block's")
                    })?;
                    self.teacher.weights(j)
                }
            };
            if w.len() != numel {
                bail!(
                    "blockwise: {name} holds {} weights, expected {numel}",
                    w.len()
                );
            }
            model.set_weights(i, &w);
        }
        Ok(model)
    }
}

/// The generation latency of every slot's variants (ms/token): a trained variant's sub-block as
/// timed in its own job, the teacher's own (variant 0) as the median of its timings in the
/// jobs of the other slots, where it was the teacher's; and the rest of the network (the
/// embedding, the final norm and the head), the median over all jobs. An architecture's
/// latency is then the rest plus its sub-blocks'.
pub fn latency_table(
    slots: &[Slot],
    base: &Architecture,
    blocks: &BTreeMap<String, BlockRecord>,
) -> Result<(Vec<Vec<Option<f64>>>, f64)> {
    let timed: Vec<(&BlockRecord, &SubBlockLatency)> = blocks
        .values()
        .filter_map(|b| b.latency.as_ref().map(|t| (b, t)))
        .filter(|(_, t)| t.layers.len() == base.layers.len())
        .collect();
    if timed.is_empty() {
        bail!(
            "blockwise: constraints.max_latency_ms_per_token needs the blocks' timings, and none of this run's blocks was timed (trained before genas timed them)"
        );
    }
    let half = |s: &Slot| usize::from(s.sub == SubBlock::Ffn);
    let table = slots
        .iter()
        .map(|s| {
            (0..s.variants.len())
                .map(|v| {
                    if v > 0 {
                        blocks
                            .get(&block_key(s, base, v))
                            .and_then(|b| b.latency.as_ref())
                            .and_then(|t| t.layers.get(s.layer))
                            .map(|l| l[half(s)])
                    } else {
                        median(
                            timed
                                .iter()
                                .filter(|(b, _)| b.layer != s.layer || b.sub_block != s.sub)
                                .map(|(_, t)| t.layers[s.layer][half(s)])
                                .collect(),
                        )
                    }
                })
                .collect()
        })
        .collect();
    let rest = median(
        timed
            .iter()
            .map(|(_, t)| t.total - t.layers.iter().map(|l| l[0] + l[1]).sum::<f64>())
            .collect(),
    )
    .unwrap_or(0.0);
    Ok((table, rest))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The generation latency `latency_table` predicts for `picks` (ms/token).
pub fn predicted_latency(table: &(Vec<Vec<Option<f64>>>, f64), picks: &[usize]) -> Option<f64> {
    picks
        .iter()
        .enumerate()
        .map(|(s, &p)| table.0[s][p])
        .sum::<Option<f64>>()
        .map(|x| x + table.1)
}

/// No events and no cache entries, for a commit.
/// The realisation's results on their way to the archive, committed in the order chosen.
struct Commits {
    /// The next member to commit.
    next: usize,
    /// Results in before their turn, by member.
    finished: BTreeMap<usize, Output>,
    state: ControllerState,
    cands: BTreeMap<String, CandidateRecord>,
    /// What to say once the executor is done (each member's measured and predicted latency).
    said: Vec<String>,
    /// Members that could not be distilled, by class: how many, and the first one's message.
    failures: BTreeMap<String, (usize, String)>,
    /// The first commit that failed: the run ends with it.
    error: Option<anyhow::Error>,
}

/// How a member of `picks` came about: its replaced sub-blocks.
fn origin(slots: &[Slot], picks: &[usize]) -> String {
    let replaced = slots
        .iter()
        .zip(picks)
        .filter(|(_, &p)| p != 0)
        .map(|(s, &p)| format!("L{} {}", s.layer, s.sub.describe(&s.variants[p])))
        .collect::<Vec<_>>();
    if replaced.is_empty() {
        "blockwise: the teacher".to_string()
    } else {
        format!("blockwise: {}", replaced.join(", "))
    }
}

/// Writes `bytes` to `path` unless it is there already (its name is its content's), through
/// a temporary file renamed into place.
fn write_once(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == bytes.len() as u64) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn nothing() -> (
    &'static [serde_json::Value],
    &'static [(String, serde_json::Value)],
) {
    (&[], &[])
}

/// The architecture of `picks` (one variant index per slot).
pub fn assemble_arch(base: &Architecture, slots: &[Slot], picks: &[usize]) -> Architecture {
    let mut a = base.clone();
    for (s, &p) in slots.iter().zip(picks) {
        a.layers[s.layer] = s.sub.apply(&a.layers[s.layer], &s.variants[p]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use genas_space::{Activation, Attention, Sparsity};

    #[test]
    fn a_variant_scores_minus_its_distance_or_minus_its_kl() {
        assert_eq!(block_score(BlockScore::Distance, 0.25), -0.5);
        assert_eq!(block_score(BlockScore::Kl, 0.25), -0.25);
        // Two changes of KL 0.04 each cost less than one of 0.16 by the KL (0.08), as much
        // by the distance (0.4): distances add along a chain of changes.
        let two = 2.0 * block_score(BlockScore::Distance, 0.04);
        assert!((two - block_score(BlockScore::Distance, 0.16)).abs() < 1e-12);
        // A KL a hair below zero (rounding) is no change.
        assert_eq!(block_score(BlockScore::Distance, -1e-12), 0.0);
    }

    #[test]
    fn the_front_is_sized_by_what_the_objectives_weigh() {
        use genas_space::{Constraints, Objective::*};
        let none = Constraints::default();
        assert_eq!(cost_axes(&[Quality, Params], &none), [Axis::Params]);
        assert_eq!(
            cost_axes(&[Quality, NonzeroParams], &none),
            [Axis::NonzeroParams]
        );
        // Both weighed: all parameters size the front, as before.
        assert_eq!(
            cost_axes(&[Quality, Params, NonzeroParams], &none),
            [Axis::Params]
        );
        let bounded = Constraints {
            max_params: Some(10),
            max_nonzero_params: Some(5),
            max_flops_per_token: Some(1.0),
            ..Constraints::default()
        };
        assert_eq!(
            cost_axes(&[Quality, NonzeroParams], &bounded),
            [Axis::NonzeroParams, Axis::Params, Axis::Flops]
        );
        assert_eq!(
            cost_axes(&[Quality, Params], &bounded),
            [Axis::Params, Axis::NonzeroParams, Axis::Flops]
        );
        let limits: Vec<f64> = cost_axes(&[Quality, NonzeroParams], &bounded)
            .iter()
            .map(|x| x.limit(&bounded))
            .collect();
        assert_eq!(limits, [5.0, 10.0, 1.0]);
        let layer = Layer::new(
            Attention::Full { heads: 2 },
            16,
            Activation::Gelu,
            None,
            Sparsity::Dense,
        )
        .with_sparsities(Sparsity::Dense, Sparsity::TwoFour);
        let k = Cost::of(&Architecture {
            vocab_size: 10,
            context: 8,
            d_model: 8,
            tie_embeddings: true,
            share_layers: 1,
            layers: vec![layer],
            norm: Default::default(),
            position: Default::default(),
            norm_eps: genas_space::Float(genas_space::NORM_EPS),
        });
        assert!(Axis::NonzeroParams.of(&k) < Axis::Params.of(&k));
    }

    #[test]
    fn latencies_are_summed_from_each_variants_own_timing_and_the_teachers_median() {
        let layer = |heads, hidden| {
            Layer::new(
                Attention::Full { heads },
                hidden,
                Activation::Gelu,
                None,
                Sparsity::Dense,
            )
        };
        let base = Architecture {
            vocab_size: 10,
            context: 8,
            d_model: 8,
            tie_embeddings: true,
            share_layers: 1,
            layers: vec![layer(2, 16), layer(2, 16)],
            norm: Default::default(),
            position: Default::default(),
            norm_eps: genas_space::Float(genas_space::NORM_EPS),
        };
        // Each slot: the teacher's sub-block and one other (one head; half the FFN).
        let slots: Vec<Slot> = (0..2)
            .flat_map(|l| {
                [
                    Slot {
                        layer: l,
                        sub: SubBlock::Attention,
                        variants: vec![layer(2, 16), layer(1, 16)],
                    },
                    Slot {
                        layer: l,
                        sub: SubBlock::Ffn,
                        variants: vec![layer(2, 16), layer(2, 8)],
                    },
                ]
            })
            .collect();
        // Job k timed the teacher's sub-blocks at 1.0 + 0.1·k, its own at 0.5, and the rest
        // of the network at 2.0 + k.
        let mut blocks = BTreeMap::new();
        for (k, s) in slots.iter().enumerate() {
            let t = 1.0 + 0.1 * k as f64;
            let mut layers = vec![[t, t]; 2];
            layers[s.layer][usize::from(s.sub == SubBlock::Ffn)] = 0.5;
            let sum: f64 = layers.iter().map(|l| l[0] + l[1]).sum();
            blocks.insert(
                block_key(s, &base, 1),
                BlockRecord {
                    layer: s.layer,
                    sub_block: s.sub,
                    variant: String::new(),
                    architecture: replaced(&base, s, 1),
                    steps: 1,
                    objective: BlockObjective::Mse,
                    result: DistillResult {
                        steps: 1,
                        train_loss: None,
                        eval: None,
                        diverged: None,
                        seconds: 0.0,
                    },
                    latency: Some(SubBlockLatency {
                        layers,
                        total: sum + 2.0 + k as f64,
                    }),
                },
            );
        }
        let (table, rest) = latency_table(&slots, &base, &blocks).unwrap();
        // The rest: the median of 2, 3, 4, 5.
        assert!((rest - 3.5).abs() < 1e-12, "{rest}");
        for (k, row) in table.iter().enumerate() {
            assert_eq!(row[1], Some(0.5));
            // The teacher's: the median of the other three jobs' timings of it.
            let mut others: Vec<f64> = (0..4)
                .filter(|&j| j != k)
                .map(|j| 1.0 + 0.1 * j as f64)
                .collect();
            others.sort_by(f64::total_cmp);
            assert!((row[0].unwrap() - others[1]).abs() < 1e-12, "{k}: {row:?}");
        }
        let p = predicted_latency(&(table.clone(), rest), &[1, 1, 1, 0]).unwrap();
        assert!((p - (3.5 + 1.5 + table[3][0].unwrap())).abs() < 1e-12);
        // Blocks timed by no job: refused in one line.
        let untimed: BTreeMap<String, BlockRecord> = blocks
            .into_iter()
            .map(|(k, mut b)| {
                b.latency = None;
                (k, b)
            })
            .collect();
        let e = latency_table(&slots, &base, &untimed)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_latency_ms_per_token") && !e.contains('\n'),
            "{e}"
        );
    }
}
