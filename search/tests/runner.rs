//! The PyTorch runner against the genas engine: one brief distillation job, run by both from
//! the same initial weights on the same batches and soft targets, agrees step for step (every
//! training loss to 1e-4 relative over 50 steps) and in the end (validation cross-entropy to
//! 1e-4), for every space choice: each attention kind, sparsity masks (held at zero), low
//! rank, sharing, tying, rope and RMSNorm, every activation, attention biases, and a
//! vocabulary large enough for top-k targets.
//!
//! Without `import torch` the tests say they skipped; CI installs torch and sets
//! GENAS_REQUIRE_PYTHON, which turns that into a failure.

mod common;

use common::{arch, python_ready};
use genas_proxies::data::Dataset;
use genas_proxies::distill::{brief_distill_traced, DistillConfig, TeacherTargets};
use genas_proxies::engine::{Cpu, Model};
use genas_search::executor::Job;
use genas_space::{
    Activation, Architecture, Attention, Float, Fraction, Layer, Norm, Position, Rng, Sparsity,
    Tokenizer,
};
use std::path::Path;

fn corpus() -> Dataset {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../experiments/data/shakespeare/sonnets_gut.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    Dataset::from_text(&text, Tokenizer::Char, 24, 0.1, "sonnets").unwrap()
}

/// Token ids over a vocabulary of 1,500: the teacher's targets are cached as their top 64.
fn wide_vocabulary() -> Dataset {
    let mut rng = Rng::seed_from_u64(7);
    let mut ids = |n: usize| (0..n).map(|_| rng.index(1500) as u32).collect::<Vec<u32>>();
    Dataset::from_ids(ids(20_000), ids(2_000), 1500, 16)
}

/// A teacher (untrained but not uniform: its own initialisation) and its targets for 50 steps.
fn targets(data: &Dataset, cfg: &DistillConfig) -> TeacherTargets {
    let layer = Layer::new(
        Attention::Full { heads: 2 },
        64,
        Activation::Gelu,
        None,
        Sparsity::Dense,
    );
    let t = arch(data, 32, false, 1, vec![layer; 2]);
    let mut teacher = Model::new(&t, Cpu::<f32>::new(1), 99);
    TeacherTargets::compute(&mut teacher, data, cfg, cfg.steps)
}

#[test]
fn the_pytorch_runner_trains_as_the_engine_does_for_every_space_choice() {
    if python_ready().is_err() {
        return;
    }
    use Activation::{Gelu, GeluTanh, Relu, Swiglu};
    let dense = Sparsity::Dense;
    let l = Layer::new;
    let (text, wide) = (corpus(), wide_vocabulary());
    let every_kind = |d: &Dataset| {
        arch(
            d,
            16,
            false,
            1,
            vec![
                l(Attention::Full { heads: 4 }, 32, Gelu, None, dense),
                l(
                    Attention::Grouped {
                        heads: 4,
                        kv_heads: 2,
                    },
                    24,
                    Relu,
                    None,
                    Sparsity::TwoFour,
                ),
                l(
                    Attention::Sliding {
                        heads: 2,
                        window: 5,
                    },
                    32,
                    Swiglu,
                    Some(4),
                    Sparsity::Unstructured(Fraction(0.5)),
                ),
                l(Attention::Linear { heads: 2 }, 16, Gelu, None, dense),
                l(Attention::None, 32, Relu, Some(8), Sparsity::TwoFour),
            ],
        )
    };
    let modern = Architecture {
        position: Position::Rope {
            theta: Float(10_000.0),
        },
        norm: Norm::Rmsnorm,
        ..every_kind(&text)
    };
    let biased = Layer {
        attention_bias: true,
        ..l(
            Attention::Grouped {
                heads: 4,
                kv_heads: 1,
            },
            48,
            GeluTanh,
            None,
            dense,
        )
    };
    let cases: Vec<(&str, &Dataset, Architecture)> = vec![
        (
            "every attention kind, masks, low rank",
            &text,
            every_kind(&text),
        ),
        ("rope and rmsnorm", &text, modern),
        (
            "shared, tied, multi-query, biases, gelu_tanh",
            &text,
            arch(&text, 16, true, 2, vec![biased; 4]),
        ),
        ("top-k targets (vocabulary 1,500)", &wide, every_kind(&wide)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut report = String::new();
    for (k, (name, data, a)) in cases.iter().enumerate() {
        a.validate().unwrap();
        let cfg = DistillConfig {
            steps: 50,
            batch_size: 4,
            learning_rate: 3e-3,
            temperature: 2.0,
            alpha: 0.5,
            seed: 5,
            val_sequences: 16,
            top_k: 64,
        };
        let t = targets(data, &cfg);
        let targets_dir = dir.path().join("inputs");
        let tname = genas_proxies::inputs::store(&targets_dir, &t).unwrap();
        let job = Job {
            id: a.id(),
            architecture: a.clone(),
            init_seed: 1000 + k as u64,
            rung: 0,
            config: cfg.clone(),
            measure_latency: false,
        };
        // The engine.
        let mut m = Model::new(a, Cpu::<f32>::new(1), job.init_seed);
        let mut losses = Vec::new();
        let ours = brief_distill_traced(&mut m, &t, &cfg, &mut |l| losses.push(l));
        // The runner.
        let jd = dir.path().join(format!("job{k}"));
        genas_search::runner::write_job(
            &jd,
            &job,
            &genas_proxies::inputs::path_in(&targets_dir, &tname),
            t.schedule.len(),
        )
        .unwrap();
        let theirs = genas_search::runner::run(&jd, "python3", "cpu").unwrap();
        assert_eq!(theirs.device, "cpu");
        assert_eq!(theirs.losses.len(), 50, "{name}");
        let worst = losses
            .iter()
            .zip(&theirs.losses)
            .map(|(a, b)| ((a - b) / a).abs())
            .fold(0.0, f64::max);
        let (e, r) = (ours.eval.unwrap(), theirs.eval.unwrap());
        let ce = ((e.val_ce - r.val_ce) / e.val_ce).abs();
        report += &format!(
            "{name}: worst step loss {worst:.1e}, val CE {ce:.1e} (genas {:.5}, torch {:.5}), KL {:.5}/{:.5}, agreement {:.4}/{:.4}\n",
            e.val_ce, r.val_ce, e.kl_to_teacher, r.kl_to_teacher, e.agreement, r.agreement
        );
        assert!(
            worst < 1e-4,
            "{name}: a step's loss differs by {worst:.2e}\n{report}"
        );
        assert!(
            ce < 1e-4,
            "{name}: validation CE differs by {ce:.2e}\n{report}"
        );
        assert!(
            (e.kl_to_teacher - r.kl_to_teacher).abs() < 1e-4 * e.kl_to_teacher.max(1e-3),
            "{name}\n{report}"
        );
        // The record genas keeps from a runner's result.
        let out = theirs.output();
        assert_eq!(out.result.steps, ours.steps);
        assert!(out.result.diverged.is_none());
    }
    eprintln!("{report}");
}

/// `genas search` of a small experiment with `search` appended to its [search] section, the
/// runner's device forced to torch's CPU: the run's candidates.
fn search_on(dir: &Path, name: &str, search: &str) -> serde_json::Value {
    let exp = common::small_experiment(
        &dir.join(format!("{name}.toml")),
        "runner-test",
        &format!(
            "[constraints]\nmax_params = 20_000\n[search]\ncandidates = 8\npopulation = 4\ncalibration = 10\n{search}[fidelity]\nbatch_size = 8\nrung_steps = [20, 40]\neta = 2\n"
        ),
    );
    let archive = dir.join(name);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_genas"))
        .args([
            "search",
            common::s(&exp),
            "--archive",
            common::s(&archive),
            "--json",
        ])
        .args(["--plot", common::s(&dir.join(format!("{name}.svg")))])
        .env("GENAS_RUNNER_DEVICE", "cpu")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    // The runner's inputs are there only when the runner trained.
    let inputs = archive.join("torch/inputs");
    assert_eq!(inputs.is_dir(), search.contains("cuda"), "{err}");
    let show = common::genas(&["show", "r1", "--archive", common::s(&archive), "--json"]);
    common::ok_json(&show)
}

#[test]
fn a_search_through_the_runner_matches_the_engine_to_float_rounding() {
    if python_ready().is_err() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = search_on(dir.path(), "engine", "");
    let torch = search_on(dir.path(), "torch", "device = \"cuda\"\ndevice_jobs = 2\n");
    let (a, b) = (
        engine["candidates"].as_array().unwrap(),
        torch["candidates"].as_array().unwrap(),
    );
    // The same decisions: the same candidates, screened and promoted alike.
    let ids = |c: &[serde_json::Value]| c.iter().map(|c| c["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(a), ids(b));
    let mut rungs = 0;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x["screened_out"], y["screened_out"]);
        let (rx, ry) = (
            x["rungs"].as_array().unwrap(),
            y["rungs"].as_array().unwrap(),
        );
        assert_eq!(rx.len(), ry.len(), "{}", x["id"]);
        for (p, q) in rx.iter().zip(ry) {
            let (p, q) = (
                p["result"]["eval"]["val_ce"].as_f64().unwrap(),
                q["result"]["eval"]["val_ce"].as_f64().unwrap(),
            );
            assert!(((p - q) / p).abs() < 1e-4, "{}: {p} against {q}", x["id"]);
            rungs += 1;
        }
        // The top rung's latency is measured on the engine, from the runner's weights.
        if rx.len() == 2 {
            assert!(y["latency_ms_per_token"].as_f64().is_some_and(|l| l > 0.0));
        }
    }
    assert!(rungs >= 4, "{rungs} rung results");
    assert_eq!(
        engine["report"]["front"].as_array().unwrap().len(),
        torch["report"]["front"].as_array().unwrap().len()
    );
}
