//! The training loss on logits (N, V) and its gradient, in one pass:
//!   L = α · CE(softmax(z), y) + (1 − α) · T² · KL(p_teacher ‖ softmax(z / T)),
//! averaged over the N positions; without teacher targets L = CE. The gradient:
//!   dz = [α (softmax(z) − onehot(y)) + (1 − α) · T · (softmax(z/T) − p_teacher)] / N.

use crate::real::Real;
use rayon::prelude::*;

/// Soft targets from a teacher: probabilities at temperature `temperature` (N, V) and the
/// weight `alpha` of the hard-label term.
pub struct Distill<'a, F> {
    pub teacher_probs: &'a [F],
    pub temperature: f64,
    pub alpha: f64,
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
    let per_row = |i: usize, drow: Option<&mut [F]>| -> (f64, f64) {
        let z = &logits[i * v..(i + 1) * v];
        let y = targets[i] as usize;
        let max = z
            .iter()
            .copied()
            .fold(F::from_f64(f64::NEG_INFINITY), F::max);
        let sum: f64 = z.iter().map(|&x| (x - max).to_f64().exp()).sum();
        let lse = max.to_f64() + sum.ln();
        let ce = lse - z[y].to_f64();
        let mut loss = ce;
        let (alpha, temp) = distill
            .map(|d| (d.alpha, d.temperature))
            .unwrap_or((1.0, 1.0));
        let mut lse_t = 0.0;
        if let Some(d) = distill {
            let p = &d.teacher_probs[i * v..(i + 1) * v];
            let sum_t: f64 = z.iter().map(|&x| ((x - max).to_f64() / temp).exp()).sum();
            lse_t = max.to_f64() / temp + sum_t.ln();
            let mut kl = 0.0;
            // Top-k targets repeat one value over most of the row: its logarithm is kept
            // rather than recomputed (the same value, so the same sum).
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
                if let Some(d) = distill {
                    let qt = (z[k].to_f64() / temp - lse_t).exp();
                    g += (1.0 - alpha) * temp * (qt - d.teacher_probs[i * v + k].to_f64());
                }
                dz[k] = F::from_f64(g * inv_n);
            }
        }
        (loss, ce)
    };
    let rows: Vec<(f64, f64)> = match dlogits {
        Some(d) => d[..n * v]
            .par_chunks_mut(v)
            .enumerate()
            .map(|(i, dz)| per_row(i, Some(dz)))
            .collect(),
        None => (0..n).into_par_iter().map(|i| per_row(i, None)).collect(),
    };
    let (mut loss, mut ce) = (0.0, 0.0);
    for (l, c) in rows {
        loss += l;
        ce += c;
    }
    (loss * inv_n, ce * inv_n)
}
