//! Whether a network fits this machine, decided from the cost model before anything is
//! allocated. A network too large for memory must be one clear error, never an allocation
//! that aborts the process; an architecture too large for genas at all is refused earlier,
//! by `Architecture::validate` (`genas_space::arch::limits`).
//!
//! The estimates are upper-side and simple: f32 weights, their gradient, AdamW's two moments,
//! the initial weights kept for export, one gradient buffer per data-parallel shard, and
//! the cost model's activation bytes per token for every token of a batch. They are checked
//! against the memory the kernel says is available (`MemAvailable` in `/proc/meminfo`);
//! where that is unknown, against `FALLBACK_LIMIT_BYTES`.

use genas_space::{Architecture, Cost};

/// The budget when the machine does not say what it has: 64 GiB.
pub const FALLBACK_LIMIT_BYTES: f64 = 64.0 * (1u64 << 30) as f64;

/// Bytes to train `arch` on batches of `batch` sequences with `shards` data-parallel shards.
pub fn training_bytes(arch: &Architecture, batch: usize, shards: usize) -> f64 {
    let cost = Cost::of(arch);
    let weights = 4.0 * cost.params as f64;
    weights * (5.0 + shards.max(1) as f64)
        + cost.activation_bytes_per_token * batch as f64 * arch.context as f64
}

/// Bytes to run `arch` forward on `batch` sequences (evaluation, proxies, generation).
pub fn inference_bytes(arch: &Architecture, batch: usize) -> f64 {
    let cost = Cost::of(arch);
    2.0 * 4.0 * cost.params as f64
        + cost.inference_state_bytes as f64 * batch as f64
        + cost.activation_bytes_per_token * batch as f64 * arch.context as f64
}

/// Bytes of `arch`'s weights at `elem` bytes a value: a model that only runs forward (its
/// gradients are allocated by its first backward pass).
pub fn weight_bytes(arch: &Architecture, elem: usize) -> f64 {
    (elem * Cost::of(arch).params as usize) as f64
}

/// Peak bytes while `Model::new` builds `arch` at `elem` bytes a value: every value is drawn in
/// f64 first, then uploaded and freed tensor by tensor.
pub fn build_bytes(arch: &Architecture, elem: usize) -> f64 {
    weight_bytes(arch, 8).max(weight_bytes(arch, elem))
}

/// Values per row of the buffers a forward without gradients (`Model::infer`) holds: one
/// block's buffers sized for the widest layer, the two residual
/// streams and the final norm. `Model::infer_buffer_values` counts what it allocates; a test
/// holds the two equal.
pub fn infer_row_values(arch: &Architecture) -> usize {
    let c = arch.d_model as usize;
    let mut widest = [0usize; 16];
    for layer in &arch.layers {
        let a = &layer.attention;
        let (has_attn, width, cache) = if a.heads() == 0 {
            (false, 0, 0)
        } else if a.is_softmax() {
            let hd = c / a.heads() as usize;
            (true, c + 2 * a.kv_heads() as usize * hd, 0)
        } else {
            (true, 3 * c, a.heads() as usize)
        };
        let attn = |k: usize| if has_attn { k } else { 0 };
        let h = layer.ffn.hidden as usize;
        let r = layer.ffn.rank.unwrap_or(0) as usize;
        let gated = layer.ffn.activation == genas_space::Activation::Swiglu;
        let gate = |k: usize| if gated { k } else { 0 };
        let sizes = [
            attn(c),
            attn(1),
            attn(1),
            width,
            cache,
            attn(c),
            attn(c),
            c,
            1,
            1,
            r,
            h,
            gate(r),
            gate(h),
            h,
            r,
        ];
        for (w, s) in widest.iter_mut().zip(sizes) {
            *w = (*w).max(s);
        }
    }
    widest.iter().sum::<usize>() + 3 * c + 2
}

/// How `Model::infer` cuts a (b, t) batch of `arch`, with `elem`-byte values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InferPlan {
    /// Sequences per chunk.
    pub sequences: usize,
    /// Rows per block of logits.
    pub logit_rows: usize,
    /// Bytes of a chunk's buffers and of a block of logits (with its rows of the final norm).
    pub bytes: usize,
}

/// Bytes of one chunk's buffers in a forward without gradients.
pub const INFER_BYTES: usize = 1 << 30;
/// Bytes of one block of logits.
pub const LOGIT_BYTES: usize = 256 << 20;

/// The plan `Model::infer` runs a (b, t) batch of `arch` with: as many whole sequences per
/// chunk as `INFER_BYTES` holds (at least one), as many logit rows per block as
/// `LOGIT_BYTES` holds (at least one, at most a chunk's rows).
pub fn infer_plan(arch: &Architecture, (b, t): (usize, usize), elem: usize) -> InferPlan {
    let v = arch.vocab_size as usize;
    let per_seq = infer_row_values(arch) * t * elem;
    let sequences = (INFER_BYTES / per_seq.max(1)).clamp(1, b.max(1));
    let logit_rows = (LOGIT_BYTES / (v * elem).max(1)).clamp(1, sequences * t);
    let c = arch.d_model as usize;
    InferPlan {
        sequences,
        logit_rows,
        // A block of logits, and of the final norm's rows it is computed from.
        bytes: sequences * per_seq + logit_rows * (v + c) * elem,
    }
}

/// Peak bytes of running `arch` forward without gradients (`Model::infer`) on batches of
/// `batch` sequences at its context, f32: its build, then its weights and one chunk's buffers.
pub fn forward_only_bytes(arch: &Architecture, batch: usize) -> f64 {
    let plan = infer_plan(arch, (batch, arch.context as usize), 4);
    build_bytes(arch, 4).max(weight_bytes(arch, 4) + plan.bytes as f64)
}

/// Bytes of a teacher's cached soft targets: `positions` training positions at `per_position`
/// floats each, plus the validation set's distributions.
pub fn soft_target_bytes(
    train_positions: f64,
    val_positions: f64,
    floats_per_position: f64,
) -> f64 {
    4.0 * floats_per_position * (train_positions + val_positions)
}

/// Memory this process may still take: `MemAvailable` on Linux, or the fallback.
pub fn available_bytes() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024.0)
        })
        .unwrap_or(FALLBACK_LIMIT_BYTES)
}

/// This process's resident memory now and its peak so far (`VmRSS`, `VmHWM` in
/// `/proc/self/status`), bytes; `None` where the system does not say.
pub fn process_bytes() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A computation that would not fit: what needs how many bytes, and how many there are.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{what} needs about {} of memory (cost-model estimate), more than the {} available",
    human(*.need),
    human(*.available)
)]
pub struct MemoryError {
    pub what: String,
    pub need: f64,
    pub available: f64,
}

/// `Ok` when `need` bytes fit in `available`; otherwise what needs how much.
pub fn check_fits(what: &str, need: f64, available: f64) -> Result<(), MemoryError> {
    if need.is_finite() && need <= available {
        return Ok(());
    }
    Err(MemoryError {
        what: what.to_string(),
        need,
        available,
    })
}

/// `Ok` when `need` bytes fit in the memory available now.
pub fn check(what: &str, need: f64) -> Result<(), MemoryError> {
    check_fits(what, need, available_bytes())
}

fn human(bytes: f64) -> String {
    if !bytes.is_finite() {
        return "an unbounded amount".into();
    }
    let gib = bytes / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.1} GiB")
    } else {
        format!("{:.1} MiB", bytes / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genas_space::{Activation, Attention, Layer, Sparsity};

    fn arch(d: u32, depth: usize) -> Architecture {
        Architecture {
            vocab_size: 65,
            context: 64,
            d_model: d,
            tie_embeddings: false,
            share_layers: 1,
            layers: vec![
                Layer::new(
                    Attention::Full { heads: 4 },
                    4 * d,
                    Activation::Gelu,
                    None,
                    Sparsity::Dense
                );
                depth
            ],
            norm: Default::default(),
            position: Default::default(),
        }
    }

    #[test]
    fn estimates_grow_with_size_and_batch() {
        let small = arch(64, 2);
        let wide = arch(512, 2);
        assert!(training_bytes(&wide, 16, 1) > training_bytes(&small, 16, 1));
        assert!(training_bytes(&small, 64, 1) > training_bytes(&small, 16, 1));
        assert!(training_bytes(&small, 16, 2) > training_bytes(&small, 16, 1));
        // At least the four f32 copies of every weight training needs.
        assert!(training_bytes(&small, 1, 1) >= 16.0 * Cost::of(&small).params as f64);
        assert!(inference_bytes(&small, 1) < training_bytes(&small, 1, 1));
    }

    #[test]
    fn over_budget_is_one_line_naming_both_sizes() {
        assert!(check_fits("x", 1e6, 2e6).is_ok());
        let e = check_fits("training d65536 L1024", 3.0 * (1u64 << 40) as f64, 8e9)
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n'));
        assert!(e.contains("3072.0 GiB") && e.contains("7.5 GiB"), "{e}");
        assert!(check_fits("x", f64::NAN, 1e9).is_err());
        assert!(check_fits("x", f64::INFINITY, 1e9).is_err());
    }
}
