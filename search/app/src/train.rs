//! `genas train`: one architecture trained from scratch on an experiment's data with the
//! engine, and the renderers of the engine benchmarks (`genas bench train`, `genas bench
//! distill`).

use crate::experiment::{check_training_memory, load_dataset};
use crate::format::{bytes, thousands};
use anyhow::{Context, Result};
use genas_space::{Architecture, Cost, DataKind, Experiment, Rng};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Architecture JSON files larger than this are refused (one is a few kilobytes).
const MAX_ARCHITECTURE_BYTES: u64 = 16 << 20;

/// `genas train`: options.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub steps: Option<u32>,
    pub seed: u64,
    pub batch_size: Option<usize>,
    pub learning_rate: Option<f64>,
    pub threads: Option<usize>,
    pub out: Option<PathBuf>,
}

/// What `genas train` reports. Losses in nats/token; bits in the data's unit.
#[derive(Serialize)]
pub struct TrainSummary {
    pub id: String,
    pub architecture: String,
    pub params: u64,
    pub nonzero_params: u64,
    pub steps: u32,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    pub threads: usize,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub bits_unit: String,
    pub train_bits: f64,
    pub validation_bits: f64,
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub generation_ms_per_token: f64,
    pub inference_state_bytes: u64,
    pub peak_memory_mb: Option<f64>,
    pub weights: PathBuf,
    pub sample: String,
}

/// Trains one architecture (JSON file) on an experiment's data, evaluates it, times generation
/// and saves the weights as safetensors.
pub fn train_architecture(
    arch_path: &Path,
    experiment: &Path,
    o: &TrainOptions,
    mut progress: impl FnMut(&genas_engine::train::StepStats, u32),
) -> Result<TrainSummary> {
    use genas_engine::{
        checkpoint, generate, train, Cpu, Generator, Model, SampleConfig, TrainConfig,
    };
    use genas_scoring::Split;
    let text = genas_space::files::read_text_bounded(arch_path, MAX_ARCHITECTURE_BYTES)
        .with_context(|| format!("cannot read {}", arch_path.display()))?;
    let arch = Architecture::from_json(&text).with_context(|| arch_path.display().to_string())?;
    let exp = Experiment::from_path(experiment)?;
    // `genas train` always trains on the engine; say so where the experiment asks for more.
    if let Some(n) = genas_exec::torch::device_plan(&exp)?.note() {
        eprintln!("{n} (genas train: on the CPU engine)");
    }
    let data = load_dataset(&exp)?;
    if arch.vocab_size != data.vocab_size() || arch.context != data.context {
        anyhow::bail!(
            "{}: the architecture is for vocabulary {} and context {}, but {} gives {} and {}",
            arch_path.display(),
            arch.vocab_size,
            arch.context,
            experiment.display(),
            data.vocab_size(),
            data.context
        );
    }
    let steps = o.steps.unwrap_or(exp.fidelity.final_steps);
    if steps == 0 {
        anyhow::bail!("--steps must be at least 1");
    }
    let batch = o.batch_size.unwrap_or(exp.fidelity.batch_size as usize);
    if batch == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    let lr = o.learning_rate.unwrap_or(exp.fidelity.learning_rate);
    if !(lr.is_finite() && lr > 0.0) {
        anyhow::bail!("--lr must be a positive number, not {lr}");
    }
    let threads = o.threads.unwrap_or(exp.search.threads as usize);
    let be = Cpu::<f32>::new(threads);
    let threads = be.threads();
    check_training_memory(&arch.id(), &arch, batch, threads)
        .map_err(|e| anyhow::anyhow!("{e}; use a smaller --batch-size or architecture"))?;
    let mut model = Model::new(&arch, be, o.seed);
    let cfg = TrainConfig::new(steps, batch, lr, o.seed);
    let report = train::train(&mut model, &data, &cfg, |s| progress(s, steps))?;
    let val = data.eval_batches(Split::Validation, batch.max(8), 256);
    let tr = data.eval_batches(Split::Train, batch.max(8), 256);
    let validation_loss = train::evaluate(&mut model, &val);
    let train_loss = train::evaluate(&mut model, &tr);
    // Generation: two contexts' worth of tokens (at least 64) after one prompt token.
    let mut generator = Generator::new(&model);
    let prompt = vec![data.bos().unwrap_or(data.validation.get(0))];
    let n = (2 * data.context as usize).max(64);
    let mut rng = Rng::seed_from_u64(o.seed);
    let start = std::time::Instant::now();
    let tokens = generator.generate(
        &prompt,
        n,
        SampleConfig {
            temperature: 0.8,
            top_k: Some(20),
        },
        &mut rng,
    );
    let generation_ms_per_token = start.elapsed().as_secs_f64() * 1e3 / n as f64;
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("genas-train-{}.safetensors", arch.id())));
    checkpoint::save(
        &model,
        &out,
        &[
            ("genas.data_fingerprint", data.fingerprint.clone()),
            ("genas.steps", steps.to_string()),
            ("genas.seed", o.seed.to_string()),
            ("genas.validation_loss", validation_loss.to_string()),
        ],
    )?;
    let cost = Cost::of(&arch);
    let sample = match data.kind {
        DataKind::Text => data.vocab.decode(&tokens),
        DataKind::Image => format!("{} pixel tokens", tokens.len()),
    };
    Ok(TrainSummary {
        id: arch.id(),
        architecture: arch.summary(),
        params: cost.params,
        nonzero_params: model.num_nonzero_params() as u64,
        steps,
        batch_size: batch,
        learning_rate: lr,
        seed: o.seed,
        threads,
        train_loss,
        validation_loss,
        bits_unit: data.bits_unit().into(),
        train_bits: data.bits(train_loss),
        validation_bits: data.bits(validation_loss),
        seconds: report.seconds,
        tokens_per_s: report.tokens_per_s,
        generation_ms_per_token,
        inference_state_bytes: generator.state_bytes() as u64,
        peak_memory_mb: generate::peak_memory_bytes().map(|b| b as f64 / 1e6),
        weights: out,
        sample,
    })
}

pub fn render_train(s: &TrainSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "architecture  {} ({})", s.id, s.architecture);
    let _ = writeln!(
        out,
        "params        {} ({} non-zero)",
        thousands(s.params),
        thousands(s.nonzero_params)
    );
    let _ = writeln!(
        out,
        "training      {} steps × {} sequences, lr {}, {} thread(s), {:.1} s, {} tokens/s",
        s.steps,
        s.batch_size,
        s.learning_rate,
        s.threads,
        s.seconds,
        thousands(s.tokens_per_s as u64)
    );
    let _ = writeln!(
        out,
        "train loss    {:.4} nats/token = {:.4} {}",
        s.train_loss, s.train_bits, s.bits_unit
    );
    let _ = writeln!(
        out,
        "val loss      {:.4} nats/token = {:.4} {}",
        s.validation_loss, s.validation_bits, s.bits_unit
    );
    let _ = writeln!(
        out,
        "generation    {:.3} ms/token, inference state {}",
        s.generation_ms_per_token,
        bytes(s.inference_state_bytes as f64)
    );
    if let Some(mb) = s.peak_memory_mb {
        let _ = writeln!(out, "peak memory   {mb:.1} MB (process)");
    }
    let _ = writeln!(out, "weights       {}", s.weights.display());
    let _ = writeln!(out, "sample        {}", s.sample.replace('\n', "⏎"));
    out
}

pub fn render_bench(r: &genas_engine::bench::BenchReport) -> String {
    let mut out = render_bench_line(r);
    if !r.products.is_empty() {
        let steps = r.steps.max(1) as f64;
        out += "matrix products of the timed steps (ms summed over threads, per step; GFLOP/s per thread, in the step and the same call alone):\n";
        for p in &r.products {
            let q = &p.in_step;
            out += &format!(
                "  {:28} {:6} calls {:8.2} ms/step {:7.1} GFLOP/s, alone {:7.1} ({:.0}%)\n",
                q.product,
                q.calls,
                q.seconds * 1e3 / steps,
                q.gflops,
                p.alone_gflops,
                100.0 * q.gflops / p.alone_gflops
            );
        }
    }
    out
}

fn render_bench_line(r: &genas_engine::bench::BenchReport) -> String {
    format!(
        "genas: d_model {} layers {} heads {} seq {} batch {} ({} params), {} thread(s): {:.2} steps/s ({:.1} ms/step: forward+backward {:.1}, update {:.1}), {:.1} GFLOP/s achieved = {:.0}% of the {:.1} GFLOP/s GEMM baseline\n",
        r.d_model,
        r.layers,
        r.heads,
        r.seq,
        r.batch,
        thousands(r.params as u64),
        r.threads,
        r.steps_per_s,
        r.ms_per_step,
        r.forward_backward_ms,
        r.update_ms,
        r.achieved_gflops,
        100.0 * r.gemm_fraction,
        r.gemm_gflops
    )
}

/// `genas bench distill`.
pub fn render_bench_distill(r: &genas_scoring::distill_bench::DistillBenchReport) -> String {
    let mb = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.0} MB"));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "vocabulary {}, top-{} soft targets, {} steps of {} tokens, {} threads",
        thousands(u64::from(r.vocab)),
        r.top_k,
        r.steps,
        r.tokens_per_step,
        r.threads
    );
    let _ = writeln!(
        s,
        "teacher    {} ({} params)",
        r.teacher,
        thousands(r.teacher_params)
    );
    let _ = writeln!(
        s,
        "student    {} ({} params)",
        r.student,
        thousands(r.student_params)
    );
    let _ = writeln!(
        s,
        "targets    {:.2} s to compute; {} cached, {} as dense f32 ({:.0}× smaller); top {} keep {:.1}% of the mass (random teacher)",
        r.targets_seconds,
        bytes(r.targets_bytes as f64),
        bytes(r.dense_bytes as f64),
        r.dense_bytes as f64 / r.targets_bytes.max(1) as f64,
        r.top_k,
        100.0 * r.kept_mass
    );
    let _ = writeln!(
        s,
        "distill    {:.1} ms/step against {:.1} ms/step on hard labels alone ({:.2}×); its closing evaluation {:.2} s",
        r.distill_ms_per_step, r.hard_ms_per_step, r.distill_over_hard, r.eval_seconds
    );
    let _ = writeln!(
        s,
        "peak RSS   targets {}, distillation {}, hard labels {}{}",
        mb(r.peak_mb_targets),
        mb(r.peak_mb_distill),
        mb(r.peak_mb_hard),
        if r.peak_resets {
            ""
        } else {
            " (running peaks: this system does not reset them)"
        }
    );
    s
}
