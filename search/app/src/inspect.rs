//! The commands that look before anything trains: `genas space check` (the space's size and
//! cost range), `genas space sample` and `genas data inspect` (vocabulary, splits, tokens).
//! Each returns a serialisable result and has a text renderer.

use crate::experiment::{load, load_dataset};
use crate::format::{bytes, count, flops, thousands};
use anyhow::{Context, Result};
use genas_scoring::{DataSummary, Dataset};
use genas_space::{
    satisfies, Architecture, Cost, DataConfig, DataKind, Experiment, Rng, SpaceSummary, Tokenizer,
};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

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
        text_field: None,
        eos_token: None,
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
