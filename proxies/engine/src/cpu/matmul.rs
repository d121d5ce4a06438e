//! Linear layers: out = inp · Wᵀ + b, W stored (out, in) row-major as in PyTorch.

use crate::real::Real;
use gemm::Parallelism;

/// Wall time of every matrix product, by shape, while switched on (`genas bench train
/// --gemm-profile`): how fast the products run inside a training step, against the rate the
/// same shape reaches alone. Off, it costs one relaxed atomic load per product.
pub mod profile {
    use serde::Serialize;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    static ON: AtomicBool = AtomicBool::new(false);
    static PRODUCTS: Mutex<Vec<Product>> = Mutex::new(Vec::new());

    /// Which of a linear layer's three products.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Kind {
        /// out (n, oc) = inp (n, c) · Wᵀ
        Forward,
        /// dinp (n, c) = dout (n, oc) · W
        Dx,
        /// dW (oc, c) = doutᵀ · inp over n tokens
        Dw,
    }

    /// One product shape's calls, summed over every thread.
    #[derive(Clone, Debug, Serialize)]
    pub struct Product {
        /// "forward N×C→OC", "dX N×OC→C" or "dW OC×C over N", with "+=" when accumulating.
        pub product: String,
        pub kind: Kind,
        /// (n, c, oc) as `matmul_forward` / `matmul_backward` take them.
        pub shape: (usize, usize, usize),
        pub accumulate: bool,
        pub calls: u64,
        pub seconds: f64,
        pub gflop: f64,
        /// gflop / seconds: per thread, since each call runs on one.
        pub gflops: f64,
    }

    /// Clears the record and starts recording.
    pub fn start() {
        PRODUCTS.lock().unwrap_or_else(|e| e.into_inner()).clear();
        ON.store(true, Ordering::Relaxed);
    }

    /// Stops recording; the products in order of total time, longest first.
    pub fn stop() -> Vec<Product> {
        ON.store(false, Ordering::Relaxed);
        let mut all = std::mem::take(&mut *PRODUCTS.lock().unwrap_or_else(|e| e.into_inner()));
        for p in &mut all {
            p.gflops = p.gflop / p.seconds.max(1e-12);
        }
        all.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        all
    }

    pub(super) fn timer() -> Option<Instant> {
        ON.load(Ordering::Relaxed).then(Instant::now)
    }

    pub(super) fn record(
        t0: Option<Instant>,
        kind: Kind,
        (n, c, oc): (usize, usize, usize),
        accumulate: bool,
    ) {
        let Some(t0) = t0 else { return };
        let seconds = t0.elapsed().as_secs_f64();
        let plus = if accumulate { " +=" } else { "" };
        let name = match kind {
            Kind::Forward => format!("forward {n}×{c}→{oc}{plus}"),
            Kind::Dx => format!("dX {n}×{oc}→{c}{plus}"),
            Kind::Dw => format!("dW {oc}×{c} over {n}"),
        };
        let flop = 2 * n * c * oc;
        let mut all = PRODUCTS.lock().unwrap_or_else(|e| e.into_inner());
        let gflop = flop as f64 / 1e9;
        match all.iter_mut().find(|p| p.product == name) {
            Some(p) => {
                p.calls += 1;
                p.seconds += seconds;
                p.gflop += gflop;
            }
            None => all.push(Product {
                product: name,
                kind,
                shape: (n, c, oc),
                accumulate,
                calls: 1,
                seconds,
                gflop,
                gflops: 0.0,
            }),
        }
    }
}

/// dst (m×n) = [dst +] lhs (m×k) · rhs (k×n) in the gemm crate; each matrix as (pointer,
/// column stride, row stride).
///
/// # Safety
/// Every element the dimensions and strides reach lies inside the allocation behind its
/// pointer, and dst overlaps neither operand.
unsafe fn product<F: Real>(
    (m, n, k): (usize, usize, usize),
    dst: (*mut F, isize, isize),
    read_dst: bool,
    lhs: (*const F, isize, isize),
    rhs: (*const F, isize, isize),
    par: Parallelism,
) {
    // SAFETY: as the caller guarantees.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            dst.1,
            dst.2,
            read_dst,
            lhs.0,
            lhs.1,
            lhs.2,
            rhs.0,
            rhs.1,
            rhs.2,
            F::ONE,
            F::ONE,
            false,
            false,
            false,
            par,
        );
    }
}

/// out[n, oc] = [out +] inp[n, c] · w[oc, c]ᵀ + bias[oc]. `accumulate` fuses a residual add.
pub fn matmul_forward<F: Real>(
    out: &mut [F],
    accumulate: bool,
    inp: &[F],
    w: &[F],
    bias: Option<&[F]>,
    (n, c, oc): (usize, usize, usize),
    par: Parallelism,
) {
    let t0 = profile::timer();
    let out = &mut out[..n * oc];
    let (inp, w) = (&inp[..n * c], &w[..oc * c]);
    if let Some(b) = bias {
        for row in out.chunks_exact_mut(oc) {
            if accumulate {
                for (o, &x) in row.iter_mut().zip(&b[..oc]) {
                    *o += x;
                }
            } else {
                row.copy_from_slice(&b[..oc]);
            }
        }
    }
    // SAFETY: the slices above bound every access gemm makes with these strides:
    // dst n×oc row-major, lhs n×c row-major, rhs c×oc read from w (oc, c) transposed.
    unsafe {
        product(
            (n, oc, c),
            (out.as_mut_ptr(), 1, oc as isize),
            accumulate || bias.is_some(),
            (inp.as_ptr(), 1, c as isize),
            (w.as_ptr(), c as isize, 1),
            par,
        );
    }
    profile::record(t0, profile::Kind::Forward, (n, c, oc), accumulate);
}

/// Tokens per weight-gradient product.
const DW_ROWS: usize = 256;

/// Accumulates dW[oc, c] += doutᵀ · inp and dbias[oc] += Σ_n dout; writes (or adds to, when
/// `acc_inp`) dinp[n, c] = dout · W.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward<F: Real>(
    dinp: Option<&mut [F]>,
    acc_inp: bool,
    dw: &mut [F],
    dbias: Option<&mut [F]>,
    dout: &[F],
    inp: &[F],
    w: &[F],
    (n, c, oc): (usize, usize, usize),
    par: Parallelism,
) {
    let t0 = profile::timer();
    let dout = &dout[..n * oc];
    let (inp, w, dw) = (&inp[..n * c], &w[..oc * c], &mut dw[..oc * c]);
    if let Some(dinp) = dinp {
        let dinp = &mut dinp[..n * c];
        // SAFETY: dst n×c row-major; lhs dout n×oc row-major; rhs w oc×c row-major.
        unsafe {
            product(
                (n, c, oc),
                (dinp.as_mut_ptr(), 1, c as isize),
                acc_inp,
                (dout.as_ptr(), 1, oc as isize),
                (w.as_ptr(), 1, c as isize),
                par,
            );
        }
        profile::record(t0, profile::Kind::Dx, (n, c, oc), acc_inp);
    }
    let t0 = profile::timer();
    // dW accumulates over the tokens in blocks of DW_ROWS: with the whole batch as one long
    // inner dimension the gemm crate runs these transposed-operand products 5-10% slower
    // (measured on the fc and fc-proj shapes of the large bench model).
    for r0 in (0..n).step_by(DW_ROWS) {
        let rows = DW_ROWS.min(n - r0);
        let (dout, inp) = (&dout[r0 * oc..], &inp[r0 * c..]);
        // SAFETY: dst oc×c row-major; lhs doutᵀ (oc×rows read from rows×oc); rhs inp rows×c
        // row-major; both row blocks lie inside the slices bounded above.
        unsafe {
            product(
                (oc, c, rows),
                (dw.as_mut_ptr(), 1, c as isize),
                true,
                (dout.as_ptr(), oc as isize, 1),
                (inp.as_ptr(), 1, c as isize),
                par,
            );
        }
    }
    profile::record(t0, profile::Kind::Dw, (n, c, oc), true);
    if let Some(db) = dbias {
        let db = &mut db[..oc];
        for row in dout.chunks_exact(oc) {
            for (d, &g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
}
