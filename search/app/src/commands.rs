//! The commands of `genas`, as functions: each returns a serialisable result and has a text
//! renderer. Errors carry their context (file, key) and render as one line.

use crate::format::{bytes, count, flops, thousands};
use anyhow::{Context, Result};
use genas_interop::pretrained::Checkpoint;
use genas_scoring::{DataSummary, Dataset};
use genas_space::{
    satisfies, Architecture, Cost, DataConfig, DataKind, Experiment, Rng, SearchSpace,
    SpaceSummary, Tokenizer,
};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// An experiment with its data loaded and its space checked against that data.
pub struct Loaded {
    pub experiment: Experiment,
    pub data: Dataset,
    pub space: SearchSpace,
    /// `[teacher] pretrained`: the checkpoint, opened and checked (weights not yet read).
    pub pretrained: Option<Checkpoint>,
}

impl Loaded {
    /// The teacher's architecture at the data's context: the checkpoint's, or `[teacher]`'s.
    pub fn teacher_architecture(&self) -> Result<Architecture> {
        match &self.pretrained {
            Some(ck) => Ok(ck.architecture_at(self.data.context)?),
            None => Ok(genas_scoring::teacher::teacher_architecture(
                &self.experiment.teacher,
                self.data.vocab_size(),
                self.data.context,
            )),
        }
    }
}

/// Reads the experiment file, loads its data and builds its space.
pub fn load(path: &Path) -> Result<Loaded> {
    load_experiment(Experiment::from_path(path)?)
}

/// Loads the data of a parsed experiment and builds its space.
pub fn load_experiment(experiment: Experiment) -> Result<Loaded> {
    // A device that cannot be used is refused before any data is read.
    genas_exec::torch::device_plan(&experiment)?;
    // A checkpoint genas cannot compute is refused before the corpus is encoded.
    let pretrained =
        match experiment.teacher_dir() {
            Some(dir) => Some(Checkpoint::open(&dir).with_context(|| {
                format!("{}: [teacher] pretrained", experiment.source.display())
            })?),
            None => None,
        };
    let data = if experiment.tokenizer_path().is_some() {
        // Drawn on stderr when it is a terminal, from the first report on (a cached stream
        // reports nothing).
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "encoding the corpus [{bar:30}] {bytes}/{total_bytes} ETA {eta}",
            )
            .map_err(|e| anyhow::anyhow!("progress bar: {e}"))?
            .progress_chars("=> "),
        );
        let data = Dataset::load_with(
            &experiment,
            teacher_vocab(&experiment)?,
            genas_scoring::tokenize::default_cache_dir().as_deref(),
            &|done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        );
        bar.finish_and_clear();
        data?
    } else {
        Dataset::load(&experiment)?
    };
    if let Some(ck) = &pretrained {
        ck.architecture_at(data.context)
            .with_context(|| format!("{}: [data] seq_len", experiment.source.display()))?;
    }
    check_vocabulary_fits(&experiment, &data)?;
    let space = SearchSpace::new(&experiment.space, data.vocab_size(), data.context)
        .with_context(|| format!("{}", experiment.source.display()))?;
    Ok(Loaded {
        experiment,
        data,
        space,
        pretrained,
    })
}

/// The vocabulary size of the experiment's pretrained teacher (`vocab_size` in its
/// `config.json`), which a tokenizer's ids must stay below; none without one.
pub fn teacher_vocab(exp: &Experiment) -> Result<Option<u32>> {
    Ok(exp
        .teacher_dir()
        .map(|dir| genas_interop::pretrained::config_vocab_size(&dir))
        .transpose()?)
}

/// The experiment's data set, without a progress bar.
pub fn load_dataset(exp: &Experiment) -> Result<Dataset> {
    Ok(Dataset::load_with(
        exp,
        teacher_vocab(exp)?,
        genas_scoring::tokenize::default_cache_dir().as_deref(),
        &|_, _| {},
    )?)
}

/// Refuses a vocabulary whose embedding alone exceeds `[constraints] max_params` at the
/// space's narrowest width: no student could be drawn, and the reason would be hidden.
fn check_vocabulary_fits(exp: &Experiment, data: &Dataset) -> Result<()> {
    let (Some(max), Some(&d)) = (exp.constraints.max_params, exp.space.d_model.iter().min()) else {
        return Ok(());
    };
    let embedding = u64::from(data.vocab_size()) * u64::from(d);
    if embedding > max {
        anyhow::bail!(
            "{}: the vocabulary of {} tokens takes {} parameters in the embedding alone at the space's narrowest d_model {d}, above [constraints] max_params = {}: raise max_params, or use a smaller vocabulary",
            exp.source.display(),
            thousands(u64::from(data.vocab_size())),
            thousands(embedding),
            thousands(max)
        );
    }
    Ok(())
}

/// Refuses to train `arch` on batches of `batch` when the cost model says it will not fit
/// the memory available: one line instead of an allocation that aborts.
pub fn check_training_memory(
    what: &str,
    arch: &Architecture,
    batch: usize,
    shards: usize,
) -> Result<()> {
    use genas_engine::memory;
    memory::check(
        &format!("training {what} ({}) on batches of {batch}", arch.summary()),
        memory::training_bytes(arch, batch, shards),
    )
    .map_err(anyhow::Error::msg)
}

/// The memory a search or calibration of `l` will hold at once, checked before any work:
/// `workers` candidates training side by side (bounded by the space's largest), the teacher's
/// cached soft targets for `steps` steps, and the teacher itself.
pub fn check_plan_memory(
    l: &Loaded,
    summary: &SpaceSummary,
    steps: u32,
    workers: usize,
) -> Result<()> {
    use genas_engine::memory;
    let exp = &l.experiment;
    let max_params = exp
        .constraints
        .max_params
        .map_or(summary.max_params, |m| m.min(summary.max_params));
    let batch = exp.fidelity.batch_size as f64;
    let context = l.data.context as f64;
    let student =
        4.0 * max_params as f64 * 6.0 + summary.max_activation_bytes_per_token * batch * context;
    let vocab = l.data.vocab_size() as f64;
    let per_position = if vocab <= genas_scoring::distill::DENSE_VOCAB_MAX as f64 {
        vocab
    } else {
        2.0 * exp.fidelity.top_k.min(l.data.vocab_size()) as f64
    };
    let targets = memory::soft_target_bytes(
        f64::from(steps) * batch * context,
        128.0 * context,
        per_position,
    );
    let teacher = l.teacher_architecture()?;
    let need = workers.max(1) as f64 * student
        + targets
        + memory::inference_bytes(&teacher, exp.fidelity.batch_size as usize);
    memory::check(
        &format!(
            "{} ({} candidates side by side, the largest of {} parameters, and the teacher's soft targets for {steps} steps of fidelity.batch_size {})",
            exp.source.display(),
            workers.max(1),
            max_params,
            exp.fidelity.batch_size
        ),
        need,
    )
    .map_err(anyhow::Error::msg)
}

/// `genas space check`.
#[derive(Serialize)]
pub struct SpaceCheck {
    pub experiment: String,
    pub file: PathBuf,
    pub data: DataSummary,
    pub per_layer: bool,
    pub space: SpaceSummary,
    pub constraints: genas_space::Constraints,
}

pub fn space_check(path: &Path) -> Result<SpaceCheck> {
    let l = load(path)?;
    let summary = l
        .space
        .summary(&l.experiment.constraints)
        .with_context(|| format!("{}", path.display()))?;
    Ok(SpaceCheck {
        experiment: l.experiment.name.clone(),
        file: path.to_path_buf(),
        data: l.data.summary(),
        per_layer: l.space.per_layer,
        space: summary,
        constraints: l.experiment.constraints.clone(),
    })
}

pub fn render_space_check(c: &SpaceCheck) -> String {
    let s = &c.space;
    let mut out = String::new();
    let _ = writeln!(out, "experiment    {} ({})", c.experiment, c.file.display());
    let _ = writeln!(
        out,
        "data          {} from {}: vocabulary {}, context {} tokens",
        kind_name(c.data.kind),
        c.data.source,
        c.data.vocab_size,
        c.data.context
    );
    let _ = writeln!(
        out,
        "space         {} valid architectures ({})",
        count(s.architectures, s.architectures_approx),
        if c.per_layer {
            "every layer draws its own block genes"
        } else {
            "uniform layers"
        }
    );
    let blocks: Vec<String> = s
        .valid_blocks_per_d_model
        .iter()
        .map(|(d, n)| format!("d_model {d}: {n}"))
        .collect();
    let _ = writeln!(out, "valid blocks  {}", blocks.join(", "));
    let _ = writeln!(
        out,
        "params        {} … {}",
        thousands(s.min_params),
        thousands(s.max_params)
    );
    let _ = writeln!(
        out,
        "FLOPs/token   {} … {} (forward, full context)",
        flops(s.min_flops_per_token),
        flops(s.max_flops_per_token)
    );
    let limits = constraint_list(&c.constraints);
    if limits.is_empty() {
        let _ = writeln!(out, "constraints   none");
    } else {
        let _ = writeln!(
            out,
            "constraints   {}: {:.1}% of the space within ({})",
            limits.join(", "),
            100.0 * s.within_constraints,
            if s.constraints_exact {
                "exact"
            } else {
                "estimated from 20,000 samples"
            }
        );
    }
    for w in &s.warnings {
        let _ = writeln!(out, "warning       {w}");
    }
    for n in &s.notes {
        let _ = writeln!(out, "note          {n}");
    }
    out
}

fn constraint_list(c: &genas_space::Constraints) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(x) = c.max_params {
        v.push(format!("params ≤ {}", thousands(x)));
    }
    if let Some(x) = c.max_nonzero_params {
        v.push(format!("non-zero params ≤ {}", thousands(x)));
    }
    if let Some(x) = c.max_flops_per_token {
        v.push(format!("FLOPs/token ≤ {}", flops(x)));
    }
    if let Some(x) = c.max_memory_mb {
        v.push(format!("memory ≤ {x} MB"));
    }
    if let Some(x) = c.max_latency_ms_per_token {
        v.push(format!("latency ≤ {x} ms/token (measured during search)"));
    }
    v
}

fn kind_name(k: DataKind) -> &'static str {
    match k {
        DataKind::Text => "text",
        DataKind::Image => "images",
    }
}

/// One sampled architecture with its figures.
#[derive(Serialize)]
pub struct Sample {
    pub id: String,
    pub summary: String,
    pub architecture: Architecture,
    pub cost: Cost,
}

/// `genas space sample`: `n` architectures drawn uniformly from the space, within the
/// experiment's cost-model constraints unless `unconstrained`.
pub fn space_sample(path: &Path, n: usize, seed: u64, unconstrained: bool) -> Result<Vec<Sample>> {
    let l = load(path)?;
    let constraints = &l.experiment.constraints;
    if !unconstrained {
        l.space
            .summary(constraints)
            .with_context(|| format!("{}", path.display()))?;
    }
    let mut rng = Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let arch = if unconstrained {
            l.space.sample(&mut rng)
        } else {
            l.space
                .sample_within(constraints, &mut rng, 100_000)
                .with_context(|| {
                    format!(
                        "{}: no architecture within the constraints in 100,000 draws",
                        path.display()
                    )
                })?
        };
        debug_assert!(unconstrained || satisfies(&Cost::of(&arch), constraints));
        out.push(Sample {
            id: arch.id(),
            summary: arch.summary(),
            cost: Cost::of(&arch),
            architecture: arch,
        });
    }
    Ok(out)
}

pub fn render_samples(samples: &[Sample]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16}  {:>10}  {:>10}  {:>12}  {:>12}  {:>11}  architecture",
        "id", "params", "non-zero", "FLOPs/token", "KV B/token", "memory"
    );
    for s in samples {
        let c = &s.cost;
        let _ = writeln!(
            out,
            "{:<16}  {:>10}  {:>10}  {:>12}  {:>12}  {:>11}  {}",
            s.id,
            thousands(c.params),
            thousands(c.nonzero_params),
            flops(c.flops_per_token),
            format!("{:.0} B", c.kv_cache_bytes_per_token),
            bytes(c.memory_bytes as f64),
            s.summary
        );
    }
    out
}

/// Options for inspecting a data file that is not an experiment.
#[derive(Clone, Debug)]
pub struct InspectOptions {
    pub seq_len: u32,
    pub tokenizer: Tokenizer,
    pub image_size: u32,
    pub gray_levels: u32,
    pub validation_fraction: f64,
}

impl Default for InspectOptions {
    fn default() -> Self {
        InspectOptions {
            seq_len: 64,
            tokenizer: Tokenizer::Char,
            image_size: 14,
            gray_levels: 16,
            validation_fraction: 0.1,
        }
    }
}

/// `genas data inspect`: an experiment file (its `[data]`), or a text or IDX file directly
/// (IDX recognised by its header).
pub fn data_inspect(path: &Path, opts: &InspectOptions) -> Result<DataSummary> {
    if path.extension().is_some_and(|e| e == "toml") {
        let exp = Experiment::from_path(path)?;
        return Ok(load_dataset(&exp)?.summary());
    }
    // The first 4 bytes tell an IDX file (00 00 08 ..) or a gzip stream (1f 8b) from text.
    let mut magic = [0u8; 4];
    let looks_idx = !path.is_dir()
        && std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
        && (magic[..3] == [0, 0, 0x08] || magic[..2] == [0x1f, 0x8b]);
    let cfg = DataConfig {
        kind: if looks_idx {
            DataKind::Image
        } else {
            DataKind::Text
        },
        path: path.to_path_buf(),
        validation_path: None,
        validation_fraction: opts.validation_fraction,
        seq_len: (!looks_idx).then_some(opts.seq_len),
        tokenizer: (!looks_idx).then_some(opts.tokenizer.clone()),
        image_size: looks_idx.then_some(opts.image_size),
        gray_levels: looks_idx.then_some(opts.gray_levels),
        max_images: None,
    };
    Ok(Dataset::load_config(&cfg, path, None)?.summary())
}

pub fn render_data(d: &DataSummary) -> String {
    let mut out = String::new();
    let unit = if d.kind == DataKind::Image {
        "images"
    } else {
        "sequences"
    };
    let _ = writeln!(out, "source        {}", d.source);
    let _ = writeln!(out, "kind          {}", kind_name(d.kind));
    if let Some((r, c)) = d.source_image_size {
        let side = (d.context as f64).sqrt().round() as u32;
        let _ = writeln!(
            out,
            "images        {r}×{c} resampled to {side}×{side}, {} pixel tokens each",
            d.context
        );
    }
    let _ = writeln!(
        out,
        "vocabulary    {} tokens ({})",
        d.vocab_size, d.vocabulary
    );
    let _ = writeln!(out, "context       {} tokens", d.context);
    let _ = writeln!(
        out,
        "train         {} tokens ({} {unit})",
        thousands(d.train_tokens as u64),
        thousands(d.train_sequences as u64)
    );
    let _ = writeln!(
        out,
        "validation    {} tokens ({} {unit})",
        thousands(d.validation_tokens as u64),
        thousands(d.validation_sequences as u64)
    );
    let _ = writeln!(out, "fingerprint   {}", d.fingerprint);
    out
}

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
    let text = std::fs::read_to_string(arch_path)
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
    let prompt = vec![data.bos().unwrap_or(data.validation[0])];
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
