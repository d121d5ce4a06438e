//! Gradient checks against central finite differences, in f64 through the very kernels training
//! uses: each layer kind alone (L = Σ r ⊙ out for a random r, so dout = r), then whole models
//! covering every attention kind, sparsity, sharing, low rank, swiglu, tied embeddings, rotary
//! positions, RMSNorm, attention biases and GELU's tanh form.

use genas_engine::backend::Act;
use genas_engine::cpu::attention::{attention_backward, attention_forward, AttnDims};
use genas_engine::cpu::linear_attention::{linear_attention_backward, linear_attention_forward};
use genas_engine::cpu::rope::{rope, RopeDims};
use genas_engine::cpu::{activation, embedding, layernorm, loss, matmul, rmsnorm};
use genas_engine::{Cpu, Model};
use genas_space::{
    Activation, Architecture, Attention, Float, Fraction, Layer, Norm, Position, Rng, Sparsity,
};

const EPS: f64 = 1e-5;

fn randn(n: usize, rng: &mut Rng, scale: f64) -> Vec<f64> {
    (0..n).map(|_| rng.normal() * scale).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Compares an analytic gradient with central differences of `f` around `x`.
fn check(name: &str, x: &[f64], analytic: &[f64], mut f: impl FnMut(&[f64]) -> f64) {
    assert_eq!(x.len(), analytic.len(), "{name}");
    let mut worst: f64 = 0.0;
    let mut xp = x.to_vec();
    for i in 0..x.len() {
        xp[i] = x[i] + EPS;
        let up = f(&xp);
        xp[i] = x[i] - EPS;
        let down = f(&xp);
        xp[i] = x[i];
        let numeric = (up - down) / (2.0 * EPS);
        let err = (numeric - analytic[i]).abs() / (numeric.abs() + analytic[i].abs()).max(1e-6);
        worst = worst.max(err);
        assert!(
            err < 1e-5,
            "{name}[{i}]: analytic {} numeric {numeric} (rel err {err:.2e})",
            analytic[i]
        );
    }
    assert!(worst.is_finite());
}

#[test]
fn matmul_gradients() {
    let mut rng = Rng::seed_from_u64(1);
    let (n, c, oc) = (5, 7, 6);
    let (x, w, b, r) = (
        randn(n * c, &mut rng, 1.0),
        randn(oc * c, &mut rng, 1.0),
        randn(oc, &mut rng, 1.0),
        randn(n * oc, &mut rng, 1.0),
    );
    let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
        let mut out = vec![0.0; n * oc];
        matmul::matmul_forward(
            &mut out,
            false,
            x,
            w,
            Some(b),
            (n, c, oc),
            gemm::Parallelism::None,
        );
        dot(&out, &r)
    };
    let (mut dx, mut dw, mut db) = (vec![f64::NAN; n * c], vec![0.0; oc * c], vec![0.0; oc]);
    matmul::matmul_backward(
        Some(&mut dx),
        false,
        &mut dw,
        Some(&mut db),
        &r,
        &x,
        &w,
        (n, c, oc),
        gemm::Parallelism::None,
    );
    check("matmul dx", &x, &dx, |x| fwd(x, &w, &b));
    check("matmul dw", &w, &dw, |w| fwd(&x, w, &b));
    check("matmul db", &b, &db, |b| fwd(&x, &w, b));
    // Accumulating forms add to what is there.
    let mut acc = vec![1.0; n * oc];
    matmul::matmul_forward(
        &mut acc,
        true,
        &x,
        &w,
        Some(&b),
        (n, c, oc),
        gemm::Parallelism::None,
    );
    let mut plain = vec![0.0; n * oc];
    matmul::matmul_forward(
        &mut plain,
        false,
        &x,
        &w,
        Some(&b),
        (n, c, oc),
        gemm::Parallelism::None,
    );
    for (a, p) in acc.iter().zip(&plain) {
        assert!((a - p - 1.0).abs() < 1e-12);
    }
    let mut dx1 = vec![1.0; n * c];
    matmul::matmul_backward(
        Some(&mut dx1),
        true,
        &mut dw,
        None,
        &r,
        &x,
        &w,
        (n, c, oc),
        gemm::Parallelism::None,
    );
    for (a, p) in dx1.iter().zip(&dx) {
        assert!((a - p - 1.0).abs() < 1e-12);
    }
}

/// LayerNorm inputs (n, c), weight, bias and an output weighting r, drawn from `seed`.
type LnCase = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);
fn layernorm_case(seed: u64, (n, c): (usize, usize)) -> LnCase {
    let mut rng = Rng::seed_from_u64(seed);
    (
        randn(n * c, &mut rng, 2.0),
        randn(c, &mut rng, 1.0),
        randn(c, &mut rng, 1.0),
        randn(n * c, &mut rng, 1.0),
    )
}

#[test]
fn layernorm_gradients() {
    // 70 rows: two row chunks of the kernel, so their weight and bias partials are combined.
    let (n, c) = (70, 9);
    let (x, w, b, r) = layernorm_case(2, (n, c));
    let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
        let (mut out, mut m, mut s) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        layernorm::layernorm_forward(&mut out, &mut m, &mut s, x, w, b, (n, c), 1e-5);
        dot(&out, &r)
    };
    let (mut out, mut m, mut s) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    layernorm::layernorm_forward(&mut out, &mut m, &mut s, &x, &w, &b, (n, c), 1e-5);
    let (mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
    layernorm::layernorm_backward(&mut dx, &mut dw, &mut db, &r, &x, &w, &m, &s, (n, c));
    check("layernorm dx", &x, &dx, |x| fwd(x, &w, &b));
    check("layernorm dw", &w, &dw, |w| fwd(&x, w, &b));
    check("layernorm db", &b, &db, |b| fwd(&x, &w, b));
    // dx is added to, not overwritten.
    let mut dx1 = vec![1.0; n * c];
    let (mut dw1, mut db1) = (vec![0.0; c], vec![0.0; c]);
    layernorm::layernorm_backward(&mut dx1, &mut dw1, &mut db1, &r, &x, &w, &m, &s, (n, c));
    for (a, p) in dx1.iter().zip(&dx) {
        assert!((a - p - 1.0).abs() < 1e-12);
    }
}

#[test]
fn rmsnorm_gradients_and_definition() {
    let (n, c) = (70, 9);
    let (x, w, _, r) = layernorm_case(4, (n, c));
    let fwd = |x: &[f64], w: &[f64]| {
        let (mut out, mut s) = (vec![0.0; n * c], vec![0.0; n]);
        rmsnorm::rmsnorm_forward(&mut out, &mut s, x, w, (n, c), 1e-5);
        out
    };
    // By hand: x · w / √(mean(x²) + 1e-5).
    let out = fwd(&x, &w);
    for row in 0..n {
        let xr = &x[row * c..(row + 1) * c];
        let rms = (xr.iter().map(|v| v * v).sum::<f64>() / c as f64 + 1e-5).sqrt();
        for i in 0..c {
            assert!((out[row * c + i] - xr[i] * w[i] / rms).abs() < 1e-12);
        }
    }
    let (mut out, mut s) = (vec![0.0; n * c], vec![0.0; n]);
    rmsnorm::rmsnorm_forward(&mut out, &mut s, &x, &w, (n, c), 1e-5);
    let (mut dx, mut dw) = (vec![0.0; n * c], vec![0.0; c]);
    rmsnorm::rmsnorm_backward(&mut dx, &mut dw, &r, &x, &w, &s, (n, c));
    check("rmsnorm dx", &x, &dx, |x| dot(&fwd(x, &w), &r));
    check("rmsnorm dw", &w, &dw, |w| dot(&fwd(&x, w), &r));
    // dx is added to, not overwritten.
    let mut dx1 = vec![1.0; n * c];
    let mut dw1 = vec![0.0; c];
    rmsnorm::rmsnorm_backward(&mut dx1, &mut dw1, &r, &x, &w, &s, (n, c));
    for (a, p) in dx1.iter().zip(&dx) {
        assert!((a - p - 1.0).abs() < 1e-12);
    }
}

#[test]
fn query_key_head_norm_gradients_and_definition() {
    // 3 rows of 3 query heads and 1 key head of width 4, then the values (untouched).
    let d = rmsnorm::HeadsDims {
        n: 3,
        width: (3 + 1 + 1) * 4,
        heads: 3,
        kv_heads: 1,
        head_dim: 4,
        eps: 1e-6,
    };
    let mut rng = Rng::seed_from_u64(8);
    let x = randn(d.n * d.width, &mut rng, 1.5);
    let r = randn(d.n * d.width, &mut rng, 1.0);
    let wq: Vec<f64> = randn(4, &mut rng, 0.5).iter().map(|v| 1.0 + v).collect();
    let wk: Vec<f64> = randn(4, &mut rng, 0.5).iter().map(|v| 1.0 + v).collect();
    let fwd = |x: &[f64], wq: &[f64], wk: &[f64]| {
        let mut out = x.to_vec();
        let (mut pre, mut rs) = (vec![0.0; d.n * 16], vec![0.0; d.n * 4]);
        rmsnorm::heads_forward(&mut out, &mut pre, &mut rs, wq, wk, d);
        out
    };
    // By hand: each head of 4 normalised on its own; the values as they were.
    let out = fwd(&x, &wq, &wk);
    for row in 0..d.n {
        for head in 0..5 {
            let at = row * d.width + head * 4;
            let xs = &x[at..at + 4];
            let rms = (xs.iter().map(|v| v * v).sum::<f64>() / 4.0 + 1e-6).sqrt();
            for e in 0..4 {
                let want = match head {
                    0..=2 => xs[e] * wq[e] / rms,
                    3 => xs[e] * wk[e] / rms,
                    _ => xs[e],
                };
                assert!((out[at + e] - want).abs() < 1e-12, "row {row} head {head}");
            }
        }
    }
    // Without buffers to keep, the same values.
    let mut bare = x.clone();
    rmsnorm::heads_forward(&mut bare, &mut [], &mut [], &wq, &wk, d);
    assert_eq!(bare, out);
    let mut normed = x.clone();
    let (mut pre, mut rs) = (vec![0.0; d.n * 16], vec![0.0; d.n * 4]);
    rmsnorm::heads_forward(&mut normed, &mut pre, &mut rs, &wq, &wk, d);
    let mut dx = r.clone();
    let (mut dwq, mut dwk) = (vec![0.0; 4], vec![0.0; 4]);
    rmsnorm::heads_backward(&mut dx, &mut dwq, &mut dwk, &pre, &rs, &wq, &wk, d);
    check("qk norm dx", &x, &dx, |x| dot(&fwd(x, &wq, &wk), &r));
    check("qk norm dwq", &wq, &dwq, |w| dot(&fwd(&x, w, &wk), &r));
    check("qk norm dwk", &wk, &dwk, |w| dot(&fwd(&x, &wq, w), &r));
}

#[test]
fn rope_scaling_frequencies_as_transformers_computes_them() {
    use genas_space::{rope_inv_freq, RopeScaling};
    // transformers 5.25's inv_freq for head_dim 12, theta 5e5 (experiments/fixtures/hf/llama3
    // and llama-linear, printed from model.model.rotary_emb.inv_freq, float32).
    let llama3 = RopeScaling::Llama3 {
        factor: Float(8.0),
        low_freq_factor: Float(1.0),
        high_freq_factor: Float(4.0),
        original_context: 64,
    };
    let want = [
        1.0,
        0.018_723_189_8,
        0.001_574_901_05,
        1.767_766_81e-4,
        1.984_250_78e-5,
        2.227_247_48e-6,
    ];
    for (got, want) in rope_inv_freq(5e5, Some(llama3), 12).iter().zip(want) {
        assert!((got / want - 1.0).abs() < 1e-6, "{got} vs {want}");
    }
    let linear = RopeScaling::Linear { factor: Float(2.0) };
    let plain = rope_inv_freq(1e4, None, 12);
    for (l, p) in rope_inv_freq(1e4, Some(linear), 12).iter().zip(&plain) {
        assert_eq!(*l, p / 2.0);
    }
    assert_eq!(plain[1], 1e4f64.powf(-2.0 / 12.0));
}

#[test]
fn rope_gradients_and_definition() {
    let mut rng = Rng::seed_from_u64(21);
    // Two sequences of 5, 4 query heads and 2 key heads of width 6, values behind them.
    let d = RopeDims {
        n: 10,
        t: 5,
        offset: 0,
        heads: 4,
        kv_heads: 2,
        head_dim: 6,
        width: (4 + 2 + 2) * 6,
        theta: 100.0,
        scaling: Some(genas_space::RopeScaling::Linear { factor: Float(1.5) }),
    };
    let x = randn(d.n * d.width, &mut rng, 1.0);
    let r = randn(d.n * d.width, &mut rng, 1.0);
    let rotated = |x: &[f64]| {
        let mut y = x.to_vec();
        rope(&mut y, d, false);
        y
    };
    let y = rotated(&x);
    for row in 0..d.n {
        let p = (row % d.t) as f64;
        let (xr, yr) = (&x[row * d.width..], &y[row * d.width..]);
        // Query and key heads turn pair (i, i + 3) by p · 100^(−2i/6) / 1.5 (linear scaling
        // by 1.5); values stay.
        for head in 0..6 {
            for i in 0..3 {
                let a = p * 100f64.powf(-(2.0 * i as f64) / 6.0) / 1.5;
                let (u, v) = (xr[head * 6 + i], xr[head * 6 + i + 3]);
                assert!((yr[head * 6 + i] - (u * a.cos() - v * a.sin())).abs() < 1e-12);
                assert!((yr[head * 6 + i + 3] - (v * a.cos() + u * a.sin())).abs() < 1e-12);
            }
        }
        assert_eq!(&yr[36..48], &xr[36..48]);
    }
    // The backward pass is the inverse rotation of the gradient.
    let mut dx = r.clone();
    rope(&mut dx, d, true);
    check("rope", &x, &dx, |x| dot(&rotated(x), &r));
    let mut back = y.clone();
    rope(&mut back, d, true);
    for (a, b) in back.iter().zip(&x) {
        assert!((a - b).abs() < 1e-12);
    }
}

/// The f32 kernels (vectorised, with a width that leaves partial vectors) against the same
/// computation in f64.
#[test]
fn layernorm_in_f32_matches_f64() {
    let (n, c) = (130, 37);
    let (x, w, b, r) = layernorm_case(12, (n, c));
    let f = |v: &[f64]| -> Vec<f32> { v.iter().map(|&x| x as f32).collect() };
    let run64 = || {
        let (mut out, mut m, mut s) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        layernorm::layernorm_forward(&mut out, &mut m, &mut s, &x, &w, &b, (n, c), 1e-5);
        let (mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
        layernorm::layernorm_backward(&mut dx, &mut dw, &mut db, &r, &x, &w, &m, &s, (n, c));
        [out, dx, dw, db]
    };
    let (x32, w32, b32, r32) = (f(&x), f(&w), f(&b), f(&r));
    let (mut out, mut m, mut s) = (vec![0f32; n * c], vec![0f32; n], vec![0f32; n]);
    layernorm::layernorm_forward(&mut out, &mut m, &mut s, &x32, &w32, &b32, (n, c), 1e-5);
    let (mut dx, mut dw, mut db) = (vec![0f32; n * c], vec![0f32; c], vec![0f32; c]);
    layernorm::layernorm_backward(&mut dx, &mut dw, &mut db, &r32, &x32, &w32, &m, &s, (n, c));
    for (name, (got, want)) in ["out", "dx", "dw", "db"]
        .iter()
        .zip([out, dx, dw, db].iter().zip(run64().iter()))
    {
        let top = want.iter().fold(0f64, |a, v| a.max(v.abs()));
        for (i, (&g, &e)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - e).abs() <= 1e-5 * top,
                "{name}[{i}]: f32 {g} vs f64 {e} (largest |value| {top})"
            );
        }
    }
}

fn softmax_attention_case(heads: usize, kv_heads: usize, window: usize) {
    let mut rng = Rng::seed_from_u64(3 + heads as u64 * 10 + window as u64);
    let (b, t, hd) = (2, 6, 3);
    let d = AttnDims {
        b,
        t,
        heads,
        kv_heads,
        head_dim: hd,
        window,
    };
    let (c, wdt) = (d.c(), d.qkv_width());
    let qkv = randn(b * t * wdt, &mut rng, 1.0);
    let r = randn(b * t * c, &mut rng, 1.0);
    let fwd = |qkv: &[f64]| {
        let (mut out, mut p) = (vec![0.0; b * t * c], vec![0.0; b * heads * t * t]);
        attention_forward(&mut out, &mut p, qkv, d);
        dot(&out, &r)
    };
    let (mut out, mut p) = (vec![0.0; b * t * c], vec![0.0; b * heads * t * t]);
    attention_forward(&mut out, &mut p, &qkv, d);
    let mut dqkv = vec![0.0; b * t * wdt];
    attention_backward(&mut dqkv, &r, &qkv, &p, d);
    check(
        &format!("attention h{heads} kv{kv_heads} w{window}"),
        &qkv,
        &dqkv,
        fwd,
    );
}

#[test]
fn full_grouped_and_sliding_attention_gradients() {
    softmax_attention_case(2, 2, usize::MAX); // full
    softmax_attention_case(4, 2, usize::MAX); // grouped
    softmax_attention_case(4, 1, usize::MAX); // multi-query
    softmax_attention_case(2, 2, 3); // sliding window
}

#[test]
fn causal_attention_ignores_the_future_and_the_window() {
    // Changing a key/value at position j only changes outputs at positions i ≥ j (and, with a
    // window W, only i < j + W).
    let mut rng = Rng::seed_from_u64(9);
    let (b, t, hd, heads) = (1, 8, 4, 2);
    for window in [usize::MAX, 3] {
        let d = AttnDims {
            b,
            t,
            heads,
            kv_heads: heads,
            head_dim: hd,
            window,
        };
        let (c, w) = (d.c(), d.qkv_width());
        let qkv = randn(t * w, &mut rng, 1.0);
        let run = |qkv: &[f64]| {
            let (mut out, mut p) = (vec![0.0; t * c], vec![0.0; heads * t * t]);
            attention_forward(&mut out, &mut p, qkv, d);
            out
        };
        let base = run(&qkv);
        let j = 4;
        let mut moved = qkv.clone();
        for e in c..w {
            moved[j * w + e] += 1.0;
        }
        let out = run(&moved);
        for i in 0..t {
            let changed = (0..c).any(|e| (out[i * c + e] - base[i * c + e]).abs() > 1e-12);
            let visible = i >= j && i < j.saturating_add(window);
            assert_eq!(changed, visible, "window {window} position {i}");
        }
    }
}

#[test]
fn linear_attention_gradients_and_definition() {
    let mut rng = Rng::seed_from_u64(4);
    let (b, t, heads, hd) = (2, 5, 2, 3);
    let c = heads * hd;
    let qkv = randn(b * t * 3 * c, &mut rng, 1.0);
    let r = randn(b * t * c, &mut rng, 1.0);
    let run = |qkv: &[f64]| {
        let (mut out, mut den) = (vec![0.0; b * t * c], vec![0.0; b * heads * t]);
        linear_attention_forward(&mut out, &mut den, qkv, (b, t, heads, hd));
        (out, den)
    };
    let (out, den) = run(&qkv);
    // Direct evaluation of the definition for one position.
    let phi = |x: f64| if x > 0.0 { x + 1.0 } else { x.exp() };
    let (bi, i, h) = (1, 3, 1);
    let row = |j: usize| &qkv[(bi * t + j) * 3 * c..(bi * t + j + 1) * 3 * c];
    let q: Vec<f64> = (0..hd).map(|e| phi(row(i)[h * hd + e])).collect();
    let mut num = vec![0.0; hd];
    let mut dn = 0.0;
    for j in 0..=i {
        let k: Vec<f64> = (0..hd).map(|e| phi(row(j)[c + h * hd + e])).collect();
        let qk = dot(&q, &k);
        dn += qk;
        for (n, &v) in num
            .iter_mut()
            .zip(&row(j)[2 * c + h * hd..2 * c + (h + 1) * hd])
        {
            *n += qk * v;
        }
    }
    for e in 0..hd {
        assert!((out[(bi * t + i) * c + h * hd + e] - num[e] / dn).abs() < 1e-12);
    }
    let mut dqkv = vec![0.0; b * t * 3 * c];
    linear_attention_backward(&mut dqkv, &r, &qkv, &out, &den, (b, t, heads, hd));
    check("linear attention", &qkv, &dqkv, |x| dot(&run(x).0, &r));
}

/// The bias added in the activation's pass: the forward against act(pre + bias) written out,
/// and dpre and dbias (taken in the same backward pass, over enough rows for several tasks)
/// by finite differences.
#[test]
fn bias_in_the_activation_pass_gradients() {
    let mut rng = Rng::seed_from_u64(15);
    let (rows, width) = (37, 3);
    for act in [Act::Gelu, Act::GeluTanh, Act::Relu] {
        let name = format!("{act:?}");
        let pre = randn(rows * width, &mut rng, 1.0);
        let bias = randn(width, &mut rng, 1.0);
        let r = randn(rows * width, &mut rng, 1.0);
        let run = |pre: &[f64], bias: &[f64]| {
            let mut o = vec![0.0; rows * width];
            activation::bias_act_forward(act, &mut o, pre, bias, (rows, width));
            o
        };
        let out = run(&pre, &bias);
        let mut summed = pre.clone();
        for row in summed.chunks_exact_mut(width) {
            for (x, b) in row.iter_mut().zip(&bias) {
                *x += b;
            }
        }
        let mut want = vec![0.0; rows * width];
        match act {
            Act::Gelu => activation::gelu_forward(&mut want, &summed),
            Act::GeluTanh => activation::gelu_tanh_forward(&mut want, &summed),
            Act::Relu => activation::relu_forward(&mut want, &summed),
        }
        assert_eq!(out, want, "{name} forward");
        let mut d = r.clone();
        let mut db = vec![0.5; width];
        activation::bias_act_backward(act, &mut d, &mut db, &pre, &out, &bias, (rows, width));
        // dbias is added to, not overwritten.
        db.iter_mut().for_each(|x| *x -= 0.5);
        check(&format!("{name} dpre"), &pre, &d, |p| {
            dot(&run(p, &bias), &r)
        });
        check(&format!("{name} dbias"), &bias, &db, |b| {
            dot(&run(&pre, b), &r)
        });
    }
}

#[test]
fn activation_gradients() {
    let mut rng = Rng::seed_from_u64(5);
    let n = 40;
    let x = randn(n, &mut rng, 2.0);
    let r = randn(n, &mut rng, 1.0);
    let mut d = r.clone();
    let mut y = vec![0.0; n];
    activation::gelu_forward(&mut y, &x);
    activation::gelu_backward(&mut d, &x, &y);
    check("gelu", &x, &d, |x| {
        let mut o = vec![0.0; n];
        activation::gelu_forward(&mut o, x);
        dot(&o, &r)
    });
    // Exact GELU at known points: gelu(1) = 0.8413447460685429.
    let mut o = vec![0.0f64; 1];
    activation::gelu_forward(&mut o, &[1.0]);
    assert!((o[0] - 0.841_344_746_068_542_9).abs() < 1e-12);
    // GELU's tanh form: against finite differences, and against its definition at 1 and −3
    // (½x(1 + tanh(√(2/π)(x + 0.044715x³))), worked in f64 by hand: 0.8411919906082768 and
    // −0.0036373920817729).
    // (Within ±~4: further out the derivative is below what central differences of a sum of
    // 40 terms resolve; the saturation is checked below.)
    let xt: Vec<f64> = x.iter().map(|v| v / 2.0).collect();
    d.copy_from_slice(&r);
    activation::gelu_tanh_backward(&mut d, &xt);
    check("gelu_tanh", &xt, &d, |x| {
        let mut o = vec![0.0; n];
        activation::gelu_tanh_forward(&mut o, x);
        dot(&o, &r)
    });
    let mut o = vec![0.0f64; 2];
    activation::gelu_tanh_forward(&mut o, &[1.0, -3.0]);
    assert!((o[0] - 0.841_191_990_608_276_8).abs() < 1e-12, "{}", o[0]);
    assert!((o[1] + 0.003_637_392_081_772_9).abs() < 1e-12, "{}", o[1]);
    // Far out it saturates to x and 0 without NaN.
    activation::gelu_tanh_forward(&mut o, &[60.0, -60.0]);
    assert_eq!(o, [60.0, 0.0]);
    d.copy_from_slice(&r);
    activation::relu_backward(&mut d, &x);
    check("relu", &x, &d, |x| {
        let mut o = vec![0.0; n];
        activation::relu_forward(&mut o, x);
        dot(&o, &r)
    });
    let u = randn(n, &mut rng, 1.0);
    let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
    activation::swiglu_backward(&mut dg, &mut du, &x, &u, &r);
    let f = |g: &[f64], u: &[f64]| {
        let mut o = vec![0.0; n];
        activation::swiglu_forward(&mut o, g, u);
        dot(&o, &r)
    };
    check("swiglu gate", &x, &dg, |g| f(g, &u));
    check("swiglu up", &u, &du, |u| f(&x, u));
}

#[test]
fn embedding_gradients() {
    let mut rng = Rng::seed_from_u64(6);
    let (b, t, c, v) = (2, 3, 4, 5);
    let tokens = [1u32, 4, 1, 0, 1, 3];
    let (wte, wpe, r) = (
        randn(v * c, &mut rng, 1.0),
        randn(t * c, &mut rng, 1.0),
        randn(b * t * c, &mut rng, 1.0),
    );
    let f = |wte: &[f64], wpe: &[f64]| {
        let mut o = vec![0.0; b * t * c];
        embedding::embedding_forward(&mut o, &tokens, wte, Some(wpe), (b, t, c));
        dot(&o, &r)
    };
    let (mut dwte, mut dwpe) = (vec![0.0; v * c], vec![0.0; t * c]);
    embedding::embedding_backward(&mut dwte, Some(&mut dwpe), &r, &tokens, (b, t, c));
    check("wte", &wte, &dwte, |w| f(w, &wpe));
    check("wpe", &wpe, &dwpe, |w| f(&wte, w));
    // Without positions (rope): the token embedding alone.
    let f = |wte: &[f64]| {
        let mut o = vec![0.0; b * t * c];
        embedding::embedding_forward(&mut o, &tokens, wte, None, (b, t, c));
        dot(&o, &r)
    };
    let mut dwte = vec![0.0; v * c];
    embedding::embedding_backward(&mut dwte, None, &r, &tokens, (b, t, c));
    check("wte without wpe", &wte, &dwte, f);
}

#[test]
fn loss_gradients_with_and_without_distillation() {
    let mut rng = Rng::seed_from_u64(7);
    let (n, v) = (3, 6);
    let z = randn(n * v, &mut rng, 2.0);
    let y = [2u32, 0, 5];
    let mut teacher = randn(n * v, &mut rng, 1.0);
    for row in teacher.chunks_mut(v) {
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = row.iter().map(|x| (x - m).exp()).sum();
        for x in row.iter_mut() {
            *x = (*x - m).exp() / s;
        }
    }
    for distill in [
        None,
        Some(loss::Distill {
            soft: loss::SoftRef::Dense(&teacher[..]),
            temperature: 2.0,
            alpha: 0.3,
        }),
    ] {
        let mut dz = vec![0.0; n * v];
        let (l, ce) = loss::loss_forward_backward(Some(&mut dz), &z, &y, distill.as_ref(), (n, v));
        if distill.is_none() {
            assert_eq!(l, ce);
        }
        check("loss", &z, &dz, |z| {
            loss::loss_forward_backward(None, z, &y, distill.as_ref(), (n, v)).0
        });
    }
    // KL(p‖p) = 0: distilling towards the student's own tempered distribution leaves only α·CE.
    let t = 2.0;
    let mut own = vec![0.0; n * v];
    for i in 0..n {
        let row = &z[i * v..(i + 1) * v];
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = row.iter().map(|x| ((x - m) / t).exp()).sum();
        for k in 0..v {
            own[i * v + k] = ((row[k] - m) / t).exp() / s;
        }
    }
    let d = loss::Distill {
        soft: loss::SoftRef::Dense(&own[..]),
        temperature: t,
        alpha: 0.25,
    };
    let (l, ce) = loss::loss_forward_backward(None, &z, &y, Some(&d), (n, v));
    assert!((l - 0.25 * ce).abs() < 1e-12, "{l} {ce}");
}

/// Top-k rows of `probs` (n, v): the k largest of each row and their probabilities (f32),
/// and the same rows spread densely as the loss once read them (the rest of each row's mass
/// evenly over the other v − k tokens).
fn top_k_rows(probs: &[f64], (n, v): (usize, usize), k: usize) -> (Vec<u32>, Vec<f32>, Vec<f64>) {
    let (mut index, mut prob, mut dense) = (Vec::new(), Vec::new(), vec![0.0; n * v]);
    for (r, row) in probs.chunks(v).enumerate() {
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|a, b| row[*b].total_cmp(&row[*a]));
        let ix: Vec<u32> = order[..k].iter().map(|&i| i as u32).collect();
        let pr: Vec<f32> = order[..k].iter().map(|&i| row[i] as f32).collect();
        let rest = loss::top_k_rest(&pr, v);
        let out = &mut dense[r * v..(r + 1) * v];
        out.fill(rest);
        for (&i, &p) in ix.iter().zip(&pr) {
            out[i as usize] = f64::from(p);
        }
        index.extend(ix);
        prob.extend(pr);
    }
    (index, prob, dense)
}

#[test]
fn top_k_targets_give_the_dense_loss_and_gradient_without_spreading_them() {
    let mut rng = Rng::seed_from_u64(9);
    let (n, v) = (5, 40);
    let z = randn(n * v, &mut rng, 2.0);
    let y = [2u32, 0, 39, 7, 7];
    let mut teacher = randn(n * v, &mut rng, 3.0);
    for row in teacher.chunks_mut(v) {
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = row.iter().map(|x| (x - m).exp()).sum();
        for x in row.iter_mut() {
            *x = (*x - m).exp() / s;
        }
    }
    for (k, temperature, alpha) in [(1, 1.0, 0.5), (4, 2.0, 0.3), (8, 0.7, 0.0), (40, 2.0, 0.1)] {
        let (index, prob, dense) = top_k_rows(&teacher, (n, v), k);
        let sparse = loss::Distill {
            soft: loss::SoftRef::TopK {
                k,
                index: &index,
                prob: &prob,
            },
            temperature,
            alpha,
        };
        let spread = loss::Distill {
            soft: loss::SoftRef::Dense(&dense[..]),
            temperature,
            alpha,
        };
        let (mut ds, mut dd) = (vec![0.0; n * v], vec![0.0; n * v]);
        let (ls, cs) = loss::loss_forward_backward(Some(&mut ds), &z, &y, Some(&sparse), (n, v));
        let (ld, cd) = loss::loss_forward_backward(Some(&mut dd), &z, &y, Some(&spread), (n, v));
        assert!((ls - ld).abs() < 1e-9, "k {k}: {ls} against {ld}");
        assert_eq!(cs, cd);
        for (a, b) in ds.iter().zip(&dd) {
            assert!((a - b).abs() < 1e-12, "k {k}: {a} against {b}");
        }
        // And against finite differences of its own loss.
        check("top-k loss", &z, &ds, |z| {
            loss::loss_forward_backward(None, z, &y, Some(&sparse), (n, v)).0
        });
    }
    // A row whose k tokens hold all the mass: nothing is spread (the rest is 0).
    let mut index = vec![0u32; n * 2];
    let mut prob = vec![0f32; n * 2];
    for r in 0..n {
        index[2 * r] = r as u32;
        index[2 * r + 1] = (r + 10) as u32;
        prob[2 * r] = 0.75;
        prob[2 * r + 1] = 0.25;
    }
    let mut dense = vec![0.0; n * v];
    for r in 0..n {
        dense[r * v + r] = 0.75;
        dense[r * v + r + 10] = 0.25;
    }
    let d = |soft| loss::Distill {
        soft,
        temperature: 1.5,
        alpha: 0.2,
    };
    let a = loss::loss_forward_backward(
        None,
        &z,
        &y,
        Some(&d(loss::SoftRef::TopK {
            k: 2,
            index: &index,
            prob: &prob,
        })),
        (n, v),
    );
    let b =
        loss::loss_forward_backward(None, &z, &y, Some(&d(loss::SoftRef::Dense(&dense))), (n, v));
    assert!((a.0 - b.0).abs() < 1e-9, "{a:?} {b:?}");
}

// ---------------------------------------------------------------- whole models

fn arch(layers: Vec<Layer>, share: u32, tied: bool) -> Architecture {
    let a = Architecture {
        vocab_size: 7,
        context: 6,
        d_model: 8,
        tie_embeddings: tied,
        share_layers: share,
        layers,
        norm: Default::default(),
        position: Default::default(),
        norm_eps: genas_space::Float(genas_space::NORM_EPS),
    };
    a.validate().unwrap();
    a
}

/// Checks every gradient of every parameter (masked weights must have zero gradient).
fn check_model(name: &str, a: &Architecture, teacher: bool) {
    let be = Cpu::<f64>::new(1);
    let mut model = Model::new(a, be, 11);
    // Larger weights than the 0.02 init, so every path carries signal.
    let mut rng = Rng::seed_from_u64(12);
    for i in 0..model.params.len() {
        let mut w = model.weights(i);
        let mask = model.mask(i);
        for (k, x) in w.iter_mut().enumerate() {
            *x += rng.normal() * 0.3;
            if let Some(m) = &mask {
                *x *= m[k];
            }
        }
        model.set_weights(i, &w);
    }
    let (b, t, v) = (2, 6, 7);
    let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(v as u64) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(v as u64) as u32).collect();
    let probs: Option<Vec<f64>> = teacher.then(|| {
        let mut p: Vec<f64> = (0..b * t * v).map(|_| rng.next_f64() + 0.05).collect();
        for row in p.chunks_mut(v) {
            let s: f64 = row.iter().sum();
            row.iter_mut().for_each(|x| *x /= s);
        }
        p
    });
    let loss_of = |m: &mut Model<Cpu<f64>>, grad: bool| {
        let t_buf = probs.clone().map(genas_engine::Soft::Dense);
        m.forward(
            &tokens,
            Some(&targets),
            t_buf.as_ref().map(|p| (p, 2.0, 0.4)),
            (b, t),
            grad,
        )
        .unwrap()
        .loss
    };
    // A backward on other tokens first: gradients are written afresh by each pass, so what
    // an earlier pass left must not leak into the next.
    let other: Vec<u32> = tokens.iter().map(|&x| (x + 1) % v as u32).collect();
    model
        .forward(&other, Some(&targets), None, (b, t), true)
        .unwrap();
    model.backward(&other);
    loss_of(&mut model, true);
    model.backward(&tokens);
    for i in 0..model.params.len() {
        let info = model.params[i].clone();
        let x = model.weights(i);
        let g = model.grad(i);
        let mask = model.mask(i);
        let mut xp = x.clone();
        for k in 0..x.len() {
            if mask.as_ref().is_some_and(|m| m[k] == 0.0) {
                assert_eq!(
                    g[k], 0.0,
                    "{name}: masked {}[{k}] has a gradient",
                    info.name
                );
                continue;
            }
            xp[k] = x[k] + EPS;
            model.set_weights(i, &xp);
            let up = loss_of(&mut model, false);
            xp[k] = x[k] - EPS;
            model.set_weights(i, &xp);
            let down = loss_of(&mut model, false);
            xp[k] = x[k];
            let numeric = (up - down) / (2.0 * EPS);
            let err = (numeric - g[k]).abs() / (numeric.abs() + g[k].abs()).max(1e-7);
            assert!(
                err < 1e-4,
                "{name}: {}[{k}] analytic {} numeric {numeric} (rel {err:.1e})",
                info.name,
                g[k]
            );
        }
        model.set_weights(i, &x);
    }
}

#[test]
fn whole_model_full_and_grouped_attention() {
    let l1 = Layer::new(
        Attention::Full { heads: 2 },
        12,
        Activation::Gelu,
        None,
        Sparsity::Dense,
    );
    let l2 = Layer::new(
        Attention::Grouped {
            heads: 4,
            kv_heads: 2,
        },
        8,
        Activation::Relu,
        None,
        Sparsity::Dense,
    );
    check_model("full+grouped", &arch(vec![l1, l2], 1, false), false);
}

#[test]
fn whole_model_attention_biases_and_gelu_tanh() {
    // GPT-2's block: biases on q/k/v and the output projection, GELU's tanh form; with learned
    // positions and with rope (biases go in before the rotation).
    let biased = |a: Attention, act: Activation| Layer {
        attention_bias: true,
        ..Layer::new(a, 12, act, None, Sparsity::Dense)
    };
    let l1 = biased(Attention::Full { heads: 2 }, Activation::GeluTanh);
    let l2 = biased(
        Attention::Grouped {
            heads: 4,
            kv_heads: 2,
        },
        Activation::Gelu,
    );
    let l3 = Layer::new(
        Attention::Sliding {
            heads: 2,
            window: 3,
            kv_heads: None,
        },
        8,
        Activation::GeluTanh,
        None,
        Sparsity::Dense,
    );
    let a = arch(vec![l1.clone(), l2.clone(), l3.clone()], 1, false);
    // (check_model moves every weight, the zero-initialised biases too.)
    check_model("biases+gelu_tanh", &a, false);
    let rope = Architecture {
        position: Position::Rope {
            theta: Float(10_000.0),
            scaling: None,
        },
        ..arch(vec![l1, l2, l3], 1, true)
    };
    check_model("biases+rope", &rope, true);
}

#[test]
fn whole_model_qwen_and_mistral_blocks() {
    // Qwen2: q/k/v biases without an output bias, epsilon 1e-6; Qwen3: query/key norms and
    // heads wider than d_model / heads; Mistral: grouped sliding attention; all with rope
    // scaled as Llama 3 does, RMSNorm and swiglu.
    let layer = |a: Attention| Layer::new(a, 12, Activation::Swiglu, None, Sparsity::Dense);
    let qwen2 = Layer {
        qkv_bias: true,
        ..layer(Attention::Grouped {
            heads: 4,
            kv_heads: 2,
        })
    };
    let qwen3 = Layer {
        qk_norm: true,
        head_dim: Some(6),
        ..layer(Attention::Grouped {
            heads: 2,
            kv_heads: 1,
        })
    };
    let mistral = Layer {
        head_dim: Some(4),
        ..layer(Attention::Sliding {
            heads: 4,
            window: 3,
            kv_heads: Some(2),
        })
    };
    let narrow = Layer {
        qk_norm: true,
        qkv_bias: true,
        head_dim: Some(2),
        ..layer(Attention::Full { heads: 3 })
    };
    let scaled = Position::Rope {
        theta: Float(500.0),
        scaling: Some(genas_space::RopeScaling::Llama3 {
            factor: Float(4.0),
            low_freq_factor: Float(1.0),
            high_freq_factor: Float(2.0),
            original_context: 8,
        }),
    };
    let a = Architecture {
        norm: Norm::Rmsnorm,
        position: scaled,
        norm_eps: Float(1e-6),
        ..arch(vec![qwen2, qwen3, mistral, narrow], 1, false)
    };
    a.validate().unwrap();
    check_model("qwen+mistral", &a, true);
    // Learned positions and LayerNorm with the same blocks. (Without rope a key bias adds
    // the same to every score of a query, so its gradient is exactly zero and a finite
    // difference only measures rounding: the biases are checked above, with rope.)
    let layers = a
        .layers
        .iter()
        .map(|l| Layer {
            qkv_bias: false,
            ..l.clone()
        })
        .collect();
    let plain = Architecture {
        norm_eps: Float(1e-3),
        ..arch(layers, 1, true)
    };
    check_model("qwen+mistral learned", &plain, false);
}

#[test]
fn whole_model_sliding_linear_and_none() {
    let l1 = Layer::new(
        Attention::Sliding {
            heads: 2,
            window: 3,
            kv_heads: None,
        },
        8,
        Activation::Gelu,
        None,
        Sparsity::Dense,
    );
    let l2 = Layer::new(
        Attention::Linear { heads: 2 },
        8,
        Activation::Gelu,
        None,
        Sparsity::Dense,
    );
    let l3 = Layer::new(Attention::None, 8, Activation::Gelu, None, Sparsity::Dense);
    check_model(
        "sliding+linear+none",
        &arch(vec![l1, l2, l3], 1, false),
        false,
    );
}

/// Layers without an FFN (blockwise search's no-op FFN): attention alone, and a layer with
/// neither half (the identity), between layers that have both.
#[test]
fn whole_model_layers_without_an_ffn() {
    let full = Layer::new(
        Attention::Full { heads: 2 },
        8,
        Activation::Gelu,
        None,
        Sparsity::Dense,
    );
    let attention_only = Layer {
        ffn: None,
        ..full.clone()
    };
    let identity = Layer {
        ffn: None,
        ..Layer::new(Attention::None, 8, Activation::Gelu, None, Sparsity::Dense)
    };
    let a = arch(vec![full.clone(), attention_only, identity, full], 1, false);
    let m = Model::new(&a, Cpu::<f64>::new(1), 0);
    for i in [1, 2] {
        assert!(m.param_index(&format!("h.{i}.ln_2.weight")).is_none());
        assert!(m.param_index(&format!("h.{i}.mlp.c_fc.weight")).is_none());
    }
    assert_eq!(m.num_params() as u64, genas_space::Cost::of(&a).params);
    check_model("attention only + identity", &a, false);
}

#[test]
fn whole_model_sparsity_low_rank_and_swiglu() {
    let l1 = Layer::new(
        Attention::Full { heads: 2 },
        12,
        Activation::Swiglu,
        Some(4),
        Sparsity::Unstructured(Fraction(0.5)),
    );
    let l2 = Layer::new(
        Attention::Grouped {
            heads: 2,
            kv_heads: 1,
        },
        16,
        Activation::Gelu,
        None,
        Sparsity::TwoFour,
    );
    check_model(
        "sparse+lowrank+swiglu",
        &arch(vec![l1, l2], 1, false),
        false,
    );
}

#[test]
fn whole_model_sharing_tying_and_distillation() {
    let l = Layer::new(
        Attention::Full { heads: 2 },
        8,
        Activation::Gelu,
        Some(3),
        Sparsity::Dense,
    );
    let a = arch(vec![l.clone(), l.clone(), l], 2, true);
    check_model("shared+tied+distill", &a, true);
}

#[test]
fn whole_model_rope_and_rmsnorm_on_every_attention_kind() {
    let full = Layer::new(
        Attention::Full { heads: 2 },
        12,
        Activation::Swiglu,
        None,
        Sparsity::Dense,
    );
    let grouped = Layer::new(
        Attention::Grouped {
            heads: 4,
            kv_heads: 2,
        },
        8,
        Activation::Gelu,
        None,
        Sparsity::Dense,
    );
    let sliding = Layer::new(
        Attention::Sliding {
            heads: 2,
            window: 3,
            kv_heads: None,
        },
        8,
        Activation::Gelu,
        Some(3),
        Sparsity::Dense,
    );
    let linear = Layer::new(
        Attention::Linear { heads: 2 },
        8,
        Activation::Relu,
        None,
        Sparsity::Dense,
    );
    let none = Layer::new(Attention::None, 8, Activation::Gelu, None, Sparsity::Dense);
    let layers = vec![full, grouped, sliding, linear, none];
    let rope = Position::Rope {
        theta: Float(10_000.0),
        scaling: None,
    };
    for (name, norm, position, tied) in [
        ("rope", Norm::Layernorm, rope, false),
        ("rmsnorm", Norm::Rmsnorm, Position::Learned, true),
        ("rope+rmsnorm", Norm::Rmsnorm, rope, false),
    ] {
        let mut a = arch(layers.clone(), 1, tied);
        a.norm = norm;
        a.position = position;
        a.validate().unwrap();
        check_model(name, &a, name == "rmsnorm");
    }
}

#[test]
fn data_parallel_shards_give_the_full_batch_gradient() {
    let l1 = Layer::new(
        Attention::Full { heads: 2 },
        12,
        Activation::Swiglu,
        Some(4),
        Sparsity::Unstructured(Fraction(0.5)),
    );
    let l2 = Layer::new(
        Attention::Linear { heads: 2 },
        8,
        Activation::Gelu,
        None,
        Sparsity::Dense,
    );
    let a = arch(vec![l1, l2], 1, true);
    let mut rng = Rng::seed_from_u64(31);
    // Three sequences over two workers: shares of 1 and 2 rows, weighted 1/3 and 2/3.
    let (b, t) = (3, 6);
    let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(7) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(7) as u32).collect();
    let mut full = Model::new(&a, Cpu::<f64>::new(1), 4);
    let mut sharded = Model::new(&a, Cpu::<f64>::new(2), 4);
    let want = full
        .forward(&tokens, Some(&targets), None, (b, t), true)
        .unwrap();
    full.backward(&tokens);
    let got = sharded.forward_backward(&tokens, &targets, (b, t));
    assert!((want.loss - got.loss).abs() < 1e-12, "{want:?} {got:?}");
    for i in 0..full.params.len() {
        let (g1, g2) = (full.grad(i), sharded.grad(i));
        let scale = g1.iter().map(|x| x.abs()).fold(1e-12, f64::max);
        for (x, y) in g1.iter().zip(&g2) {
            assert!(
                (x - y).abs() <= 1e-10 * scale,
                "{}: {x} vs {y}",
                full.params[i].name
            );
        }
    }
}
