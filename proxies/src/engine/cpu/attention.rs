//! Causal softmax attention: full, grouped-query (G key/value heads shared by H/G query heads
//! each) and sliding-window (each query sees itself and the previous window − 1 positions).
//!
//! Shapes: qkv (B, T, C + 2·G·hd) holding q (H·hd = C) | k (G·hd) | v (G·hd) per row;
//! out (B, T, C); probs (B, H, T, T), the softmax weights cached for backward (entries outside
//! the causal window are never read). Work is split over the batch, so every task writes its
//! own rows and results do not depend on the thread count.

use crate::engine::real::{axpy, dot, Real};
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

pub fn attention_forward<F: Real>(out: &mut [F], probs: &mut [F], qkv: &[F], d: AttnDims) {
    let (t, c, w, hd) = (d.t, d.c(), d.qkv_width(), d.head_dim);
    let scale = F::ONE / F::usize(hd).sqrt();
    out[..d.b * t * c]
        .par_chunks_mut(t * c)
        .zip(probs[..d.b * d.heads * t * t].par_chunks_mut(d.heads * t * t))
        .enumerate()
        .for_each(|(bi, (out_b, probs_b))| {
            let qkv_b = &qkv[bi * t * w..(bi + 1) * t * w];
            for h in 0..d.heads {
                let (ko, vo) = (d.k_offset(h), d.v_offset(h));
                for i in 0..t {
                    let q = &qkv_b[i * w + h * hd..i * w + (h + 1) * hd];
                    let lo = d.first_key(i);
                    let p = &mut probs_b[(h * t + i) * t..(h * t + i + 1) * t];
                    let mut max = F::from_f64(f64::NEG_INFINITY);
                    for j in lo..=i {
                        let s = dot(q, &qkv_b[j * w + ko..j * w + ko + hd]) * scale;
                        p[j] = s;
                        max = max.max(s);
                    }
                    let mut sum = F::ZERO;
                    for pj in &mut p[lo..=i] {
                        *pj = (*pj - max).exp();
                        sum += *pj;
                    }
                    let inv = F::ONE / sum;
                    let o = &mut out_b[i * c + h * hd..i * c + (h + 1) * hd];
                    o.fill(F::ZERO);
                    for j in lo..=i {
                        p[j] *= inv;
                        axpy(o, p[j], &qkv_b[j * w + vo..j * w + vo + hd]);
                    }
                }
            }
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
    let (t, c, w, hd) = (d.t, d.c(), d.qkv_width(), d.head_dim);
    let scale = F::ONE / F::usize(hd).sqrt();
    dqkv[..d.b * t * w]
        .par_chunks_mut(t * w)
        .enumerate()
        .for_each(|(bi, dqkv_b)| {
            dqkv_b.fill(F::ZERO);
            let qkv_b = &qkv[bi * t * w..(bi + 1) * t * w];
            let probs_b = &probs[bi * d.heads * t * t..(bi + 1) * d.heads * t * t];
            let dout_b = &dout[bi * t * c..(bi + 1) * t * c];
            let mut dp = vec![F::ZERO; t];
            for h in 0..d.heads {
                let (ko, vo) = (d.k_offset(h), d.v_offset(h));
                for i in 0..t {
                    let lo = d.first_key(i);
                    let p = &probs_b[(h * t + i) * t..(h * t + i + 1) * t];
                    let g = &dout_b[i * c + h * hd..i * c + (h + 1) * hd];
                    // dP_ij = dO_i · v_j ;  dv_j += P_ij · dO_i
                    let mut pdp = F::ZERO;
                    for j in lo..=i {
                        dp[j] = dot(g, &qkv_b[j * w + vo..j * w + vo + hd]);
                        pdp += p[j] * dp[j];
                        axpy(&mut dqkv_b[j * w + vo..j * w + vo + hd], p[j], g);
                    }
                    // dS_ij = P_ij (dP_ij − Σ_k P_ik dP_ik); dq_i += s·dS_ij k_j; dk_j += s·dS_ij q_i
                    for j in lo..=i {
                        let ds = p[j] * (dp[j] - pdp) * scale;
                        let (kj, qi) = (j * w + ko, i * w + h * hd);
                        for e in 0..hd {
                            dqkv_b[qi + e] += ds * qkv_b[kj + e];
                            dqkv_b[kj + e] += ds * qkv_b[qi + e];
                        }
                    }
                }
            }
        });
}
