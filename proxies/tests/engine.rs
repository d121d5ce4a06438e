//! The engine on real architectures and real data.

use genas_engine::generate::sample_token;
use genas_engine::train::{evaluate, train, train_step, Optimizer};
use genas_engine::{Cpu, Generator, Model, SampleConfig, TrainConfig, TrainError};
use genas_scoring::{Dataset, Split};
use genas_space::{
    Activation, Architecture, Attention, Cost, Experiment, Float, Fraction, Layer, Norm, Position,
    Rng, SearchSpace, Sparsity,
};
use std::path::Path;

fn experiment(file: &str) -> Experiment {
    Experiment::from_path(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../experiments")
            .join(file),
    )
    .unwrap()
}

fn arch(
    vocab: u32,
    context: u32,
    d: u32,
    layers: Vec<Layer>,
    share: u32,
    tied: bool,
) -> Architecture {
    let a = Architecture {
        vocab_size: vocab,
        context,
        d_model: d,
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

/// One model exercising every layer kind and parameter-reduction choice.
fn mixed(vocab: u32, context: u32) -> Architecture {
    arch(
        vocab,
        context,
        32,
        vec![
            Layer::new(
                Attention::Full { heads: 4 },
                64,
                Activation::Gelu,
                None,
                Sparsity::Dense,
            ),
            Layer::new(
                Attention::Grouped {
                    heads: 4,
                    kv_heads: 1,
                },
                64,
                Activation::Swiglu,
                Some(8),
                Sparsity::TwoFour,
            ),
            // 2:4 attention over an FFN of its own sparsity.
            Layer::new(
                Attention::Sliding {
                    heads: 2,
                    window: 5,
                    kv_heads: None,
                },
                48,
                Activation::Relu,
                None,
                Sparsity::Dense,
            )
            .with_sparsities(Sparsity::TwoFour, Sparsity::Unstructured(Fraction(0.5))),
            Layer::new(
                Attention::Linear { heads: 2 },
                64,
                Activation::Gelu,
                Some(16),
                Sparsity::Dense,
            ),
            Layer::new(Attention::None, 32, Activation::Gelu, None, Sparsity::Dense),
            // Attention without an FFN (blockwise search's no-op FFN).
            Layer {
                ffn: None,
                ..Layer::new(
                    Attention::Full { heads: 2 },
                    1,
                    Activation::Gelu,
                    None,
                    Sparsity::Dense,
                )
            },
        ],
        1,
        false,
    )
}

#[test]
fn built_parameters_equal_the_cost_model_on_every_shipped_space() {
    for (file, vocab) in [
        ("quick.toml", 84),
        ("shakespeare.toml", 84),
        ("fashion.toml", 17),
    ] {
        let e = experiment(file);
        let space = SearchSpace::new(&e.space, vocab, e.data.context()).unwrap();
        let mut rng = Rng::seed_from_u64(21);
        for _ in 0..200 {
            let a = space.sample(&mut rng);
            let m = Model::new(&a, Cpu::<f32>::new(1), 0);
            let cost = Cost::of(&a);
            assert_eq!(
                m.num_params() as u64,
                cost.params,
                "{file}: {}",
                a.summary()
            );
            assert_eq!(
                m.num_nonzero_params() as u64,
                cost.nonzero_params,
                "{file}: {}",
                a.summary()
            );
        }
    }
}

#[test]
fn built_parameters_equal_the_cost_model_with_rope_and_rmsnorm() {
    for (norm, position) in modern_choices() {
        let mut a = mixed(40, 16);
        a.norm = norm;
        a.position = position;
        let m = Model::new(&a, Cpu::<f32>::new(1), 0);
        let cost = Cost::of(&a);
        assert_eq!(m.num_params() as u64, cost.params, "{}", a.summary());
        assert_eq!(m.num_nonzero_params() as u64, cost.nonzero_params);
        let names: Vec<&str> = m.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.contains(&"wpe.weight"), !position.is_rope());
        assert_eq!(names.contains(&"ln_f.bias"), norm == Norm::Layernorm);
    }
}

/// `mixed`'s layers with GPT-2's attention biases and GELU's tanh form (the none layer
/// keeps no bias).
fn gpt2_like(vocab: u32, t: u32) -> Architecture {
    let mut a = mixed(vocab, t);
    for l in &mut a.layers {
        l.attention_bias = l.attention != Attention::None;
        if let Some(f) = l
            .ffn
            .as_mut()
            .filter(|f| f.activation != Activation::Swiglu)
        {
            f.activation = Activation::GeluTanh;
        }
    }
    a
}

/// The blocks of Qwen2 (q/k/v biases only), Qwen3 (query/key norms, heads wider than
/// d_model / heads) and Mistral (grouped sliding attention), with Llama 3's rope scaling and
/// an epsilon of 1e-6; a low-rank, a sparse and a linear-attention layer beside them.
fn qwen_mistral_like(vocab: u32, t: u32) -> Architecture {
    let l = |a| Layer::new(a, 48, Activation::Swiglu, None, Sparsity::Dense);
    let layers = vec![
        Layer {
            qkv_bias: true,
            ..l(Attention::Grouped {
                heads: 4,
                kv_heads: 2,
            })
        },
        Layer {
            qk_norm: true,
            head_dim: Some(12),
            ..l(Attention::Grouped {
                heads: 4,
                kv_heads: 1,
            })
        },
        Layer {
            head_dim: Some(4),
            sparsity: Sparsity::TwoFour,
            ..l(Attention::Sliding {
                heads: 4,
                window: 5,
                kv_heads: Some(2),
            })
        },
        Layer {
            qk_norm: true,
            qkv_bias: true,
            head_dim: Some(6),
            ffn: Some(genas_space::Ffn {
                hidden: 48,
                activation: Activation::Swiglu,
                rank: Some(8),
                sparsity: None,
            }),
            ..l(Attention::Full { heads: 2 })
        },
        Layer {
            head_dim: Some(10),
            ..l(Attention::Linear { heads: 2 })
        },
    ];
    Architecture {
        norm: Norm::Rmsnorm,
        position: Position::Rope {
            theta: Float(5e5),
            scaling: Some(genas_space::RopeScaling::Llama3 {
                factor: Float(8.0),
                low_freq_factor: Float(1.0),
                high_freq_factor: Float(4.0),
                original_context: 8,
            }),
        },
        norm_eps: Float(1e-6),
        ..arch(vocab, t, 32, layers, 1, false)
    }
}

#[test]
fn built_parameters_equal_the_cost_model_with_qwen_and_mistral_blocks() {
    let a = qwen_mistral_like(40, 16);
    a.validate().unwrap();
    let m = Model::new(&a, Cpu::<f32>::new(1), 0);
    let cost = Cost::of(&a);
    assert_eq!(m.num_params() as u64, cost.params, "{}", a.summary());
    assert_eq!(m.num_nonzero_params() as u64, cost.nonzero_params);
    let shape = |n: &str| m.params[m.param_index(n).unwrap()].shape.clone();
    // Queries 4 × 12 = 48 wide at d_model 32, one key/value head of 12.
    assert_eq!(shape("h.1.attn.c_attn.weight"), [48 + 2 * 12, 32]);
    assert_eq!(shape("h.1.attn.c_proj.weight"), [32, 48]);
    assert_eq!(shape("h.1.attn.q_norm.weight"), [12]);
    assert_eq!(shape("h.0.attn.c_attn.bias"), [32 + 2 * 16]);
    assert!(m.param_index("h.0.attn.c_proj.bias").is_none());
    // Without the new options, the same draw gives the same weights.
    let plain = Model::new(&mixed(40, 16), Cpu::<f32>::new(1), 0);
    let wte = |m: &Model<Cpu<f32>>| m.weights(m.param_index("wte.weight").unwrap());
    assert_eq!(wte(&m), wte(&plain));
}

#[test]
fn built_parameters_equal_the_cost_model_with_attention_biases() {
    let a = gpt2_like(40, 16);
    assert!(a.layers.iter().any(|l| l.attention_bias));
    let m = Model::new(&a, Cpu::<f32>::new(1), 0);
    let cost = Cost::of(&a);
    assert_eq!(m.num_params() as u64, cost.params, "{}", a.summary());
    assert_eq!(m.num_nonzero_params() as u64, cost.nonzero_params);
    let biases = m
        .params
        .iter()
        .filter(|p| p.name.ends_with("attn.c_attn.bias"))
        .count();
    assert_eq!(biases, a.layers.iter().filter(|l| l.attention_bias).count());
    // Without biases, the same draw gives the same weights: ids and inits are unchanged.
    let plain = Model::new(&mixed(40, 16), Cpu::<f32>::new(1), 0);
    let wte = |m: &Model<Cpu<f32>>| m.weights(m.param_index("wte.weight").unwrap());
    assert_eq!(wte(&m), wte(&plain));
}

/// Every (norm, position) pair but the default one.
fn modern_choices() -> [(Norm, Position); 3] {
    let rope = Position::Rope {
        theta: Float(10_000.0),
        scaling: None,
    };
    [
        (Norm::Layernorm, rope),
        (Norm::Rmsnorm, Position::Learned),
        (Norm::Rmsnorm, rope),
    ]
}

#[test]
fn untrained_loss_is_ln_vocab() {
    let a = mixed(84, 16);
    let mut m = Model::new(&a, Cpu::<f32>::new(2), 3);
    let mut rng = Rng::seed_from_u64(4);
    let tokens: Vec<u32> = (0..8 * 16).map(|_| rng.below(84) as u32).collect();
    let targets: Vec<u32> = (0..8 * 16).map(|_| rng.below(84) as u32).collect();
    let l = m
        .forward(&tokens, Some(&targets), None, (8, 16), false)
        .unwrap();
    assert!(
        (l.ce - (84f64).ln()).abs() < 0.05,
        "{} vs {}",
        l.ce,
        (84f64).ln()
    );
}

#[test]
fn overfitting_one_batch_drives_the_loss_near_zero() {
    let exp = experiment("quick.toml");
    let data = Dataset::load(&exp).unwrap();
    let v = data.vocab_size();
    let batch = data.train_batch(4, &mut Rng::seed_from_u64(5));
    for a in [
        arch(
            v,
            64,
            64,
            vec![
                Layer::new(
                    Attention::Full { heads: 4 },
                    256,
                    Activation::Gelu,
                    None,
                    Sparsity::Dense
                );
                2
            ],
            1,
            false,
        ),
        mixed(v, 64),
    ] {
        let mut m = Model::new(&a, Cpu::<f32>::new(2), 6);
        let mut opt = Optimizer::new(&m);
        let mut cfg = TrainConfig::new(300, 4, 1e-2, 0);
        cfg.weight_decay = 0.0;
        cfg.min_lr_ratio = 1.0;
        let mut last = f64::MAX;
        for step in 0..cfg.steps {
            last = train_step(&mut m, &mut opt, &batch, None, &cfg, step)
                .unwrap()
                .ce;
        }
        assert!(last < 0.05, "{}: loss {last}", a.summary());
    }
}

#[test]
fn masked_weights_stay_zero_and_shared_layers_stay_shared() {
    let exp = experiment("quick.toml");
    let data = Dataset::load(&exp).unwrap();
    let l = Layer::new(
        Attention::Full { heads: 2 },
        64,
        Activation::Gelu,
        None,
        Sparsity::Unstructured(Fraction(0.75)),
    );
    let a = arch(
        data.vocab_size(),
        64,
        32,
        vec![l.clone(), l.clone(), l],
        3,
        true,
    );
    let mut m = Model::new(&a, Cpu::<f32>::new(2), 7);
    assert!(
        m.param_index("h.1.attn.c_attn.weight").is_none(),
        "shared layers own no weights"
    );
    assert!(m.param_index("lm_head.weight").is_none(), "tied head");
    let qkv = m.param_index("h.0.attn.c_attn.weight").unwrap();
    let mask = m.mask(qkv).unwrap();
    assert_eq!(
        mask.iter().filter(|&&x| x == 0.0).count(),
        3 * (32 * 32 * 3 / 4)
    );
    train(&mut m, &data, &TrainConfig::new(20, 8, 3e-3, 1), |_| {}).unwrap();
    let w = m.weights(qkv);
    let mut moved = 0;
    for (x, k) in w.iter().zip(&mask) {
        if *k == 0.0 {
            assert_eq!(*x, 0.0);
        } else if *x != 0.0 {
            moved += 1;
        }
    }
    assert!(moved > 0);
}

/// Architectures covering every layer kind, norm, position and sharing choice, at context t
/// and vocabulary 11.
fn every_kind(t: u32) -> Vec<Architecture> {
    let l = |a| Layer::new(a, 32, Activation::Gelu, None, Sparsity::Dense);
    let modern = modern_choices().map(|(norm, position)| Architecture {
        norm,
        position,
        ..mixed(11, t)
    });
    let mut archs = vec![
        mixed(11, t),
        arch(
            11,
            t,
            16,
            vec![
                l(Attention::Sliding {
                    heads: 2,
                    window: 4,
                    kv_heads: None,
                }),
                l(Attention::Linear { heads: 4 }),
            ],
            1,
            true,
        ),
        arch(
            11,
            t,
            16,
            vec![
                l(Attention::Grouped {
                    heads: 4,
                    kv_heads: 2
                });
                3
            ],
            2,
            false,
        ),
    ];
    archs.extend(modern);
    archs.push(gpt2_like(11, t));
    archs.push(qwen_mistral_like(11, t));
    archs
}

/// `m`'s weights moved off their initial values (masks kept), so that every path matters.
fn perturbed<B: genas_engine::Backend>(m: &mut Model<B>, rng: &mut Rng) {
    for i in 0..m.params.len() {
        let mask = m.mask(i);
        let w: Vec<f64> = m
            .weights(i)
            .iter()
            .enumerate()
            .map(|(k, x)| (x + rng.normal() * 0.2) * mask.as_ref().map_or(1.0, |mk| mk[k]))
            .collect();
        m.set_weights(i, &w);
    }
}

#[test]
fn generation_with_caches_matches_the_batched_forward() {
    let t = 12;
    let archs = every_kind(t);
    for a in archs {
        let mut m = Model::new(&a, Cpu::<f32>::new(1), 8);
        let mut rng = Rng::seed_from_u64(9);
        perturbed(&mut m, &mut rng);
        let tokens: Vec<u32> = (0..t).map(|_| rng.below(11) as u32).collect();
        m.forward(&tokens, None, None, (1, t as usize), false);
        let full = m.logits();
        let mut g = Generator::new(&m);
        let mut worst: f64 = 0.0;
        for (p, &tok) in tokens.iter().enumerate() {
            let step = g.step(tok);
            for k in 0..11 {
                worst = worst.max((step[k] as f64 - full[p * 11 + k]).abs());
            }
        }
        assert!(worst < 1e-4, "{}: max |Δlogit| {worst}", a.summary());
        assert_eq!(g.position(), t as usize);
        // Sliding windows hold `window` positions, linear attention a fixed state.
        let cost = Cost::of(&a);
        assert_eq!(
            g.state_bytes() as u64,
            cost.inference_state_bytes,
            "{}",
            a.summary()
        );
    }
}

#[test]
fn generation_timed_sub_block_by_sub_block_gives_the_same_tokens_and_finds_the_wide_ffn() {
    // Layer 1's FFN 64 times as wide as layer 0's: its share of the time must show it.
    let layer = |hidden| {
        Layer::new(
            Attention::Full { heads: 2 },
            hidden,
            Activation::Gelu,
            None,
            Sparsity::Dense,
        )
    };
    let a = arch(50, 64, 64, vec![layer(64), layer(4096)], 1, false);
    let m = Model::new(&a, Cpu::<f32>::new(1), 3);
    let cfg = SampleConfig {
        temperature: 1.0,
        top_k: None,
    };
    let plain = Generator::new(&m).generate(&[1], 40, cfg, &mut Rng::seed_from_u64(4));
    let mut g = Generator::new(&m);
    g.profile();
    let timed = g.generate(&[1], 40, cfg, &mut Rng::seed_from_u64(4));
    assert_eq!(plain, timed, "timing changes nothing generated");
    let t = genas_engine::sub_block_latency_ms(&m);
    assert_eq!(t.layers.len(), 2);
    let parts: f64 = t.layers.iter().map(|l| l[0] + l[1]).sum();
    assert!(t.layers.iter().flatten().all(|&x| x > 0.0), "{t:?}");
    assert!(parts < t.total, "{t:?}: the halves are within the whole");
    assert!(t.layers[1][1] > 4.0 * t.layers[0][1], "{t:?}");
}

/// Everything `infer` hands out, widened to f64: the logits in row order, and per layer the
/// probe's input, output, attention output and FFN pre-activation, rows in order.
fn inferred<B: genas_engine::Backend>(
    m: &mut Model<B>,
    tokens: &[u32],
    bt: (usize, usize),
    plan: Option<genas_engine::model::InferPlan>,
) -> (Vec<f64>, Vec<[Vec<f64>; 4]>) {
    let depth = m.depth();
    let mut layers: Vec<[Vec<f64>; 4]> = (0..depth).map(|_| Default::default()).collect();
    let mut logits = Vec::new();
    let mut next_row = 0;
    let mut probe = |r: &genas_engine::model::LayerRows| {
        let l = &mut layers[r.layer];
        for (acc, part) in l
            .iter_mut()
            .zip([&r.input, &r.output, &r.attention, &r.ffn_pre])
        {
            acc.extend_from_slice(part);
        }
    };
    let mut sink = |first: usize, rows: usize, h: genas_engine::real::Host<'_>| {
        assert_eq!(first, next_row, "logit blocks come in row order");
        next_row += rows;
        logits.extend(h.to_f64());
    };
    match plan {
        Some(p) => m.infer_as(tokens, bt, p, Some(&mut probe), Some(&mut sink)),
        None => m.infer(tokens, bt, Some(&mut probe), Some(&mut sink)),
    }
    assert_eq!(next_row, bt.0 * bt.1);
    (logits, layers)
}

#[test]
fn training_memory_estimates_count_what_the_engine_allocates() {
    use genas_engine::memory;
    let t = 12usize;
    for a in every_kind(t as u32) {
        let mut rng = Rng::seed_from_u64(5);
        for b in [1usize, 3] {
            let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(11) as u32).collect();
            let mut m = Model::new(&a, Cpu::<f32>::new(1), 8);
            assert_eq!(
                m.held_values(),
                memory::model_values(&a, false),
                "{}",
                a.summary()
            );
            m.forward(&tokens, Some(&tokens), None, (b, t), true);
            m.backward(&tokens);
            assert_eq!(
                m.act_values(),
                memory::train_act_values(&a, (b, t)),
                "{} at b = {b}",
                a.summary()
            );
            assert_eq!(
                m.held_values(),
                memory::model_values(&a, true),
                "{}",
                a.summary()
            );
            // The logit gradient written in place keeps the buffers as they were.
            m.fill_logit_grad(1.0);
            assert_eq!(m.act_values(), memory::train_act_values(&a, (b, t)));
        }
    }
}

#[test]
fn inference_without_gradients_equals_the_forward() {
    let t = 12;
    let (b, v) = (5usize, 11usize);
    for a in every_kind(t) {
        let mut rng = Rng::seed_from_u64(4);
        let tokens: Vec<u32> = (0..b * t as usize).map(|_| rng.below(11) as u32).collect();
        let bt = (b, t as usize);
        // f32 at the default plan (one chunk, one block here): equal to the bit.
        let mut m = Model::new(&a, Cpu::<f32>::new(2), 8);
        perturbed(&mut m, &mut rng);
        let plan = m.infer_plan(bt, 4);
        assert_eq!((plan.sequences, plan.logit_rows), (b, b * t as usize));
        // The preflights' estimate from the architecture alone counts what `infer` allocates.
        assert_eq!(
            genas_engine::memory::infer_row_values(&a),
            m.infer_buffer_values(t as usize),
            "{}",
            a.summary()
        );
        m.forward(&tokens, None, None, bt, false);
        let want = m.logits();
        let want_layers: Vec<[Vec<f64>; 4]> = (0..m.depth())
            .map(|l| {
                [
                    m.residual(l),
                    m.residual(l + 1),
                    m.attention_output(l),
                    m.ffn_preactivation(l),
                ]
            })
            .collect();
        let (logits, layers) = inferred(&mut m, &tokens, bt, None);
        assert!(logits == want, "{}: logits differ", a.summary());
        assert!(layers == want_layers, "{}: a probe differs", a.summary());
        // Cut into chunks of 2 sequences and logit blocks of 7 rows (neither dividing the
        // batch): the same values to rounding, in f32 and f64.
        let cut = genas_engine::model::InferPlan {
            sequences: 2,
            logit_rows: 7,
            bytes: 0,
        };
        let (logits, layers) = inferred(&mut m, &tokens, bt, Some(cut));
        let worst = |x: &[f64], y: &[f64]| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).fold(0f64, |w, (p, q)| w.max((p - q).abs()))
        };
        assert!(worst(&logits, &want) < 1e-5, "{}", a.summary());
        for (got, want) in layers.iter().zip(&want_layers) {
            for (g, w) in got.iter().zip(want) {
                assert!(worst(g, w) < 1e-5, "{}", a.summary());
            }
        }
        let mut exact = Model::new(&a, Cpu::<f64>::new(2), 8);
        for i in 0..m.params.len() {
            exact.set_weights(i, &m.weights(i));
        }
        exact.forward(&tokens, None, None, bt, false);
        let want = exact.logits();
        let (logits, _) = inferred(&mut exact, &tokens, bt, Some(cut));
        assert!(worst(&logits, &want) < 1e-12, "{}", a.summary());
        assert_eq!(logits.len(), b * t as usize * v);
    }
}

#[test]
fn sampling_respects_temperature_and_top_k() {
    let logits = [0.0f32, 5.0, 1.0, 4.9];
    let mut rng = Rng::seed_from_u64(1);
    assert_eq!(
        sample_token(
            &logits,
            SampleConfig {
                temperature: 0.0,
                top_k: None
            },
            &mut rng
        ),
        1
    );
    for _ in 0..200 {
        let k = sample_token(
            &logits,
            SampleConfig {
                temperature: 1.0,
                top_k: Some(2),
            },
            &mut rng,
        );
        assert!(k == 1 || k == 3);
    }
    let a = mixed(9, 10);
    let m = Model::new(&a, Cpu::<f32>::new(1), 1);
    let mut g = Generator::new(&m);
    let out = g.generate(
        &[1, 2],
        25,
        SampleConfig {
            temperature: 1.0,
            top_k: Some(5),
        },
        &mut rng,
    );
    assert_eq!(out.len(), 25);
    assert!(out.iter().all(|&t| t < 9));
}

#[test]
fn training_is_deterministic_and_learns_shakespeare() {
    let exp = experiment("quick.toml");
    let data = Dataset::load(&exp).unwrap();
    let a = arch(
        data.vocab_size(),
        64,
        48,
        vec![
            Layer::new(
                Attention::Full { heads: 4 },
                96,
                Activation::Gelu,
                None,
                Sparsity::Dense
            );
            2
        ],
        1,
        true,
    );
    let val = data.eval_batches(Split::Validation, 16, 64);
    let run = |threads: usize| {
        let mut m = Model::new(&a, Cpu::<f32>::new(threads), 10);
        let before = evaluate(&mut m, &val);
        let report = train(&mut m, &data, &TrainConfig::new(400, 16, 5e-3, 2), |_| {}).unwrap();
        let after = evaluate(&mut m, &val);
        (before, after, report.train_loss, m.weights(0))
    };
    // The cross-entropy of the validation split under the training split's unigram
    // distribution: what a model that ignores context achieves at best.
    let mut counts = vec![1.0f64; data.vocab_size() as usize];
    for t in data.train.iter() {
        counts[t as usize] += 1.0;
    }
    let total: f64 = counts.iter().sum();
    let unigram = val
        .iter()
        .flat_map(|b| &b.targets)
        .map(|&t| -(counts[t as usize] / total).ln())
        .sum::<f64>()
        / val.iter().map(|b| b.targets.len()).sum::<usize>() as f64;
    let (before, after, loss, w) = run(2);
    assert!(
        (before - (data.vocab_size() as f64).ln()).abs() < 0.1,
        "{before}"
    );
    assert!(
        after < unigram - 0.4,
        "validation loss {after} nats, unigram {unigram}: context unused"
    );
    let (_, after2, loss2, w2) = run(2);
    assert_eq!((after, loss), (after2, loss2));
    assert_eq!(w, w2, "same seed and threads, same weights");
}

#[test]
fn updates_from_shard_gradients_equal_updates_from_the_combined_gradient() {
    // After a data-parallel step the optimizer reads the shards' gradients and combines them
    // chunk by chunk as it updates; combining them in the model first (reading a gradient
    // does) must not change a bit of the norm or of any weight.
    let exp = experiment("quick.toml");
    let data = Dataset::load(&exp).unwrap();
    let batches = data.eval_batches(Split::Validation, 6, 32);
    let a = mixed(data.vocab_size(), batches[0].t as u32);
    let cfg = TrainConfig::new(6, 6, 3e-3, 1);
    let run = |combine_first: bool| {
        let mut m = Model::new(&a, Cpu::<f32>::new(2), 3);
        let mut opt = Optimizer::new(&m);
        let mut norms = Vec::new();
        for (step, b) in batches.iter().cycle().take(6).enumerate() {
            m.forward_backward(&b.inputs, &b.targets, (b.b, b.t));
            if combine_first {
                m.grad(0);
            }
            norms.push(opt.update(&mut m, cfg.lr_at(step as u32), &cfg).unwrap());
        }
        let weights: Vec<Vec<f64>> = (0..m.params.len()).map(|i| m.weights(i)).collect();
        (norms, weights)
    };
    let (norms, weights) = run(false);
    let (norms2, weights2) = run(true);
    assert!(norms.iter().all(|n| n.is_finite() && *n > 0.0), "{norms:?}");
    assert_eq!(norms, norms2);
    assert_eq!(weights, weights2);
}

#[test]
fn nan_in_training_is_reported_as_divergence() {
    let exp = experiment("quick.toml");
    let data = Dataset::load(&exp).unwrap();
    let a = mixed(data.vocab_size(), 64);
    let mut m = Model::new(&a, Cpu::<f32>::new(1), 1);
    let i = m.param_index("h.0.mlp.c_fc.weight").unwrap();
    let mut w = m.weights(i);
    w[3] = f64::NAN;
    m.set_weights(i, &w);
    let err = train(&mut m, &data, &TrainConfig::new(5, 4, 1e-3, 0), |_| {}).unwrap_err();
    assert!(matches!(err, TrainError::Diverged { step: 0, .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("training diverged at step 0: the loss is NaN"),
        "{err}"
    );
}

#[test]
fn image_batches_start_with_the_begin_token() {
    let exp = experiment("fashion.toml");
    let data = Dataset::load(&exp).unwrap();
    let b = data.train_batch(3, &mut Rng::seed_from_u64(1));
    assert_eq!((b.b, b.t), (3, 196));
    for s in 0..3 {
        assert_eq!(b.inputs[s * 196], 16);
        assert_eq!(
            &b.inputs[s * 196 + 1..(s + 1) * 196],
            &b.targets[s * 196..(s + 1) * 196 - 1]
        );
    }
    let val = data.eval_batches(Split::Validation, 64, 100);
    assert_eq!(val.iter().map(|b| b.b).sum::<usize>(), 100);
}

#[test]
fn one_blocks_backward_matches_finite_differences_of_its_output() {
    // f(θ) = Σ r ⊙ (block l's output, or its attention half's): `backward_block(l, r, ..)`
    // must give ∂f/∂θ for that block's weights and zero for every other.
    let (b, t) = (2usize, 6u32);
    let mut rng = Rng::seed_from_u64(3);
    let mut checked = 0;
    for a in every_kind(t).into_iter().filter(|a| a.share_layers == 1) {
        let mut m = Model::new(&a, Cpu::<f64>::new(1), 5);
        perturbed(&mut m, &mut rng);
        let v = a.vocab_size as usize;
        let tokens: Vec<u32> = (0..b * t as usize)
            .map(|i| ((i * 7 + 3) % v) as u32)
            .collect();
        for l in 0..a.layers.len() {
            for attention_only in [false, true] {
                if attention_only && a.layers[l].attention == Attention::None {
                    continue;
                }
                m.forward(&tokens, Some(&tokens), None, (b, t as usize), true);
                let y = m.block_output(l, attention_only);
                let r: Vec<f64> = (0..y.len()).map(|_| rng.normal()).collect();
                m.backward_block(l, &r, attention_only);
                // The forward that stops at the block leaves the same output and gradients.
                let full: Vec<Vec<f64>> = (0..m.params.len()).map(|i| m.grad(i)).collect();
                m.forward_blocks(&tokens, (b, t as usize), l, true);
                assert_eq!(m.block_output(l, attention_only), y);
                m.backward_block(l, &r, attention_only);
                for (i, g) in full.iter().enumerate() {
                    assert_eq!(&m.grad(i), g, "{}", m.params[i].name);
                }
                let f = |m: &mut Model<Cpu<f64>>| {
                    m.forward(&tokens, Some(&tokens), None, (b, t as usize), false);
                    let y = m.block_output(l, attention_only);
                    y.iter().zip(&r).map(|(y, r)| y * r).sum::<f64>()
                };
                for i in 0..m.params.len() {
                    let name = m.params[i].name.clone();
                    let g = m.grad(i);
                    let ffn = name.starts_with(&format!("h.{l}.mlp."))
                        || name.starts_with(&format!("h.{l}.ln_2."));
                    let mine = name.starts_with(&format!("h.{l}.")) && !(attention_only && ffn);
                    if !mine {
                        assert!(g.iter().all(|x| *x == 0.0), "{name} has a gradient");
                        continue;
                    }
                    let w0 = m.weights(i);
                    let mask = m.mask(i);
                    for k in [0, w0.len() / 2, w0.len() - 1] {
                        if mask.as_ref().is_some_and(|mk| mk[k] == 0.0) {
                            continue;
                        }
                        let h = 1e-5;
                        let mut w = w0.clone();
                        w[k] = w0[k] + h;
                        m.set_weights(i, &w);
                        let up = f(&mut m);
                        w[k] = w0[k] - h;
                        m.set_weights(i, &w);
                        let down = f(&mut m);
                        m.set_weights(i, &w0);
                        let fd = (up - down) / (2.0 * h);
                        assert!(
                            (fd - g[k]).abs() <= 1e-6 * (1.0 + fd.abs()),
                            "{} {name}[{k}] (attention only: {attention_only}): backward {} finite difference {fd}",
                            a.summary(),
                            g[k]
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 200, "{checked}");
}
