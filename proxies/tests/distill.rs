//! Teacher, brief and full distillation on the shipped Shakespeare corpus.

use genas_engine::{Cpu, Model};
use genas_scoring::distill::{
    brief_distill, dir_store, full_distill, DistillConfig, DistillError, FullConfig, SoftTargets,
    TeacherTargets,
};
use genas_scoring::teacher::{teacher_architecture, teacher_key, train_teacher};
use genas_scoring::Dataset;
use genas_space::{
    Activation, Architecture, Attention, Experiment, Layer, Sparsity, TeacherConfig,
};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::OnceLock;

fn data() -> &'static Dataset {
    static DATA: OnceLock<Dataset> = OnceLock::new();
    DATA.get_or_init(|| {
        let exp = Experiment::from_path(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/quick.toml"),
        )
        .unwrap();
        Dataset::load(&exp).unwrap()
    })
}

fn teacher_cfg() -> TeacherConfig {
    TeacherConfig {
        depth: 2,
        d_model: 32,
        heads: 2,
        ffn_ratio: 2.0,
        steps: 60,
        batch_size: 16,
        learning_rate: 3e-3,
        seed: 0,
        pretrained: None,
        checkpoint: None,
    }
}

/// A briefly trained teacher (weights only; shared by the tests).
fn teacher() -> Model<Cpu<f32>> {
    static WEIGHTS: OnceLock<Vec<Vec<f64>>> = OnceLock::new();
    let w = WEIGHTS.get_or_init(|| {
        let (m, _) = train_teacher(&teacher_cfg(), data(), 0, Cpu::<f32>::new(1), |_| {}).unwrap();
        (0..m.params.len()).map(|i| m.weights(i)).collect()
    });
    let arch = teacher_architecture(&teacher_cfg(), data().vocab_size(), data().context);
    let mut m = Model::new(&arch, Cpu::<f32>::new(1), 0);
    for (i, wi) in w.iter().enumerate() {
        m.set_weights(i, wi);
    }
    m
}

fn student(d: u32, seed: u64) -> Model<Cpu<f32>> {
    let a = Architecture {
        vocab_size: data().vocab_size(),
        context: data().context,
        d_model: d,
        tie_embeddings: true,
        share_layers: 1,
        layers: vec![Layer::new(
            Attention::Grouped {
                heads: 2,
                kv_heads: 1,
            },
            2 * d,
            Activation::Relu,
            None,
            Sparsity::Dense,
        )],
        norm: Default::default(),
        position: Default::default(),
        norm_eps: genas_space::Float(genas_space::NORM_EPS),
    };
    a.validate().unwrap();
    Model::new(&a, Cpu::<f32>::new(1), seed)
}

fn cfg(steps: u32) -> DistillConfig {
    DistillConfig {
        steps,
        batch_size: 8,
        learning_rate: 3e-3,
        temperature: 2.0,
        alpha: 0.5,
        seed: 5,
        val_sequences: 32,
        top_k: 64,
        init: Default::default(),
        precision: Default::default(),
        train_only: Vec::new(),
    }
}

#[test]
fn soft_targets_are_distributions_at_temperature() {
    // Dense: softmax(z / T) per row.
    let z = [1.0, 2.0, 3.0, 0.0, 0.0, 0.0];
    let s = SoftTargets::from_logits(&z, (2, 3), 2.0, 64);
    let p = s.dense((2, 3));
    let e: Vec<f64> = [0.5f64, 1.0, 1.5].iter().map(|x| x.exp()).collect();
    let sum: f64 = e.iter().sum();
    for k in 0..3 {
        assert!((p[k] - e[k] / sum).abs() < 1e-6);
        assert!((p[3 + k] - 1.0 / 3.0).abs() < 1e-6);
    }
    // A large vocabulary keeps the top 64 exactly and spreads the rest of the mass.
    let v = 2000;
    let z: Vec<f64> = (0..v).map(|i| (i % 97) as f64 * 0.1).collect();
    let s = SoftTargets::from_logits(&z, (1, v), 1.0, 64);
    assert!(matches!(s, SoftTargets::TopK { k: 64, .. }));
    let p = s.dense((1, v));
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + z.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
    assert!(
        (p[96] - (z[96] - lse).exp()).abs() < 1e-7,
        "the most probable token is exact"
    );
    assert!(s.bytes() < 4 * v / 4);
    // Another k keeps that many: the k most probable tokens, exactly.
    let z: Vec<f64> = (0..v).map(|i| i as f64 * 1e-3).collect();
    let s8 = SoftTargets::from_logits(&z, (1, v), 1.0, 8);
    let SoftTargets::TopK { k: 8, index, .. } = &s8 else {
        panic!("top 8")
    };
    let mut kept = index.clone();
    kept.sort_unstable();
    assert_eq!(kept, ((v - 8) as u32..v as u32).collect::<Vec<_>>());
    assert_eq!(s8.bytes(), 8 * 8);
    let full = SoftTargets::from_logits(&z, (1, v), 1.0, v).dense((1, v));
    let p8 = s8.dense((1, v));
    assert!((p8.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    assert_eq!(p8[v - 1], full[v - 1]);
}

#[test]
fn top_k_is_left_out_of_keys_at_its_default() {
    let json = serde_json::to_string(&cfg(10)).unwrap();
    assert!(!json.contains("top_k"), "{json}");
    let other = DistillConfig {
        top_k: 16,
        ..cfg(10)
    };
    let json16 = serde_json::to_string(&other).unwrap();
    assert!(json16.contains("\"top_k\":16"), "{json16}");
    let back: DistillConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back.top_k, 64);
}

#[test]
fn brief_distillation_moves_the_student_toward_the_teacher() {
    let mut t = teacher();
    let targets = TeacherTargets::compute(&mut t, data(), &cfg(40), 40);
    assert_eq!(targets.schedule.len(), 40);
    assert!(targets.teacher_val_ce < (data().vocab_size() as f64).ln());
    let mut untrained = student(32, 1);
    let before = genas_scoring::distill::evaluate_against_teacher(&mut untrained, &targets);
    let mut s = student(32, 1);
    let r = brief_distill(&mut s, &targets, &cfg(40));
    assert_eq!(r.diverged, None);
    let e = r.eval.unwrap();
    assert!(
        e.kl_to_teacher < before.kl_to_teacher - 0.3,
        "{before:?} → {e:?}"
    );
    assert!(e.val_ce < before.val_ce - 0.3);
    assert!(e.agreement > before.agreement);
    // Deterministic: the same student and schedule give the same result.
    let mut s2 = student(32, 1);
    let r2 = brief_distill(&mut s2, &targets, &cfg(40));
    assert_eq!((r.eval, r.train_loss), (r2.eval, r2.train_loss));
}

#[test]
fn training_only_a_prefix_holds_every_other_weight_and_still_learns() {
    let mut t = teacher();
    let targets = TeacherTargets::compute(&mut t, data(), &cfg(30), 30);
    let only = DistillConfig {
        train_only: vec!["h.0.mlp.".into()],
        ..cfg(30)
    };
    let json = serde_json::to_string(&only).unwrap();
    assert!(json.contains("\"train_only\":[\"h.0.mlp.\"]"), "{json}");
    assert!(!serde_json::to_string(&cfg(30))
        .unwrap()
        .contains("train_only"));
    let mut untrained = student(32, 3);
    let before = genas_scoring::distill::evaluate_against_teacher(&mut untrained, &targets);
    let mut s = student(32, 3);
    let start = weights(&s);
    let r = brief_distill(&mut s, &targets, &only);
    let after = weights(&s);
    let mut moved = 0;
    for (i, p) in s.params.iter().enumerate() {
        if p.name.starts_with("h.0.mlp.") {
            assert_ne!(start[i], after[i], "{} did not train", p.name);
            moved += 1;
        } else {
            assert_eq!(start[i], after[i], "{} moved though held", p.name);
        }
    }
    assert!(moved >= 2);
    let e = r.eval.unwrap();
    assert!(
        e.kl_to_teacher < before.kl_to_teacher - 0.05,
        "{before:?} → {e:?}"
    );
    // Training everything from the same start reaches further in the same steps.
    let mut all = student(32, 3);
    let r_all = brief_distill(&mut all, &targets, &cfg(30));
    assert!(r_all.eval.unwrap().kl_to_teacher < e.kl_to_teacher);
}

#[test]
fn a_diverging_candidate_is_a_result_not_a_crash() {
    let mut t = teacher();
    let targets = TeacherTargets::compute(&mut t, data(), &cfg(5), 5);
    let mut s = student(16, 2);
    let i = s.param_index("h.0.mlp.c_fc.weight").unwrap();
    let mut w = s.weights(i);
    w[0] = f64::NAN;
    s.set_weights(i, &w);
    let r = brief_distill(&mut s, &targets, &cfg(5));
    assert!(r.eval.is_none());
    assert!(r.diverged.unwrap().contains("step 0"));
}

fn full_cfg(steps: u32, lr: f64) -> FullConfig {
    FullConfig {
        distill: DistillConfig {
            learning_rate: lr,
            ..cfg(steps)
        },
        eval_every: 5,
        checkpoint_every: 7,
        patience: 100,
    }
}

fn weights(m: &Model<Cpu<f32>>) -> Vec<Vec<f64>> {
    (0..m.params.len()).map(|i| m.weights(i)).collect()
}

#[test]
fn full_distillation_resumes_exactly_after_a_kill() {
    let mut t = teacher();
    let c = full_cfg(30, 3e-3);
    let val = TeacherTargets::compute(&mut t, data(), &c.distill, 0);
    let dir = tempfile::tempdir().unwrap();

    let mut whole = student(32, 3);
    let mut store = dir_store(&dir.path().join("whole"));
    let r = full_distill(&mut whole, &mut t, data(), &val, &c, &mut store, |_, _| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(
        (r.result.steps, r.resumed_from, r.stopped_early),
        (30, None, false)
    );
    assert_eq!(r.history.len(), 6);

    // Killed after step 17 (steps 15–17 since the checkpoint at 14 are lost), then a fresh
    // process (a new model from the same initialisation) resumes.
    let mut store = dir_store(&dir.path().join("killed"));
    let mut first = student(32, 3);
    let e = full_distill(&mut first, &mut t, data(), &val, &c, &mut store, |s, _| {
        if s == 17 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert_eq!(e.unwrap_err(), DistillError::Stopped(17));
    let mut resumed = student(32, 3);
    let r2 = full_distill(
        &mut resumed,
        &mut t,
        data(),
        &val,
        &c,
        &mut store,
        |_, _| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(r2.resumed_from, Some(14));
    assert_eq!(weights(&resumed), weights(&whole), "bit-identical weights");
    assert_eq!(r2.history, r.history);
    assert_eq!(r2.result.eval, r.result.eval);

    // A checkpoint of another architecture is refused, not silently loaded.
    let mut other = student(16, 3);
    let e = full_distill(&mut other, &mut t, data(), &val, &c, &mut store, |_, _| {
        ControlFlow::Continue(())
    });
    assert!(matches!(e, Err(DistillError::Foreign(_))), "{e:?}");
}

#[test]
fn full_distillation_stops_early_and_keeps_the_best_weights() {
    // With a zero learning rate the validation loss never improves after the first
    // evaluation, so patience 2 stops the run at the third evaluation (step 15) and the kept
    // weights are those of step 5 — the initial ones.
    let mut t = teacher();
    let c = FullConfig {
        patience: 2,
        ..full_cfg(40, 0.0)
    };
    let val = TeacherTargets::compute(&mut t, data(), &c.distill, 0);
    let dir = tempfile::tempdir().unwrap();
    let mut s = student(16, 4);
    let init = weights(&s);
    let r = full_distill(
        &mut s,
        &mut t,
        data(),
        &val,
        &c,
        &mut dir_store(dir.path()),
        |_, _| ControlFlow::Continue(()),
    )
    .unwrap();
    assert!(r.stopped_early);
    assert_eq!((r.result.steps, r.best_step), (15, 5));
    assert_eq!(weights(&s), init);
}

#[test]
fn alpha_one_trains_on_the_hard_labels_alone() {
    // The ablation of `genas report --ablate-kd`: with α = 1 a full distillation is plain
    // training on the same batches (bit for bit), and differs from distillation at α < 1.
    let mut t = teacher();
    let c = FullConfig {
        distill: DistillConfig {
            alpha: 1.0,
            ..cfg(12)
        },
        eval_every: 12,
        checkpoint_every: 12,
        patience: 100,
    };
    let val = TeacherTargets::compute(&mut t, data(), &c.distill, 0);
    let dir = tempfile::tempdir().unwrap();
    let mut hard = student(16, 5);
    let r = full_distill(
        &mut hard,
        &mut t,
        data(),
        &val,
        &c,
        &mut dir_store(&dir.path().join("hard")),
        |_, _| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!((r.result.steps, r.best_step), (12, 12));
    let d = &c.distill;
    let mut plain = student(16, 5);
    genas_engine::train::train(
        &mut plain,
        data(),
        &genas_engine::TrainConfig::new(d.steps, d.batch_size, d.learning_rate, d.seed),
        |_| {},
    )
    .unwrap();
    assert_eq!(weights(&hard), weights(&plain));
    let soft = FullConfig {
        distill: DistillConfig {
            alpha: 0.5,
            ..c.distill.clone()
        },
        ..c.clone()
    };
    let mut distilled = student(16, 5);
    full_distill(
        &mut distilled,
        &mut t,
        data(),
        &val,
        &soft,
        &mut dir_store(&dir.path().join("soft")),
        |_, _| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_ne!(weights(&distilled), weights(&hard));
}

#[test]
fn a_teacher_is_keyed_by_everything_that_determines_it() {
    let cfg = teacher_cfg();
    let a = teacher_architecture(&cfg, 65, 64);
    assert_eq!(a.depth(), 2);
    assert!(a
        .layers
        .iter()
        .all(|l| l.attention == Attention::Full { heads: 2 }));
    let k = teacher_key(&a, &cfg, "abc", 0);
    assert_eq!(k.len(), 16);
    assert_eq!(k, teacher_key(&a, &cfg, "abc", 0));
    assert_ne!(k, teacher_key(&a, &cfg, "abd", 0));
    assert_ne!(k, teacher_key(&a, &cfg, "abc", 1));
    let more = TeacherConfig {
        steps: 61,
        ..cfg.clone()
    };
    assert_ne!(k, teacher_key(&a, &more, "abc", 0));
    let (_, rec) = train_teacher(&cfg, data(), 0, Cpu::<f32>::new(1), |_| {}).unwrap();
    assert_eq!(
        rec.key,
        teacher_key(&rec.architecture, &cfg, &data().fingerprint, 0)
    );
    assert!(rec.val_ce < (65f64).ln() - 0.5, "{}", rec.val_ce);
    assert!((rec.val_bits - rec.val_ce / std::f64::consts::LN_2).abs() < 1e-12);
}

#[test]
fn the_vocabulary_benchmark_reports_the_cache_it_builds() {
    use genas_scoring::distill_bench::{bench_distill, DistillBenchConfig};
    let c = DistillBenchConfig {
        vocab: 3000,
        top_k: 8,
        teacher_d_model: 32,
        teacher_layers: 1,
        d_model: 32,
        layers: 1,
        seq: 8,
        batch: 2,
        steps: 3,
        threads: 1,
    };
    let r = bench_distill(&c).expect("runs");
    // 3 steps of 16 positions and 8 validation sequences of 8, each position k ids + k probs.
    let positions = 3 * 16 + 8 * 8;
    assert_eq!(r.targets_bytes, (positions * 8 * 8) as u64);
    assert_eq!(r.dense_bytes, (positions * 3000 * 4) as u64);
    assert!(
        r.kept_mass > 8.0 / 3000.0 * 0.5 && r.kept_mass < 1.0,
        "{}",
        r.kept_mass
    );
    assert!(r.distill_ms_per_step > 0.0 && r.hard_ms_per_step > 0.0);
    assert_eq!(r.tokens_per_step, 16);
}

fn measured_parent(t: &mut Model<Cpu<f32>>) -> genas_scoring::inherit::Parent {
    let batch = data().train_batch(32, &mut genas_space::Rng::seed_from_u64(3));
    genas_scoring::inherit::Parent::measure(t, &batch.inputs, (batch.b, batch.t))
}

#[test]
fn a_student_of_the_teachers_shape_inherits_it_whole() {
    let mut t = teacher();
    let parent = measured_parent(&mut t);
    let arch = t.arch.clone();
    let initial = parent.initial(&arch);
    assert_eq!(
        initial.len(),
        t.params.len(),
        "every parameter is inherited"
    );
    let m = Model::with_initial(&arch, Cpu::<f32>::new(1), 9, initial);
    for i in 0..t.params.len() {
        assert_eq!(m.weights(i), t.weights(i), "{}", t.params[i].name);
    }
}

/// Students of every kind the engine builds, narrower and shallower than the test teacher
/// (d_model 32, 2 layers of 2 heads, FFN 64).
fn pruned_students() -> Vec<(&'static str, Architecture)> {
    use genas_space::{Float, Position};
    let base = |attention, hidden, act, rank, sparsity| Architecture {
        vocab_size: data().vocab_size(),
        context: data().context,
        d_model: 16,
        tie_embeddings: true,
        share_layers: 1,
        layers: vec![Layer::new(attention, hidden, act, rank, sparsity)],
        norm: Default::default(),
        position: Default::default(),
        norm_eps: genas_space::Float(genas_space::NORM_EPS),
    };
    let full1 = || Attention::Full { heads: 1 };
    let mut v = vec![
        (
            "full, one head",
            base(full1(), 32, Activation::Gelu, None, Sparsity::Dense),
        ),
        (
            "full, two narrower heads",
            base(
                Attention::Full { heads: 2 },
                32,
                Activation::Gelu,
                None,
                Sparsity::Dense,
            ),
        ),
        (
            "grouped (multi-query)",
            base(
                Attention::Grouped {
                    heads: 2,
                    kv_heads: 1,
                },
                32,
                Activation::Gelu,
                None,
                Sparsity::Dense,
            ),
        ),
        (
            "sliding",
            base(
                Attention::Sliding {
                    heads: 1,
                    window: 8,
                    kv_heads: None,
                },
                32,
                Activation::Gelu,
                None,
                Sparsity::Dense,
            ),
        ),
        (
            "linear",
            base(
                Attention::Linear { heads: 1 },
                32,
                Activation::Gelu,
                None,
                Sparsity::Dense,
            ),
        ),
        (
            "no attention",
            base(Attention::None, 32, Activation::Gelu, None, Sparsity::Dense),
        ),
        (
            "low-rank FFN",
            base(full1(), 32, Activation::Gelu, Some(8), Sparsity::Dense),
        ),
        (
            "2:4 sparse",
            base(full1(), 32, Activation::Gelu, None, Sparsity::TwoFour),
        ),
        (
            "relu",
            base(full1(), 32, Activation::Relu, None, Sparsity::Dense),
        ),
    ];
    let mut untied = base(full1(), 32, Activation::Gelu, None, Sparsity::Dense);
    untied.tie_embeddings = false;
    v.push(("untied head", untied));
    let mut rope = base(
        Attention::Full { heads: 2 },
        32,
        Activation::Gelu,
        None,
        Sparsity::Dense,
    );
    rope.position = Position::Rope {
        theta: Float(10_000.0),
        scaling: None,
    };
    v.push(("rope", rope));
    let mut deep = base(full1(), 32, Activation::Gelu, None, Sparsity::Dense);
    deep.layers.push(deep.layers[0].clone());
    v.push(("two layers", deep));
    for (_, a) in &v {
        a.validate().unwrap();
    }
    v
}

#[test]
fn pruned_students_inherit_what_fits_and_start_closer_to_the_teacher() {
    let mut t = teacher();
    let parent = measured_parent(&mut t);
    let targets = TeacherTargets::compute(&mut t, data(), &cfg(30), 30);
    for (what, arch) in pruned_students() {
        let initial = parent.initial(&arch);
        let random = Model::new(&arch, Cpu::<f32>::new(1), 4);
        // Every matrix the student has is inherited (norms and biases too).
        for p in &random.params {
            assert!(
                initial.contains_key(&p.name),
                "{what}: {} is not inherited",
                p.name
            );
        }
        let mut inherited = Model::with_initial(&arch, Cpu::<f32>::new(1), 4, initial);
        let mut random = random;
        let kl = |m: &mut Model<Cpu<f32>>| {
            genas_scoring::distill::evaluate_against_teacher(m, &targets).kl_to_teacher
        };
        let (ki, kr) = (kl(&mut inherited), kl(&mut random));
        println!("{what}: KL to the teacher at the start, inherited {ki:.3}, drawn {kr:.3}");
        assert!(ki < kr, "{what}: inherited {ki} vs drawn {kr}");
        let ri = brief_distill(&mut inherited, &targets, &cfg(30))
            .eval
            .unwrap();
        let rr = brief_distill(&mut random, &targets, &cfg(30)).eval.unwrap();
        println!(
            "{what}: after 30 steps, inherited {:.3}, drawn {:.3}",
            ri.kl_to_teacher, rr.kl_to_teacher
        );
        assert!(
            ri.kl_to_teacher < rr.kl_to_teacher,
            "{what}: {ri:?} vs {rr:?}"
        );
    }
}

#[test]
fn top_k_targets_distil_and_evaluate_as_their_dense_spread_does() {
    // A vocabulary over DENSE_VOCAB_MAX: the targets are top-k. The loss and the evaluation
    // read them as they are; spreading them densely (as genas once did) gives the same.
    let v = 1500u32;
    let mut rng = genas_space::Rng::seed_from_u64(4);
    let mut ids =
        |n: usize| -> Vec<u32> { (0..n).map(|_| rng.below(u64::from(v)) as u32).collect() };
    let (train, val) = (ids(20_000), ids(3_000));
    let data = Dataset::from_ids(train, val, v, 16);
    let t_arch = teacher_architecture(&teacher_cfg(), v, 16);
    let c = DistillConfig {
        top_k: 8,
        temperature: 1.5,
        alpha: 0.3,
        val_sequences: 16,
        ..cfg(6)
    };
    let compute = || {
        let mut t = Model::new(&t_arch, Cpu::<f32>::new(1), 3);
        TeacherTargets::compute(&mut t, &data, &c, 6)
    };
    let sparse = compute();
    assert!(matches!(
        *sparse.schedule.step(0).soft,
        SoftTargets::TopK { k: 8, .. }
    ));
    let mut spread = compute();
    let dense = |s: &[SoftTargets], b: &[genas_engine::Batch]| -> Vec<SoftTargets> {
        s.iter()
            .zip(b)
            .map(|(s, b)| SoftTargets::Dense(s.dense_f32((b.b * b.t, v as usize))))
            .collect()
    };
    let steps: Vec<_> = (0..spread.schedule.len())
        .map(|i| spread.schedule.step(i))
        .collect();
    let held = genas_scoring::distill::Held {
        batches: steps.iter().map(|s| s.batch.clone().into_owned()).collect(),
        soft: steps.iter().map(|s| s.soft.clone().into_owned()).collect(),
    };
    drop(steps);
    let held = genas_scoring::distill::Held {
        soft: dense(&held.soft, &held.batches),
        ..held
    };
    spread.schedule = Box::new(held);
    spread.val_probs = dense(&spread.val_probs, &spread.val);
    let student = || {
        let a = Architecture {
            vocab_size: v,
            context: 16,
            ..student(32, 0).arch.clone()
        };
        Model::new(&a, Cpu::<f64>::new(1), 9)
    };
    // The evaluation of one student against both.
    let mut s = student();
    let (a, b) = (
        genas_scoring::distill::evaluate_against_teacher(&mut s, &sparse),
        genas_scoring::distill::evaluate_against_teacher(&mut s, &spread),
    );
    assert_eq!(a.val_ce, b.val_ce);
    assert!(
        (a.kl_to_teacher - b.kl_to_teacher).abs() < 1e-9,
        "{a:?} {b:?}"
    );
    assert_eq!(a.agreement, b.agreement);
    // A brief distillation on each, in f64: the same training to rounding.
    let (mut x, mut y) = (student(), student());
    let (rx, ry) = (
        brief_distill(&mut x, &sparse, &c),
        brief_distill(&mut y, &spread, &c),
    );
    let (ex, ey) = (rx.eval.unwrap(), ry.eval.unwrap());
    assert!((ex.val_ce - ey.val_ce).abs() < 1e-9, "{ex:?} {ey:?}");
    assert!((ex.kl_to_teacher - ey.kl_to_teacher).abs() < 1e-9);
    assert!((rx.train_loss.unwrap() - ry.train_loss.unwrap()).abs() < 1e-9);
}

#[test]
fn a_teachers_targets_and_loss_without_gradients_are_those_of_its_forward() {
    // `SoftTargets::of_teacher` runs the teacher without gradients and reads its logits a block
    // at a time: the targets equal `from_logits` of the forward's logits and the summed
    // cross-entropy the loss's, to the bit, for dense (V ≤ 1024) and top-k (V > 1024) targets.
    for v in [65u32, 1500] {
        let arch = Architecture {
            vocab_size: v,
            context: 16,
            d_model: 32,
            tie_embeddings: true,
            share_layers: 1,
            layers: vec![
                Layer::new(
                    Attention::Grouped {
                        heads: 4,
                        kv_heads: 2
                    },
                    64,
                    Activation::Swiglu,
                    None,
                    Sparsity::Dense
                );
                2
            ],
            norm: Default::default(),
            position: Default::default(),
            norm_eps: genas_space::Float(genas_space::NORM_EPS),
        };
        let mut teacher = Model::new(&arch, Cpu::<f32>::new(2), 5);
        let mut rng = genas_space::Rng::seed_from_u64(1);
        let (b, t) = (3usize, 16usize);
        let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(v.into()) as u32).collect();
        let targets: Vec<u32> = (0..b * t).map(|_| rng.below(v.into()) as u32).collect();
        let batch = genas_engine::Batch {
            inputs: tokens.clone(),
            targets: targets.clone(),
            b,
            t,
        };
        let l = teacher
            .forward(&tokens, Some(&targets), None, (b, t), false)
            .unwrap();
        let want = SoftTargets::from_logits(&teacher.logits(), (b * t, v as usize), 2.0, 16);
        let (got, ce_sum) = SoftTargets::of_teacher(&mut teacher, &batch, 2.0, 16, true);
        assert_eq!(got, want, "vocabulary {v}");
        assert_eq!(matches!(got, SoftTargets::TopK { .. }), v > 1024);
        assert_eq!(ce_sum * (1.0 / (b * t) as f64), l.ce, "vocabulary {v}");
    }
}

#[test]
fn the_normalised_error_and_its_gradient_match_a_hand_worked_case_and_finite_differences() {
    use genas_scoring::local::normalised_mse;
    // y − y_t = (1, −2), y_t − x = (3, 4): 5 / 25.
    let (loss, grad) = normalised_mse(&[2.0, 0.0], &[1.0, 2.0], &[-2.0, -2.0]);
    assert!((loss - 0.2).abs() < 1e-15);
    assert_eq!(grad, vec![2.0 / 25.0, -4.0 / 25.0]);
    let y = [0.3, -1.2, 0.7];
    let (yt, x) = ([0.1, 0.4, -0.2], [1.0, 0.0, 0.5]);
    let (_, g) = normalised_mse(&y, &yt, &x);
    for k in 0..3 {
        let h = 1e-6;
        let (mut up, mut down) = (y, y);
        up[k] += h;
        down[k] -= h;
        let fd = (normalised_mse(&up, &yt, &x).0 - normalised_mse(&down, &yt, &x).0) / (2.0 * h);
        assert!((fd - g[k]).abs() < 1e-8, "{k}: {fd} {}", g[k]);
    }
}

#[test]
fn a_sub_block_trained_locally_learns_the_teachers_output_and_moves_nothing_else() {
    use genas_scoring::local::{
        cache_activations, local_distill, Activations, LayerActivations, SubBlock,
    };
    let mut t = teacher();
    let targets = TeacherTargets::compute(&mut t, data(), &cfg(40), 40);
    let parent = measured_parent(&mut t);
    // The teacher's activations, cached once for every layer; a second call finds them.
    let dir = tempfile::tempdir().unwrap();
    let (files, (b, bt)) = cache_activations(&mut t, &targets, 40, dir.path()).unwrap();
    assert_eq!(files.len(), t.arch.layers.len());
    let stamp = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let made: Vec<_> = files.iter().map(|p| stamp(p)).collect();
    assert_eq!(
        cache_activations(&mut t, &targets, 40, dir.path())
            .unwrap()
            .0,
        files
    );
    assert_eq!(files.iter().map(|p| stamp(p)).collect::<Vec<_>>(), made);
    for (layer, attention) in [(0, false), (1, true)] {
        // The teacher with one sub-block narrower: layer 0's FFN at half width, or layer 1's
        // attention with one head fewer of key/values.
        let mut arch = t.arch.clone();
        if attention {
            arch.layers[layer].attention = Attention::Grouped {
                heads: 2,
                kv_heads: 1,
            };
        } else {
            if let Some(f) = arch.layers[layer].ffn.as_mut() {
                f.hidden /= 2;
            }
        }
        let prefixes = if attention {
            vec![format!("h.{layer}.attn."), format!("h.{layer}.ln_1.")]
        } else {
            vec![format!("h.{layer}.mlp."), format!("h.{layer}.ln_2.")]
        };
        let c = DistillConfig {
            train_only: prefixes.clone(),
            ..cfg(40)
        };
        let mut s = Model::with_initial(&arch, Cpu::<f32>::new(1), 1, parent.initial(&arch));
        let before = genas_scoring::distill::evaluate_against_teacher(&mut s, &targets);
        let start = weights(&s);
        // The first step's error, for the trend.
        let first = {
            let mut one = Model::with_initial(&arch, Cpu::<f32>::new(1), 1, parent.initial(&arch));
            let r = local_distill(
                &mut one,
                Activations::Teacher(&mut t),
                &targets,
                &DistillConfig {
                    steps: 1,
                    ..c.clone()
                },
                SubBlock { layer, attention },
            );
            r.train_loss.unwrap()
        };
        let r = local_distill(
            &mut s,
            Activations::Teacher(&mut t),
            &targets,
            &c,
            SubBlock { layer, attention },
        );
        assert_eq!(r.diverged, None);
        // On the cached activations, a step runs the one block: the same training, to the bit.
        let mut cached = Model::with_initial(&arch, Cpu::<f32>::new(1), 1, parent.initial(&arch));
        let d = t.arch.d_model as usize;
        let mut acts = LayerActivations::open(&files[layer], 40, (b, bt, d)).unwrap();
        let rc = local_distill(
            &mut cached,
            Activations::Cached(&mut acts),
            &targets,
            &c,
            SubBlock { layer, attention },
        );
        assert_eq!((rc.train_loss, rc.eval), (r.train_loss, r.eval));
        assert_eq!(weights(&cached), weights(&s));
        // A cache of another size is refused.
        assert!(LayerActivations::open(&files[layer], 41, (b, bt, d)).is_err());
        assert!(
            r.train_loss.unwrap() < 0.7 * first,
            "{first} → {:?}",
            r.train_loss
        );
        let e = r.eval.unwrap();
        assert!(e.kl_to_teacher < before.kl_to_teacher, "{before:?} → {e:?}");
        let after = weights(&s);
        for (i, p) in s.params.iter().enumerate() {
            let own = prefixes.iter().any(|x| p.name.starts_with(x.as_str()));
            assert_eq!(start[i] != after[i], own, "{}", p.name);
        }
    }
}
