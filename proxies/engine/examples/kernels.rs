//! Per-kernel timings of the CPU engine on the benchmark model's shapes (B32 T64 C128 H4,
//! FFN 512): where a training step's time goes, kernel by kernel.
//!
//!     cargo run --release -p genas-engine --example kernels [-- THREADS]
//!
//! `GENAS_SIMD=avx2|baseline` forces a narrower instruction set for comparison. Figures are
//! means over 20 repetitions after one warm-up; GFLOP/s counts multiply-adds as 2 FLOPs.

use genas_engine::cpu::attention::{attention_backward, attention_forward, AttnDims};
use genas_engine::cpu::{activation, layernorm, matmul};
use genas_engine::simd;
use std::time::Instant;

fn time(name: &str, flop: f64, mut f: impl FnMut()) {
    f();
    let reps = 20;
    let start = Instant::now();
    for _ in 0..reps {
        f();
    }
    let dt = start.elapsed().as_secs_f64() / reps as f64;
    if flop > 0.0 {
        println!(
            "{name:34} {:8.3} ms  {:7.1} GFLOP/s",
            dt * 1e3,
            flop / dt / 1e9
        );
    } else {
        println!("{name:34} {:8.3} ms", dt * 1e3);
    }
}

fn data(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 * scale - scale / 2.0)
        .collect()
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    println!("{threads} thread(s), SIMD level {:?}", simd::level());
    pool.install(|| {
        let (b, t, h, hd) = (32, 64, 4, 32);
        let (n, c, hidden) = (b * t, h * hd, 4 * h * hd);
        let d = AttnDims {
            b,
            t,
            heads: h,
            kv_heads: h,
            head_dim: hd,
            window: t,
        };
        let qkv = data(n * 3 * c, 1.0);
        let (mut out, mut probs) = (vec![0f32; n * c], vec![0f32; b * h * t * t]);
        let attn_flop = (b * h * t * (t + 1) / 2 * hd * 4) as f64;
        time("attention forward", attn_flop, || {
            attention_forward(&mut out, &mut probs, &qkv, d)
        });
        let mut dqkv = vec![0f32; n * 3 * c];
        time("attention backward", 2.0 * attn_flop, || {
            attention_backward(&mut dqkv, &out, &qkv, &probs, d)
        });
        // The large benchmark model's attention: B16 T128 H8 hd32.
        let (lb, lt, lh) = (16, 128, 8);
        let ld = AttnDims {
            b: lb,
            t: lt,
            heads: lh,
            kv_heads: lh,
            head_dim: hd,
            window: lt,
        };
        let lc = lh * hd;
        let lqkv = data(lb * lt * 3 * lc, 1.0);
        let (mut lout, mut lprobs) = (vec![0f32; lb * lt * lc], vec![0f32; lb * lh * lt * lt]);
        let lflop = (lb * lh * lt * (lt + 1) / 2 * hd * 4) as f64;
        time("attention forward (T128 H8)", lflop, || {
            attention_forward(&mut lout, &mut lprobs, &lqkv, ld)
        });
        let mut ldqkv = vec![0f32; lb * lt * 3 * lc];
        time("attention backward (T128 H8)", 2.0 * lflop, || {
            attention_backward(&mut ldqkv, &lout, &lqkv, &lprobs, ld)
        });

        let x = data(n * hidden, 8.0);
        let (mut y, mut dx, g) = (
            vec![0f32; n * hidden],
            vec![0f32; n * hidden],
            data(n * hidden, 1.0),
        );
        time("gelu forward (N×4C)", 0.0, || {
            activation::gelu_forward(&mut y, &x)
        });
        time("gelu bwd (N×4C), dout copied in", 0.0, || {
            // In place (dout in, dinp out): dout is laid back in first, so the repetitions do
            // not shrink it into denormals; that copy is part of the time.
            dx.copy_from_slice(&g);
            activation::gelu_backward(&mut dx, &x, &y)
        });
        time("relu forward (N×4C), memory bound", 0.0, || {
            activation::relu_forward(&mut y, &x)
        });
        // fc's bias: laid under the product (copied into every row, read back by gemm) or
        // added in the activation's pass.
        let (ln, wfc, bfc) = (data(n * c, 1.0), data(hidden * c, 0.1), data(hidden, 0.5));
        let mut pre = vec![0f32; n * hidden];
        let fc_flop = 2.0 * (n * c * hidden) as f64;
        time("fc with bias, then gelu", fc_flop, || {
            matmul::matmul_forward(&mut pre, false, &ln, &wfc, Some(&bfc), (n, c, hidden), par);
            activation::gelu_forward(&mut y, &pre);
        });
        time("fc, then bias + gelu in one pass", fc_flop, || {
            matmul::matmul_forward(&mut pre, false, &ln, &wfc, None, (n, c, hidden), par);
            activation::bias_act_forward(
                genas_engine::backend::Act::Gelu,
                &mut y,
                &pre,
                &bfc,
                (n, hidden),
            );
        });

        let xi = data(n * c, 4.0);
        let (w, bias) = (vec![1f32; c], vec![0f32; c]);
        let (mut o, mut mean, mut rstd) = (vec![0f32; n * c], vec![0f32; n], vec![0f32; n]);
        time("layernorm forward", 0.0, || {
            layernorm::layernorm_forward(&mut o, &mut mean, &mut rstd, &xi, &w, &bias, (n, c), 1e-5)
        });
        let (mut di, mut dw, mut db) = (vec![0f32; n * c], vec![0f32; c], vec![0f32; c]);
        time("layernorm backward", 0.0, || {
            layernorm::layernorm_backward(
                &mut di,
                &mut dw,
                &mut db,
                &o,
                &xi,
                &w,
                &mean,
                &rstd,
                (n, c),
            )
        });

        for (name, k, m) in [
            ("qkv", c, 3 * c),
            ("attn proj", c, c),
            ("fc", c, hidden),
            ("fc proj", hidden, c),
            ("lm head", c, 65),
        ] {
            let inp = data(n * k, 1.0);
            let wm = data(m * k, 0.1);
            let mut res = vec![0f32; n * m];
            let flop = 2.0 * (n * k * m) as f64;
            time(&format!("matmul {name} forward"), flop, || {
                matmul::matmul_forward(&mut res, false, &inp, &wm, None, (n, k, m), par)
            });
            let (mut dinp, mut dwm) = (vec![0f32; n * k], vec![0f32; m * k]);
            time(&format!("matmul {name} backward dX+dW"), 2.0 * flop, || {
                matmul::matmul_backward(
                    Some(&mut dinp),
                    false,
                    &mut dwm,
                    None,
                    &res,
                    &inp,
                    &wm,
                    (n, k, m),
                    par,
                )
            });
        }
    });
}
