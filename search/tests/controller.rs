//! The controller's decisions, run through `Replay` on a tiny tabulated space in
//! milliseconds: which architectures each strategy proposes and in what order, which
//! candidates successive halving promotes, and that a run stopped after any commit resumes to
//! the same archive as one never stopped.
//!
//! The table is made here from a space of 48 architectures; each architecture's quality is a
//! smooth function of its size plus a term fixed by its id, and a few diverge at the first
//! rung, so the tests read decisions, not training.

use genas_exec::replay::{Evaluated, Replay, Row, Table};
use genas_scoring::distill::{DistillResult, Evaluation};
use genas_scoring::zero_cost::ProxyScores;
use genas_search::controller::{
    reference_point, CandidateRecord, Controller, ControllerState, Outcome, RunContext, RunPlan,
};
use genas_search::error::SearchError;
use genas_search::job::{ExecError, Executor, Job, Output};
use genas_search::pareto;
use genas_space::{satisfies, Architecture, Cost, Experiment, Objective, SearchSpace, Strategy};
use genas_store::Archive;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

const VOCAB: u32 = 32;
const CONTEXT: u32 = 16;

fn experiment(strategy: &str, candidates: u32, seed: u64) -> Experiment {
    // Each strategy takes only its own settings.
    let selection = match strategy {
        "evolution" => "population = 6\n        tournament = 3",
        "nsga2" => "population = 6",
        _ => "",
    };
    let text = format!(
        r#"
        [data]
        kind = "text"
        path = "corpus.txt"
        seq_len = {CONTEXT}
        [space]
        depth = [1, 2]
        d_model = [32, 64]
        heads = [2]
        attention = ["full", "linear", "none"]
        ffn_ratio = [1, 4]
        activation = ["gelu"]
        tie_embeddings = [true, false]
        per_layer = false
        [constraints]
        max_params = 200_000
        [search]
        strategy = "{strategy}"
        candidates = {candidates}
        {selection}
        objectives = ["quality", "params"]
        seed = {seed}
        [fidelity]
        rung_steps = [50, 200]
        eta = 3
        "#
    );
    Experiment::from_str_in(&text, "controller-test.toml", Path::new(".")).expect("parses")
}

fn space(exp: &Experiment) -> SearchSpace {
    SearchSpace::new(&exp.space, VOCAB, CONTEXT).expect("a space")
}

/// A number in [0, 1) fixed by `id`.
fn jitter(id: &str) -> f64 {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn result(steps: u32, val_ce: Option<f64>) -> DistillResult {
    DistillResult {
        steps,
        train_loss: val_ce,
        eval: val_ce.map(|val_ce| Evaluation {
            val_ce,
            kl_to_teacher: val_ce / 10.0,
            agreement: 0.5,
        }),
        diverged: val_ce
            .is_none()
            .then(|| format!("non-finite loss at step {}", steps / 2)),
        seconds: 0.0,
    }
}

/// Every architecture of the space within its constraints, each with a result at both rungs
/// (one in seven diverges at the first).
fn table(exp: &Experiment) -> Table {
    let archs = space(exp)
        .architectures_within(&exp.constraints, 10_000)
        .expect("a small space");
    assert_eq!(archs.len(), 48, "the test's space");
    let rows = archs
        .into_iter()
        .enumerate()
        .map(|(i, architecture)| {
            let id = architecture.id();
            let cost = Cost::of(&architecture);
            let quality = 4.0 - 0.3 * (cost.params as f64).log2() / 17.0 + 0.4 * jitter(&id);
            let diverges = i % 7 == 3;
            Row {
                rungs: vec![
                    Evaluated {
                        steps: 50,
                        result: result(50, (!diverges).then_some(quality + 0.5)),
                        cpu_s: 1.0,
                    },
                    Evaluated {
                        steps: 200,
                        result: result(200, Some(quality)),
                        cpu_s: 4.0,
                    },
                ],
                proxies: ProxyScores {
                    scores: BTreeMap::new(),
                    millis: 0.0,
                },
                proxies_cpu_s: 0.0,
                latency_ms_per_token: Some(0.01 * (1.0 + jitter(&id))),
                finals: Vec::new(),
                cost,
                id,
                architecture,
            }
        })
        .collect();
    Table::made_by(
        "made by tests/controller.rs",
        "teacher-test",
        (vec![50, 200], Vec::new()),
        rows,
    )
}

/// `Replay`, stopping the run once `after` outputs have been handed back.
struct StopAfter<'a> {
    replay: &'a Replay<'a>,
    after: usize,
    seen: AtomicUsize,
    stop: &'a AtomicBool,
}

impl Executor for StopAfter<'_> {
    fn run(
        &self,
        jobs: &[Job],
        workers: usize,
        stop: &AtomicBool,
        done: &(dyn Fn(usize, Output) -> bool + Sync),
    ) -> Result<(), ExecError> {
        self.replay.run(jobs, workers, stop, &|i, out| {
            let keep = done(i, out);
            if self.seen.fetch_add(1, Ordering::SeqCst) + 1 >= self.after {
                self.stop.store(true, Ordering::SeqCst);
            }
            keep
        })
    }

    fn proxies(
        &self,
        archs: &[Architecture],
        seed: u64,
        workers: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<ProxyScores> {
        self.replay.proxies(archs, seed, workers, progress)
    }
}

/// `Replay`, but a job that `fails` names a class for is handed back as failed, as an
/// executor hands back one it could not run.
struct Failing<'a> {
    replay: &'a Replay<'a>,
    /// The class a job of (architecture id, rung) fails with, if it fails.
    fails: &'a (dyn Fn(&str, usize) -> Option<&'static str> + Sync),
}

impl Executor for Failing<'_> {
    fn run(
        &self,
        jobs: &[Job],
        workers: usize,
        stop: &AtomicBool,
        done: &(dyn Fn(usize, Output) -> bool + Sync),
    ) -> Result<(), ExecError> {
        self.replay.run(
            jobs,
            workers,
            stop,
            &|i, out| match (self.fails)(&jobs[i].id, jobs[i].rung) {
                Some(class) => done(
                    i,
                    Output::failed(jobs[i].config.steps, class, "its last lines"),
                ),
                None => done(i, out),
            },
        )
    }

    fn proxies(
        &self,
        archs: &[Architecture],
        seed: u64,
        workers: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<ProxyScores> {
        self.replay.proxies(archs, seed, workers, progress)
    }
}

struct Run {
    _dir: tempfile::TempDir,
    archive: Archive,
    id: String,
}

impl Run {
    fn new() -> Run {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let archive = Archive::open(&dir.path().join("archive")).expect("an archive");
        let id = archive
            .create_run(&serde_json::json!({"test": true}))
            .expect("a run");
        Run {
            _dir: dir,
            archive,
            id,
        }
    }

    /// Opens the controller on the run and drives it until it finishes or `executor` stops it.
    fn drive(&self, exp: &Experiment, executor: &dyn Executor, stop: &AtomicBool) -> Outcome {
        self.try_drive(exp, executor, stop, &|_| {}).expect("runs")
    }

    /// `drive`, its warnings to `warn`, its error returned.
    fn try_drive(
        &self,
        exp: &Experiment,
        executor: &dyn Executor,
        stop: &AtomicBool,
        warn: &(dyn Fn(&str) + Sync),
    ) -> Result<Outcome, SearchError> {
        let space = space(exp);
        let plan = RunPlan {
            objectives: exp.search.objectives.clone(),
            reference: reference_point(&exp.search.objectives, &space, exp).expect("a point"),
            teacher_key: "teacher-test".into(),
            calibration_key: "none".into(),
            data_fingerprint: "none".into(),
            max_latency_ms_per_token: None,
            tokens_per_char: None,
        };
        let cx = RunContext {
            experiment: exp,
            space: &space,
            archive: &self.archive,
            run: self.id.clone(),
            plan,
            ensemble: None,
            exhaustive: None,
            executor,
            workers: 1,
            stop,
            warn,
        };
        let mut c = Controller::open(cx).expect("opens");
        c.run(&|_, _, _| {})
    }

    fn candidates(&self) -> Vec<CandidateRecord> {
        let mut c: Vec<CandidateRecord> = self
            .archive
            .candidates(&self.id)
            .expect("reads")
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        c.sort_by_key(|c| c.index);
        c
    }

    fn state(&self) -> ControllerState {
        self.archive
            .state(&self.id)
            .expect("reads")
            .expect("a state")
    }

    fn events(&self) -> Vec<Value> {
        self.archive.events(&self.id).expect("reads")
    }
}

/// A whole run of `exp` against `table`.
fn finished(exp: &Experiment, table: &Table) -> Run {
    let run = Run::new();
    let replay = Replay::new(table);
    let stop = AtomicBool::new(false);
    assert_eq!(run.drive(exp, &replay, &stop), Outcome::Finished);
    run
}

fn strategies() -> [(&'static str, Strategy); 3] {
    [
        ("random", Strategy::Random),
        ("evolution", Strategy::Evolution),
        ("nsga2", Strategy::Nsga2),
    ]
}

#[test]
fn each_strategy_proposes_distinct_architectures_within_the_constraints_in_an_order_its_seed_fixes()
{
    let table = table(&experiment("random", 12, 0));
    let in_table: BTreeSet<&str> = table.rows.iter().map(|r| r.id.as_str()).collect();
    for (name, strategy) in strategies() {
        let exp = experiment(name, 12, 1);
        assert_eq!(exp.search.strategy, strategy);
        let order = |seed: u64| -> Vec<String> {
            finished(&experiment(name, 12, seed), &table)
                .candidates()
                .iter()
                .map(|c| c.id.clone())
                .collect()
        };
        let first = order(1);
        assert_eq!(first.len(), 12, "{name}: the budget");
        assert_eq!(
            first.iter().collect::<BTreeSet<_>>().len(),
            12,
            "{name}: an architecture is proposed once"
        );
        for id in &first {
            assert!(
                in_table.contains(id.as_str()),
                "{name}: {id} is outside the space"
            );
        }
        let run = finished(&exp, &table);
        for c in run.candidates() {
            assert!(satisfies(&c.cost, &exp.constraints), "{name}: {}", c.id);
            assert_eq!(c.cost, Cost::of(&c.architecture));
        }
        assert_eq!(order(1), first, "{name}: the same seed, the same proposals");
        assert_ne!(order(2), first, "{name}: another seed, other proposals");
    }
}

#[test]
fn promotion_keeps_the_best_third_by_pareto_rank_and_never_a_diverged_candidate() {
    let table = table(&experiment("random", 24, 0));
    let objectives = [Objective::Quality, Objective::Params];
    for (name, _) in strategies() {
        let exp = experiment(name, 24, 3);
        let run = finished(&exp, &table);
        let cands = run.candidates();
        let at = |c: &CandidateRecord, rung: usize| {
            c.rungs
                .iter()
                .find(|r| r.rung == rung)
                .map(|r| r.result.eval.map(|e| e.val_ce))
        };
        let mut promoted_rounds = 0;
        for round in 0..=cands.iter().map(|c| c.round).max().unwrap_or(0) {
            let of_round: Vec<&CandidateRecord> =
                cands.iter().filter(|c| c.round == round).collect();
            let first: Vec<&CandidateRecord> = of_round
                .iter()
                .copied()
                .filter(|c| at(c, 0).is_some())
                .collect();
            if first.is_empty() {
                continue;
            }
            let (promoted, kept_back): (Vec<&CandidateRecord>, Vec<&CandidateRecord>) =
                first.iter().partition(|c| at(c, 1).is_some());
            let alive = first
                .iter()
                .filter(|c| at(c, 0).flatten().is_some())
                .count();
            let expected = first.len().div_ceil(exp.fidelity.eta as usize).min(alive);
            assert_eq!(promoted.len(), expected, "{name}, round {round}");
            promoted_rounds += usize::from(!promoted.is_empty());
            let point = |c: &CandidateRecord| -> Vec<f64> {
                let ce = at(c, 0).flatten().expect("evaluated");
                objectives
                    .iter()
                    .map(|o| match o {
                        Objective::Quality => ce,
                        _ => c.cost.params as f64,
                    })
                    .collect()
            };
            for p in &promoted {
                assert!(
                    at(p, 0).flatten().is_some(),
                    "{name}: {} diverged at the first rung and was promoted",
                    p.id
                );
                for k in kept_back.iter().filter(|k| at(k, 0).flatten().is_some()) {
                    assert!(
                        !pareto::dominates(&point(k), &point(p)),
                        "{name}, round {round}: {} was kept back though it dominates the promoted {}",
                        k.id,
                        p.id
                    );
                }
            }
        }
        assert!(promoted_rounds > 0, "{name}: something was promoted");
        // Every promotion is an event naming exactly the candidates that reached rung 1.
        let from_events: BTreeSet<String> = run
            .events()
            .iter()
            .filter(|e| e["event"] == "promoted")
            .flat_map(|e| e["candidates"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let reached: BTreeSet<String> = cands
            .iter()
            .filter(|c| at(c, 1).is_some())
            .map(|c| c.id.clone())
            .collect();
        assert_eq!(from_events, reached, "{name}");
    }
}

#[test]
fn a_run_stopped_after_any_commit_resumes_to_the_archive_of_a_run_never_stopped() {
    let table = table(&experiment("random", 18, 0));
    let replay = Replay::new(&table);
    for (name, _) in strategies() {
        let exp = experiment(name, 18, 5);
        let whole = finished(&exp, &table);
        let evaluations = whole.state().evaluations as usize;
        assert!(evaluations > 18, "{name}: both rungs ran ({evaluations})");
        for after in [1, 2, 7, evaluations / 2, evaluations - 1] {
            let run = Run::new();
            let mut stops = 0;
            loop {
                let stop = AtomicBool::new(false);
                let executor = StopAfter {
                    replay: &replay,
                    after,
                    seen: AtomicUsize::new(0),
                    stop: &stop,
                };
                match run.drive(&exp, &executor, &stop) {
                    Outcome::Finished => break,
                    Outcome::Interrupted => stops += 1,
                }
                assert!(stops <= evaluations, "{name}: the run makes progress");
            }
            assert!(stops > 0, "{name}: stopped after {after}");
            assert_eq!(run.state(), whole.state(), "{name}: stopped every {after}");
            assert_eq!(
                run.candidates(),
                whole.candidates(),
                "{name}: stopped every {after}"
            );
        }
    }
}

#[test]
fn jobs_that_fail_are_recorded_as_failures_with_one_warning_per_class_and_never_promoted() {
    let table = table(&experiment("random", 24, 0));
    let replay = Replay::new(&table);
    // About a third of the first rung's jobs fail, in two classes.
    let fails = |id: &str, rung: usize| -> Option<&'static str> {
        match (rung, jitter(id)) {
            (0, j) if j < 0.15 => Some("the runner failed"),
            (0, j) if j < 0.3 => Some("a task failed on Slurm every try"),
            _ => None,
        }
    };
    for (name, _) in strategies() {
        let exp = experiment(name, 24, 3);
        let run = Run::new();
        let warnings = Mutex::new(Vec::<String>::new());
        let executor = Failing {
            replay: &replay,
            fails: &fails,
        };
        let outcome = run
            .try_drive(&exp, &executor, &AtomicBool::new(false), &|w| {
                warnings.lock().unwrap().push(w.to_string())
            })
            .expect("some jobs of every batch succeed");
        assert_eq!(outcome, Outcome::Finished, "{name}");
        let cands = run.candidates();
        let failed: Vec<&CandidateRecord> = cands
            .iter()
            .filter(|c| c.rungs.iter().any(|r| r.failed.is_some()))
            .collect();
        assert!(!failed.is_empty(), "{name}: some failed");
        for c in &failed {
            let r = &c.rungs[0];
            let class = fails(&c.id, 0).expect("it was made to fail");
            assert_eq!(r.failed.as_deref(), Some(class), "{name}: {}", c.id);
            assert_eq!(
                r.result.diverged.as_deref(),
                Some(format!("{class}: its last lines").as_str())
            );
            assert!(r.result.eval.is_none());
            assert_eq!(c.rungs.len(), 1, "{name}: {} failed and was promoted", c.id);
        }
        // One warning per class and batch, naming how many of the batch failed that way.
        let warnings = warnings.into_inner().unwrap();
        assert!(!warnings.is_empty(), "{name}");
        for class in ["the runner failed", "a task failed on Slurm every try"] {
            let lines: Vec<&String> = warnings.iter().filter(|w| w.contains(class)).collect();
            assert!(!lines.is_empty(), "{name}: {class}: {warnings:?}");
            for w in &lines {
                assert!(
                    w.starts_with("warning: ") && w.contains(" job(s) of round "),
                    "{w}"
                );
            }
        }
        // (batch, class), each once: the warning less its count.
        let once: BTreeSet<&str> = warnings
            .iter()
            .filter_map(|w| w.split_once(" job(s) of ").map(|(_, rest)| rest))
            .collect();
        assert_eq!(once.len(), warnings.len(), "{name}: {warnings:?}");
    }
}

#[test]
fn a_batch_whose_every_job_fails_stops_the_run_and_a_resume_evaluates_them_again() {
    let table = table(&experiment("random", 18, 0));
    let replay = Replay::new(&table);
    for (name, _) in strategies() {
        let exp = experiment(name, 18, 5);
        let whole = finished(&exp, &table);
        // Every job of the first rung fails: the run stops there with the failure.
        let run = Run::new();
        let broken = Failing {
            replay: &replay,
            fails: &|_, rung| (rung == 0).then_some("the runner failed"),
        };
        let warned = Mutex::new(Vec::<String>::new());
        let e = run
            .try_drive(&exp, &broken, &AtomicBool::new(false), &|w| {
                warned.lock().unwrap().push(w.to_string())
            })
            .expect_err("every job failed");
        let SearchError::AllFailed { jobs, ref why, .. } = e else {
            panic!("{name}: {e}");
        };
        assert!(jobs > 0);
        assert_eq!(why, "the runner failed: its last lines");
        assert!(
            e.to_string()
                .starts_with("every job of round 1 rung 1 (50 steps) failed ("),
            "{e}"
        );
        let warned = warned.into_inner().unwrap();
        assert_eq!(warned.len(), 1, "{name}: {warned:?}");
        assert!(
            warned[0].contains(&format!("{jobs} of {jobs} job(s)")),
            "{}",
            warned[0]
        );
        // The failures are recorded as failures.
        let cands = run.candidates();
        let failed = cands
            .iter()
            .filter(|c| c.rungs.len() == 1 && c.rungs[0].failed.is_some())
            .count();
        assert_eq!(failed, jobs, "{name}");
        // Resumed with an executor that works, every failed job is evaluated again: the run
        // ends with the candidates of a run that never failed.
        assert_eq!(
            run.drive(&exp, &replay, &AtomicBool::new(false)),
            Outcome::Finished
        );
        assert_eq!(run.candidates(), whole.candidates(), "{name}");
        assert_eq!(run.state().front, whole.state().front, "{name}");
    }
}
