//! The f32 softmax-attention kernels (the ones training runs, at the machine's SIMD level)
//! against a plain f64 transcription of the definition, on shapes the small gradient checks
//! do not reach: several query tiles, partial tiles and spans, head sizes that are not a
//! multiple of the vector width, windows shorter and longer than a tile, grouped heads.
//! The probability cache and the gradient buffer start out as NaN, so an entry the kernels
//! read without having written, or forget to write, shows up. The longest shapes take the
//! path that prefetches the next head's rows (checked), so its indexing is exercised too. The
//! forward without probabilities (`attention_infer`) gives the forward's output to the bit.

use genas_engine::cpu::attention::{
    attention_backward, attention_forward, attention_infer, AttnDims,
};
use genas_space::Rng;

/// out (B, T, C) and dqkv (B, T, C + 2·G·hd) for upstream gradient `dout`, computed from the
/// definition: p_ij = softmax_j(q_i·k_j / √hd) over lo(i) ≤ j ≤ i, o_i = Σ_j p_ij v_j.
fn reference(qkv: &[f64], dout: &[f64], d: AttnDims) -> (Vec<f64>, Vec<f64>) {
    let (t, hd, c, w) = (d.t, d.head_dim, d.c(), d.qkv_width());
    let group = d.heads / d.kv_heads;
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = vec![0.0; d.b * t * c];
    let mut dqkv = vec![0.0; d.b * t * w];
    for b in 0..d.b {
        let row = |i: usize| &qkv[(b * t + i) * w..(b * t + i + 1) * w];
        for h in 0..d.heads {
            let (qo, ko) = (h * hd, c + (h / group) * hd);
            let vo = ko + d.kv_heads * hd;
            for i in 0..t {
                let lo = (i + 1).saturating_sub(d.window);
                let s: Vec<f64> = (lo..=i)
                    .map(|j| {
                        (0..hd)
                            .map(|e| row(i)[qo + e] * row(j)[ko + e])
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - max).exp()).sum();
                let p: Vec<f64> = s.iter().map(|x| (x - max).exp() / z).collect();
                let go = &dout[(b * t + i) * c + qo..(b * t + i) * c + qo + hd];
                let dp: Vec<f64> = (lo..=i)
                    .map(|j| (0..hd).map(|e| go[e] * row(j)[vo + e]).sum())
                    .collect();
                let pdp: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for (k, j) in (lo..=i).enumerate() {
                    let ds = p[k] * (dp[k] - pdp) * scale;
                    for e in 0..hd {
                        out[(b * t + i) * c + qo + e] += p[k] * row(j)[vo + e];
                        dqkv[(b * t + i) * w + qo + e] += ds * row(j)[ko + e];
                        dqkv[(b * t + j) * w + ko + e] += ds * row(i)[qo + e];
                        dqkv[(b * t + j) * w + vo + e] += p[k] * go[e];
                    }
                }
            }
        }
    }
    (out, dqkv)
}

fn assert_close(name: &str, got: &[f32], want: &[f64]) {
    let top = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (i, (&g, &r)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - r).abs() <= 2e-5 * top + 1e-6,
            "{name}[{i}]: kernel {g} reference {r} (largest |value| {top})"
        );
    }
}

#[test]
fn f32_kernels_match_the_definition_on_tiled_shapes() {
    let mut rng = Rng::seed_from_u64(11);
    let (mut cases, mut prefetching) = (0, 0);
    for (t, head_dim) in [(1, 8), (7, 3), (16, 32), (37, 40), (130, 32)] {
        for (heads, kv_heads) in [(4, 4), (4, 2), (4, 1)] {
            for window in [usize::MAX, 5, 16, 20] {
                if window != usize::MAX && (kv_heads != 2 || t < 16) {
                    continue; // windows once per length, on grouped heads
                }
                let d = AttnDims {
                    b: 2,
                    t,
                    heads,
                    kv_heads,
                    head_dim,
                    window: window.min(t),
                };
                let (n, c, w) = (d.b * t, d.c(), d.qkv_width());
                let qkv: Vec<f64> = (0..n * w).map(|_| rng.normal() * 1.5).collect();
                let dout: Vec<f64> = (0..n * c).map(|_| rng.normal()).collect();
                let (want_out, want_dqkv) = reference(&qkv, &dout, d);

                let q32: Vec<f32> = qkv.iter().map(|&x| x as f32).collect();
                let g32: Vec<f32> = dout.iter().map(|&x| x as f32).collect();
                let mut out = vec![f32::NAN; n * c];
                let mut probs = vec![f32::NAN; d.b * heads * t * t];
                attention_forward(&mut out, &mut probs, &q32, d);
                // Without probabilities, split over blocks of queries (t = 130: three): the
                // same output to the bit.
                let mut inferred = vec![f32::NAN; n * c];
                attention_infer(&mut inferred, &q32, d);
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert!(
                    bits(&inferred) == bits(&out),
                    "attention_infer t{t} h{heads}/{kv_heads}"
                );
                let mut dqkv = vec![f32::NAN; n * w];
                attention_backward(&mut dqkv, &g32, &q32, &probs, d);
                let name = format!("t{t} hd{head_dim} h{heads}/{kv_heads} window {window}");
                assert_close(&format!("out {name}"), &out, &want_out);
                assert_close(&format!("dqkv {name}"), &dqkv, &want_dqkv);
                cases += 1;
                prefetching += usize::from(d.prefetches(std::mem::size_of::<f32>()));
            }
        }
    }
    assert_eq!(cases, 24);
    assert!(prefetching > 0, "no shape took the prefetching path");
}
