//! FFN non-linearities, elementwise: exact GELU, its tanh approximation, ReLU, and SwiGLU's
//! silu(gate) ⊙ up.
//! Each parallel chunk runs a `simd_dispatch!` kernel, so the f32 `exp`/`erf` polynomials
//! vectorise.

use crate::backend::Act;
use crate::cpu::ops::add_partials_in_order;
use crate::real::Real;
use crate::simd::{simd_dispatch, Simd};
use rayon::prelude::*;

const CHUNK: usize = 4096;

#[inline(always)]
fn gelu<F: Real, S: Simd>(x: F) -> F {
    let half = F::from_f64(0.5);
    half * x * (F::ONE + (x * F::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf_s::<S>())
}

/// d gelu / dx = Φ(x) + x·φ(x), with Φ(x) = gelu(x) / x taken from the forward output `y`
/// (one exp instead of erf and exp); within |x| < 1e-3, Φ(x) = ½ + x·φ(0) to f32 precision.
#[inline(always)]
fn gelu_grad<F: Real, S: Simd>(x: F, y: F) -> F {
    let half = F::from_f64(0.5);
    let inv_sqrt_2pi = F::from_f64(1.0 / (2.0 * std::f64::consts::PI).sqrt());
    let pdf = (-half * x * x).exp_s::<S>() * inv_sqrt_2pi;
    let near = x.abs() < F::from_f64(1e-3);
    let cdf = if near { half + x * inv_sqrt_2pi } else { y / x };
    cdf + x * pdf
}

/// √(2/π) and the cubic coefficient of GELU's tanh approximation.
const TANH_C: f64 = 0.797_884_560_802_865_4;
const TANH_A: f64 = 0.044_715;

/// tanh(u) = 1 − 2 / (e^{2u} + 1): ±1 in the limits, no NaN for large |u|.
#[inline(always)]
fn tanh<F: Real, S: Simd>(u: F) -> F {
    let two = F::from_f64(2.0);
    F::ONE - two / ((two * u).exp_s::<S>() + F::ONE)
}

/// ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
#[inline(always)]
fn gelu_tanh<F: Real, S: Simd>(x: F) -> F {
    let u = F::from_f64(TANH_C) * (x + F::from_f64(TANH_A) * x * x * x);
    F::from_f64(0.5) * x * (F::ONE + tanh::<F, S>(u))
}

/// d/dx: ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²), t = tanh(u).
#[inline(always)]
fn gelu_tanh_grad<F: Real, S: Simd>(x: F) -> F {
    let c = F::from_f64(TANH_C);
    let a = F::from_f64(TANH_A);
    let half = F::from_f64(0.5);
    let t = tanh::<F, S>(c * (x + a * x * x * x));
    half * (F::ONE + t) + half * x * (F::ONE - t * t) * c * (F::ONE + F::from_f64(3.0) * a * x * x)
}

#[inline(always)]
fn sigmoid<F: Real, S: Simd>(x: F) -> F {
    F::ONE / (F::ONE + (-x).exp_s::<S>())
}

simd_dispatch! {
    fn gelu_chunk<F: Real>(o: &mut [F], x: &[F]) {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = gelu::<F, S>(x);
        }
    }
}

simd_dispatch! {
    /// d = d · gelu′(x): in place, so the result overwrites lines already in cache.
    fn gelu_grad_chunk<F: Real>(d: &mut [F], x: &[F], y: &[F]) {
        for ((d, &x), &y) in d.iter_mut().zip(x).zip(y) {
            *d *= gelu_grad::<F, S>(x, y);
        }
    }
}

simd_dispatch! {
    fn gelu_tanh_chunk<F: Real>(o: &mut [F], x: &[F]) {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = gelu_tanh::<F, S>(x);
        }
    }
}

simd_dispatch! {
    fn gelu_tanh_grad_chunk<F: Real>(d: &mut [F], x: &[F]) {
        for (d, &x) in d.iter_mut().zip(x) {
            *d *= gelu_tanh_grad::<F, S>(x);
        }
    }
}

simd_dispatch! {
    /// out = gelu_tanh(pre + bias), over whole rows of `bias.len()`.
    fn bias_gelu_tanh_rows<F: Real>(out: &mut [F], pre: &[F], bias: &[F]) {
        for (o, p) in out.chunks_exact_mut(bias.len()).zip(pre.chunks_exact(bias.len())) {
            for ((o, &p), &b) in o.iter_mut().zip(p).zip(bias) {
                *o = gelu_tanh::<F, S>(p + b);
            }
        }
    }
}

simd_dispatch! {
    /// d = d · gelu_tanh′(pre + bias) in place and db += d, over whole rows of `bias.len()`.
    fn bias_gelu_tanh_grad_rows<F: Real>(d: &mut [F], db: &mut [F], pre: &[F], bias: &[F]) {
        let w = bias.len();
        let db = &mut db[..w];
        for (d, p) in d.chunks_exact_mut(w).zip(pre.chunks_exact(w)) {
            for ((d, db), (&p, &b)) in d.iter_mut().zip(db.iter_mut()).zip(p.iter().zip(bias)) {
                *d *= gelu_tanh_grad::<F, S>(p + b);
                *db += *d;
            }
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
    fn relu_grad_chunk<F: Real>(d: &mut [F], x: &[F]) {
        for (d, &x) in d.iter_mut().zip(x) {
            *d = if x > F::ZERO { *d } else { F::ZERO };
        }
    }
}

simd_dispatch! {
    fn swiglu_chunk<F: Real>(o: &mut [F], g: &[F], u: &[F]) {
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = g * sigmoid::<F, S>(g) * u;
        }
    }
}

simd_dispatch! {
    fn swiglu_grad_chunk<F: Real>(dg: &mut [F], du: &mut [F], g: &[F], u: &[F], d: &[F]) {
        let n = dg.len().min(du.len()).min(g.len()).min(u.len()).min(d.len());
        for i in 0..n {
            let s = sigmoid::<F, S>(g[i]);
            dg[i] = d[i] * u[i] * s * (F::ONE + g[i] * (F::ONE - s));
            du[i] = d[i] * g[i] * s;
        }
    }
}

simd_dispatch! {
    /// out = gelu(pre + bias), over whole rows of `bias.len()`.
    fn bias_gelu_rows<F: Real>(out: &mut [F], pre: &[F], bias: &[F]) {
        for (o, p) in out.chunks_exact_mut(bias.len()).zip(pre.chunks_exact(bias.len())) {
            for ((o, &p), &b) in o.iter_mut().zip(p).zip(bias) {
                *o = gelu::<F, S>(p + b);
            }
        }
    }
}

simd_dispatch! {
    /// out = relu(pre + bias), over whole rows of `bias.len()`.
    fn bias_relu_rows<F: Real>(out: &mut [F], pre: &[F], bias: &[F]) {
        for (o, p) in out.chunks_exact_mut(bias.len()).zip(pre.chunks_exact(bias.len())) {
            for ((o, &p), &b) in o.iter_mut().zip(p).zip(bias) {
                let x = p + b;
                *o = if x > F::ZERO { x } else { F::ZERO };
            }
        }
    }
}

simd_dispatch! {
    /// d = d · gelu′(pre + bias) in place and db += d, over whole rows of `bias.len()`.
    fn bias_gelu_grad_rows<F: Real>(d: &mut [F], db: &mut [F], pre: &[F], out: &[F], bias: &[F]) {
        let w = bias.len();
        let db = &mut db[..w];
        for ((d, p), y) in d.chunks_exact_mut(w).zip(pre.chunks_exact(w)).zip(out.chunks_exact(w)) {
            for ((d, db), ((&p, &y), &b)) in d.iter_mut().zip(db.iter_mut()).zip(p.iter().zip(y).zip(bias)) {
                *d *= gelu_grad::<F, S>(p + b, y);
                *db += *d;
            }
        }
    }
}

simd_dispatch! {
    /// d = d · relu′(pre + bias) in place and db += d, over whole rows of `bias.len()`.
    fn bias_relu_grad_rows<F: Real>(d: &mut [F], db: &mut [F], pre: &[F], bias: &[F]) {
        let w = bias.len();
        let db = &mut db[..w];
        for (d, p) in d.chunks_exact_mut(w).zip(pre.chunks_exact(w)) {
            for ((d, db), (&p, &b)) in d.iter_mut().zip(db.iter_mut()).zip(p.iter().zip(bias)) {
                *d = if p + b > F::ZERO { *d } else { F::ZERO };
                *db += *d;
            }
        }
    }
}

/// out = gelu(pre + bias) (or relu) over (rows, width), the bias added per row: a linear
/// layer's bias applied in the activation's pass rather than laid under the matrix product
/// that wrote `pre`. `pre` stays as the product left it; backward adds the bias again
/// (`bias_act_backward`) instead of this pass writing the sums back.
pub fn bias_act_forward<F: Real>(
    act: Act,
    out: &mut [F],
    pre: &[F],
    bias: &[F],
    (rows, width): (usize, usize),
) {
    let bias = &bias[..width];
    let per_task = CHUNK.div_ceil(width).max(1) * width;
    out[..rows * width]
        .par_chunks_mut(per_task)
        .zip(pre[..rows * width].par_chunks(per_task))
        .for_each(|(o, p)| match act {
            Act::Gelu => bias_gelu_rows(o, p, bias),
            Act::GeluTanh => bias_gelu_tanh_rows(o, p, bias),
            Act::Relu => bias_relu_rows(o, p, bias),
        });
}

/// Rows per task of `bias_act_backward`: fixed, so the bias gradient is summed in the same
/// order whatever the thread count.
const GRAD_ROWS: usize = 16;

/// Backward of `bias_act_forward`: d = d · act′(pre + bias) in place (dout in, dinp out), and
/// dbias += Σ_rows d, the bias gradient taken in the same pass instead of a second read of d.
pub fn bias_act_backward<F: Real>(
    act: Act,
    d: &mut [F],
    dbias: &mut [F],
    pre: &[F],
    out: &[F],
    bias: &[F],
    (rows, width): (usize, usize),
) {
    let bias = &bias[..width];
    let per_task = GRAD_ROWS * width;
    // One row of partial bias gradient per task, in one buffer.
    let mut partials = vec![F::ZERO; rows.div_ceil(GRAD_ROWS) * width];
    d[..rows * width]
        .par_chunks_mut(per_task)
        .zip(pre[..rows * width].par_chunks(per_task))
        .zip(out[..rows * width].par_chunks(per_task))
        .zip(partials.par_chunks_mut(width))
        .for_each(|(((d, p), y), db)| match act {
            Act::Gelu => bias_gelu_grad_rows(d, db, p, y, bias),
            Act::GeluTanh => bias_gelu_tanh_grad_rows(d, db, p, bias),
            Act::Relu => bias_relu_grad_rows(d, db, p, bias),
        });
    add_partials_in_order(&mut dbias[..width], &partials);
}

pub fn gelu_forward<F: Real>(out: &mut [F], inp: &[F]) {
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(o, x)| gelu_chunk(o, x));
}

/// d = d · gelu′(inp) in place (dout in, dinp out), given the forward output `out` = gelu(inp).
pub fn gelu_backward<F: Real>(d: &mut [F], inp: &[F], out: &[F]) {
    d.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .zip(out.par_chunks(CHUNK))
        .for_each(|((d, x), y)| gelu_grad_chunk(d, x, y));
}

pub fn gelu_tanh_forward<F: Real>(out: &mut [F], inp: &[F]) {
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(o, x)| gelu_tanh_chunk(o, x));
}

/// d = d · gelu_tanh′(inp) in place (dout in, dinp out).
pub fn gelu_tanh_backward<F: Real>(d: &mut [F], inp: &[F]) {
    d.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(d, x)| gelu_tanh_grad_chunk(d, x));
}

pub fn relu_forward<F: Real>(out: &mut [F], inp: &[F]) {
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(o, x)| relu_chunk(o, x));
}

/// d = d · relu′(inp) in place (dout in, dinp out).
pub fn relu_backward<F: Real>(d: &mut [F], inp: &[F]) {
    d.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(d, x)| relu_grad_chunk(d, x));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 kernels (polynomial exp/erf) against the f64 ones (libm) over [−8, 8].
    #[test]
    fn f32_gelu_and_its_gradient_match_f64_to_float_precision() {
        let xs64: Vec<f64> = (0..16_001).map(|i| -8.0 + i as f64 * 0.001).collect();
        let xs32: Vec<f32> = xs64.iter().map(|&x| x as f32).collect();
        let (mut y32, mut y64) = (vec![0f32; xs32.len()], vec![0f64; xs64.len()]);
        gelu_forward(&mut y32, &xs32);
        gelu_forward(&mut y64, &xs64);
        let (mut d32, mut d64) = (vec![1f32; xs32.len()], vec![1f64; xs64.len()]);
        gelu_backward(&mut d32, &xs32, &y32);
        gelu_backward(&mut d64, &xs64, &y64);
        for i in 0..xs64.len() {
            let x = xs32[i] as f64; // compare at the f32 input exactly
            let exact = 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
            let err = (y32[i] as f64 - exact).abs();
            // Relative accuracy, plus |x|·ulp(1)-sized slack where 1 + erf cancels (x ≪ 0),
            // exactly as an f32 evaluation of 0.5·x·(1 + erf(x/√2)) behaves.
            assert!(
                err <= 4e-7 * exact.abs() + 1e-7 * x.abs(),
                "gelu({x}) = {} vs {exact}",
                y32[i]
            );
            let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
            let dexact = cdf + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!(
                (d32[i] as f64 - dexact).abs() < 1e-6,
                "gelu'({x}) = {} vs {dexact}",
                d32[i]
            );
            assert!((d64[i] - dexact).abs() < 1e-9 || (xs64[i] - x).abs() > 0.0);
        }
    }
}
