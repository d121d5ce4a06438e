//! RMSNorm over the last dimension: out = x · rstd · w with rstd = 1/√(mean(x²) + eps) (eps the
//! architecture's); no centring, no bias. rstd is cached for backward. Also over every query and
//! key head of a qkv buffer (`heads_forward`, `heads_backward`: Qwen3's q_norm and k_norm).

use crate::cpu::ops::add_partials_in_order;
use crate::real::Real;
use crate::simd::simd_dispatch;
use rayon::prelude::*;

/// Rows per task: fixed, so reductions are summed in the same order whatever the thread count.
const ROWS_PER_CHUNK: usize = 64;

simd_dispatch! {
    fn forward_rows<F: Real>(out: &mut [F], rstd: &mut [F], inp: &[F], w: &[F], c: usize, eps: f64) {
        let eps = F::from_f64(eps);
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
    eps: f64,
) {
    let rows = ROWS_PER_CHUNK;
    out[..n * c]
        .par_chunks_mut(c * rows)
        .zip(rstd[..n].par_chunks_mut(rows))
        .zip(inp[..n * c].par_chunks(c * rows))
        .for_each(|((o, r), x)| forward_rows(o, r, x, &w[..c], c, eps));
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

/// Where the query and key heads lie in a qkv buffer, for their RMSNorm (`qk_norm`).
#[derive(Clone, Copy, Debug)]
pub struct HeadsDims {
    /// Rows (B·T).
    pub n: usize,
    /// Row width: H·hd queries, G·hd keys, then the values.
    pub width: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f64,
}

impl HeadsDims {
    /// Heads normalised per row (H + G) and the values they span ((H + G)·hd).
    pub fn normed(&self) -> (usize, usize) {
        let k = self.heads + self.kv_heads;
        (k, k * self.head_dim)
    }
}

/// RMSNorm over every query head (weight `wq`) and key head (weight `wk`) of each row of `qkv`,
/// in place: the row kernels above, with a head as a row. The heads as they were go to `pre`
/// (N, (H+G)·hd) and each head's rstd to `rstd` (N, H+G), for backward; both may be empty when
/// no backward follows (a chunk's scratch then holds them).
pub fn heads_forward<F: Real>(
    qkv: &mut [F],
    pre: &mut [F],
    rstd: &mut [F],
    wq: &[F],
    wk: &[F],
    d: HeadsDims,
) {
    let (k, span) = d.normed();
    let (hd, q, rows) = (d.head_dim, d.heads * d.head_dim, ROWS_PER_CHUNK);
    let block = |qkv: &mut [F], pre: &mut [F], rstd: &mut [F]| {
        let heads = qkv.chunks_exact_mut(d.width);
        for ((row, x), rs) in heads
            .zip(pre.chunks_exact_mut(span))
            .zip(rstd.chunks_exact_mut(k))
        {
            x.copy_from_slice(&row[..span]);
            let (rq, rk) = rs.split_at_mut(d.heads);
            forward_rows(&mut row[..q], rq, &x[..q], wq, hd, d.eps);
            forward_rows(&mut row[q..span], rk, &x[q..], wk, hd, d.eps);
        }
    };
    let chunks = qkv[..d.n * d.width].par_chunks_mut(d.width * rows);
    if pre.is_empty() {
        chunks.for_each(|c| {
            let n = c.len() / d.width;
            block(c, &mut vec![F::ZERO; n * span], &mut vec![F::ZERO; n * k]);
        });
    } else {
        chunks
            .zip(pre[..d.n * span].par_chunks_mut(span * rows))
            .zip(rstd[..d.n * k].par_chunks_mut(k * rows))
            .for_each(|((c, p), r)| block(c, p, r));
    }
}

/// The backward pass of `heads_forward`: `dqkv`'s query and key heads, the gradient at the
/// norms' outputs, become the gradient at their inputs, in place (the row kernel's, a head as a
/// row); the weights' gradients are added to `dwq` and `dwk`.
#[allow(clippy::too_many_arguments)]
pub fn heads_backward<F: Real>(
    dqkv: &mut [F],
    dwq: &mut [F],
    dwk: &mut [F],
    pre: &[F],
    rstd: &[F],
    wq: &[F],
    wk: &[F],
    d: HeadsDims,
) {
    let (k, span) = d.normed();
    let (hd, q, rows) = (d.head_dim, d.heads * d.head_dim, ROWS_PER_CHUNK);
    let chunks = d.n.div_ceil(rows);
    // Per chunk, the query weight's partial gradient and the key weight's, each in one buffer.
    let (mut pq, mut pk) = (vec![F::ZERO; chunks * hd], vec![F::ZERO; chunks * hd]);
    dqkv[..d.n * d.width]
        .par_chunks_mut(d.width * rows)
        .zip(pre[..d.n * span].par_chunks(span * rows))
        .zip(rstd[..d.n * k].par_chunks(k * rows))
        .zip(pq.par_chunks_mut(hd).zip(pk.par_chunks_mut(hd)))
        .for_each(|(((block, x), rs), (pwq, pwk))| {
            let mut g = vec![F::ZERO; span];
            let rows = block.chunks_exact_mut(d.width).zip(x.chunks_exact(span));
            for ((row, x), rs) in rows.zip(rs.chunks_exact(k)) {
                // The kernel adds to its input's gradient: the output's is moved aside first.
                g.copy_from_slice(&row[..span]);
                row[..span].fill(F::ZERO);
                let (rq, rk) = rs.split_at(d.heads);
                backward_rows(&mut row[..q], pwq, &g[..q], &x[..q], wq, rq, hd);
                backward_rows(&mut row[q..span], pwk, &g[q..], &x[q..], wk, rk, hd);
            }
        });
    add_partials_in_order(&mut dwq[..hd], &pq);
    add_partials_in_order(&mut dwk[..hd], &pk);
}
