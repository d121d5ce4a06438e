//! Runtime CPU-feature dispatch for the engine's own loops (the `gemm` crate dispatches its own).
//!
//! `simd_dispatch!` compiles a kernel's inner work for AVX-512, AVX2+FMA and plain x86-64 and
//! picks one at run time, so a binary built for any x86-64 still uses the widest vectors the
//! machine offers.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Avx512,
    Avx2,
    Baseline,
}

/// The instruction set the engine's loops use on this machine. `GENAS_SIMD=baseline|avx2`
/// forces a lower level (for benchmarks and tests).
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let forced = std::env::var("GENAS_SIMD").ok();
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("fma");
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            match forced.as_deref() {
                Some("baseline") => Level::Baseline,
                Some("avx2") if avx2 => Level::Avx2,
                _ if avx512 && forced.as_deref() != Some("avx2") => Level::Avx512,
                _ if avx2 => Level::Avx2,
                _ => Level::Baseline,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = forced;
            Level::Baseline
        }
    })
}

/// Defines a function whose body is compiled three times — for AVX-512, for AVX2+FMA and for
/// plain x86-64 — and runs the best version the CPU supports. The body and every
/// `#[inline(always)]` helper it calls are inlined into each version and vectorised for its
/// instruction set (a closure would not be: it stays a baseline function). Use it for the work
/// of one rayon task, not around the parallel loop.
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident<$F:ident: Real>($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$F: Real>($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments, clippy::extra_unused_type_parameters)]
            fn imp<$F: Real, S: $crate::simd::Simd>($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512<$F: Real>($($arg: $ty),*) {
                imp::<$F, $crate::simd::Avx512>($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2<$F: Real>($($arg: $ty),*) {
                imp::<$F, $crate::simd::Avx2>($($arg),*)
            }
            match $crate::simd::level() {
                // SAFETY: `level()` reports these only after detecting every feature enabled.
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Level::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Level::Avx2 => unsafe { avx2($($arg),*) },
                _ => imp::<$F, $crate::simd::Scalar>($($arg),*),
            }
        }
    };
}
pub(crate) use simd_dispatch;

/// Asks for the cache line holding `x` to be brought into L2, for reading or (`write`) for
/// writing. Only a hint: it changes no value and never faults; off x86-64 it does nothing.
#[inline(always)]
pub(crate) fn prefetch_l2<F>(x: &F, write: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET1, _MM_HINT_T1};
        let p = x as *const F as *const i8;
        // SAFETY: a prefetch only hints the cache; p points into a live value.
        unsafe {
            if write {
                _mm_prefetch::<_MM_HINT_ET1>(p)
            } else {
                _mm_prefetch::<_MM_HINT_T1>(p)
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, write);
}

/// The vector primitives a kernel body uses, per instruction set. Inside a `simd_dispatch!` body
/// the type parameter `S` names the set the body is being compiled for.
pub trait Simd: 'static {
    /// Σ a·b
    fn dot_f32(a: &[f32], b: &[f32]) -> f32;
    /// Σ x (in lane order, then a tree: not sequential order).
    fn sum_f32(x: &[f32]) -> f32;
    /// max x (NaN-free input assumed; −∞ for an empty slice).
    fn max_f32(x: &[f32]) -> f32;
    /// a·b + c: one fused instruction where the ISA has it, two roundings otherwise (never a
    /// library call).
    fn fma_f32(a: f32, b: f32, c: f32) -> f32;
    /// dst[e·ds + j] = src[j·ss + e] for j < rows, e < cols: a (rows × cols) block transposed
    /// (the plain loop unless the instruction set has something better).
    #[inline(always)]
    fn transpose_f32(dst: &mut [f32], ds: usize, src: &[f32], ss: usize, rows: usize, cols: usize) {
        transpose_scalar(dst, ds, src, ss, rows, cols)
    }
    /// A small matrix product C[R×N] (+)= A[R×K] · B[K×N] for R ≤ 8, with
    /// A(r,k) = a[r·sa + k], B(k,n) = b[k·sb + n], C(r,n) = c[r·sc + n]; `acc` adds to C.
    /// Register-blocked (rows × 32 columns of accumulators), for attention's per-head products.
    #[allow(clippy::too_many_arguments)]
    fn small_gemm_f32(
        c: &mut [f32],
        sc: usize,
        a: &[f32],
        sa: (usize, usize),
        b: &[f32],
        sb: usize,
        rkn: (usize, usize, usize),
        acc: bool,
    );
}

/// The reference `small_gemm` (any scalar type).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn small_gemm_scalar<F: Copy + std::ops::Mul<Output = F> + std::ops::AddAssign + Default>(
    c: &mut [F],
    sc: usize,
    a: &[F],
    (sa, sak): (usize, usize),
    b: &[F],
    sb: usize,
    (r, k, n): (usize, usize, usize),
    acc: bool,
) {
    for i in 0..r {
        let row = &mut c[i * sc..i * sc + n];
        if !acc {
            row.fill(F::default());
        }
        for p in 0..k {
            let x = a[i * sa + p * sak];
            for (o, &y) in row.iter_mut().zip(&b[p * sb..p * sb + n]) {
                *o += x * y;
            }
        }
    }
}

/// The reference transpose (any scalar type): dst[e·ds + j] = src[j·ss + e].
#[inline(always)]
pub fn transpose_scalar<F: Copy>(
    dst: &mut [F],
    ds: usize,
    src: &[F],
    ss: usize,
    rows: usize,
    cols: usize,
) {
    for j in 0..rows {
        for e in 0..cols {
            dst[e * ds + j] = src[j * ss + e];
        }
    }
}

/// Plain code, for CPUs without AVX2 (and other architectures).
pub struct Scalar;

impl Simd for Scalar {
    #[inline(always)]
    fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let (ac, ar) = a.as_chunks::<8>();
        let (bc, br) = b.as_chunks::<8>();
        for (x, y) in ac.iter().zip(bc) {
            for l in 0..8 {
                acc[l] += x[l] * y[l];
            }
        }
        let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
        acc.iter().sum::<f32>() + tail
    }
    #[inline(always)]
    fn sum_f32(x: &[f32]) -> f32 {
        x.iter().sum()
    }
    #[inline(always)]
    fn max_f32(x: &[f32]) -> f32 {
        x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }
    #[inline(always)]
    fn fma_f32(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    #[inline(always)]
    fn small_gemm_f32(
        c: &mut [f32],
        sc: usize,
        a: &[f32],
        sa: (usize, usize),
        b: &[f32],
        sb: usize,
        rkn: (usize, usize, usize),
        acc: bool,
    ) {
        small_gemm_scalar(c, sc, a, sa, b, sb, rkn, acc)
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use std::arch::x86_64::*;

    /// AVX-512: 16 lanes, tails by masked loads and stores (no scalar remainder).
    pub struct Avx512;
    /// AVX2 + FMA: 8 lanes, scalar tails.
    pub struct Avx2;

    impl Simd for Avx512 {
        #[inline(always)]
        fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
            // SAFETY: as above.
            unsafe { dot512(a, b) }
        }
        #[inline(always)]
        fn sum_f32(x: &[f32]) -> f32 {
            // SAFETY: as above.
            unsafe { sum512(x) }
        }
        #[inline(always)]
        fn max_f32(x: &[f32]) -> f32 {
            // SAFETY: as above.
            unsafe { max512(x) }
        }
        #[inline(always)]
        fn fma_f32(a: f32, b: f32, c: f32) -> f32 {
            // Compiled inside an FMA-enabled function: one vfmadd instruction.
            a.mul_add(b, c)
        }
        #[inline(always)]
        fn transpose_f32(
            dst: &mut [f32],
            ds: usize,
            src: &[f32],
            ss: usize,
            rows: usize,
            cols: usize,
        ) {
            if rows == 0 || cols == 0 {
                return;
            }
            assert!(
                src.len() > (rows - 1) * ss + cols - 1 && dst.len() > (cols - 1) * ds + rows - 1
            );
            // SAFETY: AVX-512 is enabled where this is instantiated; the assertion bounds every
            // access (masked loads and stores never touch lanes past `rows` or `cols`).
            unsafe { transpose512(dst, ds, src, ss, rows, cols) }
        }
        #[inline(always)]
        fn small_gemm_f32(
            c: &mut [f32],
            sc: usize,
            a: &[f32],
            sa: (usize, usize),
            b: &[f32],
            sb: usize,
            rkn: (usize, usize, usize),
            acc: bool,
        ) {
            let (r, k, n) = rkn;
            assert!(r <= 8);
            if r == 0 || n == 0 {
                return;
            }
            assert!(
                c.len() >= (r - 1) * sc + n
                    && (k == 0
                        || (a.len() > (r - 1) * sa.0 + (k - 1) * sa.1
                            && b.len() >= (k - 1) * sb + n))
            );
            // SAFETY: AVX-512 is enabled where this is instantiated; the assertion bounds every
            // access (masked loads and stores never touch lanes past n).
            unsafe {
                match r {
                    1 => tile512::<1>(c, sc, a, sa, b, sb, k, n, acc),
                    2 => tile512::<2>(c, sc, a, sa, b, sb, k, n, acc),
                    3 => tile512::<3>(c, sc, a, sa, b, sb, k, n, acc),
                    4 => tile512::<4>(c, sc, a, sa, b, sb, k, n, acc),
                    5 => tile512::<5>(c, sc, a, sa, b, sb, k, n, acc),
                    6 => tile512::<6>(c, sc, a, sa, b, sb, k, n, acc),
                    7 => tile512::<7>(c, sc, a, sa, b, sb, k, n, acc),
                    _ => tile512::<8>(c, sc, a, sa, b, sb, k, n, acc),
                }
            }
        }
    }

    /// The lanes below `left` (all 16 from 16 on): the mask of a row's last, partial vector.
    #[inline(always)]
    fn mask(left: usize) -> __mmask16 {
        if left >= 16 {
            0xFFFF
        } else {
            ((1u32 << left) - 1) as u16
        }
    }

    /// Transposes in 16×16 blocks held in registers: 16 (masked) row loads, three rounds of
    /// shuffles (32-bit, 64-bit, then 128-bit lanes twice), 16 (masked) column stores.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn transpose512(
        dst: &mut [f32],
        ds: usize,
        src: &[f32],
        ss: usize,
        rows: usize,
        cols: usize,
    ) {
        let (dp, sp) = (dst.as_mut_ptr(), src.as_ptr());
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn lo64(a: __m512, b: __m512) -> __m512 {
            _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn hi64(a: __m512, b: __m512) -> __m512 {
            _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
        }
        for j0 in (0..rows).step_by(16) {
            let nr = (rows - j0).min(16);
            let store_mask = mask(nr);
            for e0 in (0..cols).step_by(16) {
                let nc = (cols - e0).min(16);
                let load_mask = mask(nc);
                let mut r = [_mm512_setzero_ps(); 16];
                for (i, ri) in r.iter_mut().enumerate().take(nr) {
                    *ri = _mm512_maskz_loadu_ps(load_mask, sp.add((j0 + i) * ss + e0));
                }
                let mut t = [_mm512_setzero_ps(); 16];
                for k in 0..8 {
                    t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
                    t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
                }
                for q in 0..4 {
                    let b = 4 * q;
                    r[b] = lo64(t[b], t[b + 2]);
                    r[b + 1] = hi64(t[b], t[b + 2]);
                    r[b + 2] = lo64(t[b + 1], t[b + 3]);
                    r[b + 3] = hi64(t[b + 1], t[b + 3]);
                }
                for h in 0..2 {
                    let b = 8 * h;
                    for k in 0..4 {
                        t[b + k] = _mm512_shuffle_f32x4::<0x88>(r[b + k], r[b + k + 4]);
                        t[b + k + 4] = _mm512_shuffle_f32x4::<0xdd>(r[b + k], r[b + k + 4]);
                    }
                }
                for k in 0..8 {
                    r[k] = _mm512_shuffle_f32x4::<0x88>(t[k], t[k + 8]);
                    r[k + 8] = _mm512_shuffle_f32x4::<0xdd>(t[k], t[k + 8]);
                }
                for (e, re) in r.iter().enumerate().take(nc) {
                    _mm512_mask_storeu_ps(dp.add((e0 + e) * ds + j0), store_mask, *re);
                }
            }
        }
    }

    /// C[R×n] (+)= A[R×k] · B[k×n], 32 columns (two 16-lane registers) at a time: per k, two
    /// loads of B and R broadcasts of A feed 2R independent FMAs.
    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile512<const R: usize>(
        c: &mut [f32],
        sc: usize,
        a: &[f32],
        (sa, sak): (usize, usize),
        b: &[f32],
        sb: usize,
        k: usize,
        n: usize,
        acc: bool,
    ) {
        let (cp, ap, bp) = (c.as_mut_ptr(), a.as_ptr(), b.as_ptr());
        let mut n0 = 0;
        while n0 < n {
            let m0 = mask(n - n0);
            let m1 = if n - n0 > 16 { mask(n - n0 - 16) } else { 0 };
            let mut c0 = [_mm512_setzero_ps(); R];
            let mut c1 = [_mm512_setzero_ps(); R];
            if acc {
                for i in 0..R {
                    c0[i] = _mm512_maskz_loadu_ps(m0, cp.add(i * sc + n0));
                    c1[i] = _mm512_maskz_loadu_ps(m1, cp.add(i * sc + n0 + 16));
                }
            }
            for p in 0..k {
                let b0 = _mm512_maskz_loadu_ps(m0, bp.add(p * sb + n0));
                let b1 = _mm512_maskz_loadu_ps(m1, bp.add(p * sb + n0 + 16));
                for i in 0..R {
                    let av = _mm512_set1_ps(*ap.add(i * sa + p * sak));
                    c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
                    c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
                }
            }
            for i in 0..R {
                _mm512_mask_storeu_ps(cp.add(i * sc + n0), m0, c0[i]);
                _mm512_mask_storeu_ps(cp.add(i * sc + n0 + 16), m1, c1[i]);
            }
            n0 += 32;
        }
    }

    impl Simd for Avx2 {
        #[inline(always)]
        fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
            // SAFETY: as above.
            unsafe { dot256(a, b) }
        }
        #[inline(always)]
        fn sum_f32(x: &[f32]) -> f32 {
            // SAFETY: as above.
            unsafe { sum256(x) }
        }
        #[inline(always)]
        fn max_f32(x: &[f32]) -> f32 {
            // SAFETY: as above.
            unsafe { max256(x) }
        }
        #[inline(always)]
        fn fma_f32(a: f32, b: f32, c: f32) -> f32 {
            // Compiled inside an FMA-enabled function: one vfmadd instruction.
            a.mul_add(b, c)
        }
        #[inline(always)]
        fn small_gemm_f32(
            c: &mut [f32],
            sc: usize,
            a: &[f32],
            sa: (usize, usize),
            b: &[f32],
            sb: usize,
            rkn: (usize, usize, usize),
            acc: bool,
        ) {
            // One register-accumulated row combination per output row.
            let (r, k, n) = rkn;
            let mut coeffs = vec![0.0f32; k];
            for i in 0..r {
                let row = &mut c[i * sc..i * sc + n];
                if !acc {
                    row.fill(0.0);
                }
                if k > 0 {
                    for (p, x) in coeffs.iter_mut().enumerate() {
                        *x = a[i * sa.0 + p * sa.1];
                    }
                    assert!(b.len() >= (k - 1) * sb + n);
                    // SAFETY: instantiated only inside AVX2+FMA functions; the assertion bounds
                    // every row read.
                    unsafe { lincomb256(row, &coeffs, b, sb) };
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn sum512(x: &[f32]) -> f32 {
        let (n, p) = (x.len(), x.as_ptr());
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc = _mm512_add_ps(acc, _mm512_loadu_ps(p.add(i)));
            i += 16;
        }
        if i < n {
            acc = _mm512_add_ps(
                acc,
                _mm512_maskz_loadu_ps(((1u32 << (n - i)) - 1) as u16, p.add(i)),
            );
        }
        _mm512_reduce_add_ps(acc)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn max512(x: &[f32]) -> f32 {
        let (n, p) = (x.len(), x.as_ptr());
        let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i + 16 <= n {
            acc = _mm512_max_ps(acc, _mm512_loadu_ps(p.add(i)));
            i += 16;
        }
        if i < n {
            let m = ((1u32 << (n - i)) - 1) as u16;
            acc = _mm512_mask_max_ps(acc, m, acc, _mm512_maskz_loadu_ps(m, p.add(i)));
        }
        _mm512_reduce_max_ps(acc)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sum256(x: &[f32]) -> f32 {
        let (n, p) = (x.len(), x.as_ptr());
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            acc = _mm256_add_ps(acc, _mm256_loadu_ps(p.add(i)));
            i += 8;
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        let mut total = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
            + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
        while i < n {
            total += *p.add(i);
            i += 1;
        }
        total
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn max256(x: &[f32]) -> f32 {
        let (n, p) = (x.len(), x.as_ptr());
        let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i + 8 <= n {
            acc = _mm256_max_ps(acc, _mm256_loadu_ps(p.add(i)));
            i += 8;
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        let mut m = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        while i < n {
            m = m.max(*p.add(i));
            i += 1;
        }
        m
    }

    /// out[k] += Σ_r c[r] · m[r·stride + k]: rows combined in registers (8-lane blocks, four at
    /// a time, scalar tail), one output row of AVX2's `small_gemm`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn lincomb256(out: &mut [f32], c: &[f32], m: &[f32], stride: usize) {
        let n = out.len();
        let (op, mp) = (out.as_mut_ptr(), m.as_ptr());
        let mut k = 0;
        while k + 32 <= n {
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm256_loadu_ps(op.add(k)),
                _mm256_loadu_ps(op.add(k + 8)),
                _mm256_loadu_ps(op.add(k + 16)),
                _mm256_loadu_ps(op.add(k + 24)),
            );
            for (r, &cr) in c.iter().enumerate() {
                let cv = _mm256_set1_ps(cr);
                let row = mp.add(r * stride + k);
                a0 = _mm256_fmadd_ps(cv, _mm256_loadu_ps(row), a0);
                a1 = _mm256_fmadd_ps(cv, _mm256_loadu_ps(row.add(8)), a1);
                a2 = _mm256_fmadd_ps(cv, _mm256_loadu_ps(row.add(16)), a2);
                a3 = _mm256_fmadd_ps(cv, _mm256_loadu_ps(row.add(24)), a3);
            }
            _mm256_storeu_ps(op.add(k), a0);
            _mm256_storeu_ps(op.add(k + 8), a1);
            _mm256_storeu_ps(op.add(k + 16), a2);
            _mm256_storeu_ps(op.add(k + 24), a3);
            k += 32;
        }
        while k + 8 <= n {
            let mut a0 = _mm256_loadu_ps(op.add(k));
            for (r, &cr) in c.iter().enumerate() {
                a0 = _mm256_fmadd_ps(
                    _mm256_set1_ps(cr),
                    _mm256_loadu_ps(mp.add(r * stride + k)),
                    a0,
                );
            }
            _mm256_storeu_ps(op.add(k), a0);
            k += 8;
        }
        while k < n {
            let mut a = *op.add(k);
            for (r, &cr) in c.iter().enumerate() {
                a += cr * *mp.add(r * stride + k);
            }
            *op.add(k) = a;
            k += 1;
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn dot512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 32 <= n {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(ap.add(i)), _mm512_loadu_ps(bp.add(i)), s0);
            s1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(ap.add(i + 16)),
                _mm512_loadu_ps(bp.add(i + 16)),
                s1,
            );
            i += 32;
        }
        if i + 16 <= n {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(ap.add(i)), _mm512_loadu_ps(bp.add(i)), s0);
            i += 16;
        }
        if i < n {
            let m: __mmask16 = ((1u32 << (n - i)) - 1) as u16;
            s1 = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(m, ap.add(i)),
                _mm512_maskz_loadu_ps(m, bp.add(i)),
                s1,
            );
        }
        _mm512_reduce_add_ps(_mm512_add_ps(s0, s1))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot256(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(ap.add(i)), _mm256_loadu_ps(bp.add(i)), s0);
            s1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(ap.add(i + 8)),
                _mm256_loadu_ps(bp.add(i + 8)),
                s1,
            );
            i += 16;
        }
        let s = _mm256_add_ps(s0, s1);
        let hi = _mm256_extractf128_ps(s, 1);
        let q = _mm_add_ps(_mm256_castps256_ps128(s), hi);
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        let mut total = _mm_cvtss_f32(q);
        while i < n {
            total += *ap.add(i) * *bp.add(i);
            i += 1;
        }
        total
    }
}

/// exp for f32 without a library call, so loops using it vectorise: x = k·ln2 + r with
/// |r| ≤ ln2/2 (Cody–Waite split of ln2), exp(r) by its degree-7 Taylor polynomial (truncation
/// < 6e-9 relative) in Horner form with `S`'s fused multiply-adds, 2^k by building the exponent
/// bits. Inputs are clamped to [−87.3, 88] (results stay finite and normal); NaN stays NaN.
#[inline(always)]
pub fn exp_f32<S: Simd>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let nan = x.is_nan();
    // k ≤ 127 keeps 2^k finite (exp(88) ≈ 1.65e38); k ≥ −126 keeps it normal.
    let x = x.clamp(-87.3, 88.0);
    // ks = ROUND + round(x·log2e) exactly, so its low mantissa bits hold the integer k: 2^k is
    // built from those bits with integer operations. (`k as i32` would be a saturating cast,
    // which the compiler does one lane at a time.)
    let ks = S::fma_f32(x, LOG2E, ROUND);
    let k = ks - ROUND;
    let r = S::fma_f32(-k, LN2_LO, S::fma_f32(-k, LN2_HI, x));
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = S::fma_f32(p, r, c);
    }
    let ki = ks.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(ki.wrapping_add(127) << 23);
    if nan {
        f32::NAN
    } else {
        p * scale
    }
}

/// erf for f32 by Abramowitz & Stegun 7.1.26: |error| < 1.5e-7 everywhere (plus a few ulp of
/// f32 evaluation), branch-free and vectorisable. Absolute, not relative, accuracy: enough for
/// GELU, whose error it bounds by 1.5e-7 relative.
#[inline(always)]
pub fn erf_f32<S: Simd>(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    let ax = x.abs();
    let t = 1.0 / S::fma_f32(P, ax, 1.0);
    let mut poly = A[4];
    for c in [A[3], A[2], A[1], A[0]] {
        poly = S::fma_f32(poly, t, c);
    }
    poly *= t;
    S::fma_f32(-poly, exp_f32::<S>(-ax * ax), 1.0).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `$check::<S>()` for the plain code and for every SIMD level this CPU has.
    macro_rules! on_every_isa {
        ($check:ident) => {{
            $check::<Scalar>();
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    $check::<Avx2>();
                }
                if is_x86_feature_detected!("avx512f") {
                    $check::<Avx512>();
                }
            }
        }};
    }

    #[test]
    fn exp_matches_libm_to_float_precision() {
        let mut worst: f64 = 0.0;
        let mut x = -87.0f32;
        while x < 88.0 {
            let exact = (x as f64).exp();
            worst = worst.max(((exp_f32::<Scalar>(x) as f64) - exact).abs() / exact);
            x += 0.0137;
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert!(exp_f32::<Scalar>(f32::NAN).is_nan());
        assert_eq!(exp_f32::<Scalar>(0.0), 1.0);
        assert!(exp_f32::<Scalar>(-1000.0) >= 0.0 && exp_f32::<Scalar>(-1000.0) < 1e-37);
        assert!(exp_f32::<Scalar>(1000.0).is_finite());
    }

    #[test]
    fn erf_matches_libm_to_float_precision() {
        let mut worst: f64 = 0.0;
        let mut x = -6.0f32;
        while x < 6.0 {
            worst = worst.max((erf_f32::<Scalar>(x) as f64 - libm::erf(x as f64)).abs());
            x += 0.001;
        }
        // A&S 7.1.26 guarantees 1.5e-7; f32 evaluation of 1 − p·e^(−x²) cancels near 0 and
        // adds a few ulp of 1 (GELU's accuracy is tested on its own in activation.rs).
        assert!(worst < 5e-7, "absolute error {worst}");
        assert!(erf_f32::<Scalar>(0.0).abs() < 2e-7);
    }

    use crate::real::Real;

    simd_dispatch! {
        fn erf_all<F: Real>(out: &mut [F], x: &[F]) {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v.erf_s::<S>();
            }
        }
    }

    fn check_small_gemm<S: Simd>() {
        let mut seed = 1u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        for r in 1..=8 {
            for (k, n) in [(1, 1), (5, 16), (32, 17), (7, 33), (64, 48), (3, 70)] {
                let (sa, sb, sc) = (k + 3, n + 5, n + 2);
                let a: Vec<f32> = (0..r * sa).map(|_| rnd()).collect();
                let b: Vec<f32> = (0..k * sb).map(|_| rnd()).collect();
                for acc in [false, true] {
                    let c0: Vec<f32> = (0..r * sc).map(|_| rnd()).collect();
                    let (mut want, mut got) = (c0.clone(), c0.clone());
                    small_gemm_scalar(&mut want, sc, &a, (sa, 1), &b, sb, (r, k, n), acc);
                    S::small_gemm_f32(&mut got, sc, &a, (sa, 1), &b, sb, (r, k, n), acc);
                    // Aᵀ read in place: A(i, p) = at[p·r + i].
                    let at: Vec<f32> = (0..k * r).map(|q| a[(q % r) * sa + q / r]).collect();
                    let mut got_t = c0.clone();
                    S::small_gemm_f32(&mut got_t, sc, &at, (1, r), &b, sb, (r, k, n), acc);
                    assert_eq!(got, got_t, "r{r} k{k} n{n}: transposed A");
                    for (i, (x, y)) in want.iter().zip(&got).enumerate() {
                        assert!(
                            (x - y).abs() < 1e-4,
                            "r{r} k{k} n{n} acc{acc} at {i}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn transpose_matches_the_reference_on_every_available_isa() {
        fn check<S: Simd>() {
            for (rows, cols) in [
                (1usize, 1usize),
                (3, 40),
                (16, 16),
                (17, 32),
                (128, 32),
                (37, 8),
                (5, 3),
            ] {
                let (ss, ds) = (cols + 3, rows.div_ceil(16) * 16 + 1);
                let src: Vec<f32> = (0..rows * ss).map(|i| i as f32).collect();
                let mut want = vec![-1.0f32; cols * ds];
                let mut got = want.clone();
                transpose_scalar(&mut want, ds, &src, ss, rows, cols);
                S::transpose_f32(&mut got, ds, &src, ss, rows, cols);
                assert_eq!(got, want, "{rows}×{cols}");
            }
        }
        on_every_isa!(check);
    }

    #[test]
    fn small_gemm_matches_the_reference_on_every_available_isa() {
        on_every_isa!(check_small_gemm);
    }

    #[test]
    fn dispatched_code_computes_what_plain_code_does() {
        let xs: Vec<f32> = (0..1000).map(|i| i as f32 * 0.01 - 5.0).collect();
        let plain: Vec<f32> = xs.iter().map(|&x| erf_f32::<Scalar>(x)).collect();
        let mut fast = vec![0.0f32; xs.len()];
        erf_all(&mut fast, &xs);
        for (a, b) in plain.iter().zip(&fast) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
