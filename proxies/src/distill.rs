//! Knowledge distillation from a teacher: the teacher's soft targets for a fixed batch
//! schedule (computed once, so scoring a candidate costs no teacher forward pass), brief
//! distillation (a fidelity level of the search) and full distillation with periodic
//! checkpoints, early stopping on validation loss and exact resume after a kill.
//!
//! The loss is the engine's: α · CE(data) + (1 − α) · T² · KL(teacher_T ‖ student_T). Results
//! are read on a fixed validation set: cross-entropy to the data, KL(teacher ‖ student) at
//! T = 1 and top-1 agreement with the teacher, per token.

use crate::data::{Batch, Dataset, Split};
use crate::inherit::{Importance, Parent};
use genas_engine::backend::{Backend, Soft};
use genas_engine::cpu::loss::add_ce_host;
use genas_engine::model::Model;
use genas_engine::real::{Host, Real};
use genas_engine::train::{train_step, Optimizer, TrainConfig, TrainError};
use genas_space::{Architecture, Precision, Rng, StudentInit};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Vocabularies up to this size cache the teacher's full distribution; larger ones its top
/// `DistillConfig::top_k` probabilities (the rest of the mass spread evenly over the other
/// tokens).
pub const DENSE_VOCAB_MAX: usize = 1024;
/// The default k of the top-k cache.
pub const TOP_K: usize = genas_space::experiment::DEFAULT_TOP_K as usize;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistillConfig {
    pub steps: u32,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub temperature: f64,
    /// Weight of the hard-label cross-entropy; 1 − α goes to the KL term.
    pub alpha: f64,
    /// Seeds the batch schedule (the same for every candidate).
    pub seed: u64,
    /// Validation sequences every result is read on.
    pub val_sequences: usize,
    /// k of the top-k soft targets (vocabularies over `DENSE_VOCAB_MAX`). Left out of the
    /// serialised form at its default, so cache keys of earlier runs stay.
    #[serde(default = "default_top_k", skip_serializing_if = "is_default_top_k")]
    pub top_k: usize,
    /// How the student's weights start (`[fidelity] init`). Left out of the serialised form
    /// at its default (drawn), so cache keys of earlier runs stay.
    #[serde(default, skip_serializing_if = "StudentInit::is_random")]
    pub init: StudentInit,
    /// How the PyTorch runner computes (`[fidelity] precision`); the engine computes in
    /// float32 and refuses bf16 before anything runs. Left out of the serialised form at its
    /// default, so cache keys of earlier runs stay and a bf16 result is never taken for an
    /// fp32 one.
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
    /// Trains only the parameters whose names start with one of these (blockwise local
    /// distillation: one sub-block of the teacher's network, the rest held); empty = all.
    /// Left out of the serialised form when empty, so cache keys of earlier runs stay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train_only: Vec<String>,
}

impl DistillConfig {
    /// The brief-distillation settings of `exp`'s `[fidelity]` at `steps`: what every rung,
    /// calibration and table evaluation uses.
    pub fn of_experiment(exp: &genas_space::Experiment, steps: u32) -> DistillConfig {
        let f = &exp.fidelity;
        DistillConfig {
            steps,
            batch_size: f.batch_size as usize,
            learning_rate: f.learning_rate,
            temperature: f.temperature,
            alpha: f.alpha,
            seed: exp.teacher.seed,
            val_sequences: 128,
            top_k: f.top_k as usize,
            init: f.init,
            precision: f.precision,
            train_only: Vec::new(),
        }
    }
}

fn default_top_k() -> usize {
    TOP_K
}

fn is_default_top_k(k: &usize) -> bool {
    *k == TOP_K
}

/// A teacher's distribution over the vocabulary for every position of one batch.
#[derive(Clone, Debug, PartialEq)]
pub enum SoftTargets {
    /// (N, V) probabilities.
    Dense(Vec<f32>),
    /// The k most probable tokens of each position and their probabilities, (N, k) each.
    TopK {
        k: usize,
        index: Vec<u32>,
        prob: Vec<f32>,
    },
}

impl SoftTargets {
    /// softmax(logits / temperature) of (n, v) logits, kept whole when v ≤ DENSE_VOCAB_MAX,
    /// else the `top_k` most probable tokens of each row.
    pub fn from_logits(
        logits: &[f64],
        (n, v): (usize, usize),
        temperature: f64,
        top_k: usize,
    ) -> SoftTargets {
        let mut s = SoftTargets::empty((n, v), top_k);
        s.fill(0, &logits[..n * v], v, temperature);
        s
    }

    /// Targets for (n, v) logits not computed yet, every row zero until `fill`ed: dense when
    /// v ≤ DENSE_VOCAB_MAX, else the `top_k` most probable tokens of each row.
    pub fn empty((n, v): (usize, usize), top_k: usize) -> SoftTargets {
        if v <= DENSE_VOCAB_MAX {
            return SoftTargets::Dense(vec![0f32; n * v]);
        }
        let k = top_k.clamp(1, v);
        SoftTargets::TopK {
            k,
            index: vec![0u32; n * k],
            prob: vec![0f32; n * k],
        }
    }

    /// Rows `first..` from their logits (rows, v): softmax(logits / temperature) in f64,
    /// rounded to f32 once, kept whole or as its top k.
    pub fn fill<F: Real>(&mut self, first: usize, logits: &[F], v: usize, temperature: f64) {
        use rayon::prelude::*;
        let rows = logits.len() / v;
        // One row's softmax at temperature, in f64 (`e` is scratch), rounded to f32 once.
        let softmax = |z: &[F], p: &mut [f32], e: &mut Vec<f64>| {
            let max = z.iter().fold(f64::NEG_INFINITY, |m, x| m.max(x.to_f64()));
            e.clear();
            e.extend(z.iter().map(|x| ((x.to_f64() - max) / temperature).exp()));
            let s: f64 = e.iter().sum();
            for (pk, ek) in p.iter_mut().zip(e.iter()) {
                *pk = (ek / s) as f32;
            }
        };
        match self {
            SoftTargets::Dense(probs) => probs[first * v..(first + rows) * v]
                .par_chunks_mut(v)
                .zip(logits.par_chunks(v))
                .for_each_init(|| Vec::with_capacity(v), |e, (p, z)| softmax(z, p, e)),
            // Row by row, holding one row's distribution at a time rather than all n.
            SoftTargets::TopK { k, index, prob } => {
                let k = *k;
                let span = first * k..(first + rows) * k;
                logits
                    .par_chunks(v)
                    .zip(
                        index[span.clone()]
                            .par_chunks_mut(k)
                            .zip(prob[span].par_chunks_mut(k)),
                    )
                    .for_each_init(
                        || (vec![0f32; v], Vec::with_capacity(v), Vec::with_capacity(v)),
                        |(p, order, e): &mut (Vec<f32>, Vec<u32>, Vec<f64>), (z, (ix, pr))| {
                            softmax(z, p, e);
                            order.clear();
                            order.extend(0..v as u32);
                            order.select_nth_unstable_by(k - 1, |a, b| {
                                p[*b as usize].total_cmp(&p[*a as usize])
                            });
                            ix.copy_from_slice(&order[..k]);
                            for (o, &i) in pr.iter_mut().zip(ix.iter()) {
                                *o = p[i as usize];
                            }
                        },
                    )
            }
        }
    }

    /// `fill` from logits as a backend holds them.
    pub fn fill_host(&mut self, first: usize, logits: Host<'_>, v: usize, temperature: f64) {
        match logits {
            Host::F32(z) => self.fill(first, z, v, temperature),
            Host::F64(z) => self.fill(first, z, v, temperature),
        }
    }

    /// A teacher's targets at `temperature` for `batch`, run without gradients
    /// (`Model::infer`: no activations kept, logits read a block of rows at a time), and with
    /// `ce` the Σ of its per-row cross-entropy to the batch's targets, in row order.
    pub fn of_teacher<B: Backend>(
        teacher: &mut Model<B>,
        batch: &Batch,
        temperature: f64,
        top_k: usize,
        ce: bool,
    ) -> (SoftTargets, f64) {
        let v = teacher.arch.vocab_size as usize;
        let n = batch.b * batch.t;
        let mut soft = SoftTargets::empty((n, v), top_k);
        let mut sum = 0.0;
        let mut sink = |first: usize, rows: usize, z: Host<'_>| {
            if ce {
                let y = &batch.targets[first..first + rows];
                sum = add_ce_host(sum, z, y, v);
            }
            soft.fill_host(first, z, v, temperature);
        };
        teacher.infer(&batch.inputs, (batch.b, batch.t), None, Some(&mut sink));
        (soft, sum)
    }

    /// The (n, v) probabilities these targets stand for, as the loss reads them.
    pub fn dense(&self, shape: (usize, usize)) -> Vec<f64> {
        self.dense_f32(shape).into_iter().map(f64::from).collect()
    }

    /// The (n, v) probabilities in f32, as the loss reads them: the remainder mass spread
    /// evenly beside the top k (at a vocabulary of 50,257 a step's distributions are 200 MB).
    pub fn dense_f32(&self, (n, v): (usize, usize)) -> Vec<f32> {
        match self {
            SoftTargets::Dense(p) => p.clone(),
            SoftTargets::TopK { k, index, prob } => {
                let mut out = vec![0f32; n * v];
                for (r, row) in out.chunks_exact_mut(v).enumerate().take(n) {
                    let (ix, pr) = (&index[r * k..(r + 1) * k], &prob[r * k..(r + 1) * k]);
                    let kept: f64 = pr.iter().map(|&x| x as f64).sum();
                    let rest = ((1.0 - kept) / (v - k).max(1) as f64).max(0.0) as f32;
                    row.fill(rest);
                    for (&i, &p) in ix.iter().zip(pr) {
                        row[i as usize] = p;
                    }
                }
                out
            }
        }
    }

    /// These targets as the loss reads them: dense ones uploaded to `be`, top-k ones as they
    /// are (the loss reads the k tokens and the rest's mass, never an (n, v) spread).
    pub fn for_loss<B: Backend>(&self, be: &B) -> Soft<'_, B::Buf> {
        match self {
            SoftTargets::Dense(p) => Soft::Dense(be.upload_f32(p.clone())),
            SoftTargets::TopK { k, index, prob } => Soft::TopK { k: *k, index, prob },
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            SoftTargets::Dense(p) => 4 * p.len(),
            SoftTargets::TopK { index, prob, .. } => 4 * (index.len() + prob.len()),
        }
    }
}

/// One step of the training schedule: its batch and the teacher's soft targets for it,
/// borrowed where they are held, read out where they are mapped.
pub struct Step<'a> {
    pub batch: Cow<'a, Batch>,
    pub soft: Cow<'a, SoftTargets>,
}

/// The training schedule's steps with their soft targets: held in memory ([`Held`]) or read
/// a step at a time from shard files (`inputs::Shards`), so a job reads only the steps it
/// trains.
pub trait Steps: Send + Sync {
    /// Steps there are.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Step `i` (< `len`).
    fn step(&self, i: usize) -> Step<'_>;
    /// Step `i`'s batch alone, its soft targets not read (what needs only the tokens: the
    /// teacher's activations for blockwise distillation).
    fn batch(&self, i: usize) -> Cow<'_, Batch> {
        self.step(i).batch
    }
    /// Step `i`'s batch shape (b, t) and its targets' k (0: dense), without reading it.
    fn shape(&self, i: usize) -> (usize, usize, usize);
    /// Bytes of soft targets held in memory.
    fn held_bytes(&self) -> usize;
    /// The concrete source (`inputs` stores shards it already has without reading them).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Steps held in memory.
#[derive(Default)]
pub struct Held {
    pub batches: Vec<Batch>,
    pub soft: Vec<SoftTargets>,
}

impl Steps for Held {
    fn len(&self) -> usize {
        self.batches.len()
    }

    fn step(&self, i: usize) -> Step<'_> {
        Step {
            batch: Cow::Borrowed(&self.batches[i]),
            soft: Cow::Borrowed(&self.soft[i]),
        }
    }

    fn shape(&self, i: usize) -> (usize, usize, usize) {
        let b = &self.batches[i];
        let k = match &self.soft[i] {
            SoftTargets::Dense(_) => 0,
            SoftTargets::TopK { k, .. } => *k,
        };
        (b.b, b.t, k)
    }

    fn held_bytes(&self) -> usize {
        self.soft.iter().map(SoftTargets::bytes).sum()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Where computed steps go, in order: held ([`Held`]) or written as shards
/// (`inputs::ShardWriter`) as they are computed.
/// Where a teacher's passes without gradients run (its soft targets and cross-entropy): the
/// engine (a `Model`), or elsewhere (the PyTorch runner on a device, `genas_exec::torch`).
pub trait TeacherPass {
    /// Each batch's soft targets at `temperature` (the top `top_k` above `DENSE_VOCAB_MAX`)
    /// and, with `ce`, the Σ of its rows' cross-entropy to the batch's targets.
    fn pass(
        &mut self,
        batches: &[Batch],
        temperature: f64,
        top_k: usize,
        ce: bool,
    ) -> Result<Vec<(SoftTargets, f64)>, String>;

    /// Batches handed to one call (a device amortises its calls; the engine takes one, so
    /// no more than a step's targets are held at once).
    fn batches_per_call(&self) -> usize {
        1
    }

    /// The teacher's activation sums on `batch` (`Importance`), which rank it for the
    /// students pruned from it (`init = "teacher"`).
    fn importance(&mut self, batch: &Batch) -> Result<Importance, String>;
}

impl<B: Backend> TeacherPass for Model<B> {
    fn pass(
        &mut self,
        batches: &[Batch],
        temperature: f64,
        top_k: usize,
        ce: bool,
    ) -> Result<Vec<(SoftTargets, f64)>, String> {
        Ok(batches
            .iter()
            .map(|b| SoftTargets::of_teacher(self, b, temperature, top_k, ce))
            .collect())
    }

    fn importance(&mut self, batch: &Batch) -> Result<Importance, String> {
        Ok(Importance::measure(self, &batch.inputs, (batch.b, batch.t)))
    }
}

pub trait StepSink {
    fn put(&mut self, batch: Batch, soft: SoftTargets) -> Result<(), String>;
    fn finish(self: Box<Self>) -> Result<Box<dyn Steps>, String>;
}

impl StepSink for Held {
    fn put(&mut self, batch: Batch, soft: SoftTargets) -> Result<(), String> {
        self.batches.push(batch);
        self.soft.push(soft);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Box<dyn Steps>, String> {
        Ok(self)
    }
}

/// The teacher's side of every distillation with one configuration: the fixed training
/// schedule with soft targets at temperature, and the validation set with the teacher's
/// distribution at T = 1.
pub struct TeacherTargets {
    pub temperature: f64,
    pub vocab: usize,
    /// The schedule's batches and their soft targets.
    pub schedule: Box<dyn Steps>,
    pub val: Vec<Batch>,
    pub val_probs: Vec<SoftTargets>,
    /// The teacher's own validation cross-entropy, nats/token.
    pub teacher_val_ce: f64,
    /// Time spent computing all this, s.
    pub seconds: f64,
    /// The pruned teacher students start from, when `init` is `teacher`.
    pub parent: Option<Parent>,
}

/// Sequences of the training batch the teacher's importance is measured on (`init =
/// "teacher"`).
pub const PARENT_SEQUENCES: usize = 64;

/// The teacher pruned for its students (`init = "teacher"`), measured on a fixed training
/// batch of its own, so a student's inherited weights depend only on the teacher, the data
/// and `seed`.
pub fn parent_of<B: Backend>(teacher: &mut Model<B>, data: &Dataset, seed: u64) -> Parent {
    let b = parent_batch(data, seed);
    Parent::measure(teacher, &b.inputs, (b.b, b.t))
}

/// The training batch of `PARENT_SEQUENCES` the teacher's importance is measured on.
pub fn parent_batch(data: &Dataset, seed: u64) -> Batch {
    let mut rng = Rng::seed_from_u64(seed ^ 0x70a2_e47b);
    data.train_batch(PARENT_SEQUENCES, &mut rng)
}

impl TeacherTargets {
    /// Runs the teacher over the first `schedule_steps` batches of the schedule seeded by
    /// `cfg.seed` and over the validation set.
    pub fn compute<B: Backend>(
        teacher: &mut Model<B>,
        data: &Dataset,
        cfg: &DistillConfig,
        schedule_steps: u32,
    ) -> TeacherTargets {
        TeacherTargets::compute_with_progress(teacher, data, cfg, schedule_steps, &mut |_, _| {})
    }

    /// `compute`, telling `progress` (batches done, batches in all) after every batch.
    pub fn compute_with_progress<B: Backend>(
        teacher: &mut Model<B>,
        data: &Dataset,
        cfg: &DistillConfig,
        schedule_steps: u32,
        progress: &mut dyn FnMut(usize, usize),
    ) -> TeacherTargets {
        let held = TeacherTargets::compute_into(
            teacher,
            data,
            cfg,
            schedule_steps,
            Box::<Held>::default(),
            progress,
        );
        match held {
            Ok(t) => t,
            Err(e) => unreachable!("steps held in memory cannot fail to be kept: {e}"),
        }
    }

    /// `compute_with_progress`, handing each step to `sink` as it is computed (shards written
    /// as they fill: the schedule is never held whole); an error of the sink stops it.
    pub fn compute_into<B: Backend>(
        teacher: &mut Model<B>,
        data: &Dataset,
        cfg: &DistillConfig,
        schedule_steps: u32,
        sink: Box<dyn StepSink>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<TeacherTargets, String> {
        TeacherTargets::compute_via(teacher, None, data, cfg, schedule_steps, sink, progress)
    }

    /// `compute_into` with the teacher's passes (soft targets, validation cross-entropy, and
    /// the activation sums that rank the parent for `init = "teacher"`) run by `pass` where
    /// one is given (`teacher` then only lends the parent its weights); the same targets to
    /// float rounding, kept by `sink` as they come.
    pub fn compute_via<B: Backend>(
        teacher: &mut Model<B>,
        mut pass: Option<&mut dyn TeacherPass>,
        data: &Dataset,
        cfg: &DistillConfig,
        schedule_steps: u32,
        mut sink: Box<dyn StepSink>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<TeacherTargets, String> {
        let start = Instant::now();
        let v = data.vocab_size() as usize;
        // Batches drawn in turn from the seed, as `Dataset::train_schedule` draws them.
        let mut rng = Rng::seed_from_u64(cfg.seed);
        let total = schedule_steps as usize;
        let per_call = pass.as_ref().map_or(1, |p| p.batches_per_call()).max(1);
        let mut done = 0;
        while done < total {
            let batches: Vec<Batch> = (0..per_call.min(total - done))
                .map(|_| data.train_batch(cfg.batch_size, &mut rng))
                .collect();
            let soft = match pass.as_deref_mut() {
                Some(p) => p.pass(&batches, cfg.temperature, cfg.top_k, false)?,
                None => teacher.pass(&batches, cfg.temperature, cfg.top_k, false)?,
            };
            if soft.len() != batches.len() {
                return Err(format!(
                    "the teacher's pass gave {} batches' targets for {}",
                    soft.len(),
                    batches.len()
                ));
            }
            for (b, (s, _)) in batches.into_iter().zip(soft) {
                sink.put(b, s)?;
                done += 1;
                progress(done, total);
            }
        }
        let schedule = sink.finish()?;
        let val = data.eval_batches(Split::Validation, cfg.batch_size, cfg.val_sequences);
        let passed = match pass.as_deref_mut() {
            Some(p) => p.pass(&val, 1.0, cfg.top_k, true)?,
            None => teacher.pass(&val, 1.0, cfg.top_k, true)?,
        };
        if passed.len() != val.len() {
            return Err(format!(
                "the teacher's pass gave {} validation batches' targets for {}",
                passed.len(),
                val.len()
            ));
        }
        let (mut ce, mut tokens) = (0.0, 0usize);
        let val_probs = val
            .iter()
            .zip(passed)
            .map(|(b, (s, sum))| {
                let n = b.b * b.t;
                // The mean per batch, then weighted by its rows: as the loss's `ce` was.
                ce += sum * (1.0 / n as f64) * n as f64;
                tokens += n;
                s
            })
            .collect();
        // What the passes above freed goes back before the parent's pass, so the estimate of
        // what is held from here on (`footprint`) is what is resident.
        genas_engine::memory::give_back();
        let parent = match cfg.init {
            StudentInit::Teacher => {
                let b = parent_batch(data, cfg.seed);
                let sums = match pass {
                    Some(p) => p.importance(&b)?,
                    None => Importance::measure(teacher, &b.inputs, (b.b, b.t)),
                };
                Some(Parent::ranked_by(teacher, &sums).map_err(String::from)?)
            }
            StudentInit::Random => None,
        };
        Ok(TeacherTargets {
            temperature: cfg.temperature,
            vocab: v,
            schedule,
            val,
            val_probs,
            teacher_val_ce: ce / tokens.max(1) as f64,
            seconds: start.elapsed().as_secs_f64(),
            parent,
        })
    }

    /// A student to distill against these targets, at its initial weights: drawn from `seed`,
    /// or, with a `parent`, pruned from the teacher where its shapes fit (the rest drawn).
    pub fn student<B: Backend>(&self, arch: &Architecture, be: B, seed: u64) -> Model<B> {
        match &self.parent {
            Some(p) => Model::with_initial(arch, be, seed, p.initial(arch)),
            None => Model::new(arch, be, seed),
        }
    }

    /// Memory held by the cached soft targets, bytes.
    pub fn bytes(&self) -> usize {
        self.schedule.held_bytes() + self.val_probs.iter().map(SoftTargets::bytes).sum::<usize>()
    }
}

/// A student read against the data and the teacher on the validation set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Cross-entropy to the data, nats/token.
    pub val_ce: f64,
    /// KL(teacher ‖ student) at T = 1, nats/token.
    pub kl_to_teacher: f64,
    /// Share of positions where the student's most probable token is the teacher's.
    pub agreement: f64,
}

pub fn evaluate_against_teacher<B: Backend>(
    model: &mut Model<B>,
    targets: &TeacherTargets,
) -> Evaluation {
    let v = targets.vocab;
    let (mut ce, mut kl, mut agree, mut tokens) = (0.0, 0.0, 0usize, 0usize);
    // One row widened to f64 at a time: the student runs without gradients (`Model::infer`)
    // and its logits are read a block of rows at a time, never copied whole.
    let mut zr = Vec::with_capacity(v);
    for (b, tp) in targets.val.iter().zip(&targets.val_probs) {
        let n = b.b * b.t;
        // Dense targets are small (v ≤ DENSE_VOCAB_MAX); top-k ones are read as they are,
        // never spread into an (n, v) buffer.
        let dense = match tp {
            SoftTargets::Dense(_) => Some(tp.dense_f32((n, v))),
            SoftTargets::TopK { .. } => None,
        };
        let mut sum = 0.0;
        let mut row = |r: usize, zr: &[f64]| match (tp, &dense) {
            (SoftTargets::TopK { k, index, prob }, _) => {
                let top = (&index[r * k..(r + 1) * k], &prob[r * k..(r + 1) * k]);
                let (row_kl, same) = top_k_eval(zr, top);
                kl += row_kl;
                agree += usize::from(same);
            }
            (_, Some(p)) => {
                let pr = &p[r * v..(r + 1) * v];
                let max = zr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + zr.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
                // Top-k rows repeat one value: its logarithm is kept, not recomputed.
                let (mut last_p, mut last_ln) = (f64::NAN, 0.0);
                kl += pr
                    .iter()
                    .zip(zr)
                    .filter(|(&pk, _)| pk > 0.0)
                    .map(|(&pk, &zk)| {
                        let pk = f64::from(pk);
                        if pk != last_p {
                            (last_p, last_ln) = (pk, pk.ln());
                        }
                        pk * (last_ln - (zk - lse))
                    })
                    .sum::<f64>();
                agree += usize::from(argmax(zr) == argmax(pr));
            }
            (SoftTargets::Dense(_), None) => unreachable!("dense targets are spread above"),
        };
        let mut sink = |first: usize, rows: usize, z: Host<'_>| {
            let y = &b.targets[first..first + rows];
            sum = add_ce_host(sum, z, y, v);
            for i in 0..rows {
                zr.clear();
                z.extend_f64(i * v..(i + 1) * v, &mut zr);
                row(first + i, &zr);
            }
        };
        model.infer(&b.inputs, (b.b, b.t), None, Some(&mut sink));
        // The mean per batch, then weighted by its rows: as the loss's `ce` was.
        ce += sum * (1.0 / n as f64) * n as f64;
        tokens += n;
    }
    let n = tokens.max(1) as f64;
    Evaluation {
        val_ce: ce / n,
        kl_to_teacher: kl / n,
        agreement: agree as f64 / n,
    }
}

/// KL(teacher ‖ softmax(z)) of one row whose teacher is top-k targets `(index, prob)` (the
/// rest of the mass spread evenly, as `SoftTargets::dense_f32` spreads it), and whether the
/// student's most probable token is the teacher's (the first of the teacher's most probable,
/// as `argmax` of the spread row picks it).
fn top_k_eval(z: &[f64], (ix, pr): (&[u32], &[f32])) -> (f64, bool) {
    use genas_engine::cpu::loss::{top_k_kl, top_k_rest};
    let (v, k) = (z.len(), ix.len());
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + z.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
    let s_all = z.iter().sum::<f64>() - v as f64 * lse;
    let kl = top_k_kl(|j| z[j] - lse, s_all, (ix, pr), v);
    let rest = top_k_rest(pr, v);
    // The teacher's first most probable token: among the k, or the first of the others.
    let best = pr.iter().map(|&p| f64::from(p)).fold(rest, f64::max);
    let mut first = ix
        .iter()
        .zip(pr)
        .filter(|(_, &p)| f64::from(p) == best)
        .map(|(&j, _)| j as usize)
        .min()
        .unwrap_or(usize::MAX);
    if rest == best && v > k {
        let mut in_top: Vec<u32> = ix.to_vec();
        in_top.sort_unstable();
        let other = (0..v).find(|j| in_top.binary_search(&(*j as u32)).is_err());
        first = first.min(other.unwrap_or(usize::MAX));
    }
    (kl, argmax(z) == first)
}

fn argmax<T: PartialOrd + Copy>(x: &[T]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// The outcome of a brief or full distillation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistillResult {
    pub steps: u32,
    /// Mean training loss over the last min(20, steps) steps.
    pub train_loss: Option<f64>,
    /// `None` when training diverged.
    pub eval: Option<Evaluation>,
    /// Why training stopped short: a non-finite loss or gradient, with its step.
    pub diverged: Option<String>,
    pub seconds: f64,
}

/// Brief distillation: `cfg.steps` steps (at most the schedule's length) on the cached
/// schedule from the model's current weights. Divergence is a result, not an error.
pub fn brief_distill<B: Backend>(
    model: &mut Model<B>,
    targets: &TeacherTargets,
    cfg: &DistillConfig,
) -> DistillResult {
    brief_distill_traced(model, targets, cfg, &mut |_| {})
}

/// `brief_distill`, telling `on_step` the loss of every step (the PyTorch runner's parity
/// tests compare them).
pub fn brief_distill_traced<B: Backend>(
    model: &mut Model<B>,
    targets: &TeacherTargets,
    cfg: &DistillConfig,
    on_step: &mut dyn FnMut(f64),
) -> DistillResult {
    let start = Instant::now();
    let (steps, tcfg, mut opt) = brief_setup(model, targets, cfg);
    let mut recent = Vec::new();
    for step in 0..steps {
        let Step { batch, soft } = targets.schedule.step(step as usize);
        let p = soft.for_loss(&model.be);
        match train_step(
            model,
            &mut opt,
            &batch,
            Some((&p, cfg.temperature, cfg.alpha)),
            &tcfg,
            step,
        ) {
            Ok(s) => {
                on_step(s.loss);
                recent.push(s.loss);
            }
            Err(e) => {
                return DistillResult {
                    steps: step,
                    train_loss: None,
                    eval: None,
                    diverged: Some(e.to_string()),
                    seconds: start.elapsed().as_secs_f64(),
                }
            }
        }
    }
    evaluated(model, targets, steps, &recent, start)
}

/// What a brief training of `model` on `targets`' schedule at `cfg` steps by: its steps (at
/// most the schedule's), the schedule, and an optimiser over the weights `cfg` trains.
pub fn brief_setup<B: Backend>(
    model: &Model<B>,
    targets: &TeacherTargets,
    cfg: &DistillConfig,
) -> (u32, TrainConfig, Optimizer<B>) {
    let steps = cfg.steps.min(targets.schedule.len() as u32);
    let tcfg = TrainConfig::new(steps, cfg.batch_size, cfg.learning_rate, cfg.seed);
    let mut opt = Optimizer::new(model);
    opt.train_only(model, &cfg.train_only);
    (steps, tcfg, opt)
}

/// The result of a brief training of `steps` steps whose losses were `recent`, begun at
/// `start`: `model` evaluated against the teacher, the mean of the last 20 losses.
pub fn evaluated<B: Backend>(
    model: &mut Model<B>,
    targets: &TeacherTargets,
    steps: u32,
    recent: &[f64],
    start: Instant,
) -> DistillResult {
    let eval = evaluate_against_teacher(model, targets);
    let tail = &recent[recent.len().saturating_sub(20)..];
    let finite = eval.val_ce.is_finite() && eval.kl_to_teacher.is_finite();
    DistillResult {
        steps,
        train_loss: (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64),
        eval: finite.then_some(eval),
        diverged: (!finite).then(|| format!("validation loss is {}", eval.val_ce)),
        seconds: start.elapsed().as_secs_f64(),
    }
}

// ------------------------------------------------------------------ full distillation

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FullConfig {
    pub distill: DistillConfig,
    /// Evaluate on the validation set every this many steps (and at the end).
    pub eval_every: u32,
    /// Write a checkpoint every this many steps.
    pub checkpoint_every: u32,
    /// Stop after this many evaluations in a row without a new best validation loss.
    pub patience: u32,
}

/// Where full distillation keeps its checkpoint; a directory by default, the archive later.
pub trait CheckpointStore {
    fn save(&mut self, bytes: &[u8]) -> Result<(), String>;
    fn load(&self) -> Result<Option<Vec<u8>>, String>;
}

/// A checkpoint file `distill.safetensors` in a directory, replaced atomically.
pub struct DirCheckpoints {
    pub dir: PathBuf,
}

impl DirCheckpoints {
    fn file(&self) -> PathBuf {
        self.dir.join("distill.safetensors")
    }
}

impl CheckpointStore for DirCheckpoints {
    fn save(&mut self, bytes: &[u8]) -> Result<(), String> {
        let err = |e: std::io::Error| format!("cannot write {}: {e}", self.file().display());
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let tmp = self.dir.join("distill.safetensors.tmp");
        std::fs::write(&tmp, bytes).map_err(err)?;
        std::fs::rename(&tmp, self.file()).map_err(err)
    }

    fn load(&self) -> Result<Option<Vec<u8>>, String> {
        match std::fs::read(self.file()) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", self.file().display())),
        }
    }
}

/// Progress of a full distillation: everything besides tensors that a resume needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct FullState {
    /// Identifies what was being trained: the architecture id and the configuration.
    arch_id: String,
    config: FullConfig,
    /// Steps done.
    step: u32,
    rng: Rng,
    opt_step: u64,
    best_val: f64,
    best_step: u32,
    bad_evals: u32,
    history: Vec<(u32, f64)>,
    recent: Vec<f64>,
    seconds: f64,
    /// The loss of every step done (absent from checkpoints written before it was kept).
    #[serde(default)]
    losses: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FullResult {
    pub result: DistillResult,
    /// The step whose weights were kept (best validation loss).
    pub best_step: u32,
    pub stopped_early: bool,
    /// The step the run resumed from, if it did.
    pub resumed_from: Option<u32>,
    /// (step, validation cross-entropy) at every evaluation.
    pub history: Vec<(u32, f64)>,
    /// The training loss of every step (of those since a checkpoint written before genas
    /// kept them, after a resume), what `train.py` of `genas export --with-training`
    /// reproduces.
    #[serde(default)]
    pub losses: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DistillError {
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("the checkpoint belongs to another run ({0}); remove it to start over")]
    Foreign(String),
    #[error(transparent)]
    Diverged(#[from] TrainError),
    #[error("stopped at step {0} (the checkpoint holds the last saved step)")]
    Stopped(u32),
}

fn encode_checkpoint<B: Backend>(
    model: &Model<B>,
    opt: &Optimizer<B>,
    best: &[Vec<f64>],
    state: &FullState,
) -> Result<Vec<u8>, String> {
    let (m, v) = opt.moments(&model.be);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, p) in model.params.iter().enumerate() {
        let le = |x: &[f64]| x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        tensors.push((
            format!("weights.{}", p.name),
            p.shape.clone(),
            le(&model.weights(i)),
        ));
        tensors.push((format!("best.{}", p.name), p.shape.clone(), le(&best[i])));
        tensors.push((format!("adam_m.{}", p.name), p.shape.clone(), le(&m[i])));
        tensors.push((format!("adam_v.{}", p.name), p.shape.clone(), le(&v[i])));
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F64, s.clone(), b).expect("sizes agree"),
            )
        })
        .collect();
    let state = serde_json::to_string(state).map_err(|e| e.to_string())?;
    let meta = HashMap::from([("genas.distill_state".to_string(), state)]);
    safetensors::serialize(views, Some(meta)).map_err(|e| e.to_string())
}

type Tensors = (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<Vec<f64>>);

/// Reads a checkpoint written for `expect` (same architecture and configuration).
fn decode_checkpoint<B: Backend>(
    model: &Model<B>,
    bytes: &[u8],
    expect: &FullState,
) -> Result<(FullState, Tensors), DistillError> {
    let bad = DistillError::Checkpoint;
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a checkpoint ({e})")))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let state: FullState = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("genas.distill_state"))
        .ok_or("no distillation state in the checkpoint")
        .and_then(|s| serde_json::from_str(s).map_err(|_| "unreadable distillation state"))
        .map_err(|e| bad(e.to_string()))?;
    if state.arch_id != expect.arch_id || state.config != expect.config {
        return Err(DistillError::Foreign(format!(
            "architecture {} at {} steps",
            state.arch_id, state.config.distill.steps
        )));
    }
    let read = |prefix: &str| -> Result<Vec<Vec<f64>>, String> {
        model
            .params
            .iter()
            .map(|p| {
                let t = st
                    .tensor(&format!("{prefix}.{}", p.name))
                    .map_err(|_| format!("missing {prefix}.{}", p.name))?;
                if t.dtype() != Dtype::F64 || t.shape() != p.shape.as_slice() {
                    return Err(format!("{prefix}.{} has the wrong shape", p.name));
                }
                Ok(t.data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect())
            })
            .collect()
    };
    let all = || -> Result<Tensors, String> {
        Ok((
            read("weights")?,
            read("best")?,
            read("adam_m")?,
            read("adam_v")?,
        ))
    };
    Ok((state, all().map_err(bad)?))
}

/// Full distillation of `model` from `teacher` (soft targets computed per step), resuming
/// from `store`'s checkpoint when it holds one for this architecture and configuration.
/// `val` supplies the validation set and the teacher's validation distribution (a
/// `TeacherTargets` with an empty schedule is enough). `on_step(step, loss)` may break to stop
/// the run as a kill would: nothing is written after it. At the end the best weights are in
/// `model`.
pub fn full_distill<B: Backend>(
    model: &mut Model<B>,
    teacher: &mut Model<B>,
    data: &Dataset,
    val: &TeacherTargets,
    cfg: &FullConfig,
    store: &mut dyn CheckpointStore,
    mut on_step: impl FnMut(u32, f64) -> ControlFlow<()>,
) -> Result<FullResult, DistillError> {
    let d = &cfg.distill;
    let tcfg = TrainConfig::new(d.steps, d.batch_size, d.learning_rate, d.seed);
    let mut opt = Optimizer::new(model);
    let mut state = FullState {
        arch_id: model.arch.id(),
        config: cfg.clone(),
        step: 0,
        rng: Rng::seed_from_u64(d.seed),
        opt_step: 0,
        best_val: f64::INFINITY,
        best_step: 0,
        bad_evals: 0,
        history: Vec::new(),
        recent: Vec::new(),
        seconds: 0.0,
        losses: Vec::new(),
    };
    let mut best: Vec<Vec<f64>> = (0..model.params.len()).map(|i| model.weights(i)).collect();
    let mut resumed_from = None;
    if let Some(bytes) = store.load().map_err(DistillError::Checkpoint)? {
        let (saved, (w, b, m, vv)) = decode_checkpoint(model, &bytes, &state)?;
        for (i, wi) in w.iter().enumerate() {
            model.set_weights(i, wi);
        }
        opt.restore(&model.be, &m, &vv, saved.opt_step);
        best = b;
        resumed_from = Some(saved.step);
        state = saved;
    }
    // Wall time accumulates across resumes.
    let (start, before) = (Instant::now(), state.seconds);
    let mut stopped_early = false;
    while state.step < d.steps {
        let step = state.step;
        let batch = data.train_batch(d.batch_size, &mut state.rng);
        // α = 1 trains on the hard labels alone (the ablation of `genas report --ablate-kd`):
        // the teacher is only read for validation.
        let soft = (d.alpha < 1.0)
            .then(|| SoftTargets::of_teacher(teacher, &batch, d.temperature, d.top_k, false).0);
        let p = soft.as_ref().map(|s| s.for_loss(&model.be));
        let s = train_step(
            model,
            &mut opt,
            &batch,
            p.as_ref().map(|p| (p, d.temperature, d.alpha)),
            &tcfg,
            step,
        )?;
        state.recent.push(s.loss);
        state.losses.push(s.loss);
        if state.recent.len() > 20 {
            state.recent.remove(0);
        }
        state.step += 1;
        state.opt_step = opt.step;
        if state.step.is_multiple_of(cfg.eval_every) || state.step == d.steps {
            let e = evaluate_against_teacher(model, val);
            state.history.push((state.step, e.val_ce));
            if e.val_ce < state.best_val {
                state.best_val = e.val_ce;
                state.best_step = state.step;
                state.bad_evals = 0;
                best = (0..model.params.len()).map(|i| model.weights(i)).collect();
            } else {
                state.bad_evals += 1;
            }
            stopped_early = state.bad_evals >= cfg.patience && state.step < d.steps;
        }
        if on_step(step, s.loss).is_break() {
            return Err(DistillError::Stopped(step));
        }
        if state.step.is_multiple_of(cfg.checkpoint_every) || state.step == d.steps || stopped_early
        {
            state.seconds = before + start.elapsed().as_secs_f64();
            let bytes =
                encode_checkpoint(model, &opt, &best, &state).map_err(DistillError::Checkpoint)?;
            store.save(&bytes).map_err(DistillError::Checkpoint)?;
        }
        if stopped_early {
            break;
        }
    }
    for (i, w) in best.iter().enumerate() {
        model.set_weights(i, w);
    }
    let eval = evaluate_against_teacher(model, val);
    let tail = &state.recent;
    Ok(FullResult {
        result: DistillResult {
            steps: state.step,
            train_loss: (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64),
            eval: Some(eval),
            diverged: None,
            seconds: before + start.elapsed().as_secs_f64(),
        },
        best_step: state.best_step,
        stopped_early,
        resumed_from,
        history: state.history,
        losses: state.losses,
    })
}

/// A directory checkpoint store at `dir`.
pub fn dir_store(dir: &Path) -> DirCheckpoints {
    DirCheckpoints {
        dir: dir.to_path_buf(),
    }
}
