//! Token embeddings, plus learned position embeddings unless the model uses rope.

use crate::real::Real;

/// out[b, t, :] = wte[tokens[b, t], :] (+ wpe[t, :]).
pub fn embedding_forward<F: Real>(
    out: &mut [F],
    tokens: &[u32],
    wte: &[F],
    wpe: Option<&[F]>,
    (b, t, c): (usize, usize, usize),
) {
    for bi in 0..b {
        for ti in 0..t {
            let row = bi * t + ti;
            let tok = tokens[row] as usize;
            let o = &mut out[row * c..(row + 1) * c];
            o.copy_from_slice(&wte[tok * c..(tok + 1) * c]);
            if let Some(wpe) = wpe {
                for (oi, &p) in o.iter_mut().zip(&wpe[ti * c..(ti + 1) * c]) {
                    *oi += p;
                }
            }
        }
    }
}

/// dwte[tokens[b, t]] += dout[b, t]; dwpe[t] += dout[b, t]. Sequential: tokens repeat, and the
/// summation order must not depend on scheduling.
pub fn embedding_backward<F: Real>(
    dwte: &mut [F],
    mut dwpe: Option<&mut [F]>,
    dout: &[F],
    tokens: &[u32],
    (b, t, c): (usize, usize, usize),
) {
    for bi in 0..b {
        for ti in 0..t {
            let row = bi * t + ti;
            let tok = tokens[row] as usize;
            let g = &dout[row * c..(row + 1) * c];
            for (d, &x) in dwte[tok * c..(tok + 1) * c].iter_mut().zip(g) {
                *d += x;
            }
            if let Some(dwpe) = dwpe.as_deref_mut() {
                for (d, &x) in dwpe[ti * c..(ti + 1) * c].iter_mut().zip(g) {
                    *d += x;
                }
            }
        }
    }
}
