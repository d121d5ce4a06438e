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

/// Bytes to train `arch` on batches of `batch` sequences at its context with `shards`
/// data-parallel shards (`Model::forward_backward` on a backend with that many workers; 1 for a
/// distillation step, which runs on the whole batch): the weights, their gradients and masks, the
/// optimizer's two moments, and the activations and backward scratch of the batch, or of each
/// shard's share with its own gradients. What the engine allocates, f32, to the value (tests).
pub fn training_bytes(arch: &Architecture, batch: usize, shards: usize) -> f64 {
    let t = arch.context as usize;
    let p = Cost::of(arch).params as usize;
    let held = 4 * (model_values(arch, true) + 2 * p);
    let acts = if shards >= 2 && batch >= shards {
        shards * (4 * p + train_act_bytes(arch, (batch.div_ceil(shards), t)))
    } else {
        train_act_bytes(arch, (batch, t))
    };
    (held + acts) as f64
}

/// Resident bytes of a training pass's buffers for a (b, t) batch of `arch`, f32: what
/// `train_act_values` counts, less the pages of the attention probabilities the causal mask
/// never lets a kernel write (a probability row is written over its query tile's key span
/// only, and the buffer is zero-mapped, so the rest is never made resident: at 2,048 tokens
/// about a quarter of it), with one head's backward scratch (dS, written the same way).
pub fn train_act_bytes(arch: &Architecture, (b, t): (usize, usize)) -> usize {
    let mut untouched = 0;
    let mut scratch = 0;
    for layer in &arch.layers {
        let a = &layer.attention;
        if a.heads() == 0 || !a.is_softmax() {
            continue;
        }
        let window = match *a {
            genas_space::Attention::Sliding { window, .. } => (window as usize).min(t),
            _ => t,
        };
        let count = b * a.heads() as usize;
        let all = count * t * t * 4;
        untouched += all.saturating_sub(matrices_written(count, t, window) * PAGE);
        scratch = scratch.max(matrices_written(1, t, window) * PAGE);
    }
    4 * train_act_values(arch, (b, t)) - untouched + scratch
}

/// Bytes of a page of memory.
const PAGE: usize = 4096;
/// Where glibc's mapped chunks start their data in their first page.
const CHUNK_OFFSET: usize = 16;

/// `written_pages` of `count` matrices in a buffer as the allocator maps it, counted exactly
/// for two and scaled beyond (the pattern repeats from matrix to matrix), and remembered per
/// shape: a preflight reckons it for every architecture of a space.
fn matrices_written(count: usize, t: usize, window: usize) -> usize {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    /// Pages written, by (matrices up to two, t, window).
    type Seen = Mutex<HashMap<(usize, usize, usize), usize>>;
    static SEEN: OnceLock<Seen> = OnceLock::new();
    let key = (count.min(2), t, window);
    let seen = SEEN.get_or_init(Default::default);
    let cached = seen.lock().ok().and_then(|m| m.get(&key).copied());
    let two = cached.unwrap_or_else(|| {
        let n = written_pages(key.0, t, window, 4, CHUNK_OFFSET);
        if let Ok(mut m) = seen.lock() {
            m.insert(key, n);
        }
        n
    });
    if count <= 2 {
        two
    } else {
        two * count / 2
    }
}

/// Pages of `count` (t × t) probability matrices, one after another in a freshly mapped buffer
/// of `elem`-byte values, that the attention kernels write: each query tile of `TILE` rows
/// writes, in each of its rows, the key span from its first visible key rounded down to
/// `SPAN` values to its last query + 1 rounded up (`cpu::attention::span`).
fn written_pages(count: usize, t: usize, window: usize, elem: usize, offset: usize) -> usize {
    const TILE: usize = 8;
    const SPAN: usize = 16;
    // The allocator's header before the data makes the first page resident.
    let (mut pages, mut last) = if offset > 0 {
        (1, Some(0))
    } else {
        (0usize, None::<usize>)
    };
    for m in 0..count {
        for i in 0..t {
            let i0 = i / TILE * TILE;
            let rows = TILE.min(t - i0);
            let lo = (i0 + 1).saturating_sub(window) / SPAN * SPAN;
            let hi = (i0 + rows).div_ceil(SPAN) * SPAN;
            let hi = hi.min(t);
            let row = (m * t + i) * t;
            let (start, end) = (offset + (row + lo) * elem, offset + (row + hi) * elem);
            let (first, final_page) = (start / PAGE, (end - 1) / PAGE);
            let from = last.map_or(first, |l| first.max(l + 1));
            if final_page >= from {
                pages += final_page - from + 1;
                last = Some(final_page);
            }
        }
    }
    pages
}

/// Values a model of `arch` holds outside its passes: its weights, their gradients where
/// `grads` (made by the first backward pass) and the 0/1 masks of its sparse matrices.
/// `Model::held_values` counts what it allocated; a test holds the two equal.
pub fn model_values(arch: &Architecture, grads: bool) -> usize {
    let p = Cost::of(arch).params as usize;
    let masks: usize = arch
        .layers
        .iter()
        .enumerate()
        .filter(|(i, _)| arch.weight_owner(*i) == *i)
        .map(|(_, l)| {
            genas_space::cost::block_matrices(arch.d_model, l)
                .iter()
                .filter(|(_, _, s)| *s != genas_space::Sparsity::Dense)
                .map(|(i, o, _)| (i * o) as usize)
                .sum::<usize>()
        })
        .sum();
    p * if grads { 2 } else { 1 } + masks
}

/// Values of the buffers a forward and backward of `arch` on a (b, t) batch keeps (every
/// block's activations with its attention probabilities, the residual streams, the final norm,
/// the logits and their gradient, and one backward scratch sized for the widest layer).
/// `Model::act_values` counts what it allocated; a test holds the two equal.
pub fn train_act_values(arch: &Architecture, (b, t): (usize, usize)) -> usize {
    let (n, c, v) = (b * t, arch.d_model as usize, arch.vocab_size as usize);
    let (mut blocks, mut width_max, mut inner_max, mut h_max, mut gated_max, mut r_max) =
        (0, 0, 0, 0, 0, 0);
    for layer in &arch.layers {
        let a = &layer.attention;
        let heads = a.heads() as usize;
        let (_, inner, kvd) = widths(arch, layer);
        let (attn, width, cache) = if heads == 0 {
            (0, 0, 0)
        } else if a.is_softmax() {
            // ln1, its two row statistics, the attention's output and the mid-block stream.
            (
                2 * n * c + n * inner + 2 * n,
                inner + 2 * kvd,
                b * heads * t * t,
            )
        } else {
            (2 * n * c + n * inner + 2 * n, 3 * inner, b * heads * t)
        };
        // The query and key heads before their norms, and a statistic per head.
        let qk = if layer.qk_norm {
            n * (inner + kvd) + n * (heads + a.kv_heads() as usize)
        } else {
            0
        };
        let h = layer.ffn_hidden() as usize;
        let r = layer.ffn_rank().unwrap_or(0) as usize;
        let gated = layer.swiglu();
        let gate = if gated { n * (r + h) } else { 0 };
        // ln2 and its statistics (none without an FFN), the FFN's low-rank factors,
        // pre-activations and activation.
        let ln2 = if layer.ffn.is_some() {
            n * c + 2 * n
        } else {
            0
        };
        blocks += attn + n * width + qk + cache + ln2 + 2 * n * r + 2 * n * h + gate;
        width_max = width_max.max(width);
        inner_max = inner_max.max(inner);
        h_max = h_max.max(h);
        r_max = r_max.max(r);
        if gated {
            gated_max = gated_max.max(h);
        }
    }
    let streams = (arch.layers.len() + 1) * n * c;
    let head = n * c + 2 * n + 2 * n * v;
    let scratch = n * (2 * c + inner_max + width_max + h_max + 2 * gated_max + r_max);
    blocks + streams + head + scratch
}

/// A layer's attention widths (hd, H·hd, kvd), as values.
fn widths(arch: &Architecture, layer: &genas_space::Layer) -> (usize, usize, usize) {
    let (hd, inner, kvd) = genas_space::cost::attention_widths(arch.d_model, layer);
    (hd as usize, inner as usize, kvd as usize)
}

/// Bytes to run `arch` forward through `Model::forward` on `batch` sequences at its context
/// (evaluation, proxies, generation): its build, then its weights, the activations that
/// forward keeps and the generation state.
pub fn inference_bytes(arch: &Architecture, batch: usize) -> f64 {
    let t = arch.context as usize;
    let state = Cost::of(arch).inference_state_bytes as f64 * batch as f64;
    build_bytes(arch, 4)
        .max(4.0 * (model_values(arch, false) + train_act_values(arch, (batch, t))) as f64)
        + state
}

/// Bytes of `arch`'s weights at `elem` bytes a value: a model that only runs forward (its
/// gradients are allocated by its first backward pass).
pub fn weight_bytes(arch: &Architecture, elem: usize) -> f64 {
    (elem * Cost::of(arch).params as usize) as f64
}

/// Peak bytes while `Model::new` builds `arch` at `elem` bytes a value: every value is drawn in
/// f64 first, then uploaded and freed tensor by tensor (the largest uploaded while every drawn
/// value is still held, at worst).
pub fn build_bytes(arch: &Architecture, elem: usize) -> f64 {
    (weight_bytes(arch, 8) + (elem * largest_tensor(arch)) as f64).max(weight_bytes(arch, elem))
}

/// Values of `arch`'s largest parameter tensor (the embedding, a fused q/k/v projection, or a
/// block's widest matrix).
pub fn largest_tensor(arch: &Architecture) -> usize {
    largest_block_tensor(arch).max(arch.vocab_size as usize * arch.d_model as usize)
}

/// Values of the largest parameter tensor of `arch`'s blocks (a fused q/k/v projection, or a
/// block's widest matrix).
pub fn largest_block_tensor(arch: &Architecture) -> usize {
    let c = arch.d_model as usize;
    let matrices = arch
        .layers
        .iter()
        .flat_map(|l| genas_space::cost::block_matrices(arch.d_model, l))
        .map(|(i, o, _)| (i * o) as usize);
    let qkv = arch.layers.iter().map(|l| {
        let (_, inner, kvd) = widths(arch, l);
        c * (inner + 2 * kvd)
    });
    matrices.chain(qkv).max().unwrap_or(0)
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
        let (_, inner, kvd) = widths(arch, layer);
        let (has_attn, width, cache) = if a.heads() == 0 {
            (false, 0, 0)
        } else if a.is_softmax() {
            (true, inner + 2 * kvd, 0)
        } else {
            (true, 3 * inner, a.heads() as usize)
        };
        let attn = |k: usize| if has_attn { k } else { 0 };
        let h = layer.ffn_hidden() as usize;
        let r = layer.ffn_rank().unwrap_or(0) as usize;
        let gated = layer.swiglu();
        let gate = |k: usize| if gated { k } else { 0 };
        let ffn = |k: usize| if layer.ffn.is_some() { k } else { 0 };
        // `BlockActs`' fields in order (without the query and key heads before their norms,
        // which a pass without gradients does not keep).
        let sizes = [
            attn(c),
            attn(1),
            attn(1),
            width,
            cache,
            inner,
            attn(c),
            ffn(c),
            ffn(1),
            ffn(1),
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
pub fn infer_plan(arch: &Architecture, bt: (usize, usize), elem: usize) -> InferPlan {
    plan_with(arch, bt, elem, 0)
}

/// The plan of a run whose layer probe reads every block's rows widened to f64 (`LayerRows`:
/// input, output, attention output, FFN pre-activation): those count in the chunk's bytes, so
/// a probed chunk holds no more than an unprobed one.
pub fn probed_plan(arch: &Architecture, bt: (usize, usize), elem: usize) -> InferPlan {
    plan_with(arch, bt, elem, probe_row_bytes(arch))
}

/// Bytes of one row of the rows a layer probe is shown, f64.
fn probe_row_bytes(arch: &Architecture) -> usize {
    let c = arch.d_model as usize;
    let h = arch
        .layers
        .iter()
        .map(|l| l.ffn_hidden() as usize)
        .max()
        .unwrap_or(0);
    8 * (3 * c + h)
}

fn plan_with(
    arch: &Architecture,
    (b, t): (usize, usize),
    elem: usize,
    probe_row: usize,
) -> InferPlan {
    let v = arch.vocab_size as usize;
    let per_seq = (infer_row_values(arch) * elem + probe_row) * t;
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

/// Bytes `Model::infer` allocates and writes for a (b, t) batch of `arch` with `elem`-byte
/// values: one chunk's buffers (with a layer's rows widened to f64 where a probe reads them)
/// and the logit block where a sink reads logits (without one its pages are never written, so
/// never resident).
pub fn infer_bytes(
    arch: &Architecture,
    bt: (usize, usize),
    elem: usize,
    logits: bool,
    probe: bool,
) -> f64 {
    let plan = if probe {
        probed_plan(arch, bt, elem)
    } else {
        infer_plan(arch, bt, elem)
    };
    let block = plan.logit_rows * (arch.vocab_size + arch.d_model) as usize * elem;
    (plan.bytes - if logits { 0 } else { block }) as f64
}

/// Peak bytes of running `arch` forward without gradients (`Model::infer`) on batches of
/// `batch` sequences at its context, f32: its build, then its weights and one chunk's buffers.
pub fn forward_only_bytes(arch: &Architecture, batch: usize) -> f64 {
    let plan = infer_plan(arch, (batch, arch.context as usize), 4);
    build_bytes(arch, 4).max(weight_bytes(arch, 4) + plan.bytes as f64)
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

/// Hands the heap's free pages back to the system. A teacher of many tensors, once dropped,
/// leaves its pages free inside glibc's heap, below what was allocated after it, and counted
/// in the process's memory until reused (measured: 500 MB of a 538 MB teacher held through a
/// whole search); `malloc_trim` returns them.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes every allocation of `MMAP_BYTES` or more its own mapping, returned to the system when
/// freed. glibc otherwise raises that threshold as large buffers are freed (up to 32 MiB), after
/// which a model's activations come from its heaps and stay counted, fragmented, after the
/// model is gone: the estimates would then hold only for the first model a process runs.
pub fn map_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's thresholds; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_BYTES as libc::c_int);
    }
}

/// Allocations of this size or more are mapped on their own (`map_large_allocations`).
pub const MMAP_BYTES: usize = 1 << 20;

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
            norm_eps: genas_space::Float(genas_space::NORM_EPS),
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

    /// Pages of `buf` the kernel says are resident (`mincore`).
    #[cfg(target_os = "linux")]
    fn resident_pages(buf: &[f32]) -> usize {
        let start = buf.as_ptr() as usize / PAGE * PAGE;
        let end = buf.as_ptr() as usize + std::mem::size_of_val(buf);
        let n = (end - start).div_ceil(PAGE);
        let mut vec = vec![0u8; n];
        // SAFETY: the range covers only pages of `buf`'s allocation; `vec` has one byte a page.
        let rc =
            unsafe { libc::mincore(start as *mut libc::c_void, end - start, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        vec.iter().filter(|&&x| x & 1 == 1).count()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_probability_pages_counted_are_the_ones_the_kernels_write() {
        use crate::cpu::attention::{attention_forward, AttnDims};
        // As the genas binary runs: buffers of a MiB or more mapped fresh, never recycled.
        map_large_allocations();
        for (t, window) in [(1024, 1024), (2048, 2048), (1536, 300), (512, 512)] {
            let d = AttnDims {
                b: 1,
                t,
                heads: 2,
                kv_heads: 2,
                head_dim: 8,
                window,
            };
            let qkv = vec![0.1f32; t * d.qkv_width()];
            let mut out = vec![0f32; t * d.c()];
            // Zeroed and mapped fresh, as the engine allocates it.
            let mut probs = vec![0f32; d.heads * t * t];
            // A fresh mapping: only the allocator's header is resident.
            assert!(resident_pages(&probs) <= 1);
            attention_forward(&mut out, &mut probs, &qkv, d);
            let offset = probs.as_ptr() as usize % PAGE;
            let want = written_pages(d.heads, t, window, 4, offset);
            let got = resident_pages(&probs);
            assert_eq!(got, want, "t = {t}, window = {window}");
            if t >= 2048 {
                // Well short of every page: the estimate's reason to count them.
                assert!(got * PAGE < 4 * d.heads * t * t * 9 / 10);
            }
        }
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
