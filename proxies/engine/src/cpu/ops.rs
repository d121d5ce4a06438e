//! Small elementwise operations and reductions.

use crate::real::Real;
use crate::simd::simd_dispatch;
use rayon::prelude::*;

const CHUNK: usize = 4096;

/// x += y
pub fn add_assign<F: Real>(x: &mut [F], y: &[F]) {
    x.par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .for_each(|(x, y)| {
            for (a, &b) in x.iter_mut().zip(y) {
                *a += b;
            }
        });
}

/// dst += each `dst.len()`-long row of `partials` in turn: per-task partial sums of a
/// reduction added in task order, so the result does not depend on the thread count.
pub fn add_partials_in_order<F: Real>(dst: &mut [F], partials: &[F]) {
    for p in partials.chunks_exact(dst.len()) {
        for (a, &b) in dst.iter_mut().zip(p) {
            *a += b;
        }
    }
}

/// out = x + y
pub fn add<F: Real>(out: &mut [F], x: &[F], y: &[F]) {
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .zip(y.par_chunks(CHUNK))
        .for_each(|((o, x), y)| {
            for ((o, &a), &b) in o.iter_mut().zip(x).zip(y) {
                *o = a + b;
            }
        });
}

/// y += a · x
pub fn axpy<F: Real>(y: &mut [F], a: F, x: &[F]) {
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| {
            for (p, &q) in y.iter_mut().zip(x) {
                *p += a * q;
            }
        });
}

/// x *= mask (0/1)
pub fn mul_assign<F: Real>(x: &mut [F], mask: &[F]) {
    for (a, &m) in x.iter_mut().zip(mask) {
        *a *= m;
    }
}

simd_dispatch! {
    /// Σ x² of one chunk in f64, over 8 lanes of independent sums (one serial chain of adds
    /// would cost an add latency per element), folded in a fixed order.
    fn sum_squares_chunk<F: Real>(x: &[F], out: &mut f64) {
        let mut acc = [0f64; 8];
        let (body, tail) = x.as_chunks::<8>();
        for ch in body {
            for l in 0..8 {
                let v = ch[l].to_f64();
                acc[l] += v * v;
            }
        }
        for (l, &v) in tail.iter().enumerate() {
            acc[l] += v.to_f64() * v.to_f64();
        }
        *out = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    }
}

/// Σ x², summed per fixed chunk then in chunk order: the same bits whatever the thread count.
pub fn sum_squares<F: Real>(x: &[F]) -> f64 {
    sum_squares_of_sum(&[x], &[1.0])
}

simd_dispatch! {
    /// out = Σ_s weights[s]·parts[s][start..start + out.len()], added in part order: the same
    /// values as zeroing a buffer and `axpy`-ing each part onto it (0 + x = x; only the sign
    /// of a zero can differ).
    fn combine_chunk<F: Real>(out: &mut [F], parts: &[&[F]], weights: &[F], start: usize) {
        let len = out.len();
        for (s, (x, &a)) in parts.iter().zip(weights).enumerate() {
            let x = &x[start..start + len];
            if s == 0 {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = a * v;
                }
            } else {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o += a * v;
                }
            }
        }
    }
}

/// A gradient held as Σ_s weights[s]·parts[s], read chunk by chunk.
struct Combined<'a, F> {
    parts: &'a [&'a [F]],
    weights: Vec<F>,
    len: usize,
}

impl<'a, F: Real> Combined<'a, F> {
    fn new(parts: &'a [&'a [F]], weights: &[f64]) -> Combined<'a, F> {
        let len = parts.first().map_or(0, |p| p.len());
        assert!(parts.len() == weights.len() && parts.iter().all(|p| p.len() == len));
        Combined {
            parts,
            weights: weights.iter().map(|&a| F::from_f64(a)).collect(),
            len,
        }
    }

    /// Chunk c (elements c·CHUNK..): read in place when there is one part of weight 1,
    /// otherwise combined into `tmp`.
    fn chunk<'b>(&'b self, c: usize, tmp: &'b mut [F]) -> &'b [F] {
        let start = c * CHUNK;
        let n = CHUNK.min(self.len - start);
        if self.parts.len() == 1 && self.weights[0] == F::ONE {
            return &self.parts[0][start..start + n];
        }
        combine_chunk(&mut tmp[..n], self.parts, &self.weights, start);
        &tmp[..n]
    }
}

/// Σ (Σ_s weights[s]·parts[s])², per fixed chunk then in chunk order (as `sum_squares` of the
/// combined vector, to the bit).
pub fn sum_squares_of_sum<F: Real>(parts: &[&[F]], weights: &[f64]) -> f64 {
    let g = Combined::new(parts, weights);
    let partials: Vec<f64> = (0..g.len.div_ceil(CHUNK))
        .into_par_iter()
        .map_init(
            || vec![F::ZERO; CHUNK],
            |tmp, c| {
                let mut s = 0.0;
                sum_squares_chunk(g.chunk(c, tmp), &mut s);
                s
            },
        )
        .collect();
    partials.iter().sum()
}

/// AdamW hyper-parameters for one update.
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// 1-based step number, for bias correction.
    pub step: u64,
    /// Multiplies every gradient first (gradient clipping).
    pub grad_scale: f64,
}

simd_dispatch! {
    fn adamw_chunk<F: Real>(p: &mut [F], g: &[F], m: &mut [F], v: &mut [F], o: AdamW, c1: f64, c2: f64, wd: f64) {
        // f32 arithmetic for f32 parameters keeps this vectorised; f64 runs in f64.
        let (b1, b2) = (F::from_f64(o.beta1), F::from_f64(o.beta2));
        let (one_b1, one_b2) = (F::from_f64(1.0 - o.beta1), F::from_f64(1.0 - o.beta2));
        let (scale, lr, eps) = (F::from_f64(o.grad_scale), F::from_f64(o.lr), F::from_f64(o.eps));
        let (inv_c1, inv_c2, wd) = (F::from_f64(1.0 / c1), F::from_f64(1.0 / c2), F::from_f64(wd));
        let n = p.len().min(g.len()).min(m.len()).min(v.len());
        for i in 0..n {
            let gi = g[i] * scale;
            let mi = b1 * m[i] + one_b1 * gi;
            let vi = b2 * v[i] + one_b2 * gi * gi;
            m[i] = mi;
            v[i] = vi;
            p[i] -= lr * ((mi * inv_c1) / ((vi * inv_c2).sqrt() + eps) + wd * p[i]);
        }
    }
}

/// One decoupled-weight-decay Adam update of `param` (Loshchilov & Hutter, 2019), with the
/// gradient Σ_s weights[s]·grads[s] combined chunk by chunk as it is read.
pub fn adamw_update<F: Real>(
    param: &mut [F],
    grads: &[&[F]],
    weights: &[f64],
    m: &mut [F],
    v: &mut [F],
    o: AdamW,
    decay: bool,
) {
    let c1 = 1.0 - o.beta1.powi(o.step as i32);
    let c2 = 1.0 - o.beta2.powi(o.step as i32);
    let wd = if decay { o.weight_decay } else { 0.0 };
    let g = Combined::new(grads, weights);
    assert!(param.len() == g.len && m.len() == g.len && v.len() == g.len);
    param
        .par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each_init(
            || vec![F::ZERO; CHUNK],
            |tmp, (c, ((p, m), v))| adamw_chunk(p, g.chunk(c, tmp), m, v, o, c1, c2, wd),
        );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_squares_matches_a_plain_f64_sum_on_every_thread_count() {
        // Odd length: whole chunks, a partial chunk, and a tail shorter than 8 lanes.
        let x: Vec<f32> = (0..3 * CHUNK + 4099)
            .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) * 1e-3)
            .collect();
        let plain: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let mut bits = None;
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            let s = pool.install(|| sum_squares(&x));
            assert!((s - plain).abs() <= 1e-12 * plain, "{s} vs {plain}");
            assert_eq!(*bits.get_or_insert(s.to_bits()), s.to_bits());
        }
        assert_eq!(sum_squares::<f32>(&[]), 0.0);
    }
}
