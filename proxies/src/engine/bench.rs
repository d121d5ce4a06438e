//! The engine benchmark: training steps per second of a plain GPT (full attention, 4× GELU MLP,
//! untied head) on random tokens, with the GEMM throughput measured in the same run as the
//! baseline, so the figure says how close the whole step comes to the machine's matrix speed.

use crate::data::Batch;
use crate::engine::cpu::matmul::{matmul_backward, matmul_forward, profile};
use crate::engine::train::Optimizer;
use crate::engine::{Backend, Cpu, Model, TrainConfig};
use genas_space::{
    Activation, Architecture, Attention, Cost, Ffn, Float, Layer, Norm, Position, Rng, Sparsity,
};
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub vocab: u32,
    pub d_model: u32,
    pub layers: u32,
    pub heads: u32,
    pub seq: u32,
    pub batch: usize,
    pub steps: u32,
    pub warmup: u32,
    pub threads: usize,
    /// Time every matrix product of the timed steps (`BenchReport::products`).
    pub gemm_profile: bool,
    /// The Llama block instead of GPT-2's: rope, RMSNorm, swiglu (hidden 4·C), no wpe.
    pub llama: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    #[serde(rename = "impl")]
    pub implementation: String,
    pub threads: usize,
    pub d_model: u32,
    pub layers: u32,
    pub heads: u32,
    pub seq: u32,
    pub batch: usize,
    pub vocab: u32,
    /// "gpt2" or "llama" (rope, RMSNorm, swiglu).
    pub block: &'static str,
    pub params: usize,
    pub steps: u32,
    pub seconds: f64,
    pub steps_per_s: f64,
    pub ms_per_step: f64,
    /// Cost-model FLOPs of one training step (3 × forward, causal attention).
    pub gflop_per_step: f64,
    pub achieved_gflops: f64,
    /// Throughput of the step's largest GEMM shape, (B·T, C) × (C, 4C), timed in this run.
    pub gemm_gflops: f64,
    pub gemm_fraction: f64,
    /// Mean milliseconds per timed step: forward + backward, and the optimizer update.
    pub forward_backward_ms: f64,
    pub update_ms: f64,
    pub final_loss: f64,
    /// With `gemm_profile`: every product shape of the timed steps, its calls, time and rate
    /// per thread, longest first, each with the rate the same call reaches outside the step.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<ProductTiming>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProductTiming {
    #[serde(flatten)]
    pub in_step: profile::Product,
    /// GFLOP/s per thread of the same call repeated outside the step, on every thread at once
    /// (each with its own buffers), in this run.
    pub alone_gflops: f64,
}

/// The rate of each product shape outside a training step: every thread repeats the same call
/// on its own (warmed-up) buffers at once, as the step's shards do, single-threaded per call.
fn products_alone(threads: usize, shapes: &[profile::Product]) -> Vec<profile::Product> {
    struct Bufs {
        inp: Vec<f32>,
        w: Vec<f32>,
        out: Vec<f32>,
        dinp: Vec<f32>,
        dw: Vec<f32>,
    }
    let run = |p: &profile::Product, b: &mut Bufs, reps: usize| {
        let (n, c, oc) = p.shape;
        for _ in 0..reps {
            match p.kind {
                profile::Kind::Forward => matmul_forward(
                    &mut b.out,
                    p.accumulate,
                    &b.inp,
                    &b.w,
                    None,
                    (n, c, oc),
                    gemm::Parallelism::None,
                ),
                // One backward call records both its dX and its dW.
                profile::Kind::Dx | profile::Kind::Dw => matmul_backward(
                    Some(&mut b.dinp),
                    p.accumulate && p.kind == profile::Kind::Dx,
                    &mut b.dw,
                    None,
                    &b.out,
                    &b.inp,
                    &b.w,
                    (n, c, oc),
                    gemm::Parallelism::None,
                ),
            }
        }
    };
    let mut out = Vec::new();
    for p in shapes.iter().filter(|p| p.kind != profile::Kind::Dw) {
        let (n, c, oc) = p.shape;
        let mut rng = Rng::seed_from_u64(2);
        let mut fill =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.next_f32() - 0.5).collect() };
        let mut bufs: Vec<Bufs> = (0..threads.max(1))
            .map(|_| Bufs {
                inp: fill(n * c),
                w: fill(oc * c),
                out: fill(n * oc),
                dinp: fill(n * c),
                dw: fill(oc * c),
            })
            .collect();
        for (reps, timed) in [(2, false), (10, true)] {
            if timed {
                profile::start();
            }
            std::thread::scope(|s| {
                for b in bufs.iter_mut() {
                    s.spawn(|| run(p, b, reps));
                }
            });
        }
        out.extend(profile::stop());
    }
    out
}

/// The benchmark model as an architecture.
pub fn bench_architecture(c: &BenchConfig) -> Architecture {
    let layer = Layer {
        attention: Attention::Full { heads: c.heads },
        ffn: Ffn {
            hidden: 4 * c.d_model,
            activation: if c.llama {
                Activation::Swiglu
            } else {
                Activation::Gelu
            },
            rank: None,
        },
        sparsity: Sparsity::Dense,
        attention_bias: false,
    };
    let (norm, position) = if c.llama {
        (
            Norm::Rmsnorm,
            Position::Rope {
                theta: Float(genas_space::DEFAULT_ROPE_THETA),
            },
        )
    } else {
        (Norm::Layernorm, Position::Learned)
    };
    Architecture {
        vocab_size: c.vocab,
        context: c.seq,
        d_model: c.d_model,
        tie_embeddings: false,
        share_layers: 1,
        layers: vec![layer; c.layers as usize],
        norm,
        position,
    }
}

pub fn bench_train(c: &BenchConfig) -> Result<BenchReport, String> {
    let arch = bench_architecture(c);
    arch.validate().map_err(|e| e.to_string())?;
    let be = Cpu::<f32>::new(c.threads);
    let threads = be.threads();
    super::memory::check(
        &format!(
            "the benchmark model ({}, batch {})",
            arch.summary(),
            c.batch
        ),
        super::memory::training_bytes(&arch, c.batch, threads),
    )?;
    let mut model = Model::new(&arch, be.clone(), 0);
    let mut opt = Optimizer::new(&model);
    let cfg = TrainConfig::new(c.warmup + c.steps, c.batch, 1e-3, 0);
    let mut rng = Rng::seed_from_u64(0);
    let (b, t) = (c.batch, c.seq as usize);
    let batches: Vec<Batch> = (0..8)
        .map(|_| Batch {
            b,
            t,
            inputs: (0..b * t)
                .map(|_| rng.below(c.vocab as u64) as u32)
                .collect(),
            targets: (0..b * t)
                .map(|_| rng.below(c.vocab as u64) as u32)
                .collect(),
        })
        .collect();
    let mut last = 0.0;
    let mut start = Instant::now();
    let mut phase = [0.0f64; 2];
    for step in 0..c.warmup + c.steps {
        if step == c.warmup {
            start = Instant::now();
            phase = [0.0; 2];
            if c.gemm_profile {
                profile::start();
            }
        }
        let batch = &batches[step as usize % 8];
        // forward and backward are one call: on 2+ threads they run as data-parallel shards.
        let t0 = Instant::now();
        let loss = model.forward_backward(&batch.inputs, &batch.targets, (b, t));
        let t2 = Instant::now();
        opt.update(&mut model, cfg.lr_at(step), &cfg)
            .map_err(|n| format!("gradient norm {n}"))?;
        let t3 = Instant::now();
        phase[0] += (t2 - t0).as_secs_f64();
        phase[1] += (t3 - t2).as_secs_f64();
        last = loss.loss;
    }
    let seconds = start.elapsed().as_secs_f64();
    let products = if c.gemm_profile {
        let in_step = profile::stop();
        let alone = products_alone(threads, &in_step);
        in_step
            .into_iter()
            .map(|p| ProductTiming {
                alone_gflops: alone
                    .iter()
                    .find(|a| a.product == p.product)
                    .map_or(f64::NAN, |a| a.gflops),
                in_step: p,
            })
            .collect()
    } else {
        Vec::new()
    };
    let steps_per_s = c.steps as f64 / seconds;
    let gflop = Cost::of(&arch).train_flops_per_token * (b * t) as f64 / 1e9;
    let gemm = gemm_gflops(&be, b * t, c.d_model as usize, 4 * c.d_model as usize);
    let achieved = gflop * steps_per_s;
    Ok(BenchReport {
        block: if c.llama { "llama" } else { "gpt2" },
        implementation: "genas".into(),
        threads,
        d_model: c.d_model,
        layers: c.layers,
        heads: c.heads,
        seq: c.seq,
        batch: c.batch,
        vocab: c.vocab,
        params: model.num_params(),
        steps: c.steps,
        seconds,
        steps_per_s,
        ms_per_step: 1e3 / steps_per_s,
        gflop_per_step: gflop,
        achieved_gflops: achieved,
        gemm_gflops: gemm,
        gemm_fraction: achieved / gemm,
        forward_backward_ms: phase[0] * 1e3 / c.steps as f64,
        update_ms: phase[1] * 1e3 / c.steps as f64,
        final_loss: last,
        products,
    })
}

/// GFLOP/s of out (n, oc) = inp (n, c) · W (oc, c)ᵀ on this backend's threads (median of 9 timed
/// repetitions of ~20 ms batches).
pub fn gemm_gflops(be: &Cpu<f32>, n: usize, c: usize, oc: usize) -> f64 {
    let mut rng = Rng::seed_from_u64(1);
    let inp: Vec<f32> = (0..n * c).map(|_| rng.next_f32()).collect();
    let w: Vec<f32> = (0..oc * c).map(|_| rng.next_f32()).collect();
    let mut out = vec![0.0f32; n * oc];
    let par = if be.threads() > 1 {
        gemm::Parallelism::Rayon(be.threads())
    } else {
        gemm::Parallelism::None
    };
    let flop = 2.0 * (n * c * oc) as f64;
    let mut run = |reps: usize| {
        let s = Instant::now();
        be.install(|| {
            for _ in 0..reps {
                matmul_forward(&mut out, false, &inp, &w, None, (n, c, oc), par);
            }
        });
        s.elapsed().as_secs_f64()
    };
    let once = run(3) / 3.0;
    let reps = ((0.02 / once.max(1e-7)) as usize).max(1);
    let mut rates: Vec<f64> = (0..9)
        .map(|_| flop * reps as f64 / run(reps) / 1e9)
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[4]
}

// ---------------------------------------------------------------------------------------------
// Distillation at a real vocabulary size.

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
    super::generate::peak_memory_bytes().map(|b| b as f64 / 1e6)
}

pub fn bench_distill(c: &DistillBenchConfig) -> Result<DistillBenchReport, String> {
    use crate::distill::{brief_distill, DistillConfig, TeacherTargets};
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
    };
    let (teacher_arch, student_arch) = (
        gpt(c.teacher_d_model, c.teacher_layers),
        gpt(c.d_model, c.layers),
    );
    for a in [&teacher_arch, &student_arch] {
        a.validate().map_err(|e| e.to_string())?;
    }
    let be = Cpu::<f32>::new(c.threads);
    let threads = be.threads();
    let n = c.batch * c.seq as usize;
    let val_sequences = 4 * c.batch;
    let dense_bytes = 4
        * c.vocab as u64
        * (u64::from(c.steps) * n as u64 + (val_sequences * c.seq as usize) as u64);
    super::memory::check(
        &format!("the distillation benchmark at a vocabulary of {}", c.vocab),
        super::memory::training_bytes(&student_arch, c.batch, threads)
            + super::memory::training_bytes(&teacher_arch, c.batch, 1)
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
    let data = crate::data::Dataset::from_ids(train, validation, c.vocab, c.seq);
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
    };
    let mut teacher = Model::new(&teacher_arch, be.clone(), 1);
    let resets = reset_peak_memory();
    let start = Instant::now();
    let targets = TeacherTargets::compute(&mut teacher, &data, &cfg, c.steps);
    let targets_seconds = start.elapsed().as_secs_f64();
    let peak_mb_targets = peak_mb();
    drop(teacher);
    let kept: Vec<f64> = targets
        .soft
        .iter()
        .map(|s| match s {
            crate::distill::SoftTargets::TopK { k, prob, .. } => {
                prob.chunks_exact(*k)
                    .map(|row| row.iter().map(|&p| f64::from(p)).sum::<f64>())
                    .sum::<f64>()
                    / (prob.len() / k) as f64
            }
            crate::distill::SoftTargets::Dense(_) => 1.0,
        })
        .collect();
    let kept_mass = kept.iter().sum::<f64>() / kept.len().max(1) as f64;

    reset_peak_memory();
    let mut student = Model::new(&student_arch, be.clone(), 2);
    let r = brief_distill(&mut student, &targets, &cfg);
    if let Some(why) = r.diverged {
        return Err(format!("the benchmark distillation diverged: {why}"));
    }
    let peak_mb_distill = peak_mb();
    // brief_distill's time includes its closing evaluation against the teacher: timed again
    // here and taken out, so the per-step figure compares with hard-label steps.
    let start = Instant::now();
    crate::distill::evaluate_against_teacher(&mut student, &targets);
    let eval_seconds = start.elapsed().as_secs_f64();
    let distill_ms_per_step = 1e3 * (r.seconds - eval_seconds).max(0.0) / f64::from(c.steps);
    drop(student);

    reset_peak_memory();
    let mut hard = Model::new(&student_arch, be, 2);
    let mut opt = Optimizer::new(&hard);
    let tcfg = TrainConfig::new(c.steps, c.batch, 3e-3, 0);
    let start = Instant::now();
    for (step, batch) in targets.schedule.iter().enumerate() {
        crate::engine::train::train_step(&mut hard, &mut opt, batch, None, &tcfg, step as u32)
            .map_err(|e| e.to_string())?;
    }
    let hard_ms_per_step = 1e3 * start.elapsed().as_secs_f64() / f64::from(c.steps);
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
