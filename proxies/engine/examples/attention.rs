//! Attention alone on the large benchmark model's shapes (B16 T128 H8 hd32), one thread, long
//! enough to profile:
//!
//!     cargo run --release -p genas-engine --example attention [-- forward|backward|both [REPS [LAYERS]]]
//!
//! LAYERS (default 1) sets of qkv / probabilities / output buffers are used in turn, as a
//! training step's layers do: with 1 every call finds its data in cache, with 6 (the large model)
//! it comes from memory as in a step. Prints ms per call and GFLOP/s (causal multiply-adds
//! counted as 2 FLOPs).

use genas_engine::cpu::attention::{attention_backward, attention_forward, AttnDims};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "both".into());
    let reps: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(200);
    let layers: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(1).max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("thread pool");
    let (b, t, h, hd) = (16, 128, 8, 32);
    let d = AttnDims {
        b,
        t,
        heads: h,
        kv_heads: h,
        head_dim: hd,
        window: t,
    };
    let c = h * hd;
    let data = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    };
    let qkvs: Vec<Vec<f32>> = (0..layers).map(|_| data(b * t * 3 * c)).collect();
    let dout = data(b * t * c);
    let mut outs: Vec<Vec<f32>> = (0..layers).map(|_| vec![0f32; b * t * c]).collect();
    let mut probss: Vec<Vec<f32>> = (0..layers).map(|_| vec![0f32; b * h * t * t]).collect();
    let mut dqkv = vec![0f32; b * t * 3 * c];
    let flop = (b * h * t * (t + 1) / 2 * hd * 4) as f64;
    pool.install(|| {
        for l in 0..layers {
            attention_forward(&mut outs[l], &mut probss[l], &qkvs[l], d);
        }
        for (name, mult) in [("forward", 1.0), ("backward", 2.0)] {
            if which != "both" && which != name {
                continue;
            }
            let start = Instant::now();
            for r in 0..reps {
                let l = r % layers;
                if name == "forward" {
                    attention_forward(&mut outs[l], &mut probss[l], &qkvs[l], d);
                } else {
                    attention_backward(&mut dqkv, &dout, &qkvs[l], &probss[l], d);
                }
            }
            let dt = start.elapsed().as_secs_f64() / reps as f64;
            println!(
                "attention {name:8} {:7.3} ms  {:6.1} GFLOP/s",
                dt * 1e3,
                mult * flop / dt / 1e9
            );
        }
    });
}
