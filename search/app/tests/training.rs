//! `genas export --with-training`: the `train.py` written beside a winner continues genas's
//! final distillation in plain PyTorch. On torch's CPU, from the exported initial weights and
//! with genas's batch order, its per-step losses are `genas distill`'s within 1e-5 relative and
//! its validation figures genas's, for a text run (the `pytorch` format), an image run (`hf`)
//! and a run with a pretrained teacher (`hf`, the teacher's tokenizer); two processes under
//! torchrun (gloo) give the losses of one; a run stopped and started again resumes from its
//! checkpoint to the same losses; bad input gets one line before any training.
//!
//! Needs python3 with torch and transformers (skipped without, a failure under
//! GENAS_REQUIRE_PYTHON).

mod common;

use common::{fashion8, genas, ok_json, s, search_into, small_experiment};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Relative agreement asked of every step's loss and every validation figure.
const PARITY: f64 = 1e-5;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `python3 ARGS` with torch on one thread (the engine's sums are single-threaded too).
fn python(args: &[&str]) -> Output {
    Command::new("python3")
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("python3 runs")
}

/// What train.py logged in `out`: each step's loss, and (step, validation CE) per evaluation.
struct Log {
    losses: Vec<f64>,
    evals: Vec<(u64, f64)>,
    done: Option<Value>,
}

fn read_log(out: &Path) -> Log {
    let text = std::fs::read_to_string(out.join("train_log.jsonl")).unwrap();
    let mut log = Log {
        losses: Vec::new(),
        evals: Vec::new(),
        done: None,
    };
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(l) = v.get("loss") {
            assert_eq!(
                v["step"].as_u64().unwrap() as usize,
                log.losses.len(),
                "{line}"
            );
            log.losses.push(l.as_f64().unwrap());
        } else if let Some(ce) = v.get("val_ce") {
            log.evals
                .push((v["step"].as_u64().unwrap(), ce.as_f64().unwrap()));
        } else {
            log.done = Some(v["done"].clone());
        }
    }
    log
}

/// `python3 DIR/train.py --device cpu --quiet --out OUT EXTRA`, which must succeed.
fn train(dir: &Path, out: &Path, extra: &[&str]) -> Log {
    let script = dir.join("train.py");
    let mut args = vec![s(&script), "--device", "cpu", "--quiet", "--out", s(out)];
    args.extend_from_slice(extra);
    let o = python(&args);
    assert!(
        o.status.success(),
        "train.py failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    read_log(out)
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// train.py's log against genas's distilled record: every step's loss and every evaluation.
fn assert_parity(what: &str, rec: &Value, log: &Log) -> (f64, f64) {
    let genas_losses: Vec<f64> = rec["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(genas_losses.len() as u64, rec["steps"].as_u64().unwrap());
    assert_eq!(log.losses.len(), genas_losses.len(), "{what}: steps");
    let worst_loss = genas_losses
        .iter()
        .zip(&log.losses)
        .map(|(&g, &p)| relative(p, g))
        .fold(0.0, f64::max);
    assert!(
        worst_loss <= PARITY,
        "{what}: a step's loss differs by {worst_loss:.2e}"
    );
    let history: Vec<(u64, f64)> = rec["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_u64().unwrap(), h[1].as_f64().unwrap()))
        .collect();
    assert_eq!(
        history.iter().map(|h| h.0).collect::<Vec<_>>(),
        log.evals.iter().map(|h| h.0).collect::<Vec<_>>(),
        "{what}: evaluated at other steps"
    );
    let worst_val = history
        .iter()
        .zip(&log.evals)
        .map(|(g, p)| relative(p.1, g.1))
        .fold(0.0, f64::max);
    assert!(
        worst_val <= PARITY,
        "{what}: a validation CE differs by {worst_val:.2e}"
    );
    // The kept weights' figure, in the unit genas reports.
    let done = log.done.as_ref().expect("train.py finished");
    let unit = rec["bits_unit"].as_str().unwrap();
    let bits = done[unit].as_f64().unwrap();
    assert!(
        relative(bits, rec["val_bits"].as_f64().unwrap()) <= PARITY,
        "{what}: {bits} {unit} against genas's {}",
        rec["val_bits"]
    );
    assert_eq!(done["best_step"], rec["best_step"], "{what}");
    eprintln!(
        "{what}: {} steps, worst relative difference {worst_loss:.2e} (loss), {worst_val:.2e} (validation CE); {bits:.5} {unit}",
        log.losses.len()
    );
    (worst_loss, worst_val)
}

/// Searches `exp` into `archive`, distils its front's first member for `steps` steps and
/// exports its initial weights `--with-training` as `format` into `out`; returns genas's
/// distilled record.
fn distil_and_export(
    exp: &Path,
    archive: &Path,
    steps: u32,
    format: &str,
    out: &Path,
    run: &dyn Fn(&[&str]) -> Output,
) -> Value {
    let plot = archive.with_extension("svg");
    let said = run(&[
        "search",
        s(exp),
        "--archive",
        s(archive),
        "--plot",
        s(&plot),
    ]);
    assert!(
        said.status.success(),
        "{}",
        String::from_utf8_lossy(&said.stderr)
    );
    let front = ok_json(&run(&["front", "r1", "--archive", s(archive), "--json"]));
    // The largest member: the most weights the recipe moves.
    let id = front["front"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let steps = steps.to_string();
    let recs = ok_json(&run(&[
        "distill",
        "r1",
        &id,
        "--steps",
        &steps,
        "--archive",
        s(archive),
        "--json",
    ]));
    let rec = recs.as_array().map_or(recs.clone(), |a| a[0].clone());
    let o = run(&[
        "export",
        "r1",
        &id,
        "--format",
        format,
        "--weights",
        "init",
        "--with-training",
        "--out",
        s(out),
        "--archive",
        s(archive),
        "--json",
    ]);
    let w = ok_json(&o);
    for f in ["train.py", "train.toml", "genas_batches.safetensors"] {
        assert!(
            w["files"].as_array().unwrap().iter().any(|x| x == f),
            "{f} not among {}",
            w["files"]
        );
        assert!(out.join(f).is_file(), "{f}");
    }
    rec
}

const TEXT_SEARCH: &str = "[constraints]\nmax_params = 20_000\n[search]\ncandidates = 4\npopulation = 4\n[fidelity]\nbatch_size = 8\nrung_steps = [10]\ninit = \"teacher\"\n";

/// A character-level run exported as `pytorch`: parity with genas distill; torchrun with two
/// gloo processes gives the same losses; stopped at step 9 and run again, it resumes to the
/// same losses; and bad input of every kind gets one line before any training.
#[test]
fn train_py_of_a_text_run_reproduces_genas_distill_under_torchrun_and_after_a_stop() {
    if common::python_ready().is_err() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exp = small_experiment(&dir.path().join("e.toml"), "text", TEXT_SEARCH);
    let out = dir.path().join("export");
    let rec = distil_and_export(&exp, &dir.path().join("a"), 24, "pytorch", &out, &|a| {
        genas(a)
    });
    assert!(
        out.join("teacher/model.py").is_file(),
        "the teacher is exported beside"
    );
    let single = train(&out, &dir.path().join("one"), &[]);
    assert_parity("text (pytorch)", &rec, &single);

    // Two processes, each a half of every batch, under torchrun with the gloo backend.
    let two = dir.path().join("two");
    let o = python(&[
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        s(&out.join("train.py")),
        "--device",
        "cpu",
        "--quiet",
        "--out",
        s(&two),
    ]);
    assert!(
        o.status.success(),
        "torchrun: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ddp = read_log(&two);
    let worst = single
        .losses
        .iter()
        .zip(&ddp.losses)
        .map(|(&a, &b)| relative(b, a))
        .fold(0.0, f64::max);
    assert_eq!(ddp.losses.len(), single.losses.len());
    assert!(
        worst <= PARITY,
        "two processes differ from one by {worst:.2e}"
    );
    eprintln!("torchrun, 2 gloo processes: worst relative difference {worst:.2e} from one");

    // Stopped after 9 steps (a checkpoint), then run again: it resumes there.
    let resumed = dir.path().join("resumed");
    let first = train(&out, &resumed, &["--stop-at", "9"]);
    assert_eq!(first.losses.len(), 9);
    assert!(first.done.is_none());
    let again = train(&out, &resumed, &[]);
    assert_eq!(again.losses, single.losses, "resumed to other losses");
    assert_eq!(again.evals, single.evals);

    bad_input(&out, dir.path());
}

/// One line on stderr, exit status 2, and no training started.
fn refused(o: &Output, out: &Path, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{needle:?} not in {err}"
    );
    assert!(!out.join("train_log.jsonl").exists(), "training started");
    assert!(!out.join("checkpoints").exists(), "training started");
}

fn bad_input(export: &Path, tmp: &Path) {
    let config = std::fs::read_to_string(export.join("train.toml")).unwrap();
    let run = |name: &str, text: &str| {
        let cfg = tmp.join(format!("{name}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let out = tmp.join(name);
        let o = python(&[
            s(&export.join("train.py")),
            "--config",
            s(&cfg),
            "--device",
            "cpu",
            "--out",
            s(&out),
        ]);
        (o, out)
    };
    // train.toml edited into nonsense.
    for (name, text, needle) in [
        (
            "alpha",
            config.replace("alpha = 0.5", "alpha = 2.0"),
            "train.alpha",
        ),
        (
            "kind",
            config.replace("steps = 24", "steps = \"many\""),
            "train.steps",
        ),
        (
            "unknown",
            config.replace("[train]\n", "[train]\nlearning_rat = 1.0\n"),
            "unknown key train.learning_rat",
        ),
        (
            "toml",
            config.replace("[train]", "[train"),
            "not a TOML file",
        ),
        (
            "missing",
            config.replace("batch_size = 8", ""),
            "train.batch_size is missing",
        ),
    ] {
        assert_ne!(text, config, "{name}: the edit applies");
        let (o, out) = run(name, &text);
        refused(&o, &out, needle);
    }
    // The teacher's folder gone.
    let (o, out) = run(
        "teacher",
        &config.replace(
            "dir = \"teacher\"",
            &format!("dir = {:?}", tmp.join("nowhere")),
        ),
    );
    refused(&o, &out, "the teacher's folder is missing");
    // A corpus whose characters the vocabulary does not hold.
    let corpus = tmp.join("other.txt");
    std::fs::write(&corpus, "日本語の文章です。".repeat(400)).unwrap();
    let path_line = config
        .lines()
        .find(|l| l.starts_with("path = "))
        .unwrap()
        .to_string();
    let (o, out) = run(
        "corpus",
        &config.replace(&path_line, &format!("path = {:?}", corpus)),
    );
    refused(&o, &out, "the vocabulary lacks");
}

/// An image run (Fashion-MNIST at 8×8, 8 gray levels) exported as `hf`, its teacher too.
#[test]
fn train_py_of_an_image_run_exported_for_transformers_reproduces_genas_distill() {
    if common::python_ready().is_err() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exp = common::experiment_on(
        &dir.path().join("e.toml"),
        "image",
        &fashion8(),
        TEXT_SEARCH,
    );
    let out = dir.path().join("export");
    let rec = distil_and_export(&exp, &dir.path().join("a"), 20, "hf", &out, &|a| genas(a));
    assert!(out.join("teacher/config.json").is_file());
    let log = train(&out, &dir.path().join("one"), &[]);
    assert_parity("image (hf)", &rec, &log);
}

/// `experiments/FILE` with its teacher `fixtures/hf/FIXTURE` and the corpus `corpus` (relative
/// to experiments/), paths made absolute, `edit` applied; searched, its largest front member
/// distilled for `steps` steps and exported `--with-training` as `hf`; train.py's run checked
/// against genas's. Returns the export folder, train.py's output folder and genas's record.
fn pretrained_case(
    dir: &Path,
    file: &str,
    fixture: &str,
    corpus: &str,
    steps: u32,
    edit: impl Fn(String) -> String,
) -> (PathBuf, PathBuf, Value) {
    let experiments = root().join("experiments").canonicalize().unwrap();
    let text = std::fs::read_to_string(experiments.join(file))
        .unwrap()
        .replace(
            "\"data/shakespeare\"",
            &format!("{:?}", experiments.join(corpus)),
        )
        .replace(
            &format!("\"fixtures/hf/{fixture}\""),
            &format!("{:?}", experiments.join("fixtures/hf").join(fixture)),
        );
    let exp = dir.join("exp.toml");
    std::fs::write(&exp, edit(text)).unwrap();
    let cache = dir.join("cache");
    let run = |a: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_genas"))
            .args(a)
            .env("GENAS_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    let out = dir.join("export");
    let rec = distil_and_export(&exp, &dir.join("a"), steps, "hf", &out, &run);
    let config = std::fs::read_to_string(out.join("train.toml")).unwrap();
    assert!(config.contains("kind = \"pretrained\""), "{config}");
    assert!(config.contains("tokenizer = \"hf\""), "{config}");
    assert!(out.join("tokenizer.json").is_file());
    let one = dir.join("one");
    let log = train(&out, &one, &[]);
    assert_parity(&format!("{file}, pretrained teacher (hf)"), &rec, &log);
    (out, one, rec)
}

/// A run distilled from a pretrained Llama teacher (experiments/fixtures/hf/llama-gqa, written
/// by transformers) in its own vocabulary, exported as `hf`: train.py tokenizes Hamlet with the
/// teacher's tokenizer and runs the teacher through transformers. The member is 2:4 sparse and
/// leaves as a native Llama: train.py keeps its zeros.
#[test]
fn train_py_of_a_pretrained_teacher_run_reproduces_genas_distill() {
    if common::python_ready().is_err() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (out, one, rec) = pretrained_case(
        dir.path(),
        "pretrained.toml",
        "llama-gqa",
        "data/shakespeare/hamlet_gut.txt",
        12,
        |t| {
            t.replace("candidates = 16", "candidates = 4")
                .replace("rung_steps = [200]", "rung_steps = [20]")
        },
    );
    let config = std::fs::read_to_string(out.join("train.toml")).unwrap();
    // The member is sparse (this search's largest is): it leaves as a native Llama with its
    // zeros stored, train.toml lists its masked matrices, and train.py keeps their zeros.
    let arch = rec["architecture"].as_str().unwrap();
    assert!(
        arch.contains("2:4") || arch.contains("unstructured"),
        "{arch}"
    );
    assert!(config.contains("masked = ["), "{config}");
    let check = r#"
import sys, tomllib
from safetensors.torch import load_file as load_safetensors
cfg = tomllib.load(open(sys.argv[1] + "/train.toml", "rb"))
a = load_safetensors(sys.argv[1] + "/model.safetensors")
b = load_safetensors(sys.argv[2] + "/trained/model.safetensors")
for name in cfg["model"]["masked"]:
    zeros = a[name] == 0
    assert zeros.any() and (b[name][zeros] == 0).all() and (b[name][~zeros] != a[name][~zeros]).any(), name
"#;
    let o = python(&["-c", check, s(&out), s(&one)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Students of the Qwen2 fixture without its q/k/v biases leave as Qwen2ForCausalLM with
/// zero biases, which train.py keeps at zero (`frozen`); the corpus is a JSON Lines file of
/// documents (the fixture's tokenizer has no end-of-text token: a newline joins them).
#[test]
fn train_py_of_a_qwen2_run_on_json_lines_keeps_the_biases_the_student_lacks() {
    if common::python_ready().is_err() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (out, one, _) = pretrained_case(
        dir.path(),
        "qwen2.toml",
        "qwen2",
        "fixtures/corpus/docs.jsonl",
        12,
        |t| {
            t.replace("candidates = 16", "candidates = 4")
                .replace("rung_steps = [200]", "rung_steps = [20]")
                .replace("qkv_bias = true ", "# ")
                .replace("screen_keep = 0.5", "screen_keep = 1.0")
        },
    );
    let config = std::fs::read_to_string(out.join("train.toml")).unwrap();
    assert!(config.contains("frozen = ["), "{config}");
    assert!(config.contains("docs.jsonl"), "{config}");
    let check = r#"
import sys, tomllib
from safetensors.torch import load_file as load_safetensors
cfg = tomllib.load(open(sys.argv[1] + "/train.toml", "rb"))
b = load_safetensors(sys.argv[2] + "/trained/model.safetensors")
assert cfg["model"]["frozen"] and all(n.endswith("_proj.bias") for n in cfg["model"]["frozen"])
for name in cfg["model"]["frozen"]:
    assert (b[name] == 0).all(), name
"#;
    let o = python(&["-c", check, s(&out), s(&one)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A byte-level run (the bytes of Hamlet) exported as `hf`.
#[test]
fn train_py_of_a_byte_level_run_reproduces_genas_distill() {
    if common::python_ready().is_err() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hamlet = root()
        .join("experiments/data/shakespeare/hamlet_gut.txt")
        .canonicalize()
        .unwrap();
    let data = format!(
        "kind = \"text\"\npath = {:?}\ntokenizer = \"byte\"\nseq_len = 32",
        hamlet
    );
    let exp = common::experiment_on(&dir.path().join("e.toml"), "bytes", &data, TEXT_SEARCH);
    let out = dir.path().join("export");
    let rec = distil_and_export(&exp, &dir.path().join("a"), 16, "hf", &out, &|a| genas(a));
    assert_eq!(rec["bits_unit"], "bits/byte");
    let log = train(&out, &dir.path().join("one"), &[]);
    assert_parity("bytes (hf)", &rec, &log);
}

/// A format train.py cannot train from, and a candidate that does not exist, are refused.
#[test]
fn with_training_is_refused_for_json_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let exp = small_experiment(&dir.path().join("e.toml"), "text", TEXT_SEARCH);
    let (archive, _) = search_into(dir.path(), &exp);
    let out = dir.path().join("export");
    let o = genas(&[
        "export",
        "r1",
        "0",
        "--format",
        "json",
        "--with-training",
        "--out",
        s(&out),
        "--archive",
        s(&archive),
    ]);
    common::fails_with(&o, &["--with-training", "pytorch or hf"]);
    assert!(!out.exists());
}
