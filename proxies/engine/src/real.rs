//! The scalar type of the engine. Training runs in f32; the gradient checks run the very same
//! kernels in f64 so that central finite differences can be compared at tight tolerances.

use crate::simd::Simd;
use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// Values as the host holds them, in the engine's scalar: what a reader of a model's logits
/// gets without a copy (`Backend::with_host`).
#[derive(Clone, Copy, Debug)]
pub enum Host<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl Host<'_> {
    pub fn len(&self) -> usize {
        match self {
            Host::F32(x) => x.len(),
            Host::F64(x) => x.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends values `range`, widened to f64 (exact), to `out`.
    pub fn extend_f64(&self, range: std::ops::Range<usize>, out: &mut Vec<f64>) {
        match self {
            Host::F32(x) => out.extend(x[range].iter().map(|&v| f64::from(v))),
            Host::F64(x) => out.extend_from_slice(&x[range]),
        }
    }
    /// The values widened to f64 (exact).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            Host::F32(x) => x.iter().map(|&v| f64::from(v)).collect(),
            Host::F64(x) => x.to_vec(),
        }
    }
}

pub trait Real:
    Copy
    + Send
    + Sync
    + Debug
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn erf(self) -> Self;
    fn max(self, other: Self) -> Self;
    fn abs(self) -> Self;
    fn usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
    /// `values` as a `Host` view.
    fn host(values: &[Self]) -> Host<'_>;
    /// f32 values as this type: the same vector for f32, widened for f64.
    fn vec_from_f32(v: Vec<f32>) -> Vec<Self> {
        v.into_iter()
            .map(|x| Self::from_f64(f64::from(x)))
            .collect()
    }
    /// exp with `S`'s instructions (f32: the FMA polynomial; f64: libm).
    #[inline(always)]
    fn exp_s<S: Simd>(self) -> Self {
        self.exp()
    }
    /// erf with `S`'s instructions (f32: the FMA polynomial; f64: libm).
    #[inline(always)]
    fn erf_s<S: Simd>(self) -> Self {
        self.erf()
    }
    /// Σ a·b with the vector instructions of `S`.
    #[inline(always)]
    fn dot<S: Simd>(a: &[Self], b: &[Self]) -> Self {
        dot(a, b)
    }
    /// C[R×N] (+)= A[R×K] · B[K×N] (R ≤ 8) with the vector instructions of `S`; see
    /// `Simd::small_gemm_f32` for the layout.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn small_gemm<S: Simd>(
        c: &mut [Self],
        sc: usize,
        a: &[Self],
        sa: (usize, usize),
        b: &[Self],
        sb: usize,
        rkn: (usize, usize, usize),
        acc: bool,
    ) {
        crate::simd::small_gemm_scalar(c, sc, a, sa, b, sb, rkn, acc)
    }
    /// dst[e·ds + j] = src[j·ss + e] for j < rows, e < cols, with `S`'s instructions.
    #[inline(always)]
    fn transpose<S: Simd>(
        dst: &mut [Self],
        ds: usize,
        src: &[Self],
        ss: usize,
        rows: usize,
        cols: usize,
    ) {
        crate::simd::transpose_scalar(dst, ds, src, ss, rows, cols)
    }
    /// Σ x with the vector instructions of `S` (order differs from sequential summation).
    #[inline(always)]
    fn sum_of<S: Simd>(x: &[Self]) -> Self {
        x.iter().copied().sum()
    }
    /// max x with the vector instructions of `S`.
    #[inline(always)]
    fn max_of<S: Simd>(x: &[Self]) -> Self {
        x.iter()
            .copied()
            .fold(Self::from_f64(f64::NEG_INFINITY), Self::max)
    }
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    fn host(values: &[f32]) -> Host<'_> {
        Host::F32(values)
    }
    fn vec_from_f32(v: Vec<f32>) -> Vec<f32> {
        v
    }
    #[inline]
    fn from_f64(x: f64) -> f32 {
        x as f32
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn exp(self) -> f32 {
        crate::simd::exp_f32::<crate::simd::Scalar>(self)
    }
    #[inline]
    fn ln(self) -> f32 {
        f32::ln(self)
    }
    #[inline]
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn erf(self) -> f32 {
        crate::simd::erf_f32::<crate::simd::Scalar>(self)
    }
    #[inline]
    fn max(self, o: f32) -> f32 {
        f32::max(self, o)
    }
    #[inline]
    fn abs(self) -> f32 {
        f32::abs(self)
    }
    #[inline(always)]
    fn exp_s<S: Simd>(self) -> f32 {
        crate::simd::exp_f32::<S>(self)
    }
    #[inline(always)]
    fn erf_s<S: Simd>(self) -> f32 {
        crate::simd::erf_f32::<S>(self)
    }
    #[inline(always)]
    fn dot<S: Simd>(a: &[f32], b: &[f32]) -> f32 {
        S::dot_f32(a, b)
    }
    #[inline(always)]
    fn small_gemm<S: Simd>(
        c: &mut [f32],
        sc: usize,
        a: &[f32],
        sa: (usize, usize),
        b: &[f32],
        sb: usize,
        rkn: (usize, usize, usize),
        acc: bool,
    ) {
        S::small_gemm_f32(c, sc, a, sa, b, sb, rkn, acc)
    }
    #[inline(always)]
    fn transpose<S: Simd>(
        dst: &mut [f32],
        ds: usize,
        src: &[f32],
        ss: usize,
        rows: usize,
        cols: usize,
    ) {
        S::transpose_f32(dst, ds, src, ss, rows, cols)
    }
    #[inline(always)]
    fn sum_of<S: Simd>(x: &[f32]) -> f32 {
        S::sum_f32(x)
    }
    #[inline(always)]
    fn max_of<S: Simd>(x: &[f32]) -> f32 {
        S::max_f32(x)
    }
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    fn host(values: &[f64]) -> Host<'_> {
        Host::F64(values)
    }
    #[inline]
    fn from_f64(x: f64) -> f64 {
        x
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline]
    fn exp(self) -> f64 {
        f64::exp(self)
    }
    #[inline]
    fn ln(self) -> f64 {
        f64::ln(self)
    }
    #[inline]
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
    #[inline]
    fn erf(self) -> f64 {
        libm::erf(self)
    }
    #[inline]
    fn max(self, o: f64) -> f64 {
        f64::max(self, o)
    }
    #[inline]
    fn abs(self) -> f64 {
        f64::abs(self)
    }
}

/// Lanes of the fixed-size chunks below: one AVX-512 register of f32 (two AVX2 registers).
const LANES: usize = 16;

/// Dot product over fixed 16-element chunks (each chunk is one multiply-add per lane, kept in
/// 16 independent accumulators), then the remainder. Fixed chunks matter: a plain loop is
/// vectorised with an interleave factor, so vectors shorter than ~64 (attention heads) would
/// run entirely in the scalar remainder.
#[inline(always)]
pub fn dot<F: Real>(a: &[F], b: &[F]) -> F {
    let n = a.len().min(b.len());
    let (ac, ar) = a[..n].as_chunks::<LANES>();
    let (bc, br) = b[..n].as_chunks::<LANES>();
    let mut acc = [F::ZERO; LANES];
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = F::ZERO;
    for (x, y) in ar.iter().zip(br) {
        s += *x * *y;
    }
    // Pairwise reduction of the lanes.
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] += acc[l + width];
        }
        width /= 2;
    }
    acc[0] + s
}
