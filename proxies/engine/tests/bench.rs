//! `genas bench train --gemm-profile`: every matrix product of the timed steps is counted and
//! timed, and compared with the same call alone. (Its own test binary: the profile is
//! process-wide, and other tests' products would be counted.)

use genas_engine::bench::{bench_train, BenchConfig};
use genas_engine::cpu::matmul::profile;

fn config(gemm_profile: bool) -> BenchConfig {
    BenchConfig {
        vocab: 65,
        d_model: 32,
        layers: 2,
        heads: 2,
        seq: 16,
        batch: 4,
        steps: 3,
        warmup: 1,
        threads: 2,
        gemm_profile,
        llama: false,
    }
}

#[test]
fn the_profile_counts_every_product_of_the_timed_steps() {
    let r = bench_train(&config(true)).unwrap();
    // Per layer qkv, attention projection, fc, fc projection, plus the head; each has a forward,
    // a dX and a dW product, and every shape is distinct here.
    assert_eq!(r.products.len(), 15, "{:#?}", r.products);
    // 3 timed steps × 2 shards × (2 layers × 4 linear layers + the head) × 3 products.
    let calls: u64 = r.products.iter().map(|p| p.in_step.calls).sum();
    assert_eq!(calls, 3 * 2 * (2 * 4 + 1) * 3);
    for p in &r.products {
        let q = &p.in_step;
        let (n, c, oc) = q.shape;
        assert_eq!(n, 2 * 16, "tokens per shard");
        let want = 2.0 * (n * c * oc) as f64 * q.calls as f64 / 1e9;
        assert!((q.gflop - want).abs() < 1e-9 * want.max(1.0), "{q:?}");
        assert!(q.gflops.is_finite() && q.gflops > 0.0, "{q:?}");
        assert!(p.alone_gflops.is_finite() && p.alone_gflops > 0.0, "{p:?}");
    }
    let mut sorted = r.products.clone();
    sorted.sort_by(|a, b| b.in_step.seconds.total_cmp(&a.in_step.seconds));
    assert!(sorted
        .iter()
        .zip(&r.products)
        .all(|(a, b)| a.in_step.product == b.in_step.product));
    // Off by default, and off again after a profiled run: nothing recorded meanwhile.
    assert!(bench_train(&config(false)).unwrap().products.is_empty());
    assert!(profile::stop().is_empty());
}
