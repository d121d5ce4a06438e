//! LayerNorm over the last dimension (eps the architecture's, 1e-5 unless it names another),
//! with the mean and 1/std cached for backward.

use crate::cpu::ops::add_partials_in_order;
use crate::real::Real;
use crate::simd::simd_dispatch;
use rayon::prelude::*;

/// Rows per task: fixed, so reductions are summed in the same order whatever the thread count.
const ROWS_PER_CHUNK: usize = 64;

simd_dispatch! {
    fn forward_rows<F: Real>(out: &mut [F], mean: &mut [F], rstd: &mut [F], inp: &[F], w: &[F], b: &[F], c: usize, eps: f64) {
        let eps = F::from_f64(eps);
        let inv_c = F::ONE / F::usize(c);
        // Zipped iterators over slices cut to c: indexed loops over slices of unproven length
        // keep a bounds check per element and stay scalar.
        let (w, b) = (&w[..c], &b[..c]);
        let rows = out.chunks_exact_mut(c).zip(inp.chunks_exact(c));
        for ((o, x), (m, r)) in rows.zip(mean.iter_mut().zip(rstd.iter_mut())) {
            let mu = F::sum_of::<S>(x) * inv_c;
            // Two passes (centre, then square) keep the variance accurate for large means.
            for (oi, &xi) in o.iter_mut().zip(x) {
                *oi = xi - mu;
            }
            let var = F::dot::<S>(o, o) * inv_c;
            let rs = F::ONE / (var + eps).sqrt();
            for ((oi, &wi), &bi) in o.iter_mut().zip(w).zip(b) {
                *oi = *oi * rs * wi + bi;
            }
            *m = mu;
            *r = rs;
        }
    }
}

simd_dispatch! {
    /// dinp rows += LN′ · dout; the chunk's weight and bias gradients go to pw, pb.
    fn backward_rows<F: Real>(
        dinp: &mut [F],
        pw: &mut [F],
        pb: &mut [F],
        dout: &[F],
        inp: &[F],
        w: &[F],
        mean: &[F],
        rstd: &[F],
        c: usize,
    ) {
        let inv_c = F::ONE / F::usize(c);
        let mut norm = vec![F::ZERO; c];
        let mut dnorm = vec![F::ZERO; c];
        // Every per-element loop zips slices cut to c (see forward_rows).
        let (w, pw, pb) = (&w[..c], &mut pw[..c], &mut pb[..c]);
        let rows = dinp.chunks_exact_mut(c).zip(inp.chunks_exact(c)).zip(dout.chunks_exact(c));
        for (((di, x), g), (&mu, &rs)) in rows.zip(mean.iter().zip(rstd)) {
            let cols = norm.iter_mut().zip(dnorm.iter_mut()).zip(pw.iter_mut().zip(pb.iter_mut()));
            for (((n, dn), (pwi, pbi)), ((&xi, &gi), &wi)) in cols.zip(x.iter().zip(g).zip(w)) {
                *n = (xi - mu) * rs;
                *dn = wi * gi;
                *pbi += gi;
                *pwi += *n * gi;
            }
            let mean_dnorm = F::sum_of::<S>(&dnorm) * inv_c;
            let mean_dnorm_norm = F::dot::<S>(&dnorm, &norm) * inv_c;
            for ((d, &dn), &n) in di.iter_mut().zip(&dnorm).zip(&norm) {
                *d += (dn - mean_dnorm - n * mean_dnorm_norm) * rs;
            }
        }
    }
}

/// out[n, c] = (inp − mean) · rstd · w + b, rstd = 1/√(var + eps);  mean[n], rstd[n] cached.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward<F: Real>(
    out: &mut [F],
    mean: &mut [F],
    rstd: &mut [F],
    inp: &[F],
    w: &[F],
    b: &[F],
    (n, c): (usize, usize),
    eps: f64,
) {
    let rows = ROWS_PER_CHUNK;
    out[..n * c]
        .par_chunks_mut(c * rows)
        .zip(mean[..n].par_chunks_mut(rows))
        .zip(rstd[..n].par_chunks_mut(rows))
        .zip(inp[..n * c].par_chunks(c * rows))
        .for_each(|(((o, m), r), x)| forward_rows(o, m, r, x, &w[..c], &b[..c], c, eps));
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
    let rows = ROWS_PER_CHUNK;
    // One row of partial weight and bias gradient per chunk, in one buffer each.
    let chunks = n.div_ceil(rows);
    let (mut pw, mut pb) = (vec![F::ZERO; chunks * c], vec![F::ZERO; chunks * c]);
    dinp[..n * c]
        .par_chunks_mut(c * rows)
        .zip(pw.par_chunks_mut(c).zip(pb.par_chunks_mut(c)))
        .enumerate()
        .for_each(|(chunk, (d, (pw, pb)))| {
            let r0 = chunk * rows;
            let r1 = r0 + d.len() / c;
            backward_rows(
                d,
                pw,
                pb,
                &dout[r0 * c..r1 * c],
                &inp[r0 * c..r1 * c],
                &w[..c],
                &mean[r0..r1],
                &rstd[r0..r1],
                c,
            );
        });
    add_partials_in_order(&mut dw[..c], &pw);
    add_partials_in_order(&mut db[..c], &pb);
}
