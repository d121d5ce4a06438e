//! LayerNorm over the last dimension (eps 1e-5), with the mean and 1/std cached for backward.

use crate::engine::real::Real;
use rayon::prelude::*;

pub const EPS: f64 = 1e-5;

/// Rows per task: fixed, so reductions are summed in the same order whatever the thread count.
const ROWS_PER_CHUNK: usize = 64;

/// out[n, c] = (inp − mean) · rstd · w + b;  mean[n], rstd[n] cached.
pub fn layernorm_forward<F: Real>(
    out: &mut [F],
    mean: &mut [F],
    rstd: &mut [F],
    inp: &[F],
    w: &[F],
    b: &[F],
    (n, c): (usize, usize),
) {
    let eps = F::from_f64(EPS);
    out[..n * c]
        .par_chunks_mut(c)
        .zip(mean[..n].par_iter_mut())
        .zip(rstd[..n].par_iter_mut())
        .zip(inp[..n * c].par_chunks(c))
        .for_each(|(((o, m), r), x)| {
            let mu = x.iter().copied().sum::<F>() / F::usize(c);
            let var = x.iter().map(|&v| (v - mu) * (v - mu)).sum::<F>() / F::usize(c);
            let rs = F::ONE / (var + eps).sqrt();
            for i in 0..c {
                o[i] = (x[i] - mu) * rs * w[i] + b[i];
            }
            *m = mu;
            *r = rs;
        });
}

/// dinp[n, c] += LN′ · dout; dw, db accumulate.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward<F: Real>(
    dinp: &mut [F],
    dw: &mut [F],
    db: &mut [F],
    dout: &[F],
    inp: &[F],
    w: &[F],
    mean: &[F],
    rstd: &[F],
    (n, c): (usize, usize),
) {
    let partials: Vec<(Vec<F>, Vec<F>)> = dinp[..n * c]
        .par_chunks_mut(c * ROWS_PER_CHUNK)
        .enumerate()
        .map(|(chunk, dinp_rows)| {
            let mut pw = vec![F::ZERO; c];
            let mut pb = vec![F::ZERO; c];
            for (k, di) in dinp_rows.chunks_exact_mut(c).enumerate() {
                let row = chunk * ROWS_PER_CHUNK + k;
                let (x, g) = (&inp[row * c..(row + 1) * c], &dout[row * c..(row + 1) * c]);
                let (mu, rs) = (mean[row], rstd[row]);
                let mut mean_dnorm = F::ZERO;
                let mut mean_dnorm_norm = F::ZERO;
                for i in 0..c {
                    let norm = (x[i] - mu) * rs;
                    let dnorm = w[i] * g[i];
                    mean_dnorm += dnorm;
                    mean_dnorm_norm += dnorm * norm;
                }
                mean_dnorm /= F::usize(c);
                mean_dnorm_norm /= F::usize(c);
                for i in 0..c {
                    let norm = (x[i] - mu) * rs;
                    let dnorm = w[i] * g[i];
                    pb[i] += g[i];
                    pw[i] += norm * g[i];
                    di[i] += (dnorm - mean_dnorm - norm * mean_dnorm_norm) * rs;
                }
            }
            (pw, pb)
        })
        .collect();
    for (pw, pb) in partials {
        for i in 0..c {
            dw[i] += pw[i];
            db[i] += pb[i];
        }
    }
}
