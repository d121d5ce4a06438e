//! `genas teacher train` and `genas proxies calibrate` end to end, on a small experiment over
//! the shipped Shakespeare corpus with a real archive in a temporary directory.

use serde_json::Value;
mod common;

use common::{genas, s};
use std::path::{Path, PathBuf};
use std::process::Output;

fn ok(o: &Output) -> (Value, String) {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "failed: {err}");
    (
        serde_json::from_slice(&o.stdout).expect("JSON on stdout"),
        err,
    )
}

/// A small experiment whose brief distillations are a few steps long.
fn experiment(dir: &Path) -> PathBuf {
    common::small_experiment(
        &dir.join("exp.toml"),
        "scoring-test",
        "[fidelity]\nbatch_size = 8\nrung_steps = [4, 6]\n",
    )
}

#[test]
fn a_teacher_is_trained_once_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path());
    let archive = dir.path().join("archive");
    let args = [
        "teacher",
        "train",
        s(&exp),
        "--archive",
        s(&archive),
        "--json",
    ];
    let (first, err) = ok(&genas(&args));
    assert_eq!(first["reused"], false);
    assert!(err.contains("training the teacher"), "{err}");
    let (second, err) = ok(&genas(&args));
    assert_eq!(second["reused"], true);
    assert!(err.contains("using the stored teacher"), "{err}");
    assert_eq!(first["record"], second["record"]);
    assert!(first["record"]["val_bits"].as_f64().unwrap() < (84f64).log2());
    // --retrain trains again (same seed: the same teacher).
    let mut again = args.to_vec();
    again.push("--retrain");
    let (third, _) = ok(&genas(&again));
    assert_eq!(third["reused"], false);
    assert_eq!(third["record"]["val_ce"], first["record"]["val_ce"]);
}

/// Everything but wall times.
fn without_times(mut v: Value) -> Value {
    for c in v.as_array_mut().unwrap() {
        c["proxies"]["millis"] = Value::Null;
        c["distill"]["seconds"] = Value::Null;
    }
    v
}

#[test]
fn calibration_scores_every_proxy_stores_the_table_and_ignores_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path());
    let archive = dir.path().join("archive");
    let (out1, out2) = (dir.path().join("c1"), dir.path().join("c2"));
    let run = |out: &Path, threads: &str| {
        genas(&[
            "proxies",
            "calibrate",
            s(&exp),
            "--n",
            "10",
            "--archive",
            s(&archive),
            "--out",
            s(out),
            "--threads",
            threads,
            "--json",
        ])
    };
    let (a, err) = ok(&run(&out1, "2"));
    assert!(err.contains("training the teacher"), "{err}");
    assert_eq!(a["steps"], 6, "the last rung by default");
    assert_eq!(a["candidates"].as_array().unwrap().len(), 10);
    let cal = &a["calibration"];
    assert_eq!(cal["proxies"].as_array().unwrap().len(), 11);
    assert_eq!(cal["ensembles"].as_array().unwrap().len(), 3);
    for p in cal["proxies"].as_array().unwrap() {
        let t = p["kendall"].as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&t), "{p}");
    }
    let csv = std::fs::read_to_string(out1.join("calibration.csv")).unwrap();
    assert_eq!(csv.lines().count(), 11);
    assert!(csv.lines().next().unwrap().contains("synflow"));
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(out1.join("calibration.json")).unwrap())
            .unwrap();
    assert_eq!(stored["key"], a["key"]);
    {
        let arch = genas_store::Archive::open_existing(&archive).unwrap();
        let table = arch
            .calibration::<serde_json::Value>(a["key"].as_str().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(table["calibration"], a["calibration"]);
    }
    // One worker or two: the same table.
    let (b, err) = ok(&run(&out2, "1"));
    assert!(err.contains("using the stored teacher"), "{err}");
    assert_eq!(
        without_times(a["candidates"].clone()),
        without_times(b["candidates"].clone())
    );
    assert_eq!(a["calibration"], b["calibration"]);
}

#[test]
fn an_archive_in_use_and_bad_requests_get_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(dir.path());
    let archive = dir.path().join("archive");
    let held = genas_store::Archive::open(&archive).unwrap();
    let o = genas(&["teacher", "train", s(&exp), "--archive", s(&archive)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    let last = err.lines().last().unwrap();
    assert!(last.starts_with("error: "), "{err}");
    assert!(
        last.contains(&format!("in use by pid {}", std::process::id())),
        "{err}"
    );
    drop(held);
    let o = genas(&[
        "proxies",
        "calibrate",
        s(&exp),
        "--n",
        "3",
        "--archive",
        s(&archive),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--n must be at least 10"), "{err}");
}
