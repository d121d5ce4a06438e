//! FFN non-linearities, elementwise: exact GELU, ReLU, and SwiGLU's silu(gate) ⊙ up.
//! Each parallel chunk runs a `simd_dispatch!` kernel, so the f32 `exp`/`erf` polynomials
//! vectorise.

use crate::engine::real::Real;
use crate::engine::simd::simd_dispatch;
use rayon::prelude::*;

const CHUNK: usize = 4096;

#[inline(always)]
fn gelu<F: Real>(x: F) -> F {
    let half = F::from_f64(0.5);
    half * x * (F::ONE + (x * F::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf())
}

/// d gelu / dx = Φ(x) + x·φ(x).
#[inline(always)]
fn gelu_grad<F: Real>(x: F) -> F {
    let half = F::from_f64(0.5);
    let cdf = half * (F::ONE + (x * F::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf());
    let pdf = (-half * x * x).exp() * F::from_f64(1.0 / (2.0 * std::f64::consts::PI).sqrt());
    cdf + x * pdf
}

#[inline(always)]
fn sigmoid<F: Real>(x: F) -> F {
    F::ONE / (F::ONE + (-x).exp())
}

simd_dispatch! {
    fn gelu_chunk<F: Real>(o: &mut [F], x: &[F]) {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = gelu(x);
        }
    }
}

simd_dispatch! {
    fn gelu_grad_chunk<F: Real>(d: &mut [F], x: &[F], g: &[F]) {
        for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
            *d = g * gelu_grad(x);
        }
    }
}

simd_dispatch! {
    fn relu_chunk<F: Real>(o: &mut [F], x: &[F]) {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = if x > F::ZERO { x } else { F::ZERO };
        }
    }
}

simd_dispatch! {
    fn relu_grad_chunk<F: Real>(d: &mut [F], x: &[F], g: &[F]) {
        for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
            *d = if x > F::ZERO { g } else { F::ZERO };
        }
    }
}

simd_dispatch! {
    fn swiglu_chunk<F: Real>(o: &mut [F], g: &[F], u: &[F]) {
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = g * sigmoid(g) * u;
        }
    }
}

simd_dispatch! {
    fn swiglu_grad_chunk<F: Real>(dg: &mut [F], du: &mut [F], g: &[F], u: &[F], d: &[F]) {
        let n = dg.len().min(du.len()).min(g.len()).min(u.len()).min(d.len());
        for i in 0..n {
            let s = sigmoid(g[i]);
            dg[i] = d[i] * u[i] * s * (F::ONE + g[i] * (F::ONE - s));
            du[i] = d[i] * g[i] * s;
        }
    }
}

pub fn gelu_forward<F: Real>(out: &mut [F], inp: &[F]) {
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(o, x)| gelu_chunk(o, x));
}

pub fn gelu_backward<F: Real>(dinp: &mut [F], inp: &[F], dout: &[F]) {
    dinp.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .zip(dout.par_chunks(CHUNK))
        .for_each(|((d, x), g)| gelu_grad_chunk(d, x, g));
}

pub fn relu_forward<F: Real>(out: &mut [F], inp: &[F]) {
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(o, x)| relu_chunk(o, x));
}

pub fn relu_backward<F: Real>(dinp: &mut [F], inp: &[F], dout: &[F]) {
    dinp.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .zip(dout.par_chunks(CHUNK))
        .for_each(|((d, x), g)| relu_grad_chunk(d, x, g));
}

/// out = silu(gate) ⊙ up.
pub fn swiglu_forward<F: Real>(out: &mut [F], gate: &[F], up: &[F]) {
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK))
        .zip(up.par_chunks(CHUNK))
        .for_each(|((o, g), u)| swiglu_chunk(o, g, u));
}

/// dgate = dout · up · σ(g)(1 + g(1 − σ(g)));  dup = dout · silu(g).
pub fn swiglu_backward<F: Real>(dgate: &mut [F], dup: &mut [F], gate: &[F], up: &[F], dout: &[F]) {
    dgate
        .par_chunks_mut(CHUNK)
        .zip(dup.par_chunks_mut(CHUNK))
        .zip(gate.par_chunks(CHUNK))
        .zip(up.par_chunks(CHUNK))
        .zip(dout.par_chunks(CHUNK))
        .for_each(|((((dg, du), g), u), d)| swiglu_grad_chunk(dg, du, g, u, d));
}
