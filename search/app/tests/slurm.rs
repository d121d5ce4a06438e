//! The Slurm executor against a real Slurm cluster (`experiments/slurm/cluster.sh start`):
//! a search on Slurm gives the same archive as a local one; a coordinator killed at random
//! moments and resumed neither duplicates nor loses work; tasks that fail (a worker that
//! exits non-zero, one cancelled with `scancel`) are submitted again, and a task that fails
//! every try is recorded as failed while the search goes on.
//!
//! Without a cluster (`sinfo` fails or lists no usable node) the tests say they skipped.
//! CI starts one and sets GENAS_REQUIRE_SLURM, which turns a missing cluster into a failure.

mod common;

use common::{essence, genas, ok_json, run_and_kill, s};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Whether a Slurm cluster answers here; panics when one is required and none does.
///
/// A node that runs or finishes jobs is up too: while the other tests' jobs complete, the
/// single node of `cluster.sh` reports `comp`, `mix-` or `alloc*`, not `idle` (CI once failed
/// on that). The state's flag suffix is dropped, and a cluster that does not answer is asked
/// again for up to 30 s (where one is required) before it counts as missing.
fn cluster() -> bool {
    let usable = || {
        Command::new("sinfo")
            .args(["--noheader", "--format", "%t"])
            .output()
            .map(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stdout).lines().any(|l| {
                        let state = l
                            .trim()
                            .trim_end_matches(|c: char| !c.is_ascii_alphabetic());
                        matches!(state, "idle" | "mix" | "alloc" | "comp" | "plnd")
                    })
            })
            .unwrap_or(false)
    };
    let required = std::env::var_os("GENAS_REQUIRE_SLURM").is_some();
    let mut up = usable();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !up && required && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        up = usable();
    }
    if !up {
        assert!(
            !required,
            "GENAS_REQUIRE_SLURM is set but no Slurm cluster answers (experiments/slurm/cluster.sh start)"
        );
        eprintln!("skipped: no Slurm cluster answers here (experiments/slurm/cluster.sh start)");
    }
    up
}

/// search.rs's small evolution search, its students started from the teacher (so the pruned
/// teacher travels to the workers in the targets file, and final tasks measure it again from
/// the teacher's weights), then `executor` as the [executor] section's body (none: local).
fn experiment(dir: &Path, name: &str, executor: Option<&str>) -> PathBuf {
    let tail = format!(
        r#"[constraints]
max_params = 20_000
[search]
strategy = "evolution"
candidates = 12
population = 4
objectives = ["quality", "params"]
calibration = 10
[fidelity]
batch_size = 8
rung_steps = [20, 40]
eta = 2
screen_keep = 0.75
init = "teacher"
{}"#,
        executor.map_or(String::new(), |x| format!("[executor]\n{x}\n"))
    );
    common::small_experiment(&dir.join(format!("{name}.toml")), "slurm-test", &tail)
}

const SLURM: &str = "kind = \"slurm\"\npoll_interval = 0.1";

/// The [executor] body of a Slurm search whose tasks run `worker` (beside the experiment),
/// with `more` settings.
fn with_worker(worker: &Path, more: &str) -> String {
    let name = worker.file_name().unwrap().to_string_lossy();
    format!("{SLURM}\n{more}worker = \"{name}\"")
}

fn search(exp: &Path, archive: &Path) -> Value {
    ok_json(&genas(&[
        "search",
        s(exp),
        "--archive",
        s(archive),
        "--plot",
        s(&archive.with_extension("svg")),
        "--json",
    ]))
}

fn assert_same(a: &Path, b: &Path) {
    let (ra, ca) = essence(a);
    let (rb, cb) = essence(b);
    assert_eq!(ca, cb, "candidates differ");
    assert_eq!(ra["front"], rb["front"]);
    assert_eq!(ra["hypervolume_history"], rb["hypervolume_history"]);
    assert_eq!(ra["per_rung"], rb["per_rung"]);
}

/// The local twin of a test's Slurm search.
fn local_search(dir: &Path) -> PathBuf {
    let exp = experiment(dir, "local", None);
    let archive = dir.join("local");
    search(&exp, &archive);
    archive
}

/// Every batch directory of a shared directory.
fn batches(shared: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(shared.join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// For every task ever submitted (by key): how many times a worker finished it, from the
/// tasks' logs, and whether its result is there.
fn runs_per_task(shared: &Path) -> std::collections::BTreeMap<String, (usize, bool)> {
    let mut runs = std::collections::BTreeMap::new();
    let mut logs = String::new();
    for b in batches(shared) {
        let keys: Vec<String> =
            serde_json::from_slice(&std::fs::read(b.join("keys.json")).unwrap()).unwrap();
        for k in keys {
            let result = shared.join("results").join(format!("{k}.out.json"));
            runs.insert(k, (0, result.is_file()));
        }
        for e in std::fs::read_dir(&b).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "log") {
                logs.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    for line in logs.lines() {
        if let Some(path) = line.strip_prefix("result written to ") {
            let k = Path::new(path.trim())
                .file_name()
                .unwrap()
                .to_string_lossy();
            let k = k.trim_end_matches(".out.json").to_string();
            runs.get_mut(&k).expect("a result of a submitted task").0 += 1;
        }
    }
    runs
}

/// Every task submitted ran exactly once and left its result.
fn each_ran_once(shared: &Path) -> usize {
    let runs = runs_per_task(shared);
    for (k, (n, result)) in &runs {
        assert!(*result, "task {k} has no result");
        assert_eq!(*n, 1, "task {k} ran {n} times");
    }
    runs.len()
}

/// A worker program for the tests: `body` (sh) runs first, with $TASK the task
/// (SHARED/jobs/BATCH/INDEX), $SHARED, $KEY the task's key and $MARK a path of its own for
/// markers (in `dir/marks`, which outlives retries in other batches); then genas's worker.
fn wrapper(dir: &Path, name: &str, body: &str) -> PathBuf {
    let marks = dir.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            r#"#!/bin/sh
TASK="$2"
SHARED=$(dirname "$(dirname "$(dirname "$TASK")")")
KEY=$(sed -n 's/.*"key": "\([0-9a-f]*\)".*/\1/p' "$TASK.json")
MARK="{}/$KEY"
{body}
exec '{}' "$@"
"#,
            marks.display(),
            env!("CARGO_BIN_EXE_genas")
        ),
    )
    .unwrap();
    let _ = Command::new("chmod").arg("+x").arg(&path).status();
    path
}

#[test]
fn a_search_on_slurm_gives_the_archive_of_a_local_one() {
    if !cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let local = local_search(dir.path());
    let exp = experiment(dir.path(), "slurm", Some(SLURM));
    let archive = dir.path().join("slurm");
    let r = search(&exp, &archive);
    assert_eq!(r["status"], "finished");
    assert_same(&local, &archive);
    // Calibration and every rung ran as array tasks, each job exactly once, and the inputs
    // went to the default shared directory once.
    let shared = archive.join("slurm");
    let tasks = each_ran_once(&shared);
    assert!(tasks >= 10 + 15, "{tasks} tasks");
    // The targets file and the one shard of this short schedule, each named by its content.
    let inputs: Vec<_> = std::fs::read_dir(shared.join("inputs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(inputs.len(), 2, "{inputs:?}");
    for p in &inputs {
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(p).unwrap();
        assert_eq!(genas_scoring::inputs::content_name(&bytes), name);
    }
    // A worker asked for a task that is not one says so in one line.
    let o = genas(&["worker", s(&dir.path().join("nothing/0"))]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("error: ") && err.trim().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn a_coordinator_killed_at_random_moments_and_resumed_duplicates_and_loses_nothing() {
    if !cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let local = local_search(dir.path());
    let exp = experiment(dir.path(), "slurm", Some(SLURM));
    let archive = dir.path().join("slurm");
    let plot = dir.path().join("p.svg");
    // The teacher first, so that the kills land among the evaluations.
    ok_json(&genas(&[
        "teacher",
        "train",
        s(&exp),
        "--archive",
        s(&archive),
        "--json",
    ]));
    let mut delay = 400.0f64;
    let mut finished = run_and_kill(
        &[
            "search",
            s(&exp),
            "--archive",
            s(&archive),
            "--plot",
            s(&plot),
        ],
        Some("run r1"),
        Duration::from_millis(delay as u64),
    );
    let mut kills = usize::from(!finished);
    while !finished && kills < 40 {
        delay *= 1.3;
        finished = run_and_kill(
            &["resume", "r1", "--archive", s(&archive), "--plot", s(&plot)],
            None,
            Duration::from_millis(delay as u64),
        );
        kills += usize::from(!finished);
    }
    assert!(kills >= 3, "only {kills} kills");
    let r = ok_json(&genas(&[
        "resume",
        "r1",
        "--archive",
        s(&archive),
        "--plot",
        s(&plot),
        "--json",
    ]));
    assert_eq!(r["status"], "finished");
    assert_same(&local, &archive);
    // No task ran twice and none was lost: each ran exactly once, whichever coordinator
    // submitted it.
    eprintln!("{kills} kills");
    each_ran_once(&archive.join("slurm"));
}

#[test]
fn failed_and_cancelled_tasks_are_run_again_and_the_archive_is_unchanged() {
    if !cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let local = local_search(dir.path());
    // The first try of every task exits 3; the second try of the tasks whose key starts with
    // 0-7 (about half) then hangs until the test cancels it.
    let worker = wrapper(
        dir.path(),
        "flaky.sh",
        r#"if [ ! -e "$MARK.failed" ]; then touch "$MARK.failed"; echo "failing on purpose" >&2; exit 3; fi
case "$KEY" in [0-7]*) if [ ! -e "$MARK.hung" ]; then echo "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" > "$MARK.hung"; sleep 600; fi;; esac"#,
    );
    let x = with_worker(&worker, "retries = 2\n");
    let exp = experiment(dir.path(), "slurm", Some(&x));
    let archive = dir.path().join("slurm");
    let shared = archive.join("slurm");
    let marks = dir.path().join("marks");
    let over = dir.path().join("over");
    let canceller = std::thread::spawn({
        let (marks, over) = (marks.clone(), over.clone());
        move || {
            // Cancels every hung task as it appears, until the search is over.
            let until = Instant::now() + Duration::from_secs(600);
            let mut cancelled = std::collections::BTreeSet::new();
            while Instant::now() < until && !over.exists() {
                for e in std::fs::read_dir(&marks).unwrap() {
                    let p = e.unwrap().path();
                    if p.to_string_lossy().ends_with(".hung") && !cancelled.contains(&p) {
                        let id = std::fs::read_to_string(&p).unwrap();
                        if id.trim().is_empty() {
                            continue; // being written
                        }
                        let ok = Command::new("scancel")
                            .arg(id.trim())
                            .status()
                            .is_ok_and(|s| s.success());
                        assert!(ok, "scancel {id}");
                        cancelled.insert(p);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            cancelled.len()
        }
    });
    let r = search(&exp, &archive);
    std::fs::write(&over, "").unwrap();
    let cancelled = canceller.join().unwrap();
    assert_eq!(r["status"], "finished");
    assert!(cancelled >= 3, "{cancelled} tasks cancelled");
    assert_same(&local, &archive);
    // Every task failed once on purpose (its log says so), then ran exactly once.
    let tasks = each_ran_once(&shared);
    let mut logs = String::new();
    for b in batches(&shared) {
        for e in std::fs::read_dir(&b).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "log") {
                logs.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    assert_eq!(logs.matches("failing on purpose").count(), tasks);
}

#[test]
fn a_task_that_fails_every_try_is_recorded_as_failed_and_the_search_goes_on() {
    if !cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Task 0 of every batch always fails.
    let worker = wrapper(
        dir.path(),
        "broken.sh",
        r#"case "$TASK" in */0) echo "task 0 is broken" >&2; exit 7;; esac"#,
    );
    let x = with_worker(&worker, "retries = 1\n");
    // A tighter parameter limit: a smaller space, a quicker search.
    let exp = experiment(dir.path(), "slurm", Some(&x));
    let text = std::fs::read_to_string(&exp)
        .unwrap()
        .replace("max_params = 20_000", "max_params = 5_000");
    std::fs::write(&exp, text).unwrap();
    let archive = dir.path().join("slurm");
    let r = search(&exp, &archive);
    assert_eq!(r["status"], "finished", "{r}");
    let show = ok_json(&genas(&["show", "r1", "--archive", s(&archive), "--json"]));
    let results: Vec<&Value> = show["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["rungs"].as_array().unwrap())
        .map(|r| &r["result"])
        .collect();
    let failed: Vec<&&Value> = results
        .iter()
        .filter(|r| {
            r["diverged"]
                .as_str()
                .is_some_and(|d| d.contains("failed on Slurm"))
        })
        .collect();
    assert!(!failed.is_empty(), "{show}");
    assert!(failed.len() < results.len());
    let why = failed[0]["diverged"].as_str().unwrap();
    assert!(
        why.contains("2 time(s)") && why.contains("task 0 is broken"),
        "{why}"
    );
    assert!(why.contains("FAILED") && why.contains("7:0"), "{why}");
    // The other candidates were evaluated and the front holds some of them.
    assert!(!r["front"].as_array().unwrap().is_empty());
}

#[test]
fn a_front_distilled_on_slurm_matches_a_local_one_even_when_a_task_is_preempted() {
    if !cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let local = local_search(dir.path());
    // The first try of every final distillation is killed (SIGKILL) once it has written a
    // checkpoint, as a preempted task would be; brief distillations run as they are.
    let worker = wrapper(
        dir.path(),
        "preempted.sh",
        &format!(
            r#"if grep -q '"kind": "final"' "$TASK.json" && [ ! -e "$MARK.preempted" ]; then
  touch "$MARK.preempted"
  '{}' "$@" & pid=$!
  while [ ! -e "$SHARED/results/$KEY.ckpt/distill.safetensors" ] && kill -0 $pid 2>/dev/null; do sleep 0.05; done
  kill -9 $pid; echo "preempted on purpose" >&2; exit 1
fi"#,
            env!("CARGO_BIN_EXE_genas")
        ),
    );
    let x = with_worker(&worker, "");
    let exp = experiment(dir.path(), "slurm", Some(&x));
    let archive = dir.path().join("slurm");
    search(&exp, &archive);
    let distill = |a: &Path| {
        ok_json(&genas(&[
            "distill",
            "r1",
            "--front",
            "--steps",
            "300",
            "--archive",
            s(a),
            "--json",
        ]))
    };
    let (mut l, mut r) = (distill(&local), distill(&archive));
    let (l, r) = (l.as_array_mut().unwrap(), r.as_array_mut().unwrap());
    assert!(!l.is_empty());
    assert_eq!(l.len(), r.len());
    let mut resumed = 0;
    for (a, b) in l.iter_mut().zip(r.iter_mut()) {
        assert!(a["resumed_from"].is_null());
        resumed += usize::from(b["resumed_from"].as_u64().is_some());
        for v in [&mut *a, &mut *b] {
            v["seconds"] = Value::Null;
            v["resumed_from"] = Value::Null;
        }
    }
    assert_eq!(l, r, "final distillations differ");
    // Every task was preempted after a checkpoint and resumed from it.
    assert_eq!(resumed, r.len());
    // Distilling again reuses what the archive holds and submits nothing.
    let again = distill(&archive);
    assert!(again
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["reused"] == true));
    // The weights were stored: a distilled member samples.
    let id = r[0]["candidate"].as_str().unwrap();
    let o = genas(&[
        "sample",
        "r1",
        id,
        "--archive",
        s(&archive),
        "--n",
        "1",
        "--length",
        "10",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `experiment`'s search of 6 candidates, with `cuda` under `[search] device = "cuda"`
/// (trained through the PyTorch runner), else on the engine.
fn on_cuda(dir: &Path, name: &str, executor: Option<&str>, cuda: bool) -> PathBuf {
    let path = experiment(dir, name, executor);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("[search]\n"));
    // Fewer candidates than the CPU tests: each runner job starts an interpreter.
    assert!(text.contains("candidates = 12\n"));
    let device = if cuda { "device = \"cuda\"\n" } else { "" };
    std::fs::write(
        &path,
        text.replacen("[search]\n", &format!("[search]\n{device}"), 1)
            .replacen("candidates = 12\n", "candidates = 6\n", 1),
    )
    .unwrap();
    path
}

/// `genas` with the runner on torch's CPU (the test cluster's GPUs are Slurm's bookkeeping
/// only: `cluster.sh` declares them over stand-in devices) and `python` as its interpreter.
fn genas_on_runner(python: &Path, args: &[&str]) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_genas"))
        .args(args)
        .env("GENAS_RUNNER_DEVICE", "cpu")
        .env("GENAS_PYTHON", python)
        .output()
        .unwrap();
    ok_json(&o)
}

/// `device = "cuda"` on Slurm: every task asks for a GPU (`gpus_per_task = 1`, passed as
/// `--gres=gpu:1`), sees the one Slurm gave it in CUDA_VISIBLE_DEVICES, and trains through
/// the PyTorch runner there; the archive is the one genas's engine gives on this machine (the
/// same decisions, every figure within 1e-4, the runner's parity bound; `runner.rs` holds the
/// runner on this machine to the engine). (Final tasks take the same path through
/// `slurm::final_distill`; they are left out here to keep CI within its time.)
#[test]
fn on_slurm_with_gpus_each_task_trains_through_the_runner_on_its_own_gpu() {
    if !cluster() || common::python_ready().is_err() {
        return;
    }
    let gres = Command::new("sinfo")
        .args(["--noheader", "--format", "%G"])
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&gres.stdout).contains("gpu:") {
        assert!(
            std::env::var_os("GENAS_REQUIRE_SLURM").is_none(),
            "GENAS_REQUIRE_SLURM is set but the cluster declares no GPU (cluster.sh start declares two)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The interpreter the tasks run: records the task's job and GPU, then python3.
    let seen = dir.path().join("seen.log");
    let python = dir.path().join("python-seen.sh");
    std::fs::write(
        &python,
        format!(
            "#!/bin/sh\necho \"${{SLURM_JOB_ID:-none}} ${{CUDA_VISIBLE_DEVICES:-unset}}\" >> '{}'\nexec python3 \"$@\"\n",
            seen.display()
        ),
    )
    .unwrap();
    let _ = Command::new("chmod").arg("+x").arg(&python).status();
    // The same search through the runner here, and on Slurm's GPUs.
    let search_with = |exp: &Path, archive: &Path| {
        genas_on_runner(
            &python,
            &[
                "search",
                s(exp),
                "--archive",
                s(archive),
                "--plot",
                s(&archive.with_extension("svg")),
                "--json",
            ],
        )
    };
    let here = dir.path().join("here");
    search_with(&on_cuda(dir.path(), "here", None, false), &here);
    assert!(!seen.exists(), "the local search ran on the engine");
    let x = format!("{SLURM}\ngpus_per_task = 1");
    let archive = dir.path().join("gpu");
    search_with(&on_cuda(dir.path(), "gpu", Some(&x), true), &archive);
    let (ra, ca) = essence(&here);
    let (rb, cb) = essence(&archive);
    let mut diffs = Vec::new();
    differences(&ca, &cb, "", 1e-4, &mut diffs);
    assert!(diffs.is_empty(), "candidates differ: {diffs:?}");
    differences(&ra["front"], &rb["front"], "front", 1e-4, &mut diffs);
    assert!(diffs.is_empty(), "fronts differ: {diffs:?}");
    // Every runner started on Slurm was in a job and saw one of the node's two GPUs.
    let lines = std::fs::read_to_string(&seen).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let (job, gpu) = l.split_once(' ').unwrap();
        assert_ne!(job, "none", "{lines:?}");
        assert!(gpu == "0" || gpu == "1", "{lines:?}");
    }
}

/// Where two JSON values differ (paths, with both values), at most 10; numbers within `tol`
/// relative are the same.
fn differences(a: &Value, b: &Value, at: &str, tol: f64, out: &mut Vec<String>) {
    if out.len() >= 10 {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                differences(
                    v,
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{at}.{k}"),
                    tol,
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                differences(v, w, &format!("{at}[{i}]"), tol, out);
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if (x - y).abs() > tol * x.abs().max(y.abs()) {
                out.push(format!("{at}: {x} vs {y}"));
            }
        }
        _ if a != b => out.push(format!("{at}: {a} vs {b}")),
        _ => {}
    }
}

#[test]
fn a_blockwise_search_on_slurm_trains_each_block_as_a_task_and_ends_as_a_local_one() {
    if !cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ld, sd) = (dir.path().join("local"), dir.path().join("slurm"));
    std::fs::create_dir_all(&ld).unwrap();
    std::fs::create_dir_all(&sd).unwrap();
    // The front's members are tasks too, each starting from its assembled blocks. While
    // `refuse` exists every try of a member's task fails, so the run ends in one line with
    // its blocks stored and its members recorded as failed; the resume distils them again.
    let refuse = sd.join("refuse");
    std::fs::write(&refuse, "").unwrap();
    let worker = wrapper(
        &sd,
        "refusing.sh",
        &format!(
            r#"if [ -e '{}' ] && grep -q '"kind": "brief"' "$TASK.json"; then echo "members refused" >&2; exit 7; fi"#,
            refuse.display()
        ),
    );
    let local_exp = common::blockwise_experiment(&ld, 10, "", "");
    let slurm_exp = common::blockwise_experiment(
        &sd,
        10,
        "",
        &format!("[executor]\n{}", with_worker(&worker, "retries = 1\n")),
    );
    let (la, sa) = (ld.join("a"), sd.join("a"));
    search(&local_exp, &la);
    let o = genas(&[
        "search",
        s(&slurm_exp),
        "--archive",
        s(&sa),
        "--plot",
        s(&sa.with_extension("svg")),
        "--json",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("none of the 3 member(s) of the front could be distilled")
            && err.contains("members refused"),
        "{err}"
    );
    let show = ok_json(&genas(&["show", "r1", "--archive", s(&sa), "--json"]));
    let failed = show["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["rungs"][0]["failed"].is_string())
        .count();
    assert_eq!(failed, 3, "{show}");
    std::fs::remove_file(&refuse).unwrap();
    let r = ok_json(&genas(&[
        "resume",
        "r1",
        "--archive",
        s(&sa),
        "--plot",
        s(&sa.with_extension("svg")),
        "--json",
    ]));
    assert_eq!(r["status"], "finished", "{r}");
    // The same blocks, to the bit: records (seconds aside) and trained tensors.
    let (lx, sx) = (
        genas_store::Archive::open_read_only(&la).unwrap(),
        genas_store::Archive::open_read_only(&sa).unwrap(),
    );
    let blocks = |a: &genas_store::Archive| -> Vec<(String, Value, Vec<u8>)> {
        a.blocks::<genas_app::blockwise::BlockRecord>("r1")
            .unwrap()
            .into_iter()
            .map(|(k, b)| {
                let mut v = serde_json::to_value(&b).unwrap();
                v["result"]["seconds"] = Value::Null;
                v["latency"] = Value::Null;
                let w = a.block_weights("r1", &k).unwrap().unwrap();
                (k, v, w)
            })
            .collect()
    };
    let (lb, sb) = (blocks(&lx), blocks(&sx));
    assert_eq!(lb.len(), 18);
    assert_eq!(lb, sb);
    drop((lx, sx));
    let strip = |a: &Path| {
        let (mut report, cands) = essence(a);
        report["blocks"] = Value::Null;
        (report, cands)
    };
    let (lr, lc) = strip(&la);
    let (sr, sc) = strip(&sa);
    assert_eq!(lc, sc, "candidates differ");
    assert_eq!(lr["front"], sr["front"]);
    // The failed tries count as evaluations, as the search's own do; the front ends the same.
    let last = |r: &Value| r["hypervolume_history"].as_array().unwrap().last().unwrap()[1].clone();
    assert_eq!(last(&lr), last(&sr));
    // Every block and member ran once as an array task, each block reading its layer's
    // cached activations and each member its assembled weights from the inputs; once all
    // were done, those went (the targets and their shard stay). The refused tries never
    // reached genas (the resume's targets file, hence its members' keys, are its own).
    let shared = sa.join("slurm");
    let runs = runs_per_task(&shared);
    assert_eq!(runs.len(), 18 + 2 * 3, "{runs:?}");
    assert!(
        runs.values().all(|&(n, result)| n == usize::from(result)),
        "{runs:?}"
    );
    assert_eq!(runs.values().filter(|r| r.1).count(), 18 + 3, "{runs:?}");
    let mut tasks = String::new();
    let mut members = std::collections::BTreeSet::new();
    for b in batches(&shared) {
        for e in std::fs::read_dir(&b).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "json") && p.file_stem().unwrap() != "keys" {
                let text = std::fs::read_to_string(&p).unwrap();
                let t: Value = serde_json::from_str(&text).unwrap();
                if t["task"]["initial"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("init-"))
                {
                    members.insert(t["key"].as_str().unwrap().to_string());
                }
                tasks += &text;
            }
        }
    }
    assert_eq!(tasks.matches("-L0.f32").count(), 9, "{tasks}");
    assert_eq!(tasks.matches("-L1.f32").count(), 9);
    // Each member's task, in the failed try and again in the resume's (a refused task
    // submitted again for its retry is the same task).
    assert_eq!(members.len(), 2 * 3, "{members:?}");
    let inputs: Vec<String> = std::fs::read_dir(shared.join("inputs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!inputs.is_empty());
    assert!(
        !inputs
            .iter()
            .any(|n| n.ends_with(".f32") || n.starts_with("init-")),
        "{inputs:?}"
    );
    // The final distillation of a member starts from its assembled blocks on Slurm as here:
    // the same result, figure for figure (a task that drew or pruned its start would not).
    let distill = |a: &Path| {
        let mut v = ok_json(&genas(&[
            "distill",
            "r1",
            "--front",
            "--steps",
            "20",
            "--archive",
            s(a),
            "--json",
        ]));
        for d in v.as_array_mut().unwrap() {
            d["seconds"] = Value::Null;
        }
        v
    };
    let (l, r) = (distill(&la), distill(&sa));
    assert!(!l.as_array().unwrap().is_empty());
    assert_eq!(l, r, "final distillations differ");
}

/// A blockwise search on Slurm with `device = "cuda"`: every block and every member of the
/// front is a task that trains through the PyTorch runner on its node (torch's CPU standing
/// in for the GPU), the block reading its layer's cached activations from the inputs, the
/// member its assembled weights; the blocks, the members and the front are the engine's on
/// this machine, every figure within 1e-4 (the runner's parity bound).
#[test]
fn a_blockwise_search_on_slurm_with_gpus_trains_blocks_and_members_through_the_runner() {
    if !cluster() || common::python_ready().is_err() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ld, gd) = (dir.path().join("local"), dir.path().join("gpu"));
    std::fs::create_dir_all(&ld).unwrap();
    std::fs::create_dir_all(&gd).unwrap();
    let local_exp = common::blockwise_experiment(&ld, 10, "", "");
    let gpu_exp = common::blockwise_experiment(
        &gd,
        10,
        "device = \"cuda\"",
        &format!("[executor]\n{SLURM}\ngpus_per_task = 1"),
    );
    let (la, ga) = (ld.join("a"), gd.join("a"));
    search(&local_exp, &la);
    let python = Path::new("python3");
    let r = genas_on_runner(
        python,
        &[
            "search",
            s(&gpu_exp),
            "--archive",
            s(&ga),
            "--plot",
            s(&ga.with_extension("svg")),
            "--json",
        ],
    );
    assert_eq!(r["status"], "finished", "{r}");
    let blocks = |a: &Path| -> Value {
        let a = genas_store::Archive::open_read_only(a).unwrap();
        let b = a.blocks::<genas_app::blockwise::BlockRecord>("r1").unwrap();
        let mut v = serde_json::to_value(&b).unwrap();
        for b in v.as_array_mut().unwrap() {
            b[1]["result"]["seconds"] = Value::Null;
            b[1]["latency"] = Value::Null;
        }
        v
    };
    let (lb, gb) = (blocks(&la), blocks(&ga));
    assert_eq!(lb.as_array().unwrap().len(), 18);
    let mut diffs = Vec::new();
    differences(&lb, &gb, "blocks", 1e-4, &mut diffs);
    assert!(diffs.is_empty(), "blocks differ: {diffs:?}");
    let (lr, lc) = essence(&la);
    let (gr, gc) = essence(&ga);
    assert_eq!(lc.as_array().unwrap().len(), 3);
    differences(&lc, &gc, "", 1e-4, &mut diffs);
    assert!(diffs.is_empty(), "members differ: {diffs:?}");
    differences(&lr["front"], &gr["front"], "front", 1e-4, &mut diffs);
    assert!(diffs.is_empty(), "fronts differ: {diffs:?}");
    // Trained by torch on the nodes, not by the engine: not the engine's sums to the bit.
    assert_ne!(lc, gc);
    // Every block and member ran once as an array task through the runner.
    let shared = ga.join("slurm");
    assert_eq!(each_ran_once(&shared), 18 + 3);
    let torch_dirs = std::fs::read_dir(shared.join("results"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".torch")
        })
        .count();
    assert_eq!(
        torch_dirs, 0,
        "each runner job directory is removed once read"
    );
}
