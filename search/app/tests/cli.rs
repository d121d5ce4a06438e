//! The `genas` binary end to end: real experiment files, real data, one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn genas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_genas"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .output()
        .expect("the genas binary runs")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Asserts failure with exactly one stderr line starting "error: " and containing `needle`.
fn fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

fn tmp_file(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn help_is_available_for_every_command() {
    for args in [
        vec!["--help"],
        vec!["space", "--help"],
        vec!["space", "check", "--help"],
        vec!["space", "sample", "--help"],
        vec!["data", "inspect", "--help"],
    ] {
        let out = stdout(&genas(&args));
        assert!(out.contains("Usage: genas"), "{args:?}: {out}");
    }
}

#[test]
fn space_check_reports_counts_and_ranges() {
    let out = stdout(&genas(&["space", "check", "experiments/quick.toml"]));
    assert!(out.contains("vocabulary 84, context 64 tokens"), "{out}");
    assert!(
        out.contains("valid architectures (uniform layers)"),
        "{out}"
    );
    assert!(out.contains("params ≤ 100,000"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&stdout(&genas(&[
        "space",
        "check",
        "experiments/quick.toml",
        "--json",
    ])))
    .unwrap();
    let n = json["space"]["architectures"].as_u64().unwrap();
    assert!(n > 1000, "{n}");
    let within = json["space"]["within_constraints"].as_f64().unwrap();
    assert!(within > 0.1 && within < 1.0, "{within}");
    for file in ["experiments/shakespeare.toml", "experiments/fashion.toml"] {
        let out = stdout(&genas(&["space", "check", file]));
        assert!(
            out.contains("every layer draws its own block genes"),
            "{out}"
        );
    }
}

#[test]
fn space_sample_is_seeded_and_within_constraints() {
    let a = stdout(&genas(&[
        "space",
        "sample",
        "experiments/quick.toml",
        "--n",
        "12",
        "--seed",
        "7",
        "--json",
    ]));
    let b = stdout(&genas(&[
        "space",
        "sample",
        "experiments/quick.toml",
        "--n",
        "12",
        "--seed",
        "7",
        "--json",
    ]));
    let c = stdout(&genas(&[
        "space",
        "sample",
        "experiments/quick.toml",
        "--n",
        "12",
        "--seed",
        "8",
        "--json",
    ]));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let v: serde_json::Value = serde_json::from_str(&a).unwrap();
    let samples = v.as_array().unwrap();
    assert_eq!(samples.len(), 12);
    for s in samples {
        assert!(s["cost"]["params"].as_u64().unwrap() <= 100_000);
        // The id is the content id of the canonical architecture.
        let arch: genas_space::Architecture =
            serde_json::from_value(s["architecture"].clone()).unwrap();
        assert_eq!(s["id"].as_str().unwrap(), arch.id());
    }
    let table = stdout(&genas(&[
        "space",
        "sample",
        "experiments/fashion.toml",
        "--n",
        "3",
    ]));
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.lines().next().unwrap().contains("FLOPs/token"));
}

#[test]
fn data_inspect_experiment_text_and_idx_files() {
    let out = stdout(&genas(&["data", "inspect", "experiments/quick.toml"]));
    assert!(
        out.contains("vocabulary    84 tokens (84 characters:"),
        "{out}"
    );
    assert!(out.contains("context       64 tokens"), "{out}");
    let out = stdout(&genas(&[
        "data",
        "inspect",
        "experiments/data/fashion-mnist/val-2k-images-idx3-ubyte",
        "--image-size",
        "7",
        "--gray-levels",
        "8",
    ]));
    assert!(
        out.contains("images        28×28 resampled to 7×7, 49 pixel tokens each"),
        "{out}"
    );
    assert!(
        out.contains("vocabulary    9 tokens (8 gray levels + begin-of-image)"),
        "{out}"
    );
    assert!(
        out.contains("(1,800 images)") && out.contains("(200 images)"),
        "{out}"
    );
    let out = stdout(&genas(&[
        "data",
        "inspect",
        "experiments/data/shakespeare/hamlet_gut.txt",
        "--tokenizer",
        "byte",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["vocab_size"], 256);
    assert_eq!(
        v["train_tokens"].as_u64().unwrap() + v["validation_tokens"].as_u64().unwrap(),
        173_942
    );
}

#[test]
fn bad_inputs_get_one_line_and_a_failing_status() {
    let dir = tempfile::tempdir().unwrap();
    fails_with(
        &genas(&["space", "check", "/no/such.toml"]),
        "cannot read experiment file /no/such.toml",
    );
    let broken = tmp_file(&dir, "broken.toml", b"[data\nkind = 1\n");
    fails_with(
        &genas(&["space", "check", broken.to_str().unwrap()]),
        "broken.toml:1:",
    );
    let empty = tmp_file(&dir, "empty.txt", b"");
    fails_with(
        &genas(&["data", "inspect", empty.to_str().unwrap()]),
        "the file is empty",
    );
    fails_with(
        &genas(&[
            "data",
            "inspect",
            "experiments/data/fashion-mnist/val-2k-labels-idx1-ubyte",
        ]),
        "IDX file has 1 dimension(s); images need 3",
    );
    // Given as text through an experiment, the same file is binary data.
    let labels = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../experiments/data/fashion-mnist/val-2k-labels-idx1-ubyte");
    let as_text = tmp_file(
        &dir,
        "as_text.toml",
        format!("[data]\nkind = \"text\"\npath = \"{}\"\nseq_len = 8\n[space]\ndepth = [1]\nd_model = [8]\nheads = [2]\n", labels.display()).as_bytes(),
    );
    fails_with(
        &genas(&["space", "check", as_text.to_str().unwrap()]),
        "binary data, not text (NUL byte at offset 0)",
    );
    let images = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../experiments/data/fashion-mnist/val-2k-images-idx3-ubyte");
    let truncated = std::fs::read(images).unwrap();
    let t = tmp_file(&dir, "trunc-idx3-ubyte", &truncated[..5000]);
    fails_with(
        &genas(&["data", "inspect", t.to_str().unwrap()]),
        "truncated IDX body",
    );
    // An impossible space: heads that divide no width. Data path points at the shipped corpus.
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/data/shakespeare");
    let exp = format!(
        "[data]\nkind = \"text\"\npath = \"{}\"\nseq_len = 32\n[space]\ndepth = [2]\nd_model = [30]\nheads = [4, 8]\n",
        data.display()
    );
    let p = tmp_file(&dir, "impossible.toml", exp.as_bytes());
    fails_with(
        &genas(&["space", "check", p.to_str().unwrap()]),
        "heads 4 do not divide d_model 30",
    );
    fails_with(
        &genas(&["space", "sample", p.to_str().unwrap()]),
        "no valid architecture",
    );
    // Constraints no architecture meets.
    let tight = tmp_file(
        &dir,
        "tight.toml",
        format!(
            "{}[constraints]\nmax_params = 10\n",
            exp.replace("[4, 8]", "[2]")
        )
        .as_bytes(),
    );
    fails_with(
        &genas(&["space", "sample", tight.to_str().unwrap()]),
        "max_params = 10",
    );
    fails_with(
        &genas(&[
            "data",
            "inspect",
            "experiments/quick.toml",
            "--seq-len",
            "1",
        ]),
        "--seq-len <SEQ_LEN>': 1 is not in 2..=65536",
    );
}
