//! `[teacher] pretrained` and `[data] tokenizer` end to end through the `genas` binary: a
//! Llama checkpoint written by transformers (experiments/fixtures/hf) distilled in its own
//! vocabulary, its students exported with its tokenizer, and every misuse refused in one line.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binary with the token cache in `cache`, so tests leave nothing behind.
fn genas(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_genas"))
        .args(args)
        .current_dir(root())
        .env("GENAS_CACHE_DIR", cache)
        .output()
        .expect("the genas binary runs")
}

fn json_out(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// `genas teacher import DIR --experiment EXP --out CHECK --json`, succeeded, as JSON.
fn import_json(cache: &Path, dir: &Path, exp: &Path, check: &Path) -> Value {
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    let (dir, exp, check) = (arg(dir), arg(exp), arg(check));
    json_out(&genas(
        cache,
        &[
            "teacher",
            "import",
            &dir,
            "--experiment",
            &exp,
            "--out",
            &check,
            "--json",
        ],
    ))
}

fn fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{err}"
    );
}

/// experiments/pretrained.toml with `edit` applied to its text, written beside it in `dir`
/// with paths made absolute.
fn experiment(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    shipped_experiment("pretrained.toml", "llama-gqa", dir, edit)
}

/// experiments/`file` (whose teacher is fixtures/hf/`fixture`) with `edit` applied to its
/// text, written in `dir` with paths made absolute; the corpus cut to Hamlet.
fn shipped_experiment(
    file: &str,
    fixture: &str,
    dir: &Path,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let text = std::fs::read_to_string(root().join("experiments").join(file)).unwrap();
    let exp = root().join("experiments").canonicalize().unwrap();
    let text = text
        .replace(
            "\"data/shakespeare\"",
            &format!("{:?}", exp.join("data/shakespeare/hamlet_gut.txt")),
        )
        .replace(
            &format!("\"fixtures/hf/{fixture}\""),
            &format!("{:?}", exp.join("fixtures/hf").join(fixture)),
        );
    let path = dir.join("exp.toml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

/// experiments/qwen2.toml end to end: a Qwen2.5-shaped teacher written by transformers,
/// students with its q/k/v biases, epsilon and rope base, searched, distilled, exported as
/// Qwen2ForCausalLM with its tokenizer (checked by transformers' AutoTokenizer, the logits
/// and generate()), and sampled from a prompt.
#[test]
fn a_qwen2_teacher_leaves_qwen2_students_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let exp = shipped_experiment("qwen2.toml", "qwen2", tmp.path(), |t| {
        t.replace("candidates = 16", "candidates = 6")
            .replace("calibration = 12", "calibration = 10")
            .replace("rung_steps = [200]", "rung_steps = [40]")
    });
    let exp = exp.to_str().unwrap();
    // The space keeps the teacher's block; one without its biases and epsilon is told so.
    let check = |file: &str| {
        let o = genas(&cache, &["space", "check", file]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(!check(exp).contains("the teacher is a"), "{}", check(exp));
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let bare = shipped_experiment("qwen2.toml", "qwen2", &other, |t| {
        t.replace("norm_eps = 1e-6\n", "")
            .replace("qkv_bias = true ", "# ")
    });
    let said = check(bare.to_str().unwrap());
    assert!(
        said.contains("the teacher is a qwen2 model")
            && said.contains("norm_eps = 1e-6")
            && said.contains("qkv_bias = true"),
        "{said}"
    );
    let archive = tmp.path().join("archive");
    let archive = archive.to_str().unwrap();
    let run = json_out(&genas(
        &cache,
        &["search", exp, "--archive", archive, "--json"],
    ));
    let front = run["front"].as_array().unwrap();
    assert!(!front.is_empty());
    // Every student keeps the teacher's block.
    for m in front {
        let s = m["summary"].as_str().unwrap_or_default().to_string()
            + m["architecture"].to_string().as_str();
        assert!(s.contains("qkv"), "{m}");
    }
    let id = front[front.len() - 1]["id"].as_str().unwrap();
    distill_briefly(&cache, archive, id);
    let out = tmp.path().join("export");
    let written = export_hf(&cache, archive, id, &out);
    assert_eq!(written["hf_class"], "Qwen2ForCausalLM", "{written}");
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (&cfg["model_type"], cfg["rms_norm_eps"].as_f64()),
        (&Value::from("qwen2"), Some(1e-6))
    );
    assert_eq!(cfg["rope_parameters"]["rope_theta"].as_f64(), Some(1e6));
    let fixture =
        std::fs::read(root().join("experiments/fixtures/hf/qwen2/tokenizer.json")).unwrap();
    assert_eq!(std::fs::read(out.join("tokenizer.json")).unwrap(), fixture);
    python_check(&out);
    samples_continue_the_prompt(&cache, archive, id);
}

#[test]
fn a_pretrained_teacher_is_measured_once_and_its_students_leave_with_its_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let small = |t: String| {
        t.replace("candidates = 16", "candidates = 6")
            .replace("calibration = 12", "calibration = 10")
            .replace("rung_steps = [200]", "rung_steps = [40]")
    };
    let exp = experiment(tmp.path(), small);
    let exp = exp.to_str().unwrap();
    let archive = tmp.path().join("archive");
    let archive = archive.to_str().unwrap();

    let first = json_out(&genas(
        &cache,
        &["teacher", "train", exp, "--archive", archive, "--json"],
    ));
    assert_eq!(first["reused"], false);
    let record = &first["record"];
    assert_eq!(record["bits_unit"], "bits/char");
    assert_eq!(
        record["config"]["pretrained"]
            .as_str()
            .map(|p| p.ends_with("llama-gqa")),
        Some(true)
    );
    // The trained fixture is far better than uniform over its 384 tokens.
    let ce = record["val_ce"].as_f64().unwrap();
    assert!(ce < 0.75 * (384f64).ln(), "{ce}");
    // The corpus was encoded once, into the cache.
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
    let again = json_out(&genas(
        &cache,
        &["teacher", "train", exp, "--archive", archive, "--json"],
    ));
    assert_eq!(again["reused"], true);
    assert_eq!(again["record"], *record);

    // `genas teacher import` measures the same loss, and its check passes in transformers.
    let check = tmp.path().join("check");
    let fixture_dir = root().join("experiments/fixtures/hf/llama-gqa");
    let import = import_json(&cache, &fixture_dir, Path::new(exp), &check);
    assert_eq!(import["key"], record["key"]);
    let v = &import["validation"];
    assert!(
        (v["bits_per_char"].as_f64().unwrap() - record["val_bits"].as_f64().unwrap()).abs() < 1e-9
    );
    assert!((v["nats_per_token"].as_f64().unwrap() - ce).abs() < 1e-9);
    assert_eq!(
        (import["vocab_size"].as_u64(), import["context"].as_u64()),
        (Some(384), Some(128))
    );
    assert!(import["tokens_per_s"].as_f64().unwrap() > 0.0);
    python_check(&check);

    let run = json_out(&genas(
        &cache,
        &["search", exp, "--archive", archive, "--json"],
    ));
    assert_eq!(run["bits_unit"], "bits/char");
    let front = run["front"].as_array().unwrap();
    assert!(!front.is_empty());
    let id = front[0]["id"].as_str().unwrap();
    // The final distillation from the pretrained teacher, in bits per character.
    let distilled = distill_briefly(&cache, archive, id);
    let text = distilled.to_string();
    assert!(text.contains("bits/char"), "{text}");
    let out = tmp.path().join("export");
    // The student is in the teacher's family: one directory AutoTokenizer and
    // AutoModelForCausalLM both load.
    let written = export_hf(&cache, archive, id, &out);
    assert_eq!(written["hf_class"], "LlamaForCausalLM", "{written}");
    let fixture =
        std::fs::read(root().join("experiments/fixtures/hf/llama-gqa/tokenizer.json")).unwrap();
    assert_eq!(std::fs::read(out.join("tokenizer.json")).unwrap(), fixture);
    let vocab: Value =
        serde_json::from_slice(&std::fs::read(out.join("genas_vocab.json")).unwrap()).unwrap();
    assert_eq!(vocab["kind"], "tokenizer");
    assert_eq!(vocab["entries"], 384);
    // transformers loads the student and the teacher's tokenizer: the logits, the tokenizer's
    // round trip of a validation text and generate() agree with genas.
    python_check(&out);
    // Samples continue a prompt encoded with the teacher's tokenizer.
    samples_continue_the_prompt(&cache, archive, id);
}

/// `genas distill r1 ID --steps 60 --json`, succeeded, as JSON.
fn distill_briefly(cache: &Path, archive: &str, id: &str) -> Value {
    json_out(&genas(
        cache,
        &[
            "distill",
            "r1",
            id,
            "--steps",
            "60",
            "--archive",
            archive,
            "--json",
        ],
    ))
}

/// `genas export r1 ID --format hf --out OUT --json`, succeeded, as JSON.
fn export_hf(cache: &Path, archive: &str, id: &str, out: &Path) -> Value {
    json_out(&genas(
        cache,
        &[
            "export",
            "r1",
            id,
            "--archive",
            archive,
            "--format",
            "hf",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    ))
}

/// `genas sample` of candidate `id` of run r1: two samples, each continuing a prompt encoded
/// with the teacher's tokenizer.
fn samples_continue_the_prompt(cache: &Path, archive: &str, id: &str) {
    let samples = json_out(&genas(
        cache,
        &[
            "sample",
            "r1",
            id,
            "--archive",
            archive,
            "--n",
            "2",
            "--length",
            "12",
            "--prompt",
            "To be, or",
            "--json",
        ],
    ));
    let texts = samples["texts"].as_array().unwrap();
    assert_eq!(texts.len(), 2);
    assert!(
        texts
            .iter()
            .all(|t| t.as_str().unwrap().starts_with("To be, or")),
        "{samples}"
    );
}

/// Runs `dir/genas_check.py` where python3 has torch and transformers: logits, the tokenizer's
/// round trip and generate() must all agree.
fn python_check(dir: &Path) {
    if common::python_ready().is_err() {
        return;
    }
    let o = Command::new("python3")
        .arg(dir.join("genas_check.py"))
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{line} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(
        (&line["ok"], &line["tokenizer"], &line["generate"]),
        (&true.into(), &"ok".into(), &"ok".into()),
        "{line}"
    );
}

#[test]
fn misuse_is_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let check = |edit: &dyn Fn(String) -> String, needle: &str| {
        let exp = experiment(tmp.path(), edit);
        fails_with(
            &genas(&cache, &["space", "check", exp.to_str().unwrap()]),
            needle,
        );
    };
    check(
        &|t| t.replace("pretrained = ", "# pretrained = "),
        "\"teacher\" needs [teacher] pretrained",
    );
    check(
        &|t| t.replace("tokenizer = \"teacher\"", "tokenizer = \"char\""),
        "a pretrained teacher reads its own tokens",
    );
    check(
        &|t| t.replace("tokenizer = \"teacher\"", "tokenizer = \"bpe\""),
        "expected \"char\", \"byte\", \"teacher\" or the path of a tokenizer.json",
    );
    check(&|t| t.replace("llama-gqa", "absent"), "not a directory");
    check(
        &|t| t.replace("max_params = 60_000", "max_params = 5_000"),
        "the vocabulary of 384 tokens takes 6,144 parameters in the embedding alone at the space's narrowest d_model 16, above [constraints] max_params = 5,000",
    );
    check(
        &|t| {
            t.replace(
                "batch_size = 16\n\n[search]",
                "batch_size = 16\nsteps = 400\n\n[search]",
            )
        },
        "teacher.steps",
    );
    check(
        &|t| t.replace("seq_len = 64", "seq_len = 256"),
        "exceed the checkpoint's context of 128",
    );
    // teacher import: a folder that is no checkpoint.
    let o = genas(&cache, &["teacher", "import", tmp.path().to_str().unwrap()]);
    fails_with(&o, "cannot read config.json");
}

#[test]
fn a_run_resumes_only_with_the_checkpoint_it_started_with() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let ckpt = tmp.path().join("ckpt");
    std::fs::create_dir(&ckpt).unwrap();
    let src = root().join("experiments/fixtures/hf/llama-gqa");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), ckpt.join(f)).unwrap();
    }
    let exp = experiment(tmp.path(), |t| {
        t.replace(
            &format!("{:?}", src.canonicalize().unwrap()),
            &format!("{ckpt:?}"),
        )
        .replace("candidates = 16", "candidates = 4")
        .replace("calibration = 12", "calibration = 10")
        .replace("rung_steps = [200]", "rung_steps = [20]")
    });
    let archive = tmp.path().join("archive");
    let (exp, archive) = (exp.to_str().unwrap(), archive.to_str().unwrap());
    json_out(&genas(
        &cache,
        &["search", exp, "--archive", archive, "--json"],
    ));
    let show = |cache: &Path| genas(cache, &["show", "r1", "--archive", archive, "--json"]).stdout;
    let before = show(&cache);
    // One weight changed: the resume is refused in one line, and nothing is recorded.
    let weights = ckpt.join("model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&weights, &bad).unwrap();
    let o = genas(&cache, &["resume", "r1", "--archive", archive]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("its teacher changed since it started"),
        "{err}"
    );
    assert!(
        !err.contains("measuring"),
        "refused before the teacher is read: {err}"
    );
    assert_eq!(show(&cache), before);
    // Nor is a front member distilled from the changed teacher.
    let front = json_out(&genas(
        &cache,
        &["front", "r1", "--archive", archive, "--json"],
    ));
    let id = front["front"][0]["id"].as_str().unwrap().to_string();
    fails_with(
        &genas(
            &cache,
            &["distill", "r1", &id, "--steps", "5", "--archive", archive],
        ),
        "its teacher changed since it ran",
    );
    // Export needs no teacher: it still works.
    let out = tmp.path().join("export");
    let o = genas(
        &cache,
        &[
            "export",
            "r1",
            &id,
            "--archive",
            archive,
            "--format",
            "hf",
            "--weights",
            "init",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The same files again: it resumes.
    std::fs::write(&weights, &good).unwrap();
    json_out(&genas(
        &cache,
        &["resume", "r1", "--archive", archive, "--json"],
    ));
}

#[test]
fn an_imported_checkpoint_has_one_size_its_own_at_its_own_context() {
    // GPT-2's learned positions make the size depend on the context: the first line and the
    // size line once gave two counts for one checkpoint (the second at the measuring context).
    let tmp = tempfile::tempdir().unwrap();
    let fixture_dir = root().join("experiments/fixtures/hf/gpt2");
    let o = genas(
        tmp.path(),
        &[
            "teacher",
            "import",
            fixture_dir.to_str().unwrap(),
            "--out",
            tmp.path().join("check").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let count_in = |text: &str, before: &str, after: &str| -> u64 {
        text.split(before)
            .nth(1)
            .and_then(|s| s.split(after).next())
            .map(|n| n.trim().replace(',', ""))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no parameter count in {text:?}"))
    };
    let first = count_in(&String::from_utf8_lossy(&o.stderr), " (", " params in");
    let size = count_in(&String::from_utf8_lossy(&o.stdout), "size ", " params,");
    assert_eq!(first, size);
    // d48, two layers with biases, tied, 128 learned positions, 384 tokens.
    let (d, h, v, t) = (48u64, 192u64, 384u64, 128u64);
    let layer = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d);
    assert_eq!(size, v * d + t * d + 2 * layer + 2 * d);
}

#[test]
fn an_import_at_a_long_context_checks_a_few_positions_of_each_sequence() {
    // At seq_len 128 (the checkpoint's context) the check keeps 16 positions of each of its two
    // sequences, the first and the last among them, not 128 × the vocabulary; transformers
    // agrees at those positions, and a changed logit at one of them is caught.
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let exp = experiment(tmp.path(), |t| t.replace("seq_len = 64", "seq_len = 128"));
    let check = tmp.path().join("check");
    let fixture_dir = root().join("experiments/fixtures/hf/llama-gqa");
    let import = import_json(&cache, &fixture_dir, &exp, &check);
    assert_eq!(import["measured_context"], 128);
    let file = check.join("genas_check.json");
    let mut json: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let positions: Vec<u64> = json["positions"]
        .as_array()
        .expect("positions listed")
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert_eq!(positions.len(), 16);
    assert_eq!((positions[0], positions[15]), (0, 127));
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    let logits = json["logits"].as_array().unwrap();
    assert_eq!(logits.len(), 2);
    for seq in logits {
        assert_eq!(seq.as_array().unwrap().len(), 16);
        assert_eq!(seq[0].as_array().unwrap().len(), 384);
    }
    python_check(&check);
    if common::python_ready().is_ok() {
        let x = json["logits"][1][9][7].as_f64().unwrap();
        json["logits"][1][9][7] = (x + 0.01).into();
        std::fs::write(&file, serde_json::to_vec(&json).unwrap()).unwrap();
        let o = Command::new("python3")
            .arg(check.join("genas_check.py"))
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}
