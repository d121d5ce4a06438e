//! Causal softmax attention: full, grouped-query (G key/value heads shared by H/G query heads
//! each) and sliding-window (each query sees itself and the previous window − 1 positions).
//!
//! Shapes: qkv (B, T, C + 2·G·hd) holding q (H·hd = C) | k (G·hd) | v (G·hd) per row;
//! out (B, T, C); probs (B, H, T, T), the softmax weights cached for backward (entries outside
//! the causal window are never read). Work is split over the batch, so every task writes its
//! own rows and results do not depend on the thread count.

use crate::engine::real::Real;
use crate::engine::simd::simd_dispatch;
use crate::engine::simd::Simd;
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
}

/// Vector width the score loops are padded to (16 f32 lanes of AVX-512; a multiple of the
/// narrower widths).
const LANES: usize = 16;

fn round_up(x: usize) -> usize {
    x.div_ceil(LANES) * LANES
}

/// kt[e·tp + j] = x[j·w + off + e]: one head's keys (or values) transposed to (hd, tp) with
/// rows padded to tp = round_up(t), so a query's scores against all keys are `hd` full-width
/// axpys along the key axis rather than T dot products (which end in horizontal reductions).
#[inline(always)]
fn transpose_head<F: Real>(
    kt: &mut [F],
    x: &[F],
    off: usize,
    w: usize,
    t: usize,
    tp: usize,
    hd: usize,
) {
    for j in 0..t {
        let row = &x[j * w + off..j * w + off + hd];
        for e in 0..hd {
            kt[e * tp + j] = row[e];
        }
    }
}

/// The aligned key range covering the causal window [lo, i] of query i: [lo rounded down,
/// i + 1 rounded up), within `limit`.
#[inline(always)]
fn span(lo: usize, i: usize, limit: usize) -> (usize, usize) {
    (lo / LANES * LANES, round_up(i + 1).min(limit))
}

/// out[a..b] = Σ_e v[e] · xt[e·tp + a..e·tp + b]
#[inline(always)]
fn scores<F: Real, S: Simd>(out: &mut [F], v: &[F], xt: &[F], tp: usize, (a, b): (usize, usize)) {
    let s = &mut out[a..b];
    s.fill(F::ZERO);
    F::lincomb::<S>(s, v, &xt[a..], tp);
}

simd_dispatch! {
    /// One batch element: out_b (T, C), probs_b (H, T, T) from qkv_b (T, C + 2·G·hd). Every
    /// probability row is written in full, zero outside the causal window.
    fn forward_one<F: Real>(out_b: &mut [F], probs_b: &mut [F], qkv_b: &[F], d: AttnDims) {
        let (t, c, w, hd) = (d.t, d.c(), d.qkv_width(), d.head_dim);
        let tp = round_up(t);
        let scale = F::ONE / F::usize(hd).sqrt();
        let mut kt = vec![F::ZERO; hd * tp];
        let mut q = vec![F::ZERO; hd];
        let mut row = vec![F::ZERO; tp];
        for h in 0..d.heads {
            let (ko, vo) = (d.k_offset(h), d.v_offset(h));
            if h % (d.heads / d.kv_heads) == 0 {
                transpose_head(&mut kt, qkv_b, ko, w, t, tp, hd);
            }
            for i in 0..t {
                for (qe, &x) in q.iter_mut().zip(&qkv_b[i * w + h * hd..i * w + (h + 1) * hd]) {
                    *qe = x * scale;
                }
                let lo = d.first_key(i);
                let (a, b) = span(lo, i, tp);
                scores::<F, S>(&mut row, &q, &kt, tp, (a, b));
                let max = F::max_of::<S>(&row[lo..=i]);
                // Fixed 16-lane chunks: the span is a multiple of 16 long, and short plain loops
                // would not be vectorised.
                for ch in row[a..b].as_chunks_mut::<LANES>().0 {
                    for x in ch.iter_mut() {
                        *x = (*x - max).exp_s::<S>();
                    }
                }
                row[a..lo].fill(F::ZERO);
                row[i + 1..b].fill(F::ZERO);
                let inv = F::ONE / F::sum_of::<S>(&row[a..b]);
                for ch in row[a..b].as_chunks_mut::<LANES>().0 {
                    for x in ch.iter_mut() {
                        *x *= inv;
                    }
                }
                let p = &mut probs_b[(h * t + i) * t..(h * t + i + 1) * t];
                p.fill(F::ZERO);
                p[lo..=i].copy_from_slice(&row[lo..=i]);
                // o_i = Σ_j P_ij v_j
                let o = &mut out_b[i * c + h * hd..i * c + (h + 1) * hd];
                o.fill(F::ZERO);
                F::lincomb::<S>(o, &p[lo..=i], &qkv_b[lo * w + vo..], w);
            }
        }
    }
}

/// dst[j·t + i] = src[i·t + j] for an (t × t) matrix.
#[inline(always)]
fn transpose_square<F: Real>(dst: &mut [F], src: &[F], t: usize) {
    for i in 0..t {
        for j in 0..t {
            dst[j * t + i] = src[i * t + j];
        }
    }
}

simd_dispatch! {
    /// One batch element: dqkv_b (T, C + 2·G·hd) from dout_b (T, C). Per head, a pass over
    /// queries gives dS and dq; a pass over keys gives dk and dv as register-accumulated sums
    /// over the queries that saw each key.
    fn backward_one<F: Real>(dqkv_b: &mut [F], dout_b: &[F], qkv_b: &[F], probs_b: &[F], d: AttnDims) {
        let (t, c, w, hd) = (d.t, d.c(), d.qkv_width(), d.head_dim);
        let tp = round_up(t);
        let scale = F::ONE / F::usize(hd).sqrt();
        dqkv_b.fill(F::ZERO);
        let mut dp = vec![F::ZERO; tp];
        let mut ds = vec![F::ZERO; t * t];
        let mut ds_t = vec![F::ZERO; t * t];
        let mut p_t = vec![F::ZERO; t * t];
        let mut vt = vec![F::ZERO; hd * tp];
        for h in 0..d.heads {
            let (ko, vo) = (d.k_offset(h), d.v_offset(h));
            if h % (d.heads / d.kv_heads) == 0 {
                transpose_head(&mut vt, qkv_b, vo, w, t, tp, hd);
            }
            let probs_h = &probs_b[h * t * t..(h + 1) * t * t];
            for i in 0..t {
                let lo = d.first_key(i);
                let (a, b) = span(lo, i, t);
                let p = &probs_h[i * t..(i + 1) * t];
                let g = &dout_b[i * c + h * hd..i * c + (h + 1) * hd];
                // dP_ij = dO_i · v_j over the aligned span (P is zero outside the window).
                scores::<F, S>(&mut dp, g, &vt, tp, (a, b));
                let pdp = F::dot::<S>(&p[a..b], &dp[a..b]);
                // dS_ij = P_ij (dP_ij − Σ_k P_ik dP_ik), scaled; zero outside the window.
                // Over the aligned span in 16-lane chunks (P is zero outside the window, so dS
                // is too); the span's tail exists only when T is not a multiple of 16.
                let row = &mut ds[i * t..(i + 1) * t];
                row.fill(F::ZERO);
                let (rc, rr) = row[a..b].as_chunks_mut::<LANES>();
                let (pc, pr) = p[a..b].as_chunks::<LANES>();
                let (dc, dr) = dp[a..b].as_chunks::<LANES>();
                for ((r, pv), dv) in rc.iter_mut().zip(pc).zip(dc) {
                    for l in 0..LANES {
                        r[l] = pv[l] * (dv[l] - pdp) * scale;
                    }
                }
                for ((r, &pv), &dv) in rr.iter_mut().zip(pr).zip(dr) {
                    *r = pv * (dv - pdp) * scale;
                }
                // dq_i = Σ_j dS_ij k_j
                let dq = &mut dqkv_b[i * w + h * hd..i * w + (h + 1) * hd];
                F::lincomb::<S>(dq, &row[lo..=i], &qkv_b[lo * w + ko..], w);
            }
            transpose_square(&mut p_t, probs_h, t);
            transpose_square(&mut ds_t, &ds, t);
            for j in 0..t {
                // Queries that see key j: j ≤ i < j + window.
                let hi = (j + d.window.min(t)).min(t);
                // dv_j += Σ_i P_ij dO_i ;  dk_j += Σ_i dS_ij q_i
                let dv = &mut dqkv_b[j * w + vo..j * w + vo + hd];
                F::lincomb::<S>(dv, &p_t[j * t + j..j * t + hi], &dout_b[j * c + h * hd..], c);
                let dk = &mut dqkv_b[j * w + ko..j * w + ko + hd];
                F::lincomb::<S>(dk, &ds_t[j * t + j..j * t + hi], &qkv_b[j * w + h * hd..], w);
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
        .for_each(|(bi, (out_b, probs_b))| {
            forward_one(out_b, probs_b, &qkv[bi * t * w..(bi + 1) * t * w], d)
        });
}

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
        .for_each(|(bi, dqkv_b)| {
            backward_one(
                dqkv_b,
                &dout[bi * t * c..(bi + 1) * t * c],
                &qkv[bi * t * w..(bi + 1) * t * w],
                &probs[bi * hp..(bi + 1) * hp],
                d,
            )
        });
}
