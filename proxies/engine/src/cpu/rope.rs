//! Rotary position embeddings (RoFormer, Su et al. 2021) in the "rotate half" layout of
//! GPT-NeoX and Llama: in every head of width hd, dimension i < hd/2 pairs with i + hd/2, and
//! the pair at position p turns by the angle p · θ^(−2i/hd):
//!
//! ```text
//! x'ᵢ        = xᵢ · cos − xᵢ₊ₕ · sin
//! x'ᵢ₊ₕ      = xᵢ₊ₕ · cos + xᵢ · sin          (h = hd/2)
//! ```
//!
//! The map is a rotation, so its backward pass is the inverse rotation (sin → −sin) applied to
//! the gradient, in place. The angles are computed in f64 and rounded once; the frequencies
//! are `genas_space::rope_inv_freq`'s (θ^(−2i/hd), changed by the architecture's scaling).

use crate::real::Real;
use rayon::prelude::*;

/// Where the queries and keys are in a qkv buffer of N = B·T rows.
#[derive(Clone, Copy, Debug)]
pub struct RopeDims {
    /// Rows (B·T).
    pub n: usize,
    /// Positions per sequence: row r is at position `offset + r mod t`.
    pub t: usize,
    /// Position of each sequence's first row (0 for training; the cache length in generation).
    pub offset: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Row width: H·hd queries, then G·hd keys, then the values.
    pub width: usize,
    pub theta: f64,
    pub scaling: Option<genas_space::RopeScaling>,
}

/// cos and sin of every (position, pair) angle, `t × hd/2` each, for positions
/// `offset..offset + t`.
pub fn tables<F: Real>(
    t: usize,
    offset: usize,
    head_dim: usize,
    (theta, scaling): (f64, Option<genas_space::RopeScaling>),
) -> (Vec<F>, Vec<F>) {
    let half = head_dim / 2;
    let inv = genas_space::rope_inv_freq(theta, scaling, head_dim);
    let mut cos = Vec::with_capacity(t * half);
    let mut sin = Vec::with_capacity(t * half);
    for p in offset..offset + t {
        for &f in &inv {
            let (s, c) = (p as f64 * f).sin_cos();
            cos.push(F::from_f64(c));
            sin.push(F::from_f64(s));
        }
    }
    (cos, sin)
}

/// Rotates the query heads and key heads of one row by the angles whose cos and sin are given
/// (`hd/2` each); `inverse` turns the other way.
pub fn rotate_row<F: Real>(
    row: &mut [F],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    cos: &[F],
    sin: &[F],
    inverse: bool,
) {
    let half = head_dim / 2;
    for head in row[..(heads + kv_heads) * head_dim].chunks_exact_mut(head_dim) {
        let (a, b) = head.split_at_mut(half);
        for (((x1, x2), &c), &s) in a.iter_mut().zip(b.iter_mut()).zip(cos).zip(sin) {
            let s = if inverse { -s } else { s };
            let (u, v) = (*x1, *x2);
            *x1 = u * c - v * s;
            *x2 = v * c + u * s;
        }
    }
}

/// Rotates the queries and keys of every row of `qkv` in place (`inverse`: back).
pub fn rope<F: Real>(qkv: &mut [F], d: RopeDims, inverse: bool) {
    let half = d.head_dim / 2;
    let (cos, sin) = tables::<F>(d.t, d.offset, d.head_dim, (d.theta, d.scaling));
    qkv[..d.n * d.width]
        .par_chunks_mut(d.width)
        .enumerate()
        .for_each(|(r, row)| {
            let p = r % d.t;
            rotate_row(
                row,
                d.heads,
                d.kv_heads,
                d.head_dim,
                &cos[p * half..(p + 1) * half],
                &sin[p * half..(p + 1) * half],
                inverse,
            );
        });
}
