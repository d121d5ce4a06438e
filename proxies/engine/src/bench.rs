//! The engine benchmark: training steps per second of a plain GPT (full attention, 4× GELU MLP,
//! untied head) on random tokens, with the GEMM throughput measured in the same run as the
//! baseline, so the figure says how close the whole step comes to the machine's matrix speed.

use crate::cpu::matmul::{matmul_backward, matmul_forward, profile};
use crate::train::Optimizer;
use crate::Batch;
use crate::{Backend, Cpu, Model, TrainConfig};
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
        ffn: Some(Ffn {
            hidden: 4 * c.d_model,
            activation: if c.llama {
                Activation::Swiglu
            } else {
                Activation::Gelu
            },
            rank: None,
            sparsity: None,
        }),
        sparsity: Sparsity::Dense,
        attention_bias: false,
        head_dim: None,
        qk_norm: false,
        qkv_bias: false,
    };
    let (norm, position) = if c.llama {
        (
            Norm::Rmsnorm,
            Position::Rope {
                theta: Float(genas_space::DEFAULT_ROPE_THETA),
                scaling: None,
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
        norm_eps: genas_space::Float(genas_space::NORM_EPS),
    }
}

/// Why the engine benchmark could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BenchError {
    /// The benchmark's sizes make no valid network.
    #[error(transparent)]
    Architecture(#[from] genas_space::ArchError),
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    /// A step's gradient norm was not finite.
    #[error("gradient norm {0}")]
    Diverged(f64),
}

pub fn bench_train(c: &BenchConfig) -> Result<BenchReport, BenchError> {
    let arch = bench_architecture(c);
    arch.validate()?;
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
            .map_err(BenchError::Diverged)?;
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
