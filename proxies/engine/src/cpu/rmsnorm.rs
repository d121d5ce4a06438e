//! RMSNorm over the last dimension (eps 1e-5, as LayerNorm): out = x · rstd · w with
//! rstd = 1/√(mean(x²) + eps); no centring, no bias. rstd is cached for backward.

use crate::cpu::layernorm::EPS;
use crate::cpu::ops::add_partials_in_order;
use crate::real::Real;
use crate::simd::simd_dispatch;
use rayon::prelude::*;

/// Rows per task: fixed, so reductions are summed in the same order whatever the thread count.
const ROWS_PER_CHUNK: usize = 64;

simd_dispatch! {
    fn forward_rows<F: Real>(out: &mut [F], rstd: &mut [F], inp: &[F], w: &[F], c: usize) {
        let eps = F::from_f64(EPS);
        let inv_c = F::ONE / F::usize(c);
        let w = &w[..c];
        for ((o, x), r) in out.chunks_exact_mut(c).zip(inp.chunks_exact(c)).zip(rstd.iter_mut()) {
            let rs = F::ONE / (F::dot::<S>(x, x) * inv_c + eps).sqrt();
            for ((oi, &xi), &wi) in o.iter_mut().zip(x).zip(w) {
                *oi = xi * rs * wi;
            }
            *r = rs;
        }
    }
}

simd_dispatch! {
    /// dinp rows += RMSNorm′ · dout; the chunk's weight gradient goes to pw.
    fn backward_rows<F: Real>(
        dinp: &mut [F],
        pw: &mut [F],
        dout: &[F],
        inp: &[F],
        w: &[F],
        rstd: &[F],
        c: usize,
    ) {
        let inv_c = F::ONE / F::usize(c);
        let mut norm = vec![F::ZERO; c];
        let mut dnorm = vec![F::ZERO; c];
        let (w, pw) = (&w[..c], &mut pw[..c]);
        let rows = dinp.chunks_exact_mut(c).zip(inp.chunks_exact(c)).zip(dout.chunks_exact(c));
        for (((di, x), g), &rs) in rows.zip(rstd) {
            let cols = norm.iter_mut().zip(dnorm.iter_mut()).zip(pw.iter_mut());
            for (((n, dn), pwi), ((&xi, &gi), &wi)) in cols.zip(x.iter().zip(g).zip(w)) {
                *n = xi * rs;
                *dn = wi * gi;
                *pwi += *n * gi;
            }
            // n = x·rstd: ∂L/∂x = rstd · (dn − n · mean(dn ⊙ n)).
            let mean_dnorm_norm = F::dot::<S>(&dnorm, &norm) * inv_c;
            for ((d, &dn), &n) in di.iter_mut().zip(&dnorm).zip(&norm) {
                *d += (dn - n * mean_dnorm_norm) * rs;
            }
        }
    }
}

/// out[n, c] = inp · rstd · w;  rstd[n] cached.
pub fn rmsnorm_forward<F: Real>(
    out: &mut [F],
    rstd: &mut [F],
    inp: &[F],
    w: &[F],
    (n, c): (usize, usize),
) {
    let rows = ROWS_PER_CHUNK;
    out[..n * c]
        .par_chunks_mut(c * rows)
        .zip(rstd[..n].par_chunks_mut(rows))
        .zip(inp[..n * c].par_chunks(c * rows))
        .for_each(|((o, r), x)| forward_rows(o, r, x, &w[..c], c));
}

/// dinp[n, c] += RMSNorm′ · dout; dw accumulates.
pub fn rmsnorm_backward<F: Real>(
    dinp: &mut [F],
    dw: &mut [F],
    dout: &[F],
    inp: &[F],
    w: &[F],
    rstd: &[F],
    (n, c): (usize, usize),
) {
    let rows = ROWS_PER_CHUNK;
    let chunks = n.div_ceil(rows);
    let mut pw = vec![F::ZERO; chunks * c];
    dinp[..n * c]
        .par_chunks_mut(c * rows)
        .zip(pw.par_chunks_mut(c))
        .enumerate()
        .for_each(|(chunk, (d, pw))| {
            let r0 = chunk * rows;
            let r1 = r0 + d.len() / c;
            backward_rows(
                d,
                pw,
                &dout[r0 * c..r1 * c],
                &inp[r0 * c..r1 * c],
                &w[..c],
                &rstd[r0..r1],
                c,
            );
        });
    add_partials_in_order(&mut dw[..c], &pw);
}
