use genas_proxies::engine::cpu::{
    activation,
    attention::{self, AttnDims},
    layernorm, matmul,
};
use std::time::Instant;
fn time(name: &str, flop: f64, mut f: impl FnMut()) {
    f();
    let reps = 20;
    let s = Instant::now();
    for _ in 0..reps {
        f();
    }
    let dt = s.elapsed().as_secs_f64() / reps as f64;
    println!(
        "{name:28} {:8.3} ms  {:7.1} GFLOP/s",
        dt * 1e3,
        flop / dt / 1e9
    );
}
fn main() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let (b, t, h, hd) = (32, 64, 4, 32);
        let d = AttnDims {
            b,
            t,
            heads: h,
            kv_heads: h,
            head_dim: hd,
            window: usize::MAX,
        };
        let c = h * hd;
        let qkv: Vec<f32> = (0..b * t * 3 * c)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let mut out = vec![0f32; b * t * c];
        let mut probs = vec![0f32; b * h * t * t];
        let fl = (b * h * t * (t + 1) / 2 * hd * 4) as f64;
        time("attention fwd", fl, || {
            attention::attention_forward(&mut out, &mut probs, &qkv, d)
        });
        let mut dqkv = vec![0f32; b * t * 3 * c];
        time("attention bwd", 2.0 * fl, || {
            attention::attention_backward(&mut dqkv, &out, &qkv, &probs, d)
        });
        let n = 2048 * 512;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let mut y = vec![0f32; n];
        time("gelu fwd (1M)", 0.0, || {
            activation::gelu_forward(&mut y, &x)
        });
        let g = x.clone();
        let mut dy = vec![0f32; n];
        time("gelu bwd (1M)", 0.0, || {
            activation::gelu_backward(&mut dy, &x, &y, &g)
        });
        time("relu fwd (1M)", 0.0, || {
            activation::relu_forward(&mut y, &x)
        });
        let (nn, cc) = (2048, 128);
        let xi: Vec<f32> = x[..nn * cc].to_vec();
        let w = vec![1f32; cc];
        let bb = vec![0f32; cc];
        let (mut o, mut m, mut r) = (vec![0f32; nn * cc], vec![0f32; nn], vec![0f32; nn]);
        time("layernorm fwd", 0.0, || {
            layernorm::layernorm_forward(&mut o, &mut m, &mut r, &xi, &w, &bb, (nn, cc))
        });
        let mut di = vec![0f32; nn * cc];
        let (mut dw, mut db) = (vec![0f32; cc], vec![0f32; cc]);
        time("layernorm bwd", 0.0, || {
            layernorm::layernorm_backward(&mut di, &mut dw, &mut db, &o, &xi, &w, &m, &r, (nn, cc))
        });
        let wm: Vec<f32> = x[..512 * 128].to_vec();
        let mut h1 = vec![0f32; nn * 512];
        time(
            "matmul fwd 2048x128x512",
            2.0 * (nn * 128 * 512) as f64,
            || {
                matmul::matmul_forward(
                    &mut h1,
                    false,
                    &xi,
                    &wm,
                    None,
                    (nn, 128, 512),
                    gemm::Parallelism::None,
                )
            },
        );
        let mut dxx = vec![0f32; nn * 128];
        let mut dww = vec![0f32; 512 * 128];
        time(
            "matmul bwd 2048x128x512",
            4.0 * (nn * 128 * 512) as f64,
            || {
                matmul::matmul_backward(
                    Some(&mut dxx),
                    false,
                    &mut dww,
                    None,
                    &h1,
                    &xi,
                    &wm,
                    (nn, 128, 512),
                    gemm::Parallelism::None,
                )
            },
        );
    });
}
