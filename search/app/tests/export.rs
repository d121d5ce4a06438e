//! Exports checked the way a user would check them: `python3 DIR/genas_check.py` loads the
//! `pytorch` export with its standalone `model.py` and the `hf` export with
//! `transformers.AutoModelForCausalLM`, and compares the logits with the ones genas computed
//! (max abs difference < 1e-4), plus the tokenizer round trip for `hf` text exports. Every space
//! choice goes through `pytorch`; every transformers family through `hf`. Weights are the
//! initialisation plus noise, so that LayerNorms, biases and masks all matter.
//!
//! When `python3 -c "import torch, transformers"` fails the Python half is skipped, and the test
//! says why on stderr; what genas writes is still checked. CI installs both and sets
//! GENAS_REQUIRE_PYTHON, which turns a failed import into a failure.

use genas_app::winners::export::export_model;
use genas_engine::{Cpu, Model};
use genas_interop::export::{Format, GENAS_HF_CLASS};
use genas_scoring::data::Dataset;
use genas_space::{
    Activation, Architecture, Attention, Experiment, Float, Fraction, Layer, Norm, Position, Rng,
    Sparsity, Tokenizer,
};
mod common;

use common::{arch, python_ready};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus(tokenizer: Tokenizer) -> Dataset {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../experiments/data/shakespeare/sonnets_gut.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    Dataset::from_text(&text, tokenizer, 24, 0.1, "sonnets").unwrap()
}

fn images() -> Dataset {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/fashion.toml");
    let mut e = Experiment::from_path(&path).unwrap();
    e.data.max_images = Some(200);
    Dataset::load(&e).unwrap()
}

fn layer(
    attention: Attention,
    hidden: u32,
    act: Activation,
    rank: Option<u32>,
    s: Sparsity,
) -> Layer {
    Layer::new(attention, hidden, act, rank, s)
}

/// The network of `arch` with its initial weights plus N(0, 0.1) noise, masked weights kept
/// at zero.
fn noisy_model(arch: &Architecture, seed: u64) -> Model<Cpu<f32>> {
    let mut m = Model::new(arch, Cpu::<f32>::new(1), seed);
    let mut rng = Rng::seed_from_u64(seed + 1);
    for i in 0..m.params.len() {
        let mask = m.mask(i);
        let w: Vec<f64> = m
            .weights(i)
            .iter()
            .enumerate()
            .map(|(k, &x)| {
                let keep = mask.as_ref().map_or(1.0, |m| m[k]);
                (x + 0.1 * rng.normal()) * keep
            })
            .collect();
        m.set_weights(i, &w);
    }
    m
}

/// Runs each export's own `genas_check.py` as its `__main__`, with its own argv, in one Python
/// process, so that torch and transformers are imported once for all of them rather than once
/// a folder (about 3 s each; `a_corrupted_check_fails_verification` runs the script as a user
/// does, in a process of its own). Returns each check's JSON line, in order, and fails on a
/// check that exits non-zero.
fn run_checks(dirs: &[PathBuf]) -> Vec<Value> {
    const DRIVER: &str = r#"
import contextlib, io, json, runpy, sys
for d in sys.argv[1:]:
    script, out, code = d + "/genas_check.py", io.StringIO(), 0
    sys.argv = [script]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    print(json.dumps({"code": code, "out": out.getvalue()}), flush=True)
"#;
    let o = Command::new("python3")
        .args(["-c", DRIVER])
        .args(dirs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "the checks' driver failed: {stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let runs: Vec<&str> = stdout.lines().collect();
    assert_eq!(runs.len(), dirs.len(), "{stdout}{stderr}");
    dirs.iter()
        .zip(runs)
        .map(|(dir, run)| {
            let run: Value = serde_json::from_str(run).unwrap();
            let out = run["out"].as_str().unwrap();
            let line: Value = serde_json::from_str(out.trim())
                .unwrap_or_else(|_| panic!("{}: {out} {stderr}", dir.display()));
            assert_eq!(run["code"], 0, "{} failed: {line}", dir.display());
            line
        })
        .collect()
}

struct Case {
    name: &'static str,
    data: usize,
    arch: Architecture,
    hf_class: Option<&'static str>,
}

#[test]
fn exports_reproduce_genas_logits_in_pytorch_and_transformers() {
    let python = python_ready();
    let datasets = [corpus(Tokenizer::Char), corpus(Tokenizer::Byte), images()];
    let (ch, by, im) = (&datasets[0], &datasets[1], &datasets[2]);
    use Activation::{Gelu, GeluTanh, Relu, Swiglu};
    let full = |h| Attention::Full { heads: h };
    let biased = |l: Layer| Layer {
        attention_bias: true,
        ..l
    };
    let dense = Sparsity::Dense;
    let half = Sparsity::Unstructured(Fraction(0.5));
    let mq = |heads| Attention::Grouped { heads, kv_heads: 1 };
    let rope = Position::Rope {
        theta: Float(10_000.0),
        scaling: None,
    };
    let modern = |a: Architecture, position: Position, norm: Norm| {
        let a = Architecture {
            position,
            norm,
            ..a
        };
        a.validate().unwrap();
        a
    };
    // The runner's parity case over the characters: every attention kind, masks, low rank.
    let every_kind = genas_app::gpu_check::every_kind(ch);
    let cases = [
        Case {
            name: "every-kind",
            data: 0,
            arch: every_kind.clone(),
            hf_class: None,
        },
        Case {
            name: "every-kind-rope-rmsnorm",
            data: 0,
            arch: modern(every_kind.clone(), rope, Norm::Rmsnorm),
            hf_class: None,
        },
        Case {
            name: "every-kind-rope500k",
            data: 1,
            arch: modern(
                arch(by, 16, false, 1, every_kind.layers.clone()),
                Position::Rope {
                    theta: Float(500_000.0),
                    scaling: None,
                },
                Norm::Layernorm,
            ),
            hf_class: None,
        },
        Case {
            name: "gpt-neox-untied",
            data: 0,
            arch: modern(
                arch(
                    ch,
                    16,
                    false,
                    1,
                    vec![layer(full(4), 40, Gelu, None, dense); 2],
                ),
                rope,
                Norm::Layernorm,
            ),
            hf_class: Some("GPTNeoXForCausalLM"),
        },
        Case {
            name: "gpt-neox-tied-relu-sparse",
            data: 1,
            arch: modern(
                arch(
                    by,
                    24,
                    true,
                    1,
                    vec![layer(full(2), 32, Relu, None, half); 3],
                ),
                Position::Rope {
                    theta: Float(500_000.0),
                    scaling: None,
                },
                Norm::Layernorm,
            ),
            hf_class: Some("GPTNeoXForCausalLM"),
        },
        Case {
            name: "llama-gqa-tied",
            data: 0,
            arch: modern(
                arch(
                    ch,
                    16,
                    true,
                    1,
                    vec![
                        layer(
                            Attention::Grouped {
                                heads: 4,
                                kv_heads: 2,
                            },
                            40,
                            Swiglu,
                            None,
                            dense,
                        );
                        3
                    ],
                ),
                rope,
                Norm::Rmsnorm,
            ),
            hf_class: Some("LlamaForCausalLM"),
        },
        Case {
            name: "llama-full-untied-sparse",
            data: 1,
            arch: modern(
                arch(
                    by,
                    24,
                    false,
                    1,
                    vec![layer(full(2), 32, Swiglu, None, Sparsity::TwoFour); 2],
                ),
                Position::Rope {
                    theta: Float(500_000.0),
                    scaling: None,
                },
                Norm::Rmsnorm,
            ),
            hf_class: Some("LlamaForCausalLM"),
        },
        Case {
            name: "llama-images-mqa",
            data: 2,
            arch: modern(
                arch(
                    im,
                    16,
                    false,
                    1,
                    vec![layer(mq(2), 32, Swiglu, None, dense); 2],
                ),
                rope,
                Norm::Rmsnorm,
            ),
            hf_class: Some("LlamaForCausalLM"),
        },
        Case {
            name: "shared-tied",
            data: 1,
            arch: arch(
                by,
                16,
                true,
                2,
                // Sharing groups of 2: each group's two layers are the same genes.
                [
                    vec![layer(mq(4), 32, Swiglu, None, Sparsity::TwoFour); 2],
                    vec![layer(Attention::Linear { heads: 4 }, 24, Gelu, Some(8), half); 2],
                ]
                .concat(),
            ),
            hf_class: None,
        },
        Case {
            name: "images",
            data: 2,
            arch: arch(
                im,
                16,
                false,
                1,
                vec![
                    layer(
                        Attention::Sliding {
                            heads: 2,
                            window: 14,
                            kv_heads: None,
                        },
                        32,
                        Swiglu,
                        None,
                        dense,
                    ),
                    layer(Attention::Linear { heads: 2 }, 32, Gelu, None, dense),
                ],
            ),
            hf_class: None,
        },
        Case {
            name: "gpt2-untied-sparse",
            data: 0,
            arch: arch(
                ch,
                16,
                false,
                1,
                vec![layer(full(4), 40, Gelu, None, half); 2],
            ),
            hf_class: Some("GPT2LMHeadModel"),
        },
        Case {
            name: "gpt2-bytes-relu",
            data: 1,
            arch: arch(
                by,
                24,
                true,
                1,
                vec![layer(full(2), 48, Relu, None, dense); 2],
            ),
            hf_class: Some("GPT2LMHeadModel"),
        },
        Case {
            name: "gpt-neo",
            data: 0,
            arch: arch(ch, 16, true, 1, {
                let sliding = layer(
                    Attention::Sliding {
                        heads: 4,
                        window: 5,
                        kv_heads: None,
                    },
                    32,
                    Gelu,
                    None,
                    dense,
                );
                vec![
                    sliding.clone(),
                    layer(full(4), 32, Gelu, None, dense),
                    sliding,
                ]
            }),
            hf_class: Some("GPTNeoForCausalLM"),
        },
        Case {
            // GPT-2 itself: attention biases and gelu_new.
            name: "gpt2-biases-gelu-tanh",
            data: 1,
            arch: arch(
                by,
                24,
                true,
                1,
                vec![biased(layer(full(4), 48, GeluTanh, None, dense)); 2],
            ),
            hf_class: Some("GPT2LMHeadModel"),
        },
        Case {
            name: "gpt-bigcode-biases",
            data: 0,
            arch: arch(
                ch,
                16,
                false,
                1,
                vec![biased(layer(mq(4), 32, GeluTanh, None, dense)); 2],
            ),
            hf_class: Some("GPTBigCodeForCausalLM"),
        },
        Case {
            // Biases with rope, and with a sliding layer: no family writes these.
            name: "biases-rope-sliding",
            data: 0,
            arch: modern(
                arch(
                    ch,
                    16,
                    false,
                    1,
                    vec![
                        biased(layer(full(4), 32, GeluTanh, None, dense)),
                        biased(layer(
                            Attention::Sliding {
                                heads: 2,
                                window: 5,
                                kv_heads: None,
                            },
                            32,
                            Gelu,
                            None,
                            dense,
                        )),
                    ],
                ),
                rope,
                Norm::Layernorm,
            ),
            hf_class: None,
        },
        Case {
            name: "gpt-bigcode",
            data: 2,
            arch: arch(
                im,
                16,
                false,
                1,
                vec![layer(mq(4), 32, Relu, None, dense); 2],
            ),
            hf_class: Some("GPTBigCodeForCausalLM"),
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    // (folder, case, format, the class hf wrote): checked all at once after the loop.
    let mut checks = Vec::new();
    for (k, case) in cases.iter().enumerate() {
        let data = &datasets[case.data];
        let model = noisy_model(&case.arch, 100 + k as u64);
        let record = serde_json::json!({"case": case.name});
        // hf is a native family or genas's own modeling code: every architecture has one.
        let formats = [Format::Pytorch, Format::Json, Format::Hf];
        for format in formats {
            let out: PathBuf = dir.path().join(format!("{}-{}", case.name, format.name()));
            let w =
                export_model(&model, data, record.clone(), (format, None), &out, false).unwrap();
            // What every export holds.
            for f in [
                "architecture.json",
                "candidate.json",
                "genas_check.json",
                "genas_vocab.json",
                "model.safetensors",
            ] {
                assert!(
                    w.files.iter().any(|x| x == f),
                    "{} lacks {f}",
                    out.display()
                );
            }
            let spec = std::fs::read_to_string(out.join("architecture.json")).unwrap();
            assert_eq!(Architecture::from_json(&spec).unwrap(), case.arch);
            let check: Value = serde_json::from_str(
                &std::fs::read_to_string(out.join("genas_check.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(check["tokens"].as_array().unwrap().len(), 2);
            assert_eq!(
                check["tokens"][0].as_array().unwrap().len(),
                data.context as usize
            );
            assert_eq!(
                check["logits"][1][3].as_array().unwrap().len(),
                data.vocab_size() as usize
            );
            if format == Format::Hf {
                assert_eq!(w.hf_class, Some(case.hf_class.unwrap_or(GENAS_HF_CLASS)));
                let sparse = case
                    .arch
                    .layers
                    .iter()
                    .any(|l| l.sparsity != Sparsity::Dense);
                let custom = case.hf_class.is_none();
                if custom {
                    // The note says why no family fits; masks travel with the weights.
                    assert_eq!(w.notes.len(), 1, "{:?}", w.notes);
                    assert!(w.notes[0].starts_with("no transformers family expresses"));
                    for f in ["configuration_genas.py", "modeling_genas.py", "model.py"] {
                        assert!(w.files.iter().any(|x| x == f), "{f}");
                    }
                } else {
                    assert_eq!(!w.notes.is_empty(), sparse, "{:?}", w.notes);
                }
                assert_eq!(out.join("tokenizer.json").exists(), case.data != 2);
            }
            if format != Format::Json && python.is_ok() {
                checks.push((out, case, format, w.hf_class));
            }
        }
    }
    let lines = run_checks(&checks.iter().map(|c| c.0.clone()).collect::<Vec<_>>());
    let mut diffs = Vec::new();
    for ((out, case, format, hf_class), line) in checks.iter().zip(lines) {
        let diff = line["max_abs_diff"].as_f64().unwrap();
        assert!(
            line["ok"] == true && diff < 1e-4,
            "{}: {line}",
            out.display()
        );
        if *format == Format::Hf && case.data != 2 {
            assert_eq!(line["tokenizer"], "ok", "{line}");
        }
        assert_eq!(line["generate"], "ok", "{line}");
        if *format == Format::Hf {
            assert_eq!(line["class"], hf_class.unwrap(), "{line}");
        }
        diffs.push(format!("{} {}: {diff:.2e}", case.name, format.name()));
    }
    println!("max |logit difference|: {}", diffs.join(", "));
}

#[test]
fn a_corrupted_check_fails_verification() {
    if python_ready().is_err() {
        return;
    }
    let data = corpus(Tokenizer::Char);
    let a = arch(
        &data,
        16,
        true,
        1,
        vec![layer(
            Attention::Full { heads: 2 },
            32,
            Activation::Gelu,
            None,
            Sparsity::Dense,
        )],
    );
    let model = noisy_model(&a, 7);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hf");
    export_model(&model, &data, Value::Null, (Format::Hf, None), &out, false).unwrap();
    // One logit off by 1e-3: the check must notice.
    let path = out.join("genas_check.json");
    let mut check: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let x = check["logits"][0][5][2].as_f64().unwrap();
    check["logits"][0][5][2] = (x + 1e-3).into();
    std::fs::write(&path, check.to_string()).unwrap();
    let o = Command::new("python3")
        .arg(out.join("genas_check.py"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let line: Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(line["ok"], false, "{line}");
}

#[test]
fn densify_lets_low_rank_and_shared_winners_load_in_a_native_family() {
    let python = python_ready();
    let data = corpus(Tokenizer::Char);
    let gpt2 = arch(
        &data,
        16,
        false,
        2,
        vec![
            layer(
                Attention::Full { heads: 2 },
                32,
                Activation::Gelu,
                Some(8),
                Sparsity::Dense
            );
            4
        ],
    );
    let llama = Architecture {
        position: Position::Rope {
            theta: Float(10_000.0),
            scaling: None,
        },
        norm: Norm::Rmsnorm,
        ..arch(
            &data,
            16,
            true,
            1,
            vec![
                layer(
                    Attention::Grouped {
                        heads: 4,
                        kv_heads: 2
                    },
                    32,
                    Activation::Swiglu,
                    Some(4),
                    Sparsity::TwoFour,
                );
                2
            ],
        )
    };
    let dir = tempfile::tempdir().unwrap();
    for (k, (a, class)) in [(gpt2, "GPT2LMHeadModel"), (llama, "LlamaForCausalLM")]
        .into_iter()
        .enumerate()
    {
        let model = noisy_model(&a, 40 + k as u64);
        let plain = dir.path().join(format!("{k}-plain"));
        let w = export_model(
            &model,
            &data,
            Value::Null,
            (Format::Hf, None),
            &plain,
            false,
        )
        .unwrap();
        assert_eq!(w.hf_class, Some(GENAS_HF_CLASS));
        let out = dir.path().join(format!("{k}-dense"));
        let w = export_model(&model, &data, Value::Null, (Format::Hf, None), &out, true).unwrap();
        assert_eq!(w.hf_class, Some(class), "{:?}", w.notes);
        // The note gives the parameter counts before and after.
        let note = &w.notes[0];
        assert!(
            note.starts_with("densified (low-rank FFNs multiplied out"),
            "{note}"
        );
        let counts: Vec<usize> = note
            .split(": ")
            .nth(1)
            .unwrap()
            .split(' ')
            .filter_map(|x| x.parse().ok())
            .collect();
        assert_eq!(counts[0], model.num_params(), "{note}");
        assert!(counts[1] > counts[0], "{note}");
        let dense = Architecture::from_json(
            &std::fs::read_to_string(out.join("architecture.json")).unwrap(),
        )
        .unwrap();
        assert!(dense.layers.iter().all(|l| l.ffn_rank().is_none()));
        assert_eq!(dense.share_layers, 1);
        assert_eq!(dense.depth(), a.depth());
        assert_eq!(genas_space::Cost::of(&dense).params as usize, counts[1]);
        if python.is_ok() {
            for line in run_checks(&[out, plain]) {
                assert!(line["ok"] == true && line["generate"] == "ok", "{line}");
            }
        }
    }
}

/// The Llama-block families of today's teachers: each student block leaves as the family
/// that expresses it (Qwen2 for q/k/v biases, Qwen3 for query/key norms and wider heads,
/// Mistral for grouped sliding windows, Llama with Llama 3's rope scaling), a plain block as
/// its teacher's family, and what none of them has as genas's own code; `model.py` computes
/// every one. Each export's check loads it as a user would and compares the logits.
#[test]
fn todays_teacher_families_export_natively_and_reproduce_genas_logits() {
    use genas_space::RopeScaling;
    let python = python_ready();
    let data = corpus(Tokenizer::Byte);
    let swiglu = |a: Attention| layer(a, 48, Activation::Swiglu, None, Sparsity::Dense);
    let gqa = Attention::Grouped {
        heads: 4,
        kv_heads: 2,
    };
    let llama_block = |layers: Vec<Layer>, position: Position, eps: f64| {
        let a = Architecture {
            norm: Norm::Rmsnorm,
            position,
            norm_eps: Float(eps),
            ..arch(&data, 32, true, 1, layers)
        };
        a.validate().unwrap();
        a
    };
    let rope = |theta: f64| Position::Rope {
        theta: Float(theta),
        scaling: None,
    };
    let llama3 = Position::Rope {
        theta: Float(5e5),
        scaling: Some(RopeScaling::Llama3 {
            factor: Float(8.0),
            low_freq_factor: Float(1.0),
            high_freq_factor: Float(4.0),
            original_context: 8,
        }),
    };
    let qwen2 = Layer {
        qkv_bias: true,
        ..swiglu(gqa.clone())
    };
    let qwen3 = Layer {
        qk_norm: true,
        head_dim: Some(12),
        ..swiglu(gqa.clone())
    };
    let mistral = swiglu(Attention::Sliding {
        heads: 4,
        window: 5,
        kv_heads: Some(2),
    });
    // (name, architecture, the teacher's model_type, the class hf must write)
    let cases: Vec<(&str, Architecture, Option<&str>, &str)> = vec![
        (
            "qwen2",
            llama_block(vec![qwen2.clone(); 2], rope(1e6), 1e-6),
            Some("qwen2"),
            "Qwen2ForCausalLM",
        ),
        (
            "qwen3",
            llama_block(vec![qwen3.clone(); 2], rope(1e6), 1e-6),
            Some("qwen3"),
            "Qwen3ForCausalLM",
        ),
        (
            "mistral",
            llama_block(vec![mistral.clone(); 2], rope(1e4), 1e-5),
            Some("mistral"),
            "MistralForCausalLM",
        ),
        (
            "llama3-scaling",
            llama_block(vec![swiglu(gqa.clone()); 2], llama3, 1e-5),
            Some("llama"),
            "LlamaForCausalLM",
        ),
        (
            "plain-block-of-a-qwen2-teacher",
            llama_block(vec![swiglu(gqa.clone()); 2], rope(1e6), 1e-6),
            Some("qwen2"),
            "Qwen2ForCausalLM",
        ),
        (
            "plain-block-of-a-mistral-teacher",
            llama_block(
                vec![swiglu(Attention::Full { heads: 2 }); 2],
                Position::Rope {
                    theta: Float(1e4),
                    scaling: Some(RopeScaling::Linear { factor: Float(2.0) }),
                },
                1e-5,
            ),
            Some("mistral"),
            "MistralForCausalLM",
        ),
        (
            "plain-block-of-a-qwen3-teacher",
            llama_block(vec![swiglu(gqa.clone()); 2], rope(1e6), 1e-6),
            Some("qwen3"),
            "LlamaForCausalLM",
        ),
        (
            // Per-layer blocks of three families at once: no family, genas's own code.
            "mixed-families",
            llama_block(vec![qwen2, qwen3, mistral], llama3, 1e-6),
            Some("qwen2"),
            GENAS_HF_CLASS,
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut checks = Vec::new();
    for (k, (name, a, teacher, class)) in cases.iter().enumerate() {
        let model = noisy_model(a, 300 + k as u64);
        for format in [Format::Pytorch, Format::Hf] {
            let out = dir.path().join(format!("{name}-{}", format.name()));
            let w =
                export_model(&model, &data, Value::Null, (format, *teacher), &out, false).unwrap();
            if format == Format::Hf {
                assert_eq!(w.hf_class, Some(*class), "{name}: {:?}", w.notes);
                let cfg: Value = serde_json::from_str(
                    &std::fs::read_to_string(out.join("config.json")).unwrap(),
                )
                .unwrap();
                if *class != GENAS_HF_CLASS {
                    assert_eq!(cfg["rms_norm_eps"].as_f64(), Some(a.norm_eps.0), "{name}");
                }
            }
            if python.is_ok() {
                checks.push((out, *name, format, *class));
            }
        }
    }
    let lines = run_checks(&checks.iter().map(|c| c.0.clone()).collect::<Vec<_>>());
    let mut diffs = Vec::new();
    for ((_, name, format, class), line) in checks.iter().zip(lines) {
        let diff = line["max_abs_diff"].as_f64().unwrap();
        assert!(line["ok"] == true && diff < 1e-4, "{name}: {line}");
        assert_eq!(line["generate"], "ok", "{line}");
        if *format == Format::Hf {
            assert_eq!(line["class"], *class, "{line}");
            assert_eq!(line["tokenizer"], "ok", "{line}");
        }
        diffs.push(format!("{name} {}: {diff:.2e}", format.name()));
    }
    println!("max |logit difference|: {}", diffs.join(", "));
}
