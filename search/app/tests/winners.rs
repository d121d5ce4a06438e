//! `genas distill`, `export` and `sample` end to end on a small search: the final distillation
//! of the front beats the search's short runs and is not redone; killed with SIGKILL and rerun
//! it resumes from its checkpoint in the archive and ends with the same weights as an
//! uninterrupted one; exports and samples come from the stored weights; bad requests get one
//! line.

mod common;

use common::{fails_with, genas, ok_json, run_and_kill, s};
use serde_json::Value;
use std::path::Path;
use std::time::Instant;

fn one_line_error(args: &[&str], needle: &str) {
    fails_with(&genas(args), &[needle]);
}

const STEPS: &str = "1500";

#[test]
fn distill_resumes_exactly_and_exports_and_samples_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let exp = common::small_experiment(
        &dir.path().join("e.toml"),
        "winners-test",
        r#"[constraints]
max_params = 20_000
[search]
strategy = "random"
candidates = 8
objectives = ["quality", "params"]
[fidelity]
batch_size = 8
rung_steps = [20]
screen_keep = 0.5
"#,
    );
    let (a, r) = common::search_into(dir.path(), &exp);
    let front: Vec<String> = r["front"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!front.is_empty());
    let b = dir.path().join("b");
    common::copy_dir(&a, &b);

    // Uninterrupted, every front member: 1500 steps beat the search's 20.
    let start = Instant::now();
    let recs = ok_json(&genas(&[
        "distill",
        "r1",
        "--front",
        "--steps",
        STEPS,
        "--archive",
        s(&a),
        "--threads",
        "1",
        "--json",
    ]));
    let per_member = start.elapsed() / front.len() as u32;
    let recs = recs.as_array().unwrap();
    assert_eq!(recs.len(), front.len());
    for (rec, id) in recs.iter().zip(&front) {
        assert_eq!(rec["candidate"], id.as_str());
        assert_eq!(rec["reused"], false);
        let (fin, search) = (
            rec["val_bits"].as_f64().unwrap(),
            rec["search_val_bits"].as_f64().unwrap(),
        );
        assert!(
            fin < search - 0.1,
            "{id}: {fin} vs {search} after the search"
        );
        assert!(!rec["history"].as_array().unwrap().is_empty());
    }
    // Asked again: nothing to do.
    let again = ok_json(&genas(&[
        "distill",
        "r1",
        "--front",
        "--steps",
        STEPS,
        "--archive",
        s(&a),
        "--json",
    ]));
    assert!(again
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["reused"] == true));

    // Killed at growing delays in archive b, then run to the end.
    let id = front[0].as_str();
    let args = [
        "distill",
        "r1",
        id,
        "--steps",
        STEPS,
        "--archive",
        s(&b),
        "--threads",
        "1",
    ];
    let mut kills = 0;
    for k in 1..=6u32 {
        if run_and_kill(&args, Some("distilling"), per_member * k / 8) {
            break;
        }
        kills += 1;
    }
    assert!(kills >= 2, "too fast to kill: {per_member:?} per member");
    let o = genas(&[&args[..], &["--json"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let resumed: Value = serde_json::from_slice(&o.stdout).unwrap();
    let resumed = &resumed[0];
    assert!(resumed["resumed_from"].as_u64().unwrap() > 0);
    for key in [
        "val_ce",
        "kl_to_teacher",
        "agreement",
        "best_step",
        "steps",
        "history",
        "train_loss",
    ] {
        assert_eq!(resumed[key], recs[0][key], "{key}");
    }
    // The same weights, compared through their exports.
    let (ea, eb) = (dir.path().join("ea"), dir.path().join("eb"));
    for (archive, out) in [(&a, &ea), (&b, &eb)] {
        ok_json(&genas(&[
            "export",
            "r1",
            id,
            "--format",
            "json",
            "--out",
            s(out),
            "--archive",
            s(archive),
            "--json",
        ]));
    }
    let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(
        weights(&ea) == weights(&eb),
        "the resumed distillation's weights differ"
    );
    let cand: Value =
        serde_json::from_str(&std::fs::read_to_string(ea.join("candidate.json")).unwrap()).unwrap();
    assert_eq!(cand["weights"], "distilled");
    assert_eq!(cand["distilled"]["val_ce"], recs[0]["val_ce"]);

    // pytorch always works; hf works or names what blocks it.
    let w = ok_json(&genas(&[
        "export",
        "r1",
        id,
        "--format",
        "pytorch",
        "--out",
        s(&dir.path().join("pt")),
        "--archive",
        s(&a),
        "--json",
    ]));
    assert!(w["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "model.py"));
    let o = genas(&[
        "export",
        "r1",
        id,
        "--format",
        "hf",
        "--out",
        s(&dir.path().join("hf")),
        "--archive",
        s(&a),
    ]);
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.lines().count() == 1 && err.contains("--format pytorch"),
            "{err}"
        );
    }

    // Samples: seeded, prompt first, the asked length.
    let sample = |seed: &str| {
        ok_json(&genas(&[
            "sample",
            "r1",
            &id[..6],
            "--n",
            "2",
            "--length",
            "40",
            "--prompt",
            "The ",
            "--seed",
            seed,
            "--archive",
            s(&a),
            "--json",
        ]))
    };
    let (s1, s2) = (sample("3"), sample("3"));
    assert_eq!(s1["texts"], s2["texts"]);
    for t in s1["texts"].as_array().unwrap() {
        let t = t.as_str().unwrap();
        assert!(t.starts_with("The ") && t.chars().count() == 44, "{t:?}");
    }
    assert_ne!(s1["texts"], sample("4")["texts"]);

    // Bad requests.
    let arch = s(&a);
    one_line_error(
        &[
            "export",
            "r1",
            "zzzz",
            "--format",
            "json",
            "--out",
            "x",
            "--archive",
            arch,
        ],
        "has no candidate",
    );
    let undistilled = ok_json(&genas(&["show", "r1", "--archive", arch, "--json"]))["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .find(|c| !front.contains(c))
        .unwrap();
    one_line_error(
        &["sample", "r1", &undistilled, "--archive", arch],
        "no distilled weights",
    );
    one_line_error(
        &["distill", "r7", "--front", "--archive", arch],
        "no run r7",
    );
    one_line_error(
        &[
            "sample",
            "r1",
            id,
            "--prompt",
            "\u{2603}",
            "--archive",
            arch,
        ],
        "not in the vocabulary",
    );
    // An unfinished distillation for other settings is replaced by a new request.
    let other = &undistilled;
    let long = ["distill", "r1", other, "--steps", STEPS, "--archive", arch];
    let checkpointed = (1..=8u32).any(|k| {
        run_and_kill(&long, Some("distilling"), per_member * k / 6);
        let archive = genas_store::Archive::open_existing(&a).unwrap();
        archive.checkpoint("r1", other).unwrap().is_some()
    });
    assert!(checkpointed, "no checkpoint after 8 kills");
    let o = genas(&["distill", "r1", other, "--steps", "200", "--archive", arch]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("dropping the checkpoint"), "{err}");
    let archive = genas_store::Archive::open_existing(&a).unwrap();
    assert!(archive.checkpoint("r1", other).unwrap().is_none());
    assert_eq!(
        archive
            .distilled::<serde_json::Value>("r1", other)
            .unwrap()
            .unwrap()["steps"],
        200
    );
    drop(archive);
    // Another step count is another distillation, not the stored one.
    let redo = ok_json(&genas(&[
        "distill",
        "r1",
        id,
        "--steps",
        "300",
        "--archive",
        arch,
        "--json",
    ]));
    assert_eq!(redo[0]["reused"], false, "{redo}");
    assert_eq!(redo[0]["requested_steps"], 300);
}

#[test]
fn image_runs_sample_a_png_grid() {
    let dir = tempfile::tempdir().unwrap();
    let data_section = common::fashion8();
    let exp = common::experiment_on(
        &dir.path().join("img.toml"),
        "img-test",
        &data_section,
        r#"[search]
strategy = "random"
candidates = 4
[fidelity]
batch_size = 8
rung_steps = [10]
screen_keep = 1.0
"#,
    );
    let (a, r) = common::search_into(dir.path(), &exp);
    let id = r["front"][0]["id"].as_str().unwrap().to_string();
    ok_json(&genas(&[
        "distill",
        "r1",
        &id,
        "--steps",
        "100",
        "--archive",
        s(&a),
        "--json",
    ]));
    let png = dir.path().join("grid.png");
    let out = ok_json(&genas(&[
        "sample",
        "r1",
        &id,
        "--n",
        "5",
        "--out",
        s(&png),
        "--archive",
        s(&a),
        "--json",
    ]));
    assert_eq!(out["file"], s(&png));
    let image = resvg::tiny_skia::Pixmap::decode_png(&std::fs::read(&png).unwrap()).unwrap();
    // 5 images in a 3 × 2 grid of 8 × 8 pixels at 4× with 4-pixel gaps.
    assert_eq!((image.width(), image.height()), (3 * 36 + 4, 2 * 36 + 4));
    let grays: std::collections::BTreeSet<u8> = image.pixels().iter().map(|p| p.red()).collect();
    assert!(grays.len() >= 4, "{grays:?}");
    // The sixth cell stays white.
    let p = image.pixel(4 + 2 * 36 + 10, 4 + 36 + 10).unwrap();
    assert_eq!((p.red(), p.green(), p.blue()), (255, 255, 255));
}

#[test]
fn a_teacher_initialised_run_exports_its_students_inherited_initial_weights() {
    let dir = tempfile::tempdir().unwrap();
    let exp = common::small_experiment(
        &dir.path().join("e.toml"),
        "e",
        &format!("{}init = \"teacher\"\n", common::TINY_SEARCH),
    );
    let archive = dir.path().join("a");
    let report = ok_json(&genas(&[
        "search",
        s(&exp),
        "--archive",
        s(&archive),
        "--plot",
        s(&dir.path().join("f.svg")),
        "--json",
    ]));
    let member = report["front"][0]["id"].as_str().unwrap().to_string();
    let out = dir.path().join("init");
    ok_json(&genas(&[
        "export",
        "r1",
        &member,
        "--format",
        "pytorch",
        "--weights",
        "init",
        "--out",
        s(&out),
        "--archive",
        s(&archive),
        "--json",
    ]));
    let arch: genas_space::Architecture =
        serde_json::from_slice(&std::fs::read(out.join("architecture.json")).unwrap()).unwrap();
    let mut exported = genas_engine::Model::new(&arch, genas_engine::Cpu::<f32>::new(1), 0);
    genas_engine::checkpoint::load(&mut exported, &out.join("model.safetensors")).unwrap();
    // Not the drawn weights of its seed (the embedding is the teacher's, pruned).
    let seed = genas_search::init_seed(0, &arch.id());
    let drawn = genas_engine::Model::new(&arch, genas_engine::Cpu::<f32>::new(1), seed);
    let wte = drawn.param_index("wte.weight").unwrap();
    assert_ne!(exported.weights(wte), drawn.weights(wte));
}
