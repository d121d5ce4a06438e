//! What `experiments/gpu/check.sh` runs on a machine with a GPU, written by `genas bench
//! runner --out DIR` with the engine's own results beside it:
//! - `parity/CASE/`: one runner job per space choice (every attention kind, masks, low rank,
//!   rope + RMSNorm, sharing, tying, multi-query, biases, top-k targets), 50 steps, and
//!   `reference.json`, the engine's loss at every step and its validation figures;
//! - `default/N/`: jobs of the default experiment's rung (`experiments/quick.toml`: its space,
//!   batch and steps), on a randomly initialised teacher's targets, and `reference.json` with
//!   the engine's time for each on one core here;
//! - `bench/model/`: the `genas bench train` network (d128, 4 layers, 4 heads, context 64), for
//!   steps/s under the runner's recipe against plain PyTorch eager.
//!
//! - `real/` (`--real`): the shapes the runner exists for, vocabulary 49,152 and context 1,024:
//!   `parity/` one student of about 12M parameters (Llama blocks: grouped attention, rope,
//!   RMSNorm, swiglu) trained 3 steps of 2 sequences by the engine, with its reference;
//!   `students/NAME/architecture.json` for students of about 12M, 25M and 50M parameters, each
//!   with `estimate.json`, the device memory model's figures for 8 sequences in fp32 and bf16;
//!   `teacher/architecture.json`, SmolLM2-135M's shape (the check draws its weights on the
//!   device: they would not fit the folder); and `batches.safetensors`, 20 steps of 8
//!   sequences, for the slots' throughput.
//!
//! The inputs go to `inputs/` and jobs name them by relative path, so the folder can be carried
//! to another machine.

use anyhow::{Context, Result};
use genas_engine::{Cpu, Model};
use genas_exec::torch::write_job;
use genas_scoring::data::Dataset;
use genas_scoring::distill::{brief_distill_traced, DistillConfig, Evaluation, TeacherTargets};
use genas_search::job::Job;
use genas_space::{
    satisfies, Activation, Architecture, Attention, Cost, Experiment, Float, Fraction, Layer, Norm,
    Position, Rng, SearchSpace, Sparsity, Tokenizer,
};
use serde::Serialize;
use std::path::Path;

/// The engine's side of a job.
#[derive(Clone, Debug, Serialize)]
pub struct Reference {
    pub name: String,
    pub losses: Vec<f64>,
    pub eval: Option<Evaluation>,
    /// Seconds the engine took on one core.
    pub seconds: f64,
}

/// An architecture over `data`'s vocabulary and context, learned positions and LayerNorm.
pub fn plain(data: &Dataset, d: u32, tie: bool, share: u32, layers: Vec<Layer>) -> Architecture {
    Architecture {
        vocab_size: data.vocab_size(),
        context: data.context,
        d_model: d,
        tie_embeddings: tie,
        share_layers: share,
        layers,
        norm: Norm::default(),
        position: Position::default(),
        norm_eps: genas_space::Float(genas_space::NORM_EPS),
    }
}

/// The shipped sonnets at context 24, characters.
pub fn sonnets(root: &Path) -> Result<Dataset> {
    let path = root.join("experiments/data/shakespeare/sonnets_gut.txt");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Dataset::from_text(&text, Tokenizer::Char, 24, 0.1, "sonnets").map_err(anyhow::Error::msg)
}

/// Ids over a vocabulary of 1,500 at context 16: the teacher's targets are kept as their top 64.
pub fn wide_vocabulary() -> Dataset {
    let mut rng = Rng::seed_from_u64(7);
    let mut ids = |n: usize| (0..n).map(|_| rng.index(1500) as u32).collect::<Vec<u32>>();
    Dataset::from_ids(ids(20_000), ids(2_000), 1500, 16)
}

/// Every attention kind in one network over `d`: full, grouped (2 key/value heads), sliding,
/// linear and none, with 2:4 and unstructured masks (one on an FFN alone), low-rank FFNs, gelu,
/// relu and swiglu, and a layer without an FFN.
pub fn every_kind(d: &Dataset) -> Architecture {
    use Activation::{Gelu, Relu, Swiglu};
    let (dense, l) = (Sparsity::Dense, Layer::new);
    plain(
        d,
        16,
        false,
        1,
        vec![
            l(Attention::Full { heads: 4 }, 32, Gelu, None, dense),
            l(
                Attention::Grouped {
                    heads: 4,
                    kv_heads: 2,
                },
                24,
                Relu,
                None,
                Sparsity::TwoFour,
            ),
            // A dense attention over a sparse FFN of its own.
            l(
                Attention::Sliding {
                    heads: 2,
                    window: 5,
                    kv_heads: None,
                },
                32,
                Swiglu,
                Some(4),
                dense,
            )
            .with_sparsities(dense, Sparsity::Unstructured(Fraction(0.5))),
            l(Attention::Linear { heads: 2 }, 16, Gelu, None, dense),
            l(Attention::None, 32, Relu, Some(8), Sparsity::TwoFour),
            // Attention without an FFN (blockwise search's no-op FFN).
            Layer {
                ffn: None,
                ..l(Attention::Full { heads: 2 }, 1, Gelu, None, dense)
            },
        ],
    )
}

/// One architecture per space choice: (name, which data set: 0 text, 1 wide, architecture).
pub fn parity_cases(text: &Dataset, wide: &Dataset) -> Vec<(&'static str, usize, Architecture)> {
    let modern = Architecture {
        position: Position::Rope {
            theta: Float(10_000.0),
            scaling: None,
        },
        norm: Norm::Rmsnorm,
        ..every_kind(text)
    };
    let biased = Layer {
        attention_bias: true,
        ..Layer::new(
            Attention::Grouped {
                heads: 4,
                kv_heads: 1,
            },
            48,
            Activation::GeluTanh,
            None,
            Sparsity::Dense,
        )
    };
    // Today's teachers' blocks: Qwen2's q/k/v biases, Qwen3's query/key norms over heads
    // wider than d_model / heads, Mistral's grouped sliding window, Llama 3's rope scaling and
    // Qwen's epsilon.
    let swiglu = |a| Layer::new(a, 32, Activation::Swiglu, None, Sparsity::Dense);
    let families = Architecture {
        position: Position::Rope {
            theta: Float(5e5),
            scaling: Some(genas_space::RopeScaling::Llama3 {
                factor: Float(8.0),
                low_freq_factor: Float(1.0),
                high_freq_factor: Float(4.0),
                original_context: 8,
            }),
        },
        norm: Norm::Rmsnorm,
        norm_eps: Float(1e-6),
        ..plain(
            text,
            16,
            true,
            1,
            vec![
                Layer {
                    qkv_bias: true,
                    ..swiglu(Attention::Grouped {
                        heads: 4,
                        kv_heads: 2,
                    })
                },
                Layer {
                    qk_norm: true,
                    head_dim: Some(4),
                    ..swiglu(Attention::Grouped {
                        heads: 2,
                        kv_heads: 1,
                    })
                },
                swiglu(Attention::Sliding {
                    heads: 4,
                    window: 5,
                    kv_heads: Some(2),
                }),
            ],
        )
    };
    vec![
        ("every-kind", 0, every_kind(text)),
        ("rope-rmsnorm", 0, modern),
        (
            "shared-tied-mq-bias",
            0,
            plain(text, 16, true, 2, vec![biased; 4]),
        ),
        ("top-k", 1, every_kind(wide)),
        ("qwen-mistral-llama3", 0, families),
    ]
}

/// The parity cases' distillation settings.
pub fn parity_config() -> DistillConfig {
    DistillConfig {
        steps: 50,
        batch_size: 4,
        learning_rate: 3e-3,
        temperature: 2.0,
        alpha: 0.5,
        seed: 5,
        val_sequences: 16,
        top_k: 64,
        init: Default::default(),
        precision: Default::default(),
        train_only: Vec::new(),
    }
}

/// Targets of a teacher at its random initialisation (not uniform) for `cfg.steps` steps.
pub fn random_teacher_targets(data: &Dataset, cfg: &DistillConfig, d: u32) -> TeacherTargets {
    let layer = Layer::new(
        Attention::Full { heads: 2 },
        2 * d,
        Activation::Gelu,
        None,
        Sparsity::Dense,
    );
    let t = plain(data, d, false, 1, vec![layer; 2]);
    let mut teacher = Model::new(&t, Cpu::<f32>::new(0), 99);
    TeacherTargets::compute(&mut teacher, data, cfg, cfg.steps)
}

/// Writes one job with its reference; the engine runs it on one core.
fn job_with_reference(
    dir: &Path,
    inputs: &Path,
    name: &str,
    job: &Job,
    t: &TeacherTargets,
) -> Result<()> {
    let tname = genas_scoring::inputs::store(inputs, t).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(dir)?;
    let rel = pathdiff(inputs, dir).join(format!("{tname}.safetensors"));
    write_job(dir, job, &rel, t, &Default::default())?;
    let mut m = Model::new(&job.architecture, Cpu::<f32>::new(1), job.init_seed);
    let mut losses = Vec::new();
    let start = std::time::Instant::now();
    let r = brief_distill_traced(&mut m, t, &job.config, &mut |l| losses.push(l));
    let reference = Reference {
        name: name.to_string(),
        losses,
        eval: r.eval,
        seconds: start.elapsed().as_secs_f64(),
    };
    std::fs::write(
        dir.join("reference.json"),
        serde_json::to_vec_pretty(&reference)?,
    )?;
    Ok(())
}

/// `to` relative to `from`, both under one root folder (`../..` up to their common part).
fn pathdiff(to: &Path, from: &Path) -> std::path::PathBuf {
    let (to, from): (Vec<_>, Vec<_>) = (to.components().collect(), from.components().collect());
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut out = std::path::PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

/// SmolLM2-135M's shape (`HuggingFaceTB/SmolLM2-135M`'s config.json): d 576, 30 Llama blocks of
/// 9 query and 3 key/value heads, swiglu 1536, RMSNorm (eps 1e-5), rope theta 100,000, tied
/// embeddings over 49,152 tokens, context `context`.
pub fn smollm2_135m(context: u32) -> Architecture {
    llama_blocks(49_152, context, 576, 30, (9, 3), 1536)
}

/// Llama blocks: `depth` of grouped attention (`heads` query, key/value), swiglu `ffn`, rope
/// theta 100,000, RMSNorm, tied embeddings.
pub fn llama_blocks(
    vocab: u32,
    context: u32,
    d: u32,
    depth: usize,
    (heads, kv_heads): (u32, u32),
    ffn: u32,
) -> Architecture {
    Architecture {
        vocab_size: vocab,
        context,
        d_model: d,
        tie_embeddings: true,
        share_layers: 1,
        layers: vec![
            Layer::new(
                Attention::Grouped { heads, kv_heads },
                ffn,
                Activation::Swiglu,
                None,
                Sparsity::Dense,
            );
            depth
        ],
        norm: Norm::Rmsnorm,
        position: Position::Rope {
            theta: Float(1e5),
            scaling: None,
        },
        norm_eps: Float(genas_space::NORM_EPS),
    }
}

/// The real-scale students: about 12M, 25M and 50M parameters (most of the smallest is its
/// 49,152-token embedding).
pub fn real_students(context: u32) -> Vec<(&'static str, Architecture)> {
    vec![
        ("12M", llama_blocks(49_152, context, 192, 4, (6, 2), 512)),
        ("25M", llama_blocks(49_152, context, 384, 6, (6, 2), 1024)),
        ("50M", llama_blocks(49_152, context, 576, 8, (9, 3), 1536)),
    ]
}

/// `genas bench runner --real`: the `real/` fixtures (see the module's doc).
pub fn write_real_fixtures(out: &Path) -> Result<usize> {
    let (v, t) = (49_152u32, 1024u32);
    let mut rng = Rng::seed_from_u64(21);
    let mut ids = |n: usize| {
        (0..n)
            .map(|_| rng.index(v as usize) as u32)
            .collect::<Vec<u32>>()
    };
    let data = Dataset::from_ids(ids(200_000), ids(8_192), v, t);
    let real = out.join("real");
    let inputs = out.join("inputs");
    // Parity: a 12M student, 3 steps of 2 sequences, top-64 targets.
    let cfg = DistillConfig {
        steps: 3,
        batch_size: 2,
        learning_rate: 3e-3,
        temperature: 2.0,
        alpha: 0.5,
        seed: 5,
        val_sequences: 2,
        top_k: 64,
        init: Default::default(),
        precision: Default::default(),
        train_only: Vec::new(),
    };
    let targets = random_teacher_targets(&data, &cfg, 32);
    let (name, arch) = real_students(t).remove(0);
    let job = Job {
        id: arch.id(),
        architecture: arch,
        init_seed: 3,
        rung: 0,
        config: cfg,
        measure_latency: false,
        initial: None,
    };
    job_with_reference(
        &real.join("parity").join(name),
        &inputs,
        name,
        &job,
        &targets,
    )?;
    // The students' shapes and their device memory at 8 sequences.
    let mut written = 1;
    for (name, arch) in real_students(t) {
        let dir = real.join("students").join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("architecture.json"),
            serde_json::to_vec_pretty(&arch)?,
        )?;
        let mut estimates = serde_json::Map::new();
        for precision in ["fp32", "bf16"] {
            let options = genas_exec::torch::RunnerOptions {
                precision: precision.into(),
                ..Default::default()
            };
            let job = genas_exec::device_memory::DeviceJob {
                arch: &arch,
                batch: 8,
                seq: u64::from(t),
                targets: genas_exec::device_memory::Targets::TopK(64),
                teacher: None,
                options: &options,
            };
            let e = genas_exec::device_memory::estimate(&job, 8);
            estimates.insert(
                precision.into(),
                serde_json::json!({
                    "total": e.total(),
                    "without_context": e.total() - e.context,
                    "activations": e.activations,
                    "params": Cost::of(&arch).params,
                    "line": e.line(),
                }),
            );
        }
        std::fs::write(
            dir.join("estimate.json"),
            serde_json::to_vec_pretty(&estimates)?,
        )?;
        written += 1;
    }
    let teacher = real.join("teacher");
    std::fs::create_dir_all(&teacher)?;
    std::fs::write(
        teacher.join("architecture.json"),
        serde_json::to_vec_pretty(&smollm2_135m(t))?,
    )?;
    let batches = genas_scoring::inputs::encode_batches(&data.train_schedule(8, 20, 9))
        .map_err(anyhow::Error::msg)?;
    std::fs::write(real.join("batches.safetensors"), batches)?;
    Ok(written)
}

/// `genas bench runner --out DIR`: the parity cases, `candidates` jobs of the default
/// experiment's rung, and the benchmark model. `root` is the repository (for the shipped data).
pub fn write_fixtures(root: &Path, out: &Path, candidates: usize) -> Result<usize> {
    let inputs = out.join("inputs");
    let (text, wide) = (sonnets(root)?, wide_vocabulary());
    let cfg = parity_config();
    let mut written = 0;
    let targets = [
        random_teacher_targets(&text, &cfg, 32),
        random_teacher_targets(&wide, &cfg, 32),
    ];
    for (k, (name, d, arch)) in parity_cases(&text, &wide).into_iter().enumerate() {
        arch.validate()
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let job = Job {
            id: arch.id(),
            architecture: arch,
            init_seed: 1000 + k as u64,
            rung: 0,
            config: cfg.clone(),
            measure_latency: false,
            initial: None,
        };
        job_with_reference(
            &out.join("parity").join(name),
            &inputs,
            name,
            &job,
            &targets[d],
        )?;
        written += 1;
    }
    // The default experiment's rung: its space, batch, steps and context, on its corpus.
    let exp = Experiment::from_path(&root.join("experiments/quick.toml"))?;
    let corpus = Dataset::load(&exp)?;
    let space = SearchSpace::new(&exp.space, corpus.vocab_size(), corpus.context)?;
    let steps = *exp.fidelity.rung_steps.last().unwrap_or(&400);
    let dcfg = genas_scoring::distill::DistillConfig::of_experiment(&exp, steps);
    let t = random_teacher_targets(&corpus, &dcfg, 64);
    let mut rng = Rng::seed_from_u64(11);
    let mut k = 0;
    while k < candidates {
        let a = space.sample(&mut rng);
        if !satisfies(&Cost::of(&a), &exp.constraints) {
            continue;
        }
        let job = Job {
            id: a.id(),
            init_seed: genas_search::init_seed(0, &a.id()),
            architecture: a,
            rung: 0,
            config: dcfg.clone(),
            measure_latency: false,
            initial: None,
        };
        let name = format!("{k}");
        job_with_reference(&out.join("default").join(&name), &inputs, &name, &job, &t)?;
        k += 1;
        written += 1;
    }
    // The benchmark model of `genas bench train`.
    let bench = plain(
        &Dataset::from_ids(vec![0; 4096], vec![0; 512], 256, 64),
        128,
        false,
        1,
        vec![
            Layer::new(
                Attention::Full { heads: 4 },
                512,
                Activation::Gelu,
                None,
                Sparsity::Dense,
            );
            4
        ],
    );
    let m = Model::new(&bench, Cpu::<f32>::new(1), 0);
    genas_interop::export::write_module(
        &out.join("bench/model"),
        &bench,
        &genas_interop::model_tensors(&m),
    )?;
    Ok(written)
}
