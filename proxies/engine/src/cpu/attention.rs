//! Causal softmax attention: full, grouped-query (G key/value heads shared by H/G query heads
//! each) and sliding-window (each query sees itself and the previous window − 1 positions).
//!
//! Shapes: qkv (B, T, C + 2·G·hd) holding q (H·hd = C) | k (G·hd) | v (G·hd) per row;
//! out (B, T, C); probs (B, H, T, T), the softmax weights cached for backward (only the key spans
//! of each query tile are written or read: see below). Work is split over the batch, so every task writes its
//! own rows and results do not depend on the thread count.

use crate::real::Real;
use crate::simd::{prefetch_l2, simd_dispatch};
use rayon::prelude::*;

/// Dimensions of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnDims {
    pub b: usize,
    pub t: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Keys visible to a query, itself included (`t` for full causal attention).
    pub window: usize,
}

impl AttnDims {
    pub fn c(&self) -> usize {
        self.heads * self.head_dim
    }
    /// Width of one qkv row.
    pub fn qkv_width(&self) -> usize {
        self.c() + 2 * self.kv_heads * self.head_dim
    }
    fn k_offset(&self, h: usize) -> usize {
        self.c() + (h / (self.heads / self.kv_heads)) * self.head_dim
    }
    fn v_offset(&self, h: usize) -> usize {
        self.k_offset(h) + self.kv_heads * self.head_dim
    }
    fn first_key(&self, i: usize) -> usize {
        (i + 1).saturating_sub(self.window)
    }
    /// Whether the kernels prefetch the next head's rows (`prefetch_head`): when one batch
    /// element's qkv rows and probabilities take `PREFETCH_MIN_BYTES` or more, with elements of
    /// `elem` bytes.
    pub fn prefetches(&self, elem: usize) -> bool {
        let per_element = (self.t * self.qkv_width() + self.heads * self.t * self.t) * elem;
        per_element >= PREFETCH_MIN_BYTES
    }
}

/// Below this (one batch element's qkv rows and probabilities) the next head's data is likely
/// still in cache and prefetching only costs instructions. Measured on the benchmark models
/// (2 threads): the small one (164 KiB per element) ran 1.3% slower with it (8 alternating
/// runs, medians); on the large one (917 KiB) attention took 1.2 ms less per step and thread
/// (forward 9.2 → 8.7 ms, backward 13.4 → 12.6, timers around the calls), about 0.6% of the
/// step; cold (`examples/attention` over six layers' buffers) 15–20% less.
const PREFETCH_MIN_BYTES: usize = 384 * 1024;

/// Every cache line of `row[range]`, prefetched into L2.
#[inline(always)]
fn prefetch_span<F>(row: &[F], range: std::ops::Range<usize>, write: bool) {
    let line = (64 / std::mem::size_of::<F>()).max(1);
    for j in range.step_by(line) {
        prefetch_l2(&row[j], write);
    }
}

/// What one query tile of a head touches, asked into L2 for head `h` a head's work ahead (read
/// in place, each line comes from memory one miss at a time: qkv's rows lie 3 KiB apart on the
/// large model, beyond the stride prefetcher's reach). For rows i0..i1: the probabilities over
/// keys `keys` (written in forward, read in backward); the head's q, and its k and v when it
/// starts a key/value group, from `qkv` and, in backward, the same columns of `dqkv` (written);
/// the head's columns of `o` (C wide: out, written, or dO, read, as `o_write` says).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn prefetch_head<F>(
    d: &AttnDims,
    h: usize,
    i0: usize,
    i1: usize,
    keys: std::ops::Range<usize>,
    (probs, probs_write): (&[F], bool),
    qkv: &[F],
    dqkv: Option<&[F]>,
    (o, o_write): (&[F], bool),
) {
    let (t, c, w, hd) = (d.t, d.c(), d.qkv_width(), d.head_dim);
    let q = h * hd..(h + 1) * hd;
    let (ko, vo) = (d.k_offset(h), d.v_offset(h));
    let kv = if h.is_multiple_of(d.heads / d.kv_heads) {
        &[ko..ko + hd, vo..vo + hd][..]
    } else {
        &[]
    };
    for i in i0..i1 {
        prefetch_span(
            &probs[(h * t + i) * t..(h * t + i + 1) * t],
            keys.clone(),
            probs_write,
        );
        prefetch_span(&o[i * c..(i + 1) * c], q.clone(), o_write);
        let row = &qkv[i * w..(i + 1) * w];
        for cols in std::iter::once(&q).chain(kv) {
            prefetch_span(row, cols.clone(), false);
            if let Some(dqkv) = dqkv {
                prefetch_span(&dqkv[i * w..(i + 1) * w], cols.clone(), true);
            }
        }
    }
}

/// Vector width the score loops are padded to (16 f32 lanes of AVX-512; a multiple of the
/// narrower widths).
const LANES: usize = 16;

fn round_up(x: usize) -> usize {
    x.div_ceil(LANES) * LANES
}

/// The aligned key range covering the causal window [lo, i] of query i: [lo rounded down,
/// i + 1 rounded up), within `limit`.
#[inline(always)]
fn span(lo: usize, i: usize, limit: usize) -> (usize, usize) {
    (lo / LANES * LANES, round_up(i + 1).min(limit))
}

/// Query (or key) rows per register tile.
const ROWS: usize = 8;

/// Per-task working memory, allocated once per rayon task (`for_each_init`) and reused for
/// every batch element the task handles. Padding columns of `kt` are never written, so they
/// stay zero across reuse.
pub struct Scratch<F> {
    /// One head's keys (forward) or values (backward) transposed, (hd, tp).
    kt: Vec<F>,
    /// A tile's scores (forward) or dP (backward), (ROWS, tp).
    blk: Vec<F>,
    /// Backward: dS of one head, (T, T); only each query tile's key span is written and read.
    ds: Vec<F>,
}

impl<F: Real> Scratch<F> {
    fn new(d: AttnDims) -> Scratch<F> {
        let (t, hd) = (d.t, d.head_dim);
        let tp = round_up(t);
        Scratch {
            kt: vec![F::ZERO; hd * tp],
            blk: vec![F::ZERO; ROWS * tp],
            ds: vec![F::ZERO; t * t],
        }
    }

    /// What the forward without kept probabilities needs: no (T, T) backward buffer.
    fn for_inference(d: AttnDims) -> Scratch<F> {
        let tp = round_up(d.t);
        Scratch {
            kt: vec![F::ZERO; d.head_dim * tp],
            blk: vec![F::ZERO; ROWS * tp],
            ds: Vec::new(),
        }
    }
}

// Which entries of a probability (or dS) row are written and read. Query tile i0 (rows
// i0..i0+8) writes, for each of its rows, the tile's key span [a, b) = `span(first_key(i0),
// last row, ..)`: the causal window of the row plus zeros up to the span's 16-aligned ends.
// Backward reads rows only inside their tile's span, and columns j0..j0+8 only of the queries
// i ≥ j0 that can see them, whose spans contain those columns (a ≤ j0 because spans start
// 16-aligned at or below the window's first key, b ≥ j0 + 8 because i's tile starts at or
// after j0). Entries outside the spans are never written nor read, so no row is cleared.

simd_dispatch! {
    /// One batch element: out_b (T, C), and with `probs_b` (H, T, T) the probabilities kept for
    /// backward, from qkv_b (T, C + 2·G·hd). Queries go in tiles of 8: S = Q·Kᵀ and O = P·V are
    /// small register-blocked products over the tile's key span; the 1/√hd scale is applied
    /// inside the exponent. Without `probs_b` (inference) a tile's probabilities stay in the
    /// tile's scratch rows: the same values, so the same output to the bit. Only the queries
    /// `queries` = (q0, q1) are computed, out_b holding their rows (q0 a multiple of 8; every
    /// query for training, whose probabilities are per element).
    fn forward_one<F: Real>(out_b: &mut [F], probs_b: Option<&mut [F]>, qkv_b: &[F], d: AttnDims, queries: (usize, usize), scratch: &mut Scratch<F>) {
        let (q0, q1) = queries;
        let (t, c, w, hd) = (d.t, d.c(), d.qkv_width(), d.head_dim);
        let tp = round_up(t);
        let scale = F::ONE / F::usize(hd).sqrt();
        let Scratch { kt, blk: sblk, .. } = scratch;
        let mut probs_b = probs_b;
        let prefetch = probs_b.is_some() && d.prefetches(std::mem::size_of::<F>());
        for h in 0..d.heads {
            let (ko, vo) = (d.k_offset(h), d.v_offset(h));
            if h % (d.heads / d.kv_heads) == 0 {
                // kt[e·tp + j] = k_j[e]: a query's scores against all keys become `hd` full-width
                // multiply-adds along the key axis rather than T dot products.
                F::transpose::<S>(kt, tp, &qkv_b[ko..], w, t, hd);
            }
            for i0 in (q0..q1).step_by(ROWS) {
                let rows = ROWS.min(q1 - i0);
                let (a, b) = span(d.first_key(i0), i0 + rows - 1, tp);
                let bt = b.min(t);
                if let Some(probs_b) = probs_b.as_deref().filter(|_| prefetch && h + 1 < d.heads) {
                    prefetch_head(&d, h + 1, i0, i0 + rows, a..bt, (probs_b, true), qkv_b, None, (out_b, true));
                }
                F::small_gemm::<S>(&mut sblk[a..], tp, &qkv_b[i0 * w + h * hd..], (w, 1), &kt[a..], tp, (rows, hd, b - a), false);
                for r in 0..rows {
                    let i = i0 + r;
                    let lo = d.first_key(i);
                    let row = &mut sblk[r * tp..(r + 1) * tp];
                    let shift = F::max_of::<S>(&row[lo..=i]) * scale;
                    // Fixed 16-lane chunks: the span is a multiple of 16 long, and short plain
                    // loops would not be vectorised.
                    for ch in row[a..b].as_chunks_mut::<LANES>().0 {
                        for x in ch.iter_mut() {
                            *x = (*x * scale - shift).exp_s::<S>();
                        }
                    }
                    row[a..lo].fill(F::ZERO);
                    row[i + 1..b].fill(F::ZERO);
                    let inv = F::ONE / F::sum_of::<S>(&row[a..b]);
                    match probs_b.as_deref_mut() {
                        Some(probs_b) => {
                            let p = &mut probs_b[(h * t + i) * t + a..(h * t + i) * t + bt];
                            let (pc, pr) = p.as_chunks_mut::<LANES>();
                            let (xc, xr) = row[a..bt].as_chunks::<LANES>();
                            for (p, x) in pc.iter_mut().zip(xc) {
                                let x = *x;
                                *p = std::array::from_fn(|l| x[l] * inv);
                            }
                            for (p, &x) in pr.iter_mut().zip(xr) {
                                *p = x * inv;
                            }
                        }
                        None => {
                            let (xc, xr) = row[a..bt].as_chunks_mut::<LANES>();
                            for x in xc {
                                let y = *x;
                                *x = std::array::from_fn(|l| y[l] * inv);
                            }
                            for x in xr {
                                *x *= inv;
                            }
                        }
                    }
                }
                // O = P · V over the tile's keys [a, bt): from the kept probabilities, or from
                // the tile's rows.
                let (p, sp) = match probs_b.as_deref() {
                    Some(probs_b) => (&probs_b[(h * t + i0) * t + a..], t),
                    None => (&sblk[a..], tp),
                };
                F::small_gemm::<S>(
                    &mut out_b[(i0 - q0) * c + h * hd..],
                    c,
                    p,
                    (sp, 1),
                    &qkv_b[a * w + vo..],
                    w,
                    (rows, bt - a, hd),
                    false,
                );
            }
        }
    }
}

simd_dispatch! {
    /// One batch element: dqkv_b (T, C + 2·G·hd) from dout_b (T, C), every entry written. Per
    /// head, query tiles give dP = dO·Vᵀ, dS and dQ = dS·K; key tiles give dV = Pᵀ·dO and
    /// dK = dSᵀ·Q, written by the first head of a key/value group and added to by the others.
    fn backward_one<F: Real>(
        dqkv_b: &mut [F],
        dout_b: &[F],
        qkv_b: &[F],
        probs_b: &[F],
        d: AttnDims,
        scratch: &mut Scratch<F>,
    ) {
        let (t, c, w, hd) = (d.t, d.c(), d.qkv_width(), d.head_dim);
        let tp = round_up(t);
        let scale = F::ONE / F::usize(hd).sqrt();
        let group = d.heads / d.kv_heads;
        let Scratch { kt: vt, blk: dpblk, ds, .. } = scratch;
        let prefetch = d.prefetches(std::mem::size_of::<F>());
        for h in 0..d.heads {
            let (ko, vo) = (d.k_offset(h), d.v_offset(h));
            let first = h % group == 0;
            if first {
                F::transpose::<S>(vt, tp, &qkv_b[vo..], w, t, hd);
            }
            let probs_h = &probs_b[h * t * t..(h + 1) * t * t];
            for i0 in (0..t).step_by(ROWS) {
                let rows = ROWS.min(t - i0);
                let (a, b) = span(d.first_key(i0), i0 + rows - 1, t);
                if prefetch && h + 1 < d.heads {
                    prefetch_head(&d, h + 1, i0, i0 + rows, a..b, (probs_b, false), qkv_b, Some(&*dqkv_b), (dout_b, false));
                }
                // dP_ij = dO_i · v_j over the tile's keys (P is zero outside each window).
                F::small_gemm::<S>(&mut dpblk[a..], tp, &dout_b[i0 * c + h * hd..], (c, 1), &vt[a..], tp, (rows, hd, b - a), false);
                for r in 0..rows {
                    let i = i0 + r;
                    let p = &probs_h[i * t + a..i * t + b];
                    let dp = &dpblk[r * tp + a..r * tp + b];
                    let pdp = F::dot::<S>(p, dp);
                    // dS_ij = P_ij (dP_ij − Σ_k P_ik dP_ik), scaled, in 16-lane chunks.
                    let row = &mut ds[i * t + a..i * t + b];
                    let (rc, rr) = row.as_chunks_mut::<LANES>();
                    let (pc, pr) = p.as_chunks::<LANES>();
                    let (dc, dr) = dp.as_chunks::<LANES>();
                    for ((x, pv), dv) in rc.iter_mut().zip(pc).zip(dc) {
                        // Loaded into locals first: with stores to one slice interleaved with
                        // loads from others, the lanes would stay scalar.
                        let (pv, dv) = (*pv, *dv);
                        *x = std::array::from_fn(|l| pv[l] * (dv[l] - pdp) * scale);
                    }
                    for ((x, &pv), &dv) in rr.iter_mut().zip(pr).zip(dr) {
                        *x = pv * (dv - pdp) * scale;
                    }
                }
                // dQ = dS · K over the tile's keys.
                F::small_gemm::<S>(&mut dqkv_b[i0 * w + h * hd..], w, &ds[i0 * t + a..], (t, 1), &qkv_b[a * w + ko..], w, (rows, b - a, hd), false);
            }
            for j0 in (0..t).step_by(ROWS) {
                let rows = ROWS.min(t - j0);
                // Queries that see a key of the tile: j0 ≤ i < last key + window.
                let hi = (j0 + rows - 1).saturating_add(d.window).min(t);
                let k = hi - j0;
                // Aᵀ in place: A(r, i) = P[(j0 + i)·t + j0 + r].
                F::small_gemm::<S>(&mut dqkv_b[j0 * w + vo..], w, &probs_h[j0 * t + j0..], (1, t), &dout_b[j0 * c + h * hd..], c, (rows, k, hd), !first);
                F::small_gemm::<S>(&mut dqkv_b[j0 * w + ko..], w, &ds[j0 * t + j0..], (1, t), &qkv_b[j0 * w + h * hd..], w, (rows, k, hd), !first);
            }
        }
    }
}

pub fn attention_forward<F: Real>(out: &mut [F], probs: &mut [F], qkv: &[F], d: AttnDims) {
    let (t, c, w) = (d.t, d.c(), d.qkv_width());
    out[..d.b * t * c]
        .par_chunks_mut(t * c)
        .zip(probs[..d.b * d.heads * t * t].par_chunks_mut(d.heads * t * t))
        .enumerate()
        .for_each_init(
            || Scratch::new(d),
            |scratch, (bi, (out_b, probs_b))| {
                forward_one(
                    out_b,
                    Some(probs_b),
                    &qkv[bi * t * w..(bi + 1) * t * w],
                    d,
                    (0, t),
                    scratch,
                )
            },
        );
}

/// `attention_forward` without keeping the probabilities (no gradient wanted): each task holds
/// one query tile's scores at a time (`Scratch::for_inference`, 8 rows of T), never a (B, H, T,
/// T) buffer. Work is split over the batch and, within each sequence, over blocks of
/// `QUERY_BLOCK` queries, so a batch of one sequence (a teacher at a long context) keeps every
/// thread busy. Every query's row is computed as `attention_forward` computes it: the same
/// `out` to the bit.
pub fn attention_infer<F: Real>(out: &mut [F], qkv: &[F], d: AttnDims) {
    let (t, c, w) = (d.t, d.c(), d.qkv_width());
    out[..d.b * t * c]
        .par_chunks_mut(t * c)
        .enumerate()
        .for_each(|(bi, out_b)| {
            let qkv_b = &qkv[bi * t * w..(bi + 1) * t * w];
            out_b
                .par_chunks_mut(QUERY_BLOCK * c)
                .enumerate()
                .for_each_init(
                    || Scratch::for_inference(d),
                    |scratch, (k, rows)| {
                        let q0 = k * QUERY_BLOCK;
                        forward_one(rows, None, qkv_b, d, (q0, q0 + rows.len() / c), scratch)
                    },
                )
        });
}

/// Queries per task of `attention_infer` (a multiple of the 8-row tile).
const QUERY_BLOCK: usize = 64;

/// Writes dqkv (B, T, C + 2·G·hd) from dout (B, T, C).
pub fn attention_backward<F: Real>(
    dqkv: &mut [F],
    dout: &[F],
    qkv: &[F],
    probs: &[F],
    d: AttnDims,
) {
    let (t, c, w) = (d.t, d.c(), d.qkv_width());
    let hp = d.heads * t * t;
    dqkv[..d.b * t * w]
        .par_chunks_mut(t * w)
        .enumerate()
        .for_each_init(
            || Scratch::new(d),
            |scratch, (bi, dqkv_b)| {
                backward_one(
                    dqkv_b,
                    &dout[bi * t * c..(bi + 1) * t * c],
                    &qkv[bi * t * w..(bi + 1) * t * w],
                    &probs[bi * hp..(bi + 1) * hp],
                    d,
                    scratch,
                )
            },
        );
}
