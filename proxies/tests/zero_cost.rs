//! Zero-cost proxies: the aggregations against hand-computed values, the gradient-based ones
//! against central finite differences on tiny f64 networks, and the whole suite on a real
//! architecture of the default space with real data.

use genas_engine::{Cpu, Model};
use genas_scoring::data::Batch;
use genas_scoring::zero_cost::{self, DESCRIPTOR_NAMES, PROXY_NAMES};
use genas_scoring::Dataset;
use genas_space::{
    Activation, Architecture, Attention, Experiment, Layer, Rng, SearchSpace, Sparsity,
};
use std::path::Path;

fn tiny(layers: Vec<Layer>) -> Architecture {
    let a = Architecture {
        vocab_size: 7,
        context: 6,
        d_model: 8,
        tie_embeddings: false,
        share_layers: 1,
        layers,
        norm: Default::default(),
        position: Default::default(),
        norm_eps: genas_space::Float(genas_space::NORM_EPS),
    };
    a.validate().unwrap();
    a
}

fn one_layer(act: Activation) -> Architecture {
    tiny(vec![Layer::new(
        Attention::Full { heads: 2 },
        12,
        act,
        None,
        Sparsity::Dense,
    )])
}

fn batch(b: usize, t: usize, seed: u64) -> Batch {
    let mut rng = Rng::seed_from_u64(seed);
    let inputs: Vec<u32> = (0..b * t).map(|_| rng.index(7) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.index(7) as u32).collect();
    Batch {
        b,
        t,
        inputs,
        targets,
    }
}

/// A tiny f64 model with weights larger than the 0.02 init, so every path carries signal.
fn model(a: &Architecture) -> Model<Cpu<f64>> {
    let mut m = Model::new(a, Cpu::<f64>::new(1), 3);
    let mut rng = Rng::seed_from_u64(4);
    for i in 0..m.params.len() {
        let w: Vec<f64> = m
            .weights(i)
            .iter()
            .map(|x| x + 0.3 * rng.normal())
            .collect();
        m.set_weights(i, &w);
    }
    m
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1e-12)
}

// ------------------------------------------------------------- hand-computed aggregations

#[test]
fn fisher_term_matches_hand_computation() {
    // One sequence, T = 2, two hidden units; act = [[1, 2], [3, 4]], dact = [[.5, 1], [-1, 2]].
    // Unit 0: 1·0.5 + 3·(−1) = −2.5; unit 1: 2·1 + 4·2 = 10. ½(6.25 + 100) = 53.125.
    let act = [1.0, 2.0, 3.0, 4.0];
    let dact = [0.5, 1.0, -1.0, 2.0];
    assert!(close(
        zero_cost::fisher_term(&act, &dact, (1, 2, 2)),
        53.125,
        1e-12
    ));
    // Two sequences of T = 1 each: ½(0.5² + 2²) = 2.125 and ½(3² + 8²) = 36.5; mean 19.3125.
    assert!(close(
        zero_cost::fisher_term(&act, &dact, (2, 1, 2)),
        19.3125,
        1e-12
    ));
}

#[test]
fn naswot_is_the_log_determinant_of_the_agreement_kernel() {
    // c0 = 1011, c1 = 1101, c2 = 0011: agreements c0·c1 = 2, c0·c2 = 3, c1·c2 = 1, diagonal 4.
    // det [[4,2,3],[2,4,1],[3,1,4]] = 4·15 − 2·5 + 3·(−10) = 20.
    let codes = [1, 0, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1];
    let s = zero_cost::naswot_score(&codes, 3, 4).unwrap();
    assert!(close(s, 20f64.ln(), 1e-12), "{s}");
    // Two identical codes make the kernel singular: undefined, not a number.
    let same = [1, 0, 1, 1, 1, 0, 1, 1];
    assert_eq!(zero_cost::naswot_score(&same, 2, 4), None);
}

#[test]
fn jacob_cov_scores_the_correlation_spectrum() {
    // Rows [1,2,3] and [1,2,4]: centred [−1,0,1] and [−4/3,−1/3,5/3]; dot 3, norms √2 and
    // √42/3, so r = 9/√84 and the eigenvalues are 1 ± r.
    let r = 9.0 / 84f64.sqrt();
    let k = 1e-5;
    let expect = -[1.0 + r, 1.0 - r]
        .iter()
        .map(|l: &f64| (l + k).ln() + 1.0 / (l + k))
        .sum::<f64>();
    let s = zero_cost::jacob_cov_score(&[1.0, 2.0, 3.0, 1.0, 2.0, 4.0], 2, 3).unwrap();
    assert!(close(s, expect, 1e-9), "{s} vs {expect}");
    // Less correlated Jacobians score higher.
    let s2 = zero_cost::jacob_cov_score(&[1.0, 2.0, 3.0, 3.0, 1.0, 2.0], 2, 3).unwrap();
    assert!(s2 > s);
    // A constant row has no correlation.
    assert_eq!(
        zero_cost::jacob_cov_score(&[1.0, 1.0, 1.0, 1.0, 2.0, 4.0], 2, 3),
        None
    );
}

#[test]
fn zico_is_the_log_signal_to_noise_sum() {
    // Two sub-batches, one matrix of two entries: [1, 2] and [3, 2]. Entry 0: mean|g| = 2,
    // std = 1 → 2; entry 1 has no spread and is left out. A second matrix with none left out
    // contributes nothing. ZiCo = ln 2.
    let grads = vec![
        vec![vec![1.0, 2.0], vec![0.0]],
        vec![vec![3.0, 2.0], vec![0.0]],
    ];
    let s = zero_cost::zico_score(&grads).unwrap();
    assert!(close(s, 2f64.ln(), 1e-12), "{s}");
    assert_eq!(zero_cost::zico_score(&grads[..1]), None);
}

// ------------------------------------------------------------- against finite differences

fn mean_ce(m: &mut Model<Cpu<f64>>, b: &Batch) -> f64 {
    m.forward(&b.inputs, Some(&b.targets), None, (b.b, b.t), false)
        .unwrap()
        .ce
}

fn sum_logits(m: &mut Model<Cpu<f64>>, b: &Batch) -> f64 {
    m.forward(&b.inputs, None, None, (b.b, b.t), false);
    m.logits().iter().sum()
}

/// Σ over matrices of |θ · ∂f/∂θ| with the derivative by central differences.
fn fd_saliency(m: &mut Model<Cpu<f64>>, f: impl Fn(&mut Model<Cpu<f64>>) -> f64) -> (f64, f64) {
    let h = 1e-5;
    let (mut sal, mut sq) = (0.0, 0.0);
    for i in 0..m.params.len() {
        if !m.params[i].decay {
            continue;
        }
        let w = m.weights(i);
        for k in 0..w.len() {
            let mut p = w.clone();
            p[k] = w[k] + h;
            m.set_weights(i, &p);
            let up = f(m);
            p[k] = w[k] - h;
            m.set_weights(i, &p);
            let down = f(m);
            let g = (up - down) / (2.0 * h);
            sal += (w[k] * g).abs();
            sq += g * g;
        }
        m.set_weights(i, &w);
    }
    (sal, sq.sqrt())
}

#[test]
fn snip_and_grad_norm_match_finite_differences() {
    for act in [Activation::Gelu, Activation::Swiglu] {
        let a = one_layer(act);
        let b = batch(3, 5, 1);
        let mut m = model(&a);
        let (sal, norm) = fd_saliency(&mut m, |m| mean_ce(m, &b));
        let g = zero_cost::gradient_proxies(&mut m, &b);
        assert!(close(g.snip.unwrap(), sal.ln(), 1e-6), "{g:?} {sal}");
        assert!(close(g.grad_norm.unwrap(), norm.ln(), 1e-6), "{g:?} {norm}");
    }
}

#[test]
fn synflow_matches_finite_differences_at_absolute_weights() {
    let a = one_layer(Activation::Relu);
    let b = batch(2, 6, 2);
    let mut m = model(&a);
    let before: Vec<Vec<f64>> = (0..m.params.len()).map(|i| m.weights(i)).collect();
    let s = zero_cost::synflow(&mut m, &b).unwrap();
    let after: Vec<Vec<f64>> = (0..m.params.len()).map(|i| m.weights(i)).collect();
    assert_eq!(before, after, "synflow must restore the weights");
    for (i, w) in before.iter().enumerate() {
        let abs: Vec<f64> = w.iter().map(|x| x.abs()).collect();
        m.set_weights(i, &abs);
    }
    let (sal, _) = fd_saliency(&mut m, |m| sum_logits(m, &b));
    assert!(close(s, sal.ln(), 1e-6), "{s} vs {}", sal.ln());
}

#[test]
fn jacob_cov_reads_the_gradient_that_reaches_the_inputs() {
    // Σ_b J_b[t] = ∂R/∂wpe[t]: the per-sequence input gradients summed over the batch must
    // equal the position-embedding gradient by finite differences.
    let a = one_layer(Activation::Gelu);
    let b = batch(3, 6, 3);
    let mut m = model(&a);
    m.forward(&b.inputs, None, None, (b.b, b.t), true);
    m.set_logit_grad(&vec![1.0; b.b * b.t * 7]);
    m.backward(&b.inputs);
    let j = m.input_grad();
    let wpe = m.param_index("wpe.weight").unwrap();
    let w = m.weights(wpe);
    let c = 8;
    for (t, e) in [(0, 0), (2, 5), (5, 7)] {
        let summed: f64 = (0..b.b).map(|bi| j[(bi * b.t + t) * c + e]).sum();
        let mut p = w.clone();
        p[t * c + e] += 1e-5;
        m.set_weights(wpe, &p);
        let up = sum_logits(&mut m, &b);
        p[t * c + e] -= 2e-5;
        m.set_weights(wpe, &p);
        let down = sum_logits(&mut m, &b);
        m.set_weights(wpe, &w);
        assert!(close(summed, (up - down) / 2e-5, 1e-6), "t {t} e {e}");
    }
    assert!(zero_cost::jacob_cov(&mut m, &b).is_some());
}

#[test]
fn fisher_sees_every_layer_through_the_backward_probe() {
    // A one-layer and a two-layer model that share their first block: the two-layer fisher
    // sums two layers' terms, so it differs; and the probe must see each layer's own hidden
    // width.
    let wide = Layer::new(Attention::None, 12, Activation::Gelu, None, Sparsity::Dense);
    let narrow = Layer::new(Attention::None, 4, Activation::Relu, None, Sparsity::Dense);
    let b = batch(2, 6, 5);
    let mut seen = Vec::new();
    let mut m = model(&tiny(vec![wide.clone(), narrow]));
    m.forward(&b.inputs, Some(&b.targets), None, (2, 6), true);
    let be = m.be.clone();
    let mut probe = |l: usize, hidden: usize, act: &Vec<f64>, _d: &Vec<f64>| {
        seen.push((l, hidden, act.len() >= 12 * hidden));
        let _ = &be;
    };
    m.backward_probed(&b.inputs, &mut probe);
    assert_eq!(seen, vec![(1, 4, true), (0, 12, true)]);
    let g = zero_cost::gradient_proxies(&mut m, &b);
    assert!(g.fisher.unwrap().is_finite());
}

/// The FFN pre-activation naswot reads includes fc's bias (which the engine adds in the
/// activation's pass rather than storing it): shifting the bias shifts every entry by as much.
#[test]
fn the_ffn_preactivation_includes_the_bias() {
    let a = one_layer(Activation::Gelu);
    let mut m = model(&a);
    let b = batch(2, 6, 6);
    m.forward(&b.inputs, None, None, (b.b, b.t), false);
    let before = m.ffn_preactivation(0);
    let bi = m.param_index("h.0.mlp.c_fc.bias").expect("fc has a bias");
    let bias: Vec<f64> = m.weights(bi).iter().map(|x| x + 7.0).collect();
    m.set_weights(bi, &bias);
    m.forward(&b.inputs, None, None, (b.b, b.t), false);
    let after = m.ffn_preactivation(0);
    assert_eq!(before.len(), after.len());
    for (x, y) in before.iter().zip(&after) {
        assert!((y - x - 7.0).abs() < 1e-9, "{x} -> {y}");
    }
}

#[test]
fn naswot_is_undefined_when_two_sequences_are_the_same() {
    let a = one_layer(Activation::Gelu);
    let mut m = model(&a);
    let mut b = batch(3, 6, 6);
    assert!(zero_cost::naswot(&mut m, &b).is_some());
    let first: Vec<u32> = b.inputs[..6].to_vec();
    b.inputs[6..12].copy_from_slice(&first);
    assert_eq!(zero_cost::naswot(&mut m, &b), None);
}

// ------------------------------------------------------------- the suite on real data

#[test]
fn the_suite_scores_real_architectures_and_leaves_weights_alone() {
    let exp = Experiment::from_path(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/quick.toml"),
    )
    .unwrap();
    let data = Dataset::load(&exp).unwrap();
    let space = SearchSpace::new(&exp.space, data.vocab_size(), data.context).unwrap();
    let mut rng = Rng::seed_from_u64(9);
    let batch = data.train_batch(8, &mut rng);
    let mut small_params = f64::INFINITY;
    let mut big_params = 0.0f64;
    for _ in 0..4 {
        let arch = space.sample(&mut rng);
        let mut m = Model::new(&arch, Cpu::<f32>::new(1), 1);
        let before: Vec<Vec<f64>> = (0..m.params.len()).map(|i| m.weights(i)).collect();
        let s = zero_cost::proxy_suite(&arch, &mut m, &batch, 1);
        let after: Vec<Vec<f64>> = (0..m.params.len()).map(|i| m.weights(i)).collect();
        assert_eq!(before, after, "{}", arch.summary());
        let keys: std::collections::BTreeSet<&str> = s.scores.keys().map(String::as_str).collect();
        let expected = PROXY_NAMES
            .iter()
            .chain(&DESCRIPTOR_NAMES)
            .copied()
            .collect();
        assert_eq!(keys, expected);
        let untied = s.get("arch.untied_head").unwrap();
        assert_eq!(untied, if arch.tie_embeddings { 0.0 } else { 1.0 });
        for name in PROXY_NAMES {
            let v = s.get(name);
            assert!(
                v.is_some_and(f64::is_finite),
                "{name} = {v:?} for {}",
                arch.summary()
            );
        }
        let again = zero_cost::proxy_suite(&arch, &mut m, &batch, 1);
        assert_eq!(s.scores, again.scores, "deterministic");
        small_params = small_params.min(s.get("params").unwrap());
        big_params = big_params.max(s.get("params").unwrap());
    }
    assert!(big_params > small_params);
}

#[test]
fn descriptors_count_each_attention_kind_rank_and_activation() {
    let layer = |att, act, rank| Layer::new(att, 12, act, rank, Sparsity::Dense);
    let a = tiny(vec![
        layer(Attention::Full { heads: 2 }, Activation::Gelu, None),
        layer(
            Attention::Grouped {
                heads: 2,
                kv_heads: 1,
            },
            Activation::Relu,
            Some(4),
        ),
        layer(
            Attention::Sliding {
                heads: 2,
                window: 3,
                kv_heads: None,
            },
            Activation::Swiglu,
            None,
        ),
        layer(Attention::Linear { heads: 2 }, Activation::Gelu, Some(2)),
        layer(Attention::None, Activation::Gelu, None),
    ]);
    let d: std::collections::BTreeMap<&str, f64> = DESCRIPTOR_NAMES
        .iter()
        .copied()
        .zip(zero_cost::descriptors(&a))
        .collect();
    assert_eq!(d["arch.depth"], 5.0);
    assert_eq!(d["arch.mixing_layers"], 4.0);
    for kind in ["full", "grouped", "sliding", "linear"] {
        assert_eq!(d[format!("arch.{kind}_layers").as_str()], 1.0, "{kind}");
    }
    // Full rank is min(d_model, hidden) = 8: ranks 4 and 2 are shares 1/2 and 1/4.
    assert!((d["arch.ffn_rank_share"] - (1.0 + 0.5 + 1.0 + 0.25 + 1.0) / 5.0).abs() < 1e-12);
    assert!((d["arch.gelu_share"] - 0.6).abs() < 1e-12);
    assert!((d["arch.swiglu_share"] - 0.2).abs() < 1e-12);
    assert_eq!((d["arch.rotated_layers"], d["arch.rmsnorm"]), (0.0, 0.0));
    // Rope rotates the three softmax layers, not the linear or none ones.
    let mut b = a.clone();
    b.position = genas_space::Position::Rope {
        theta: genas_space::Float(1e4),
        scaling: None,
    };
    b.norm = genas_space::Norm::Rmsnorm;
    let e = zero_cost::descriptors(&b);
    let at = |name: &str| e[DESCRIPTOR_NAMES.iter().position(|n| *n == name).unwrap()];
    assert_eq!((at("arch.rotated_layers"), at("arch.rmsnorm")), (3.0, 1.0));
    // Scores stored without some descriptors get them back from the architecture.
    let mut old = zero_cost::ProxyScores::default();
    old.scores.insert("snip".into(), Some(1.5));
    old.scores.insert("arch.depth".into(), Some(99.0));
    let new = zero_cost::with_descriptors(old, &a);
    assert_eq!(new.get("snip"), Some(1.5));
    assert_eq!(new.get("arch.depth"), Some(5.0));
    assert_eq!(new.get("arch.linear_layers"), Some(1.0));
}

/// zen_score's perturbation of chosen rows: the whole table's draw (α·N(0, 1) entry by entry
/// from the seed, worked here) restricted to them, so a runner job that gets only the rows its
/// batch reads perturbs them as the engine does; rows out of order or past the table refused.
#[test]
fn zen_rows_are_the_rows_of_the_whole_tables_perturbation() {
    for position in ["learned", "rope"] {
        let mut a = one_layer(Activation::Gelu);
        a.position = genas_space::Position::parse(position, 10_000.0).unwrap();
        let m = model(&a);
        let name = zero_cost::zen_name(&m);
        assert_eq!(
            name,
            if position == "rope" {
                "wte.weight"
            } else {
                "wpe.weight"
            }
        );
        let w = m.weights(m.param_index(name).unwrap());
        let mut rng = Rng::seed_from_u64(11);
        let whole: Vec<f64> = w
            .iter()
            .map(|x| x + zero_cost::ZEN_ALPHA * rng.normal())
            .collect();
        let c = a.d_model as usize;
        let n = w.len() / c;
        let all: Vec<usize> = (0..n).collect();
        assert_eq!(zero_cost::zen_rows(&m, 11, &all).unwrap(), whole);
        let some = [1, 3, n - 1];
        let got = zero_cost::zen_rows(&m, 11, &some).unwrap();
        let want: Vec<f64> = some
            .iter()
            .flat_map(|&r| whole[r * c..(r + 1) * c].iter().copied())
            .collect();
        assert_eq!(got, want);
        assert!(zero_cost::zen_rows(&m, 11, &[3, 1]).is_none());
        assert!(zero_cost::zen_rows(&m, 11, &[1, 1]).is_none());
        assert!(zero_cost::zen_rows(&m, 11, &[n]).is_none());
    }
}
