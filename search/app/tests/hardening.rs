//! Bad input of every kind is one line and a non-zero exit, found before any expensive work;
//! settings that would be ignored are refused; small spaces search.

mod common;

use common::{
    fails_last, fails_with, genas, hash_tree, ok_json, s, search_into, search_said,
    small_experiment, space_experiment, EIGHT_SPACE, TINY_SEARCH,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// An experiment over the shipped corpus at context 32 with the given [space] body and tail.
fn experiment(dir: &Path, name: &str, space: &str, tail: &str) -> PathBuf {
    space_experiment(&dir.join(format!("{name}.toml")), name, space, tail)
}

/// A uniform one-layer architecture for the shipped corpus at context 32, as JSON.
fn arch_json(d_model: u64, depth: usize, hidden: u64) -> String {
    let layer = serde_json::json!({
        "attention": {"kind": "full", "heads": 2},
        "ffn": {"hidden": hidden, "activation": "gelu", "rank": null},
        "sparsity": "dense"
    });
    serde_json::json!({
        "vocab_size": 84, "context": 32, "d_model": d_model, "tie_embeddings": false,
        "share_layers": 1, "layers": vec![layer; depth]
    })
    .to_string()
}

#[test]
fn absurd_architectures_are_refused_by_field_before_any_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let exp = small_experiment(&dir.path().join("e.toml"), "e", "");
    let train = |json: String, extra: &[&str]| {
        let a = dir.path().join("a.json");
        std::fs::write(&a, json).unwrap();
        let mut args = vec!["train", s(&a), "--experiment", s(&exp), "--steps", "1"];
        args.extend_from_slice(extra);
        genas(&args)
    };
    // Each of these aborted the process (SIGABRT) or tried to before the limits.
    fails_with(
        &train(arch_json(1_000_000_000, 1, 64), &[]),
        &["d_model 1000000000", "limit 65536"],
    );
    fails_with(
        &train(arch_json(32, 5000, 64), &[]),
        &["layers (depth) 5000", "limit 1024"],
    );
    fails_with(
        &train(arch_json(32, 1, 4_000_000_000), &[]),
        &["ffn hidden 4000000000", "limit"],
    );
    // Within the limits, but far beyond any machine's memory: the cost model says so.
    fails_with(
        &train(arch_json(65_536, 1024, 4_194_304), &[]),
        &["needs about", "GiB of memory", "available"],
    );
    fails_with(
        &train(arch_json(32, 1, 64), &["--batch-size", "4000000000"]),
        &["needs about", "--batch-size"],
    );
    fails_with(
        &train(arch_json(32, 1, 64), &["--batch-size", "0"]),
        &["--batch-size"],
    );
    fails_with(&train(arch_json(32, 1, 64), &["--lr", "nan"]), &["--lr"]);
    // A teacher too large for the machine is refused before anything trains.
    let big = small_experiment(&dir.path().join("big.toml"), "big", "");
    let text = std::fs::read_to_string(&big)
        .unwrap()
        .replace(
            "d_model = 32\nheads = 2\nffn_ratio = 2",
            "d_model = 65536\nheads = 2\nffn_ratio = 64",
        )
        .replace(
            "depth = 1\nd_model = 65536",
            "depth = 1024\nd_model = 65536",
        );
    std::fs::write(&big, text).unwrap();
    let archive = dir.path().join("arch");
    fails_with(
        &genas(&["teacher", "train", s(&big), "--archive", s(&archive)]),
        &["[teacher]", "needs about"],
    );
    let too_wide = small_experiment(&dir.path().join("w.toml"), "w", "");
    let text = std::fs::read_to_string(&too_wide).unwrap().replace(
        "d_model = 32\nheads = 2\nffn_ratio = 2",
        "d_model = 1000000\nheads = 2\nffn_ratio = 2",
    );
    std::fs::write(&too_wide, text).unwrap();
    fails_with(
        &genas(&["teacher", "train", s(&too_wide), "--archive", s(&archive)]),
        &["teacher.d_model", "limit 65536"],
    );
    // A benchmark model past the limits, too.
    fails_with(
        &genas(&[
            "bench",
            "train",
            "--d-model",
            "4096",
            "--heads",
            "4",
            "--seq",
            "100000",
        ]),
        &["context 100000", "limit 65536"],
    );
}

#[test]
fn device_cuda_without_a_usable_torch_is_refused_and_auto_says_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a");
    let cuda = small_experiment(
        &dir.path().join("cuda.toml"),
        "cuda",
        "[search]\ndevice = \"cuda\"\n",
    );
    // A Python without torch, and (where torch is installed) one that sees no GPU.
    let no_torch = dir.path().join("no-torch.sh");
    std::fs::write(
        &no_torch,
        "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n",
    )
    .unwrap();
    let _ = std::process::Command::new("chmod")
        .arg("+x")
        .arg(&no_torch)
        .status();
    let cpu_torch = common::python_ready().is_ok() && !has_cuda();
    for args in [
        vec!["search", s(&cuda), "--archive", s(&archive)],
        vec!["teacher", "train", s(&cuda), "--archive", s(&archive)],
        vec!["proxies", "calibrate", s(&cuda), "--archive", s(&archive)],
    ] {
        let o = common::genas_command()
            .args(&args)
            .env("GENAS_PYTHON", &no_torch)
            .output()
            .unwrap();
        fails_with(
            &o,
            &["search.device", "cannot import torch", "No module named"],
        );
        if cpu_torch {
            fails_with(&genas(&args), &["search.device", "sees no CUDA device"]);
        }
    }
    assert!(!archive.exists(), "nothing is created for a refused device");
    let auto = small_experiment(
        &dir.path().join("auto.toml"),
        "auto",
        "[search]\ndevice = \"auto\"\n",
    );
    let o = common::genas_command()
        .args(["teacher", "train", s(&auto), "--archive", s(&archive)])
        .env("GENAS_PYTHON", &no_torch)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("cannot import torch") && err.contains("training on the CPU"),
        "{err}"
    );
}

/// Whether python3's torch sees a GPU.
fn has_cuda() -> bool {
    std::process::Command::new("python3")
        .args([
            "-c",
            "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn settings_that_would_be_ignored_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (name, tail, key) in [
        (
            "t",
            "[search]\nstrategy = \"nsga2\"\ntournament = 3\n",
            "search.tournament",
        ),
        (
            "r",
            "[search]\nstrategy = \"random\"\ntournament = 3\n",
            "search.tournament",
        ),
        (
            "e",
            "[fidelity]\nrung_steps = [10]\neta = 3\n",
            "fidelity.eta",
        ),
    ] {
        let exp = small_experiment(&dir.path().join(format!("{name}.toml")), name, tail);
        fails_with(&genas(&["space", "check", s(&exp)]), &[key]);
    }
    for (space, key) in [
        (
            "depth = [1]\nd_model = [32]\nheads = [2]\nwindow = [8]",
            "space.window",
        ),
        (
            "depth = [1]\nd_model = [32]\nheads = [2]\nkv_heads = [1]",
            "space.kv_heads",
        ),
    ] {
        let exp = experiment(dir.path(), "s", space, "");
        fails_with(&genas(&["space", "check", s(&exp)]), &[key]);
    }
    // The same keys where they apply are fine.
    let ok = small_experiment(
        &dir.path().join("ok.toml"),
        "ok",
        "[search]\nstrategy = \"evolution\"\ntournament = 3\n",
    );
    assert!(genas(&["space", "check", s(&ok)]).status.success());
}

#[test]
fn a_space_no_larger_than_the_budget_is_searched_exhaustively() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment(
        dir.path(),
        "eight",
        EIGHT_SPACE,
        "[search]\ncandidates = 12\npopulation = 4\n[fidelity]\nrung_steps = [10, 20]\nbatch_size = 8\n",
    );
    let archive = dir.path().join("a");
    let err = search_said(&exp, &archive);
    let r = ok_json(&genas(&["front", "r1", "--archive", s(&archive), "--json"]));
    assert!(err.contains("evaluating every one once"), "{err}");
    assert!(
        !err.contains("calibrat") || err.contains("without calibration"),
        "{err}"
    );
    assert_eq!(r["proposed"], 8, "{r}");
    assert_eq!(
        r["per_rung"][0][1], 8,
        "every architecture reaches the first rung: {r}"
    );
    let show = ok_json(&genas(&["show", "r1", "--archive", s(&archive), "--json"]));
    let ids: std::collections::BTreeSet<&str> = show["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 8, "each architecture once");
    // Calibration of a space smaller than cross-validation needs fails before the teacher.
    let fresh = dir.path().join("b");
    fails_with(
        &genas(&["proxies", "calibrate", s(&exp), "--archive", s(&fresh)]),
        &["only 8 architectures", "--n"],
    );
    assert!(!fresh.exists(), "the teacher was not trained");
}

#[test]
fn a_space_smaller_than_the_calibration_sample_calibrates_on_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    // 2 depths × 3 attention kinds (none needs no heads) × 2 FFN ratios × 2 tyings = 24,
    // more than the budget of 12 and fewer than the 40 the screened search calibrates on.
    let exp = experiment(
        dir.path(),
        "small",
        "depth = [1, 2]\nd_model = [32]\nheads = [2]\nattention = [\"full\", \"linear\", \"none\"]\nffn_ratio = [1, 2]\ntie_embeddings = [true, false]",
        "[search]\ncandidates = 12\npopulation = 6\ncalibration = 40\n[fidelity]\nscreen_keep = 0.5\nrung_steps = [5, 10]\nbatch_size = 4\n",
    );
    let check = ok_json(&genas(&["space", "check", s(&exp), "--json"]));
    let k = check["space"]["architectures_within"].as_u64().unwrap();
    assert!(k > 12 && k < 40, "{k}");
    let archive = dir.path().join("a");
    let err = search_said(&exp, &archive);
    let r = ok_json(&genas(&["front", "r1", "--archive", s(&archive), "--json"]));
    assert!(
        err.contains(&format!("calibrating on {k} architectures")),
        "{err}"
    );
    assert_eq!(r["proposed"], 12, "{r}");
    // calibrate --n larger than the space: all of it, said.
    let o = genas(&[
        "proxies",
        "calibrate",
        s(&exp),
        "--n",
        "50",
        "--steps",
        "5",
        "--archive",
        s(&archive),
        "--out",
        s(&dir.path().join("cal")),
    ]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("calibrating on all of them"), "{err}");
    let c: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cal/calibration.json")).unwrap())
            .unwrap();
    assert_eq!(c["candidates"].as_array().unwrap().len() as u64, k);
}

/// The default, `screen_keep = 1`: no calibration runs and every proposal within the
/// constraints is distilled; with the screen on, the same search calibrates and screens.
#[test]
fn without_the_screen_nothing_is_calibrated_and_every_proposal_is_distilled() {
    let dir = tempfile::tempdir().unwrap();
    let tail =
        "[search]\ncandidates = 8\npopulation = 4\n[fidelity]\nrung_steps = [5]\nbatch_size = 4\n";
    let plain = small_experiment(&dir.path().join("plain.toml"), "plain", tail);
    let archive = dir.path().join("a");
    let err = search_said(&plain, &archive);
    assert!(!err.contains("calibrat"), "{err}");
    let r = ok_json(&genas(&["front", "r1", "--archive", s(&archive), "--json"]));
    let within = |r: &Value| {
        r["proposed"].as_u64().unwrap() - r["rejected_by_constraints"].as_u64().unwrap()
    };
    assert_eq!(r["per_rung"][0][1].as_u64().unwrap(), within(&r), "{r}");

    let screened = small_experiment(
        &dir.path().join("screened.toml"),
        "screened",
        &tail.replace("[fidelity]\n", "[fidelity]\nscreen_keep = 0.5\n"),
    );
    let err = search_said(&screened, &dir.path().join("b"));
    assert!(err.contains("calibrating on"), "{err}");
    let r = ok_json(&genas(&[
        "front",
        "r1",
        "--archive",
        s(&dir.path().join("b")),
        "--json",
    ]));
    assert!(r["per_rung"][0][1].as_u64().unwrap() < within(&r), "{r}");
}

#[test]
fn runs_that_differ_only_in_their_search_seed_share_the_teacher_and_calibration() {
    let dir = tempfile::tempdir().unwrap();
    let exp = small_experiment(&dir.path().join("e.toml"), "e", TINY_SEARCH);
    let archive = dir.path().join("a");
    let run = |seed: &str| {
        let o = genas(&[
            "search",
            s(&exp),
            "--seed",
            seed,
            "--archive",
            s(&archive),
            "--plot",
            s(&dir.path().join("f.svg")),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let first = run("1");
    assert!(first.contains("training the teacher"), "{first}");
    let second = run("2");
    assert!(second.contains("using the stored teacher"), "{second}");
    assert!(
        second.contains("screening with the stored calibration"),
        "{second}"
    );
}

#[test]
fn numbers_that_would_ask_for_unbounded_resources_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let exp = small_experiment(&dir.path().join("e.toml"), "e", "");
    let a = dir.path().join("a.json");
    std::fs::write(&a, arch_json(32, 1, 64)).unwrap();
    let archive = dir.path().join("arch");
    let huge = "18446744073709551615";
    // Each of these panicked ("capacity overflow"), aborted, or started 100,000 threads.
    for (args, needle) in [
        (vec!["space", "sample", s(&exp), "--n", huge], "--n"),
        (
            vec![
                "train",
                s(&a),
                "--experiment",
                s(&exp),
                "--threads",
                "100000",
            ],
            "--threads",
        ),
        (
            vec![
                "train",
                s(&a),
                "--experiment",
                s(&exp),
                "--steps",
                "4294967295",
            ],
            "--steps",
        ),
        (vec!["search", s(&exp), "--threads", "5000"], "--threads"),
        (vec!["proxies", "calibrate", s(&exp), "--n", huge], "--n"),
        (
            vec!["proxies", "calibrate", s(&exp), "--repeats", "0"],
            "--repeats",
        ),
        (
            vec![
                "sample",
                "r1",
                "x",
                "--length",
                huge,
                "--archive",
                s(&archive),
            ],
            "--length",
        ),
        (
            vec![
                "sample",
                "r1",
                "x",
                "--n",
                "100000000000",
                "--archive",
                s(&archive),
            ],
            "--n",
        ),
        (
            vec![
                "sample",
                "r1",
                "x",
                "--temperature=-1",
                "--archive",
                s(&archive),
            ],
            "--temperature",
        ),
        (
            vec![
                "sample",
                "r1",
                "x",
                "--top-k",
                "0",
                "--archive",
                s(&archive),
            ],
            "--top-k",
        ),
        (vec!["bench", "fuzz", "--threads", "100000"], "--threads"),
    ] {
        fails_with(&genas(&args), &[needle]);
    }
    assert!(!archive.exists());
    for (tail, key) in [
        ("[search]\npopulation = 4000000000\n", "search.population"),
        ("[search]\ncandidates = 4000000000\n", "search.candidates"),
        ("[search]\nthreads = 100000\n", "search.threads"),
    ] {
        let e = small_experiment(&dir.path().join("b.toml"), "b", tail);
        fails_with(&genas(&["space", "check", s(&e)]), &[key]);
    }
}

#[test]
fn a_device_or_a_fifo_named_as_a_file_is_refused_without_reading_it() {
    // Each of these once read /dev/zero until memory ran out, or waited on the FIFO forever.
    let dir = tempfile::tempdir().unwrap();
    let exp = small_experiment(&dir.path().join("e.toml"), "e", "");
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for named in ["/dev/zero", s(&fifo)] {
        for args in [
            vec!["space", "check", named],
            vec!["train", named, "--experiment", s(&exp)],
            vec!["bench", "search", s(&exp), "--table", named],
        ] {
            fails_with(&genas(&args), &["not a regular file"]);
        }
    }
    // A task file of `genas worker` that is a FIFO.
    let batch = dir.path().join("shared/jobs/b");
    std::fs::create_dir_all(&batch).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(batch.join("0.json"))
        .status()
        .unwrap()
        .success());
    fails_with(
        &genas(&["worker", s(&batch.join("0"))]),
        &["not a regular file"],
    );
}

#[test]
fn a_malformed_run_id_and_an_unwritable_report_folder_are_refused_first() {
    // An empty run id was once "an invalid run key (a bug in the caller)".
    for args in [
        vec!["show", ""],
        vec!["front", "r01"],
        vec!["resume", "run1"],
        vec!["report", "r"],
    ] {
        fails_with(&genas(&args), &["not a run id (runs are named r1, r2, ..."]);
    }
    // --out under a file: refused before the run is read or anything measured.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let out = file.join("report");
    let archive = dir.path().join("no-archive");
    fails_with(
        &genas(&["report", "r1", "--out", s(&out), "--archive", s(&archive)]),
        &["--out", "is not a folder"],
    );
    assert!(!archive.exists());
}

/// A `python` that answers torch's probe (torch 2.4, no GPU) and fails every runner job as a
/// Python without torch would; with `teacher_pass`, the teacher's pass (its slot's runner under
/// `torch/teacher-pass`) runs on python3 and only the students' jobs fail.
fn broken_python(dir: &Path, teacher_pass: bool) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(if teacher_pass {
        "python"
    } else {
        "python-none"
    });
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$1\" = \"-c\" ]; then echo '2.4.0|0|0|0|none'; exit 0; fi\n\
             {}echo 'Traceback (most recent call last):' >&2\n\
             echo \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n",
            if teacher_pass {
                "case \"$1\" in *teacher-pass*) exec python3 \"$@\" ;; esac\n"
            } else {
                ""
            }
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `genas runs` of `archive`: (id, status) of each run.
fn run_statuses(archive: &Path) -> Vec<(String, String)> {
    let runs = ok_json(&genas(&["runs", "--archive", s(archive), "--json"]));
    runs.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default().to_string(),
                r["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_runner_that_fails_every_job_stops_the_search_with_its_error_and_a_failed_run() {
    // Every job once came back "diverged" and the search ended with exit 0, saying nothing.
    let dir = tempfile::tempdir().unwrap();
    let tail = "[search]\ncandidates = 8\npopulation = 4\n[fidelity]\nrung_steps = [5, 10]\nbatch_size = 4\n";
    let cpu = experiment(dir.path(), "cpu", EIGHT_SPACE, tail);
    let cuda = experiment(
        dir.path(),
        "cuda",
        EIGHT_SPACE,
        &tail.replace("[search]\n", "[search]\ndevice = \"cuda\"\n"),
    );
    let archive = dir.path().join("archive");
    // The teacher, trained on the engine (the runner would train it otherwise).
    ok_json(&genas(&[
        "teacher",
        "train",
        s(&cpu),
        "--archive",
        s(&archive),
        "--json",
    ]));
    // A runner that cannot even run the teacher's pass stops the search there, in one line,
    // before a run is created.
    let search_with = |python: PathBuf| {
        common::genas_command()
            .args(["search", s(&cuda), "--archive", s(&archive)])
            .env("GENAS_PYTHON", python)
            .env("GENAS_RUNNER_DEVICE", "cpu")
            .output()
            .unwrap()
    };
    let o = search_with(broken_python(dir.path(), false));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("error: the teacher's soft targets: the teacher's pass under PyTorch")
            && last.contains("No module named 'torch'"),
        "{last}"
    );
    assert!(run_statuses(&archive).is_empty(), "{err}");
    // Students' jobs that all fail.
    let o = search_with(broken_python(dir.path(), true));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let warning = err
        .lines()
        .find(|l| l.starts_with("warning: 4 of 4 job(s) of round 1 rung 1"))
        .unwrap_or_else(|| panic!("no warning: {err}"));
    assert!(
        warning.contains("running the PyTorch runner")
            && warning.contains("No module named 'torch'"),
        "{warning}"
    );
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("error: every job of round 1 rung 1 (5 steps) failed (4 job(s))")
            && last.contains("run r1 is marked failed")
            && last.contains("genas resume r1")
            && last.contains("Traceback (most recent call last): | ModuleNotFoundError"),
        "{last}"
    );
    // The run is "failed", never left "running"; each failure is recorded as one, with the
    // error's last lines.
    assert_eq!(run_statuses(&archive), [("r1".into(), "failed".into())]);
    let show = ok_json(&genas(&["show", "r1", "--archive", s(&archive), "--json"]));
    let rungs: Vec<&Value> = show["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["rungs"].as_array().unwrap())
        .collect();
    assert_eq!(rungs.len(), 4);
    for r in rungs {
        assert_eq!(r["failed"], "running the PyTorch runner", "{r}");
        assert!(r["result"]["diverged"]
            .as_str()
            .is_some_and(|d| d.contains("exit status: 1")));
    }
}

#[test]
fn executor_settings_are_checked_before_a_run_is_created() {
    // A search on Slurm without sbatch, with a shared_dir that cannot be created or a worker
    // that does not exist, once failed only after the run was created and the teacher loaded,
    // leaving the run "running".
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let archive = dir.path().join("archive");
    // An archive with a finished run in it, which every failed search must leave as it was.
    let exp = small_experiment(&dir.path().join("e.toml"), "e", TINY_SEARCH);
    ok_json(&genas(&[
        "search",
        s(&exp),
        "--archive",
        s(&archive),
        "--json",
    ]));
    let before = hash_tree(&archive);
    let this = env!("CARGO_BIN_EXE_genas");
    let cases: [(String, Option<&str>, &[&str]); 4] = [
        (
            format!(
                "worker = \"{}\"\n",
                dir.path().join("no-such-genas").display()
            ),
            None,
            &["executor.worker", "no-such-genas"],
        ),
        (
            format!(
                "worker = \"{this}\"\nshared_dir = \"{}\"\n",
                file.join("shared").display()
            ),
            None,
            &["executor.shared_dir", "cannot be written"],
        ),
        (
            format!("worker = \"{this}\"\n"),
            Some("/nonexistent"),
            &["sbatch could not be run", "is Slurm installed here"],
        ),
        (
            format!("worker = \"{this}\"\ntime = \"garbage\"\n"),
            None,
            &["time"],
        ),
    ];
    for (executor, path, needles) in cases {
        let exp = small_experiment(
            &dir.path().join("slurm.toml"),
            "e",
            &format!("{TINY_SEARCH}[executor]\nkind = \"slurm\"\n{executor}"),
        );
        let mut cmd = std::process::Command::new(this);
        cmd.args(["search", s(&exp), "--archive", s(&archive)]);
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        fails_with(&cmd.output().unwrap(), needles);
        assert_eq!(hash_tree(&archive), before, "{executor}");
    }
}

#[test]
fn an_archive_holding_a_non_finite_figure_opens_and_names_the_record() {
    // A NaN teacher loss was once stored as null; from then on every search failed with
    // "invalid type: null, expected f64" and left a run "running".
    let dir = tempfile::tempdir().unwrap();
    let exp = small_experiment(&dir.path().join("e.toml"), "e", TINY_SEARCH);
    let (archive, _) = search_into(dir.path(), &exp);
    {
        // As an earlier genas left it: the teacher's validation loss written as null.
        let a = genas_store::Archive::open_existing(&archive).unwrap();
        let teachers = a.teachers::<Value>().unwrap();
        let (key, mut record) = teachers.into_iter().next().unwrap();
        let (_, weights) = a.teacher::<Value>(&key).unwrap().unwrap();
        record["val_ce"] = Value::Null;
        a.put_teacher(&key, &record, &weights).unwrap();
        a.flush().unwrap();
    }
    let before = hash_tree(&archive);
    fails_with(
        &genas(&["search", s(&exp), "--archive", s(&archive)]),
        &[
            "teacher",
            "holds null at val_ce where a number belongs",
            "this record cannot be used",
            "genas teacher train --retrain",
        ],
    );
    assert_eq!(
        hash_tree(&archive),
        before,
        "the failed search left a trace"
    );
    // Nor does any other command that needs the teacher, or that fails on its arguments.
    let out = dir.path().join("report");
    for args in [
        vec!["teacher", "train", s(&exp)],
        vec!["distill", "r1", "--front"],
        vec!["report", "r1", "--ablate-kd", "--out", s(&out)],
        vec!["proxies", "calibrate", s(&exp), "--n", "10"],
        vec!["bench", "table", s(&exp), "--out", s(&out)],
    ] {
        let mut args = args.clone();
        args.extend(["--archive", s(&archive)]);
        // (A command may say what it plans first; the error is its last line.)
        fails_last(&genas(&args), &["holds null at val_ce where a number"]);
        assert_eq!(hash_tree(&archive), before, "{args:?} left a trace");
    }
    fails_with(
        &genas(&["distill", "r1", "nosuch", "--archive", s(&archive)]),
        &["no candidate \"nosuch\""],
    );
    assert_eq!(hash_tree(&archive), before);
    // The archive opens, and what does not touch that record reads as before.
    assert_eq!(run_statuses(&archive), [("r1".into(), "finished".into())]);
    ok_json(&genas(&["show", "r1", "--archive", s(&archive), "--json"]));
}

#[test]
fn a_search_too_large_for_memory_is_refused_before_its_archive_is_written_and_runs_say_their_peak()
{
    let dir = tempfile::tempdir().unwrap();
    let exp = small_experiment(
        &dir.path().join("e.toml"),
        "e",
        "[search]\ncandidates = 4\n[fidelity]\nrung_steps = [5]\nbatch_size = 4000000\n",
    );
    let archive = dir.path().join("a");
    fails_with(
        &genas(&["search", s(&exp), "--archive", s(&archive)]),
        &["students side by side", "needs about", "available"],
    );
    assert!(!archive.exists(), "nothing written");
    // A search that fits says the peak it expects, and what makes it.
    let ok = small_experiment(&dir.path().join("ok.toml"), "ok", TINY_SEARCH);
    let b = dir.path().join("b");
    let said = search_said(&ok, &b);
    assert!(said.contains("estimated peak memory"), "{said}");
    // Its final distillation says its own, before it writes anything.
    let o = genas(&[
        "distill",
        "r1",
        "--front",
        "--steps",
        "2",
        "--archive",
        s(&b),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("estimated peak memory"), "{err}");
}

/// A teacher genas trained, written with `genas teacher export` and named by `[teacher]
/// checkpoint`, is read instead of trained: the same record and the same weights (exported
/// again, the same bytes). A file is taken only for the teacher it was trained as: another
/// [teacher] config, a file that is not a teacher's, a missing file, and a pretrained teacher
/// beside it are each refused in one line before any archive is made.
#[test]
fn a_shipped_teacher_is_read_not_trained_and_only_for_its_own_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plain = small_experiment(&d.join("plain.toml"), "t", "");
    let trained = ok_json(&genas(&[
        "teacher",
        "train",
        s(&plain),
        "--archive",
        s(&d.join("a1")),
        "--json",
    ]));
    assert_eq!(trained["reused"], false);
    let export = |exp: &Path, archive: &str, out: &Path| {
        genas(&[
            "teacher",
            "export",
            s(exp),
            "--archive",
            s(&d.join(archive)),
            "--out",
            s(out),
        ])
    };
    let file = d.join("teacher.safetensors");
    let o = export(&plain, "a1", &file);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let key = trained["record"]["key"].as_str().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains(key));
    // Read, not trained: the same record, and the same weights.
    let shipped = small_experiment(
        &d.join("shipped.toml"),
        "t",
        "checkpoint = \"teacher.safetensors\"\n",
    );
    let o = genas(&[
        "teacher",
        "train",
        s(&shipped),
        "--archive",
        s(&d.join("a2")),
        "--json",
    ]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        err.contains(&format!("using the teacher {key} from")),
        "{err}"
    );
    let read = ok_json(&o);
    assert_eq!(read["record"], trained["record"]);
    let again = d.join("again.safetensors");
    let o = export(&shipped, "a2", &again);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&again).unwrap()
    );
    // Refused, each in one line, with no archive made.
    let refused = |name: &str, tail: &str, needles: &[&str]| {
        let exp = small_experiment(&d.join(format!("{name}.toml")), "t", tail);
        let archive = d.join(format!("refused-{name}"));
        let o = genas(&["search", s(&exp), "--archive", s(&archive)]);
        fails_with(&o, needles);
        assert!(!archive.exists(), "{name}");
    };
    std::fs::write(d.join("garbage.safetensors"), b"not a checkpoint at all").unwrap();
    refused(
        "other",
        "checkpoint = \"teacher.safetensors\"\nseed = 5\n",
        &[
            "[teacher] checkpoint",
            key,
            "trained for another [teacher] config",
        ],
    );
    refused(
        "garbage",
        "checkpoint = \"garbage.safetensors\"\n",
        &["[teacher] checkpoint", "not a teacher file"],
    );
    refused(
        "missing",
        "checkpoint = \"nowhere.safetensors\"\n",
        &["[teacher] checkpoint", "cannot read", "nowhere.safetensors"],
    );
    refused(
        "both",
        "checkpoint = \"teacher.safetensors\"\npretrained = \"somewhere\"\n",
        &["teacher.checkpoint", "keep one"],
    );
    // Export needs the archive and its teacher.
    fails_with(
        &export(&plain, "none", &d.join("x.safetensors")),
        &["no archive at"],
    );
    let other = small_experiment(&d.join("other2.toml"), "t", "seed = 6\n");
    let o = export(&other, "a1", &d.join("x.safetensors"));
    fails_with(&o, &["holds no teacher", "genas teacher train"]);
    assert!(!d.join("x.safetensors").exists());
    // A destination it cannot write: one line, and nothing left beside it.
    std::fs::create_dir(d.join("a-folder")).unwrap();
    fails_with(
        &export(&plain, "a1", &d.join("a-folder")),
        &["cannot write", "a-folder"],
    );
    assert!(!d.join("a-folder.tmp").exists());
}
