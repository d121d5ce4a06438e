//! The PyTorch runner's memory on its device: weights, gradients, AdamW's state, the
//! activations autograd keeps for one micro-batch (as `model.py` and the runner's loss make
//! them: scaled_dot_product_attention, chunked linear attention, the loss over row chunks),
//! the loss's logits, the teacher's targets, a final job's teacher, and the context torch
//! itself takes. The device preflight picks the largest micro-batch that fits and refuses,
//! in one line with the figures, a job that fits at none.
//!
//! The activations are counted element by element from the code; the test
//! `the_device_memory_model_counts_what_autograd_saves` holds them against the tensors
//! torch's `saved_tensors_hooks` sees on torch's CPU. It knows architectures and the runner's
//! options, not the search.

use crate::torch::RunnerOptions;
use genas_space::{Activation, Architecture, Attention, Norm, Position, Sparsity};

/// What torch's CUDA context and allocator take before any tensor (kernels, cuBLAS and
/// cuDNN workspaces): a measured figure of recent GPUs, about 0.5 GiB.
pub const CONTEXT_BYTES: u64 = 512 << 20;

/// The runner's loss makes this many logits at once above which it chunks rows
/// (runner.py's LOSS_ELEMENTS).
pub const LOSS_ELEMENTS: u64 = 1 << 25;

/// Linear attention's chunk (model.py's LINEAR_CHUNK).
pub const LINEAR_CHUNK: u64 = 64;

/// What a job's targets are per position.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Targets {
    /// Hard labels only (the teacher's training).
    Hard,
    /// The teacher's whole distribution (vocabularies up to 1,024 tokens).
    Dense,
    /// The top k of each row (index and probability).
    TopK(u64),
}

impl Targets {
    /// A distillation's targets over `vocab` tokens: dense up to `DENSE_VOCAB_MAX`, else the
    /// top `top_k` (as `SoftTargets` keeps them).
    pub fn of(vocab: u32, top_k: usize) -> Targets {
        if vocab as usize > genas_scoring::distill::DENSE_VOCAB_MAX {
            Targets::TopK(top_k as u64)
        } else {
            Targets::Dense
        }
    }
}

/// One runner job's device memory, by part, in bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceEstimate {
    /// Sequences per forward/backward pass.
    pub micro_batch: u64,
    /// Rows of logits the loss makes at once (the runner's `loss_rows`; 0: its default
    /// chunks of LOSS_ELEMENTS).
    pub loss_rows: u64,
    pub weights: u64,
    pub gradients: u64,
    pub optimizer: u64,
    /// What autograd keeps for one micro-batch (the loss's included when its rows are not
    /// chunked).
    pub activations: u64,
    /// What the backward pass makes on top: a recomputed block (checkpointing) and a
    /// chunk of the loss's logits and their gradients.
    pub transient: u64,
    /// The batch's teacher targets and token ids.
    pub targets: u64,
    /// A final job's teacher: its weights and its pass without gradients.
    pub teacher: u64,
    pub context: u64,
}

impl DeviceEstimate {
    pub fn total(&self) -> u64 {
        self.weights
            + self.gradients
            + self.optimizer
            + self.activations
            + self.transient
            + self.targets
            + self.teacher
            + self.context
    }

    /// The figures in one line.
    pub fn line(&self) -> String {
        let mb = |b: u64| format!("{:.0} MB", b as f64 / 1e6);
        format!(
            "{} at micro-batch {} (weights {}, gradients {}, AdamW {}, activations {}, backward {}, targets {}, teacher {}, torch {})",
            mb(self.total()),
            self.micro_batch,
            mb(self.weights),
            mb(self.gradients),
            mb(self.optimizer),
            mb(self.activations),
            mb(self.transient),
            mb(self.targets),
            mb(self.teacher),
            mb(self.context)
        )
    }
}

/// A runner job as the model sees it.
#[derive(Clone, Debug)]
pub struct DeviceJob<'a> {
    pub arch: &'a Architecture,
    /// Sequences per step and their length.
    pub batch: u64,
    pub seq: u64,
    pub targets: Targets,
    /// A final job's teacher (its logits are made on the device every step).
    pub teacher: Option<&'a Architecture>,
    pub options: &'a RunnerOptions,
}

/// Bytes of an activation element: float32, or bfloat16 for what autocast makes in bf16
/// (matrix products' inputs and outputs); the residual stream and norms stay float32.
fn narrow(options: &RunnerOptions) -> u64 {
    if options.precision == "bf16" {
        2
    } else {
        4
    }
}

/// Parameters of `arch` (shared layers once), and the elements of its masked matrices (each
/// kept multiplied by its mask for the backward pass).
fn parameters(arch: &Architecture) -> (u64, u64) {
    let cost = genas_space::cost::Cost::of(arch);
    let s = arch.share_layers.max(1) as usize;
    let masked: u64 = arch
        .layers
        .iter()
        .enumerate()
        .filter(|(i, _)| i % s == 0)
        .map(|(_, l)| {
            genas_space::cost::block_matrices(arch.d_model, l)
                .iter()
                .filter(|(_, _, s)| *s != Sparsity::Dense)
                .map(|(i, o, _)| i * o)
                .sum::<u64>()
        })
        .sum();
    (cost.params, masked)
}

/// Activation bytes autograd keeps per position for one block of `arch`, in (float32,
/// narrow) elements, plus bytes per sequence that do not grow with positions (linear
/// attention's chunk states, a sliding window's mask as the attention kernel takes it).
fn block_elements(arch: &Architecture, layer: &genas_space::Layer, t: u64) -> (u64, u64, u64) {
    let c = arch.d_model as u64;
    let (wide, mut narrow) = (0u64, 0u64);
    // A norm keeps its input (the residual stream, float32) and its statistics; RMSNorm
    // (written out in model.py) keeps the normalised input too. Its output is kept by the
    // matrix product that reads it.
    let norm = |wide: &mut u64, narrow: &mut u64| match arch.norm {
        Norm::Layernorm => {
            *wide += c + 2;
            *narrow += c;
        }
        Norm::Rmsnorm => {
            *wide += 2 * c + 1;
            *narrow += c;
        }
    };
    let mut wide = wide;
    let mut per_sequence = 0u64;
    if layer.attention != Attention::None {
        norm(&mut wide, &mut narrow);
        let (hd, q, kv) = genas_space::cost::attention_widths(arch.d_model, layer);
        let heads = layer.attention.heads() as u64;
        let kv_heads = layer.attention.kv_heads() as u64;
        // q | k | v as the projection makes them, and the attention's output (read by c_proj).
        narrow += q + 2 * kv + q;
        if layer.qk_norm {
            // The normalised heads, their scaled copies, one rstd per head.
            wide += 2 * (q + kv) + heads + kv_heads;
        }
        let rotated =
            layer.attention.is_softmax() && matches!(arch.position, Position::Rope { .. });
        if rotated {
            narrow += q + kv;
        }
        match layer.attention {
            Attention::Linear { .. } => {
                // phi(q), phi(k), their chunked copies, within-chunk scores (c per head),
                // numerators and denominators; the running sums per chunk.
                let chunk = LINEAR_CHUNK.min(t.max(1));
                wide += heads * chunk + 11 * q;
                per_sequence += 4 * heads * hd * hd * t.div_ceil(chunk);
            }
            _ => {
                // Flash or memory-efficient attention keeps one log-sum-exp per head.
                wide += heads;
                if let Attention::Sliding { window, .. } = layer.attention {
                    if (window as u64) < t {
                        // The window as the kernel's additive float mask.
                        per_sequence += 4 * t * t;
                    }
                }
            }
        }
    }
    // A layer without an FFN saves nothing for it, its norm included.
    if let Some(ffn) = &layer.ffn {
        norm(&mut wide, &mut narrow);
        let h = ffn.hidden as u64;
        let swiglu = ffn.activation == Activation::Swiglu;
        narrow += if swiglu { 4 * h } else { 2 * h };
        if let Some(r) = ffn.rank {
            narrow += if swiglu { 3 } else { 2 } * r as u64;
        }
    }
    (wide, narrow, per_sequence)
}

/// The bytes autograd keeps for one micro-batch of `b` sequences of `t` positions (what
/// `saved_tensors_hooks` sees, parameters left out), and what the backward pass makes on top.
pub fn activation_bytes(
    arch: &Architecture,
    b: u64,
    t: u64,
    targets: Targets,
    options: &RunnerOptions,
) -> (u64, u64) {
    let n = b * t;
    let v = arch.vocab_size as u64;
    let c = arch.d_model as u64;
    let nb = narrow(options);
    let (params, masked) = parameters(arch);
    let blocks: Vec<u64> = arch
        .layers
        .iter()
        .map(|l| {
            let (wide, narrow, per_seq) = block_elements(arch, l, t);
            n * (4 * wide + nb * narrow) + b * per_seq
        })
        .collect();
    let mut saved: u64 = if options.checkpointing {
        // Each block's input alone; a block is recomputed (and kept) in the backward pass.
        arch.layers.len() as u64 * n * c * 4
    } else {
        blocks.iter().sum()
    };
    // Masked matrices are kept multiplied by their masks (in bf16 as autocast casts them).
    saved += masked * nb;
    if options.precision == "bf16" {
        // autocast's bf16 copies of every matrix a product reads.
        saved += params * 2;
    }
    // The final norm, its output (read by the head), the token ids and targets' indices.
    saved += n * match arch.norm {
        Norm::Layernorm => 4 * (c + 2) + nb * c,
        Norm::Rmsnorm => 4 * (2 * c + 1) + nb * c,
    };
    saved += n * 16;
    // The loss: one chunk of rows, or all when they fit in LOSS_ELEMENTS; each row's logits
    // keep a log-softmax for CE and one for the KL term (float32).
    let rows = loss_rows(n, v, options);
    let per_row = match targets {
        Targets::Hard => 4 * v,
        Targets::Dense => 3 * 4 * v,
        Targets::TopK(_) => 2 * 4 * v,
    };
    let mut transient =
        blocks.iter().copied().max().unwrap_or(0) * u64::from(options.checkpointing);
    if rows >= n {
        saved += n * per_row;
        // The backward pass's gradient of the logits.
        transient += n * 4 * v;
    } else {
        // A chunk recomputed in the backward pass: its logits, log-softmaxes and gradient.
        transient += rows * (per_row + 2 * 4 * v);
    }
    (saved, transient)
}

/// Rows of logits the runner's loss makes at once.
fn loss_rows(n: u64, v: u64, options: &RunnerOptions) -> u64 {
    if options.loss_rows > 0 {
        (options.loss_rows as u64).min(n)
    } else {
        (LOSS_ELEMENTS / v.max(1)).clamp(1, n.max(1))
    }
}

/// The job's device memory at `micro_batch` sequences per pass.
pub fn estimate(job: &DeviceJob, micro_batch: u64) -> DeviceEstimate {
    let (params, masked) = parameters(job.arch);
    let (activations, transient) =
        activation_bytes(job.arch, micro_batch, job.seq, job.targets, job.options);
    let n = job.batch * job.seq;
    let targets = n * 16
        + n * match job.targets {
            Targets::Hard => 0,
            Targets::Dense => 4 * job.arch.vocab_size as u64,
            Targets::TopK(k) => 12 * k,
        };
    let teacher = job.teacher.map_or(0, |t| {
        let (tp, tm) = parameters(t);
        // Its weights (and masks), and its pass without gradients: the residual stream, the
        // widest block intermediate and a chunk of its logits in float64.
        let c = t.d_model as u64;
        let widest = t
            .layers
            .iter()
            .map(|l| {
                let (_, q, kv) = genas_space::cost::attention_widths(t.d_model, l);
                (q + 2 * kv).max(2 * l.ffn_hidden() as u64)
            })
            .max()
            .unwrap_or(0);
        let rows = loss_rows(n, t.vocab_size as u64, job.options);
        4 * (tp + tm) + n * 4 * (2 * c + widest) + rows * 8 * 2 * t.vocab_size as u64
    });
    DeviceEstimate {
        micro_batch,
        loss_rows: job.options.loss_rows as u64,
        weights: 4 * (params + masked),
        gradients: 4 * params,
        optimizer: 8 * params,
        activations,
        transient,
        targets,
        teacher,
        context: CONTEXT_BYTES,
    }
}

/// The job's estimate at the largest micro-batch (at most its batch, `options.micro_batch`
/// when set) whose total fits in `budget` bytes, with the loss over all its rows at once
/// where that fits too (chunks cost a second pass through the head); why not, with the
/// smallest's figures, when none does.
pub fn fit(job: &DeviceJob, budget: u64) -> Result<DeviceEstimate, String> {
    let e = fit_chunked(job, budget)?;
    if job.options.loss_rows == 0 {
        let whole = RunnerOptions {
            loss_rows: u32::try_from(e.micro_batch * job.seq).unwrap_or(u32::MAX),
            ..job.options.clone()
        };
        let unchunked = estimate(
            &DeviceJob {
                options: &whole,
                ..job.clone()
            },
            e.micro_batch,
        );
        if unchunked.total() <= budget {
            return Ok(unchunked);
        }
    }
    Ok(e)
}

fn fit_chunked(job: &DeviceJob, budget: u64) -> Result<DeviceEstimate, String> {
    let most = match job.options.micro_batch {
        0 => job.batch,
        m => (m as u64).min(job.batch),
    }
    .max(1);
    // The total grows with the micro-batch: halve down from the most.
    let mut m = most;
    loop {
        let e = estimate(job, m);
        if e.total() <= budget {
            return Ok(e);
        }
        if m == 1 {
            return Err(format!(
                "needs {} of device memory, more than the {:.0} MB a slot has",
                e.line(),
                budget as f64 / 1e6
            ));
        }
        m = m.div_ceil(2).min(m - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genas_space::{Float, Layer};

    fn arch() -> Architecture {
        Architecture {
            vocab_size: 49_152,
            context: 1024,
            d_model: 576,
            tie_embeddings: true,
            share_layers: 1,
            layers: vec![
                Layer::new(
                    Attention::Grouped {
                        heads: 9,
                        kv_heads: 3
                    },
                    1536,
                    Activation::Swiglu,
                    None,
                    Sparsity::Dense
                );
                12
            ],
            norm: Norm::Rmsnorm,
            position: Position::Rope {
                theta: Float(1e5),
                scaling: None,
            },
            norm_eps: Float(1e-5),
        }
    }

    #[test]
    fn the_largest_micro_batch_that_fits_is_chosen_and_none_is_refused_in_one_line() {
        let a = arch();
        let options = RunnerOptions::default();
        let job = DeviceJob {
            arch: &a,
            batch: 16,
            seq: 1024,
            targets: Targets::TopK(64),
            teacher: None,
            options: &options,
        };
        let totals: Vec<u64> = (1..=16).map(|m| estimate(&job, m).total()).collect();
        assert!(
            totals.windows(2).all(|w| w[0] < w[1]),
            "grows with the micro-batch"
        );
        // Room for the whole batch: all of it; for 4 to 7 sequences: 4 (halving from 16).
        assert_eq!(fit(&job, totals[15]).unwrap().micro_batch, 16);
        // With room for the logits of every row, the loss takes them at once.
        let whole = fit(&job, 80 << 30).unwrap();
        assert_eq!((whole.micro_batch, whole.loss_rows), (16, 16 * 1024));
        assert_eq!(fit(&job, totals[15]).unwrap().loss_rows, 0);
        assert_eq!(fit(&job, totals[5]).unwrap().micro_batch, 4);
        assert_eq!(fit(&job, totals[0]).unwrap().micro_batch, 1);
        let e = fit(&job, totals[0] - 1).unwrap_err();
        assert!(!e.contains('\n') && e.contains("micro-batch 1"), "{e}");
        // An explicit micro-batch is the most tried.
        let two = RunnerOptions {
            micro_batch: 2,
            ..Default::default()
        };
        let job2 = DeviceJob {
            options: &two,
            ..job.clone()
        };
        assert_eq!(fit(&job2, totals[15]).unwrap().micro_batch, 2);
        // Checkpointing keeps less.
        let ck = RunnerOptions {
            checkpointing: true,
            ..Default::default()
        };
        let job3 = DeviceJob {
            options: &ck,
            ..job.clone()
        };
        assert!(estimate(&job3, 16).activations < estimate(&job, 16).activations / 3);
        // Parameters, gradients and AdamW's two moments: 16 bytes a parameter.
        let p = genas_space::cost::Cost::of(&a).params;
        let e = estimate(&job, 1);
        assert_eq!(e.weights + e.gradients + e.optimizer, 16 * p);
    }
}
