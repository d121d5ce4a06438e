//! Causal linear attention (Katharopoulos et al., 2020) with φ(x) = elu(x) + 1:
//!   S_i = Σ_{j≤i} φ(k_j) v_jᵀ,  z_i = Σ_{j≤i} φ(k_j),  o_i = φ(q_i)ᵀ S_i / (φ(q_i) · z_i).
//! Shapes: qkv (B, T, 3C) as q | k | v with H heads of hd; out (B, T, C); den (B, H, T) caches
//! the normalisers. Work is split over the batch.

use crate::real::Real;
use crate::simd::simd_dispatch;
use rayon::prelude::*;

#[inline(always)]
pub fn phi<F: Real>(x: F) -> F {
    if x > F::ZERO {
        x + F::ONE
    } else {
        x.exp()
    }
}

#[inline(always)]
fn phi_s<F: Real, S: crate::simd::Simd>(x: F) -> F {
    if x > F::ZERO {
        x + F::ONE
    } else {
        x.exp_s::<S>()
    }
}

#[inline(always)]
fn dphi<F: Real, S: crate::simd::Simd>(x: F) -> F {
    if x > F::ZERO {
        F::ONE
    } else {
        x.exp_s::<S>()
    }
}

simd_dispatch! {
    /// One batch element: out_b (T, C), den_b (H, T) from qkv_b (T, 3C).
    fn forward_one<F: Real>(out_b: &mut [F], den_b: &mut [F], qkv_b: &[F], t: usize, heads: usize, hd: usize) {
        let c = heads * hd;
        let w = 3 * c;
        let mut s = vec![F::ZERO; hd * hd];
            let (mut z, mut fq, mut fk) = (vec![F::ZERO; hd], vec![F::ZERO; hd], vec![F::ZERO; hd]);
            for h in 0..heads {
                s.fill(F::ZERO);
                z.fill(F::ZERO);
                for i in 0..t {
                    let row = &qkv_b[i * w..(i + 1) * w];
                    for e in 0..hd {
                        fq[e] = phi_s::<F, S>(row[h * hd + e]);
                        fk[e] = phi_s::<F, S>(row[c + h * hd + e]);
                    }
                    let v = &row[2 * c + h * hd..2 * c + (h + 1) * hd];
                    for dd in 0..hd {
                        let srow = &mut s[dd * hd..(dd + 1) * hd];
                        for e in 0..hd {
                            srow[e] += fk[dd] * v[e];
                        }
                        z[dd] += fk[dd];
                    }
                    let dn = F::dot::<S>(&fq, &z);
                    den_b[h * t + i] = dn;
                    let o = &mut out_b[i * c + h * hd..i * c + (h + 1) * hd];
                    o.fill(F::ZERO);
                    for dd in 0..hd {
                        let a = fq[dd] / dn;
                        for e in 0..hd {
                            o[e] += a * s[dd * hd + e];
                        }
                    }
                }
            }
    }
}

simd_dispatch! {
    /// One batch element: dqkv_b (T, 3C).
    fn backward_one<F: Real>(
        dqkv_b: &mut [F],
        dout_b: &[F],
        qkv_b: &[F],
        out_b: &[F],
        den_b: &[F],
        t: usize,
        heads: usize,
        hd: usize,
    ) {
        let c = heads * hd;
        let w = 3 * c;
        let mut s = vec![F::ZERO; hd * hd];
            let mut z = vec![F::ZERO; hd];
            let mut dnum = vec![F::ZERO; t * hd];
            let mut dden = vec![F::ZERO; t];
            let (mut fq, mut fk) = (vec![F::ZERO; hd], vec![F::ZERO; hd]);
            for h in 0..heads {
                // Forward sweep: rebuild S_i, z_i; dφq_i = S_i·dnum_i + z_i·dden_i with
                // dnum_i = do_i / den_i and dden_i = −(do_i · o_i) / den_i.
                s.fill(F::ZERO);
                z.fill(F::ZERO);
                for i in 0..t {
                    let row = &qkv_b[i * w..(i + 1) * w];
                    let v = &row[2 * c + h * hd..2 * c + (h + 1) * hd];
                    for dd in 0..hd {
                        fk[dd] = phi_s::<F, S>(row[c + h * hd + dd]);
                        for e in 0..hd {
                            s[dd * hd + e] += fk[dd] * v[e];
                        }
                        z[dd] += fk[dd];
                    }
                    let g = &dout_b[i * c + h * hd..i * c + (h + 1) * hd];
                    let o = &out_b[i * c + h * hd..i * c + (h + 1) * hd];
                    let dn = den_b[h * t + i];
                    let dd_i = -F::dot::<S>(g, o) / dn;
                    dden[i] = dd_i;
                    for e in 0..hd {
                        dnum[i * hd + e] = g[e] / dn;
                    }
                    for dd in 0..hd {
                        let q = row[h * hd + dd];
                        let dfq = F::dot::<S>(&s[dd * hd..(dd + 1) * hd], &dnum[i * hd..(i + 1) * hd])
                            + z[dd] * dd_i;
                        dqkv_b[i * w + h * hd + dd] = dfq * dphi::<F, S>(q);
                    }
                }
                // Reverse sweep: R_j = Σ_{i≥j} φq_i dnum_iᵀ, r_j = Σ_{i≥j} dden_i φq_i;
                // dφk_j = R_j v_j + r_j;  dv_j = R_jᵀ φk_j.
                s.fill(F::ZERO); // R
                z.fill(F::ZERO); // r
                for j in (0..t).rev() {
                    let row = &qkv_b[j * w..(j + 1) * w];
                    for dd in 0..hd {
                        fq[dd] = phi_s::<F, S>(row[h * hd + dd]);
                        fk[dd] = phi_s::<F, S>(row[c + h * hd + dd]);
                    }
                    for dd in 0..hd {
                        let rrow = &mut s[dd * hd..(dd + 1) * hd];
                        for e in 0..hd {
                            rrow[e] += fq[dd] * dnum[j * hd + e];
                        }
                        z[dd] += dden[j] * fq[dd];
                    }
                    let v = &row[2 * c + h * hd..2 * c + (h + 1) * hd];
                    for dd in 0..hd {
                        let dfk = F::dot::<S>(&s[dd * hd..(dd + 1) * hd], v) + z[dd];
                        dqkv_b[j * w + c + h * hd + dd] = dfk * dphi::<F, S>(row[c + h * hd + dd]);
                    }
                    for e in 0..hd {
                        let mut acc = F::ZERO;
                        for dd in 0..hd {
                            acc += s[dd * hd + e] * fk[dd];
                        }
                        dqkv_b[j * w + 2 * c + h * hd + e] = acc;
                    }
                }
            }
    }
}

pub fn linear_attention_forward<F: Real>(
    out: &mut [F],
    den: &mut [F],
    qkv: &[F],
    (b, t, heads, hd): (usize, usize, usize, usize),
) {
    let c = heads * hd;
    let w = 3 * c;
    out[..b * t * c]
        .par_chunks_mut(t * c)
        .zip(den[..b * heads * t].par_chunks_mut(heads * t))
        .enumerate()
        .for_each(|(bi, (out_b, den_b))| {
            forward_one(
                out_b,
                den_b,
                &qkv[bi * t * w..(bi + 1) * t * w],
                t,
                heads,
                hd,
            )
        });
}

/// Writes dqkv (B, T, 3C). Needs the forward output `out` and the cached normalisers `den`.
pub fn linear_attention_backward<F: Real>(
    dqkv: &mut [F],
    dout: &[F],
    qkv: &[F],
    out: &[F],
    den: &[F],
    (b, t, heads, hd): (usize, usize, usize, usize),
) {
    let c = heads * hd;
    let w = 3 * c;
    dqkv[..b * t * w]
        .par_chunks_mut(t * w)
        .enumerate()
        .for_each(|(bi, dqkv_b)| {
            let rows = bi * t * c..(bi + 1) * t * c;
            backward_one(
                dqkv_b,
                &dout[rows.clone()],
                &qkv[bi * t * w..(bi + 1) * t * w],
                &out[rows],
                &den[bi * heads * t..(bi + 1) * heads * t],
                t,
                heads,
                hd,
            )
        });
}
