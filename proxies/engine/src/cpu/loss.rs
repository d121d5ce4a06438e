//! The training loss on logits (N, V) and its gradient, in one pass:
//!   L = α · CE(softmax(z), y) + (1 − α) · T² · KL(p_teacher ‖ softmax(z / T)),
//! averaged over the N positions; without teacher targets L = CE. The gradient:
//!   dz = [α (softmax(z) − onehot(y)) + (1 − α) · T · (softmax(z/T) − p_teacher)] / N.
//!
//! Top-k targets (the k most probable tokens of each row, the rest of the mass r spread
//! evenly over the other V − k) are read as they are, never spread into an (N, V) buffer: with
//! s_j = z_j/T − lse_T,
//!   KL = Σ_top p_j (ln p_j − s_j) + (V − k) r ln r − r (Σ_all s_j − Σ_top s_j),
//! and the gradient is the dense one with p_j = r everywhere, corrected at the k tokens.

use crate::real::Real;
use rayon::prelude::*;

/// A teacher's distribution for each of the N positions, as the loss reads it.
#[derive(Clone, Copy)]
pub enum SoftRef<'a, F> {
    /// (N, V) probabilities.
    Dense(&'a [F]),
    /// The k most probable tokens of each row and their probabilities, (N, k) each; the rest
    /// of the row's mass (1 − Σ prob, rounded to f32 as the dense spread rounds it) is spread
    /// evenly over the other V − k tokens.
    TopK {
        k: usize,
        index: &'a [u32],
        prob: &'a [f32],
    },
}

/// Soft targets from a teacher at temperature `temperature`, and the weight `alpha` of the
/// hard-label term.
pub struct Distill<'a, F> {
    pub soft: SoftRef<'a, F>,
    pub temperature: f64,
    pub alpha: f64,
}

/// The probability each token outside a top-k row gets: what `SoftTargets::dense_f32`
/// writes there (f32, never negative).
pub fn top_k_rest(prob: &[f32], v: usize) -> f64 {
    let k = prob.len();
    let kept: f64 = prob.iter().map(|&x| x as f64).sum();
    f64::from(((1.0 - kept) / (v - k).max(1) as f64).max(0.0) as f32)
}

/// KL(p ‖ q) of one top-k row: `s(j)` is the student's log-probability ln q_j at token j,
/// `s_all` its sum over the whole vocabulary of `v` tokens, `(index, prob)` the row's k
/// tokens and their probabilities, the rest of the mass spread evenly (`top_k_rest`):
///   Σ_top p_j (ln p_j − s_j) + (V − k) r ln r − r (s_all − Σ_top s_j).
/// The loss (at temperature) and the evaluation against the teacher both read it.
pub fn top_k_kl(
    s: impl Fn(usize) -> f64,
    s_all: f64,
    (index, prob): (&[u32], &[f32]),
    v: usize,
) -> f64 {
    let k = index.len();
    let rest = top_k_rest(prob, v);
    let (mut kl, mut s_top) = (0.0, 0.0);
    for (&j, &pj) in index.iter().zip(prob) {
        let (pj, sj) = (f64::from(pj), s(j as usize));
        s_top += sj;
        if pj > 0.0 {
            kl += pj * (pj.ln() - sj);
        }
    }
    if rest > 0.0 && v > k {
        kl += (v - k) as f64 * rest * rest.ln() - rest * (s_all - s_top);
    }
    kl
}

/// A row's largest logit and ln Σ exp(z), as the loss computes them.
#[inline]
pub fn log_sum_exp<F: Real>(z: &[F]) -> (F, f64) {
    let max = z
        .iter()
        .copied()
        .fold(F::from_f64(f64::NEG_INFINITY), F::max);
    let sum: f64 = z.iter().map(|&x| (x - max).to_f64().exp()).sum();
    (max, max.to_f64() + sum.ln())
}

/// Cross-entropy of one row of logits against token `y`, nats: the loss's hard-label term,
/// to the bit.
pub fn row_ce<F: Real>(z: &[F], y: usize) -> f64 {
    log_sum_exp(z).1 - z[y].to_f64()
}

/// `acc` + Σ `row_ce` over (n, v) logits and their targets, added in row order: over a batch's
/// rows from 0, block after block, n times the mean the loss returns, to the bit.
pub fn add_ce<F: Real>(acc: f64, logits: &[F], targets: &[u32], v: usize) -> f64 {
    use rayon::prelude::*;
    let rows: Vec<f64> = logits
        .par_chunks(v)
        .zip(targets.par_iter())
        .map(|(z, &y)| row_ce(z, y as usize))
        .collect();
    rows.iter().fold(acc, |s, &c| s + c)
}

/// `add_ce` over logits as a backend hands them out (`Backend::with_host`).
pub fn add_ce_host(acc: f64, logits: crate::real::Host<'_>, targets: &[u32], v: usize) -> f64 {
    match logits {
        crate::real::Host::F32(z) => add_ce(acc, z, targets, v),
        crate::real::Host::F64(z) => add_ce(acc, z, targets, v),
    }
}

thread_local! {
    /// A row's exponentials for `top_k_row`, kept from step to step on each thread.
    static SCRATCH: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Per-position losses, reduced in a fixed order. Returns (loss, hard-label CE) as means.
pub fn loss_forward_backward<F: Real>(
    dlogits: Option<&mut [F]>,
    logits: &[F],
    targets: &[u32],
    distill: Option<&Distill<F>>,
    (n, v): (usize, usize),
) -> (f64, f64) {
    let inv_n = 1.0 / n as f64;
    // Dense targets (or none): each exponential computed where it is used, as genas always
    // has, so results stay what they were to the bit.
    let dense = |i: usize, drow: Option<&mut [F]>, p: Option<&[F]>| -> (f64, f64) {
        let z = &logits[i * v..(i + 1) * v];
        let y = targets[i] as usize;
        let (max, lse) = log_sum_exp(z);
        let ce = lse - z[y].to_f64();
        let mut loss = ce;
        let (alpha, temp) = distill
            .map(|d| (d.alpha, d.temperature))
            .unwrap_or((1.0, 1.0));
        let mut lse_t = 0.0;
        if let Some(p) = p {
            let p = &p[i * v..(i + 1) * v];
            let sum_t: f64 = z.iter().map(|&x| ((x - max).to_f64() / temp).exp()).sum();
            lse_t = max.to_f64() / temp + sum_t.ln();
            let mut kl = 0.0;
            // Spread top-k targets repeat one value over most of the row: its logarithm is
            // kept rather than recomputed (the same value, so the same sum).
            let (mut last_p, mut last_ln) = (f64::NAN, 0.0);
            for k in 0..v {
                let pk = p[k].to_f64();
                if pk > 0.0 {
                    if pk != last_p {
                        (last_p, last_ln) = (pk, pk.ln());
                    }
                    kl += pk * (last_ln - (z[k].to_f64() / temp - lse_t));
                }
            }
            loss = alpha * ce + (1.0 - alpha) * temp * temp * kl;
        }
        if let Some(dz) = drow {
            for k in 0..v {
                let q = (z[k].to_f64() - lse).exp();
                let mut g = alpha * (q - if k == y { 1.0 } else { 0.0 });
                if let Some(p) = p {
                    let qt = (z[k].to_f64() / temp - lse_t).exp();
                    g += (1.0 - alpha) * temp * (qt - p[i * v + k].to_f64());
                }
                dz[k] = F::from_f64(g * inv_n);
            }
        }
        (loss, ce)
    };
    let row = |i: usize, drow: Option<&mut [F]>| match distill {
        None => dense(i, drow, None),
        Some(Distill {
            soft: SoftRef::Dense(p),
            ..
        }) => dense(i, drow, Some(p)),
        Some(
            d @ Distill {
                soft: SoftRef::TopK { k, index, prob },
                ..
            },
        ) => {
            let top = (&index[i * k..(i + 1) * k], &prob[i * k..(i + 1) * k]);
            let z = &logits[i * v..(i + 1) * v];
            SCRATCH.with_borrow_mut(|scratch| {
                top_k_row(z, targets[i] as usize, top, d, inv_n, drow, scratch)
            })
        }
    };
    let rows: Vec<(f64, f64)> = match dlogits {
        Some(d) => d[..n * v]
            .par_chunks_mut(v)
            .enumerate()
            .map(|(i, dz)| row(i, Some(dz)))
            .collect(),
        None => (0..n).into_par_iter().map(|i| row(i, None)).collect(),
    };
    let (mut loss, mut ce) = (0.0, 0.0);
    for (l, c) in rows {
        loss += l;
        ce += c;
    }
    (loss * inv_n, ce * inv_n)
}

/// One row's loss (and gradient into `drow`) against top-k targets `(index, prob)`: each
/// exponential computed once (`scratch` holds the row's exp(z − max) and, at T ≠ 1,
/// exp((z − max)/T)), so a step costs what a hard-label step does plus O(k).
fn top_k_row<F: Real>(
    z: &[F],
    y: usize,
    (ix, pr): (&[u32], &[f32]),
    d: &Distill<F>,
    inv_n: f64,
    drow: Option<&mut [F]>,
    scratch: &mut Vec<f64>,
) -> (f64, f64) {
    let v = z.len();
    let (alpha, temp) = (d.alpha, d.temperature);
    let max = z.iter().fold(f64::NEG_INFINITY, |m, x| m.max(x.to_f64()));
    scratch.clear();
    scratch.resize(2 * v, 0.0);
    let (e, et) = scratch.split_at_mut(v);
    let (mut sum, mut sum_z) = (0.0, 0.0);
    for (ek, zk) in e.iter_mut().zip(z) {
        let zk = zk.to_f64();
        *ek = (zk - max).exp();
        sum += *ek;
        sum_z += zk;
    }
    let sum_t = if temp == 1.0 {
        et.copy_from_slice(e);
        sum
    } else {
        let mut s = 0.0;
        for (tk, zk) in et.iter_mut().zip(z) {
            *tk = ((zk.to_f64() - max) / temp).exp();
            s += *tk;
        }
        s
    };
    let lse = max + sum.ln();
    let lse_t = max / temp + sum_t.ln();
    let ce = lse - z[y].to_f64();
    let s = |j: usize| z[j].to_f64() / temp - lse_t;
    let s_all = sum_z / temp - v as f64 * lse_t;
    let kl = top_k_kl(s, s_all, (ix, pr), v);
    let rest = top_k_rest(pr, v);
    let loss = alpha * ce + (1.0 - alpha) * temp * temp * kl;
    if let Some(dz) = drow {
        let (inv_sum, inv_sum_t) = (1.0 / sum, 1.0 / sum_t);
        let grad = |j: usize, p: f64| {
            let hard = e[j] * inv_sum - if j == y { 1.0 } else { 0.0 };
            let soft = et[j] * inv_sum_t - p;
            F::from_f64((alpha * hard + (1.0 - alpha) * temp * soft) * inv_n)
        };
        for (j, dj) in dz.iter_mut().enumerate() {
            *dj = grad(j, rest);
        }
        // The k tokens: their own probabilities, not the rest's.
        for (&j, &pj) in ix.iter().zip(pr) {
            dz[j as usize] = grad(j as usize, f64::from(pj));
        }
    }
    (loss, ce)
}
