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
//! uninterrupted one. Blocks are jobs of the run's executor (`Executor::blocks`): on local
//! threads or as Slurm tasks, with the CPU engine (the PyTorch runner does not train them).

pub mod bench;

use crate::experiment::{distill_config, LoadedExperiment};
use anyhow::{anyhow, bail, Context, Result};
use genas_engine::{checkpoint, Cpu, Model};
use genas_scoring::distill::{brief_distill, DistillResult, TeacherTargets};
use genas_search::blockwise::{front, Choice, Variant};
use genas_search::controller::{
    front_and_hypervolume, initial_state, CandidateRecord, ControllerState, Phase, RunPlan,
    RungResult,
};
use genas_search::init_seed;
use genas_search::job::{BlockJob, BlockOutput, Executor};
use genas_space::{satisfies, Architecture, BlockObjective, Cost, Layer, Sparsity};
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

    /// `base` with this sub-block taken from `donor`.
    pub fn apply(self, base: &Layer, donor: &Layer) -> Layer {
        let mut out = base.clone();
        match self {
            SubBlock::Attention => {
                out.attention = donor.attention.clone();
                out.attention_bias = donor.attention_bias;
                out.qkv_bias = donor.qkv_bias;
                out.qk_norm = donor.qk_norm;
                out.head_dim = donor.head_dim;
            }
            SubBlock::Ffn => out.ffn = donor.ffn.clone(),
        }
        out
    }

    /// The variant's short name.
    pub fn describe(self, layer: &Layer) -> String {
        match self {
            SubBlock::Attention => layer.attention.to_string(),
            SubBlock::Ffn => {
                let f = &layer.ffn;
                match f.rank {
                    Some(r) => format!("ffn {} {} r{r}", f.hidden, f.activation.name()),
                    None => format!("ffn {} {}", f.hidden, f.activation.name()),
                }
            }
        }
    }
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
    if space.sparsity.iter().any(|s| *s != Sparsity::Dense)
        || base.layers.iter().any(|l| l.sparsity != Sparsity::Dense)
    {
        bail!(
            "{file}: mode = \"blockwise\" needs sparsity = [\"dense\"] (a layer's sparsity covers both its sub-blocks, so it is not yet a sub-block variant)"
        );
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
    let exp = &l.experiment;
    let file = exp.source.display();
    let torch = exp.search.device == genas_space::Device::Cuda
        || matches!(
            genas_exec::torch::device_plan(exp)?,
            genas_exec::torch::DevicePlan::Torch { .. }
        );
    if torch {
        bail!(
            "{file}: mode = \"blockwise\" trains its sub-blocks with the CPU engine, on local threads or Slurm: set search.device = \"cpu\""
        );
    }
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
        self.realise(&slots, &base, &chosen.0, progress)
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
        Ok(!self.stop.load(Ordering::SeqCst))
    }

    /// Every slot's variants' replace-one scores (minus the KL to the teacher; the teacher's
    /// own 0; `None` for a variant with no finished, finite result).
    pub fn scores(
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
                                .map(|e| -e.kl_to_teacher)
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// The replace-one score of every variant (minus its KL to the teacher; the teacher's
    /// own is 0; a variant that diverged is left out), the exact front of summed score
    /// against the constrained costs, and the members realised: spread evenly over the
    /// front's parameter range. Returns them and the front's size.
    fn choose(
        &self,
        slots: &[Slot],
        base: &Architecture,
        blocks: &BTreeMap<String, BlockRecord>,
    ) -> Result<(Vec<Vec<usize>>, usize)> {
        let c = &self.l.experiment.constraints;
        // Costs the constraints bound, all additive over sub-blocks: parameters always,
        // non-zero parameters and FLOPs per token where bounded.
        let costs = |a: &Architecture| -> Vec<f64> {
            let k = Cost::of(a);
            let mut v = vec![k.params as f64];
            if c.max_nonzero_params.is_some() {
                v.push(k.nonzero_params as f64);
            }
            if c.max_flops_per_token.is_some() {
                v.push(k.flops_per_token);
            }
            v
        };
        let base_cost = costs(base);
        let mut limits: Vec<f64> = {
            let mut v = vec![c.max_params.map_or(f64::INFINITY, |x| x as f64)];
            if let Some(x) = c.max_nonzero_params {
                v.push(x as f64);
            }
            if let Some(x) = c.max_flops_per_token {
                v.push(x);
            }
            v
        };
        let mut offset = base_cost.clone();
        let mut kept: Vec<Vec<usize>> = Vec::new();
        let mut table: Vec<Vec<Variant>> = Vec::new();
        let scores = Blockwise::scores(slots, base, blocks);
        for (s, slot_scores) in slots.iter().zip(&scores) {
            let mut vars = Vec::new();
            let mut idx = Vec::new();
            for (v, score) in slot_scores.iter().enumerate() {
                let Some(score) = *score else {
                    continue;
                };
                let delta: Vec<f64> = costs(&replaced(base, s, v))
                    .iter()
                    .zip(&base_cost)
                    .map(|(x, b)| x - b)
                    .collect();
                vars.push(Variant { score, cost: delta });
                idx.push(v);
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
        // The front's (score, params) corners, spread by parameters.
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

    /// Assembles, stores and distils the chosen architectures at the top rung, committing
    /// each as a candidate; false when stopped.
    fn realise(
        &self,
        slots: &[Slot],
        base: &Architecture,
        chosen: &[Vec<usize>],
        progress: &(dyn Fn(&str, usize, usize) + Sync),
    ) -> Result<Ended> {
        let exp = &self.l.experiment;
        let top = exp.fidelity.rung_steps.len() - 1;
        let steps = exp.fidelity.rung_steps[top];
        let cfg = distill_config(self.l, steps);
        let mut state: ControllerState = self
            .archive
            .state(self.run)?
            .unwrap_or_else(|| initial_state(exp.search.seed, top + 1));
        let mut cands: BTreeMap<String, CandidateRecord> =
            self.archive.candidates(self.run)?.into_iter().collect();
        for (j, picks) in chosen.iter().enumerate() {
            progress("realising the front", j, chosen.len());
            if self.stop.load(Ordering::SeqCst) {
                return Ok(Ended::Interrupted);
            }
            let arch = assemble_arch(base, slots, picks);
            let id = arch.id();
            if cands.contains_key(&id) {
                continue;
            }
            let mut model = self.assemble(slots, base, picks, 0)?;
            let bytes = checkpoint::to_bytes(&model, &[("genas.blockwise", "init".into())])
                .map_err(|e| anyhow!("blockwise: the weights of {id}: {e}"))?;
            self.archive
                .put_weights(self.run, &format!("init-{id}"), &bytes)?;
            let result = brief_distill(&mut model, self.targets, &cfg);
            let origin = slots
                .iter()
                .zip(picks)
                .filter(|(_, &p)| p != 0)
                .map(|(s, &p)| format!("L{} {}", s.layer, s.sub.describe(&s.variants[p])))
                .collect::<Vec<_>>();
            let origin = if origin.is_empty() {
                "blockwise: the teacher".to_string()
            } else {
                format!("blockwise: {}", origin.join(", "))
            };
            let rec = CandidateRecord {
                id: id.clone(),
                index: cands.len() as u32,
                round: 0,
                cost: Cost::of(&arch),
                architecture: arch,
                origin,
                proxies: None,
                screen_score: None,
                screened_out: false,
                rungs: vec![RungResult {
                    rung: top,
                    steps,
                    result,
                    cached: false,
                    failed: None,
                }],
                latency_ms_per_token: None,
            };
            cands.insert(id.clone(), rec);
            state.proposed += 1;
            state.evaluations += 1;
            state.per_rung[top] += 1;
            state.phase = Phase::Rung;
            let (f, hv) = front_and_hypervolume(&cands, top, self.plan);
            state.front = f;
            state.hypervolume.push((state.evaluations, hv));
            let (events, cache) = nothing();
            self.archive.commit(
                self.run,
                &[(id.clone(), &cands[&id])],
                &state,
                events,
                cache,
            )?;
        }
        state.phase = Phase::Done;
        let (events, cache) = nothing();
        let unchanged: [(String, CandidateRecord); 0] = [];
        self.archive
            .commit(self.run, &unchanged, &state, events, cache)?;
        progress("realising the front", chosen.len(), chosen.len());
        Ok(Ended::Finished)
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

/// No events and no cache entries, for a commit.
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
