//! `genas bench distill`: the teacher's soft-target cache and one brief distillation at a real
//! vocabulary size, on random ids, with hard-label training of the same student measured in
//! the same run as the baseline.

use crate::data::Dataset;
use crate::distill::{
    brief_distill_traced, evaluate_against_teacher, DistillConfig, SoftTargets, TeacherTargets,
};
use genas_engine::train::{train_step, Optimizer};
use genas_engine::{memory, Cpu, Model, TrainConfig};
use genas_space::{
    Activation, Architecture, Attention, Cost, Layer, Norm, Position, Rng, Sparsity,
};
use serde::Serialize;
use std::time::Instant;

/// `genas bench distill`: the teacher's soft-target cache and one brief distillation at a
/// vocabulary of `vocab` (GPT-2's 50,257 by default), on random ids.
#[derive(Clone, Debug)]
pub struct DistillBenchConfig {
    pub vocab: u32,
    pub top_k: usize,
    pub teacher_d_model: u32,
    pub teacher_layers: u32,
    pub d_model: u32,
    pub layers: u32,
    pub seq: u32,
    pub batch: usize,
    pub steps: u32,
    pub threads: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct DistillBenchReport {
    pub vocab: u32,
    pub top_k: usize,
    pub threads: usize,
    pub steps: u32,
    pub tokens_per_step: usize,
    pub teacher: String,
    pub teacher_params: u64,
    pub student: String,
    pub student_params: u64,
    /// Computing the soft targets of every step and of the validation set.
    pub targets_seconds: f64,
    /// Bytes the cache holds (top-k ids and probabilities), and what the same positions
    /// would take as dense f32 distributions.
    pub targets_bytes: u64,
    pub dense_bytes: u64,
    /// Mean probability mass the top k keep per position (at the distillation temperature);
    /// a random teacher spreads its mass, so this is a floor, not what a trained one keeps.
    pub kept_mass: f64,
    /// One brief distillation of `steps` steps, and the same student trained as long on the
    /// hard labels alone, measured in this run: the distillation's own cost is the ratio.
    pub distill_ms_per_step: f64,
    pub hard_ms_per_step: f64,
    /// The closing evaluation of a brief distillation (validation CE, KL, agreement).
    pub eval_seconds: f64,
    pub distill_over_hard: f64,
    /// Peak resident memory of the process while computing the targets, distilling, and
    /// training on hard labels (MB; each phase's peak, reset between phases where Linux lets
    /// it be reset, else the running peak).
    pub peak_mb_targets: Option<f64>,
    pub peak_mb_distill: Option<f64>,
    pub peak_mb_hard: Option<f64>,
    pub peak_resets: bool,
}

/// Resets the process's peak resident memory (Linux: `5` into /proc/self/clear_refs).
fn reset_peak_memory() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn peak_mb() -> Option<f64> {
    genas_engine::generate::peak_memory_bytes().map(|b| b as f64 / 1e6)
}

/// Why the distillation benchmark could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DistillBenchError {
    /// The benchmark's sizes make no valid teacher or student.
    #[error(transparent)]
    Architecture(#[from] genas_space::ArchError),
    #[error(transparent)]
    Memory(#[from] genas_engine::memory::MemoryError),
    #[error("the benchmark distillation diverged: {0}")]
    Diverged(String),
    #[error(transparent)]
    Train(#[from] genas_engine::TrainError),
}

pub fn bench_distill(c: &DistillBenchConfig) -> Result<DistillBenchReport, DistillBenchError> {
    let gpt = |d: u32, layers: u32| Architecture {
        vocab_size: c.vocab,
        context: c.seq,
        d_model: d,
        tie_embeddings: false,
        share_layers: 1,
        layers: vec![
            Layer::new(
                Attention::Full {
                    heads: (d / 32).max(1)
                },
                4 * d,
                Activation::Gelu,
                None,
                Sparsity::Dense,
            );
            layers as usize
        ],
        norm: Norm::Layernorm,
        position: Position::Learned,
        norm_eps: genas_space::Float(genas_space::NORM_EPS),
    };
    let (teacher_arch, student_arch) = (
        gpt(c.teacher_d_model, c.teacher_layers),
        gpt(c.d_model, c.layers),
    );
    for a in [&teacher_arch, &student_arch] {
        a.validate()?;
    }
    let be = Cpu::<f32>::new(c.threads);
    let threads = be.threads();
    let n = c.batch * c.seq as usize;
    let val_sequences = 4 * c.batch;
    let dense_bytes = 4
        * c.vocab as u64
        * (u64::from(c.steps) * n as u64 + (val_sequences * c.seq as usize) as u64);
    memory::check(
        &format!("the distillation benchmark at a vocabulary of {}", c.vocab),
        memory::training_bytes(&student_arch, c.batch, threads)
            + memory::training_bytes(&teacher_arch, c.batch, 1)
            + 16.0 * (n as f64) * f64::from(c.vocab),
    )?;
    // Random ids: enough for every step's batch and the validation set.
    let mut rng = Rng::seed_from_u64(0);
    let mut ids = |len: usize| -> Vec<u32> {
        (0..len)
            .map(|_| rng.below(u64::from(c.vocab)) as u32)
            .collect()
    };
    let train = ids(64 * n);
    let validation = ids((val_sequences + 1) * (c.seq as usize + 1));
    let data = Dataset::from_ids(train, validation, c.vocab, c.seq);
    let cfg = DistillConfig {
        steps: c.steps,
        batch_size: c.batch,
        learning_rate: 3e-3,
        temperature: 2.0,
        alpha: 0.5,
        seed: 0,
        val_sequences,
        top_k: c.top_k,
        init: Default::default(),
        precision: Default::default(),
        train_only: Vec::new(),
    };
    let mut teacher = Model::new(&teacher_arch, be.clone(), 1);
    let resets = reset_peak_memory();
    let start = Instant::now();
    let targets = TeacherTargets::compute(&mut teacher, &data, &cfg, c.steps);
    let targets_seconds = start.elapsed().as_secs_f64();
    let peak_mb_targets = peak_mb();
    drop(teacher);
    let kept: Vec<f64> = (0..targets.schedule.len())
        .map(|i| match &*targets.schedule.step(i).soft {
            SoftTargets::TopK { k, prob, .. } => {
                prob.chunks_exact(*k)
                    .map(|row| row.iter().map(|&p| f64::from(p)).sum::<f64>())
                    .sum::<f64>()
                    / (prob.len() / k) as f64
            }
            SoftTargets::Dense(_) => 1.0,
        })
        .collect();
    let kept_mass = kept.iter().sum::<f64>() / kept.len().max(1) as f64;

    reset_peak_memory();
    let mut student = Model::new(&student_arch, be.clone(), 2);
    // Each step's end, stamped: the per-step figures are the time between the first step's end
    // and the last's, so neither the first step's allocations nor the closing evaluation count,
    // for either kind of step (a figure by subtraction came out at zero on a busy machine).
    let mut stamps = Vec::new();
    let r = brief_distill_traced(&mut student, &targets, &cfg, &mut |_| {
        stamps.push(Instant::now())
    });
    if let Some(why) = r.diverged {
        return Err(DistillBenchError::Diverged(why));
    }
    let peak_mb_distill = peak_mb();
    let distill_ms_per_step = ms_per_step(&stamps, r.seconds, c.steps);
    let start = Instant::now();
    evaluate_against_teacher(&mut student, &targets);
    let eval_seconds = start.elapsed().as_secs_f64();
    drop(student);

    reset_peak_memory();
    let mut hard = Model::new(&student_arch, be, 2);
    let mut opt = Optimizer::new(&hard);
    let tcfg = TrainConfig::new(c.steps, c.batch, 3e-3, 0);
    let start = Instant::now();
    let mut stamps = Vec::new();
    for step in 0..targets.schedule.len() {
        let batch = targets.schedule.step(step).batch;
        train_step(&mut hard, &mut opt, &batch, None, &tcfg, step as u32)?;
        stamps.push(Instant::now());
    }
    let hard_ms_per_step = ms_per_step(&stamps, start.elapsed().as_secs_f64(), c.steps);
    let peak_mb_hard = peak_mb();
    Ok(DistillBenchReport {
        vocab: c.vocab,
        top_k: c.top_k,
        threads,
        steps: c.steps,
        tokens_per_step: n,
        teacher: teacher_arch.summary(),
        teacher_params: Cost::of(&teacher_arch).params,
        student: student_arch.summary(),
        student_params: Cost::of(&student_arch).params,
        targets_seconds,
        targets_bytes: targets.bytes() as u64,
        dense_bytes,
        kept_mass,
        distill_ms_per_step,
        hard_ms_per_step,
        eval_seconds,
        distill_over_hard: distill_ms_per_step / hard_ms_per_step,
        peak_mb_targets,
        peak_mb_distill,
        peak_mb_hard,
        peak_resets: resets,
    })
}

/// Milliseconds per step from each step's end (`stamps`): the span from the first to the last
/// over the steps between; with one step, `seconds` (the whole run) over `steps`.
fn ms_per_step(stamps: &[Instant], seconds: f64, steps: u32) -> f64 {
    match stamps {
        [first, .., last] => {
            1e3 * last.duration_since(*first).as_secs_f64() / (stamps.len() - 1) as f64
        }
        _ => 1e3 * seconds / f64::from(steps.max(1)),
    }
}
