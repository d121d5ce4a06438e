//! Where evaluations run. The controller decides *what* to evaluate and commits results in
//! queue order; an [`Executor`] only runs a batch of evaluation jobs and hands each result
//! back as it finishes. A job is plain, serialisable data: the architecture, its
//! initialisation seed and the distillation settings; the executor brings the inputs they
//! refer to (the teacher's cached soft targets, the proxy batch). Every executor trains a job
//! through [`run_job`], so where a job runs does not change its result.
//!
//! - [`Local`]: worker threads on this machine, one single-threaded engine each.
//! - `Slurm` (`crate::slurm`): one job array per batch on a Slurm cluster.
//! - [`Replay`]: a tabulated benchmark (`genas bench table`) read back instead of training, for
//!   simulating searches (`genas bench search`).
//!
//! An executor must not know about the archive, the strategies or the fidelity schedule.

use crate::controller::{init_seed, latency_ms};
use crate::table::Table;
use genas_proxies::distill::{brief_distill, DistillConfig, DistillResult, TeacherTargets};
use genas_proxies::engine::{Cpu, Model};
use genas_proxies::zero_cost::{proxy_suite, ProxyScores};
use genas_proxies::Batch;
use genas_space::Architecture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// One brief distillation to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub architecture: Architecture,
    /// Seed of the initial weights.
    pub init_seed: u64,
    /// Which rung of the schedule (for executors that look results up).
    pub rung: usize,
    pub config: DistillConfig,
    /// Measure generation latency after training (the top rung does).
    pub measure_latency: bool,
}

/// What a job produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub result: DistillResult,
    pub latency_ms_per_token: Option<f64>,
    /// The executor could not get a result (a Slurm task that failed every try): `result`
    /// says why. Recorded in the run like a diverged result, never cached as one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed: bool,
}

/// Trains `job` on `be` against `targets`: what every executor runs, here or on another
/// machine.
pub fn run_job(job: &Job, targets: &TeacherTargets, be: &Cpu<f32>) -> Output {
    let mut m = targets.student(&job.architecture, be.clone(), job.init_seed);
    let result = brief_distill(&mut m, targets, &job.config);
    let latency_ms_per_token =
        (job.measure_latency && result.eval.is_some()).then(|| latency_ms(&m));
    Output {
        result,
        latency_ms_per_token,
        failed: false,
    }
}

impl Output {
    /// A result the executor could not get: `why`, recorded like a divergence, never cached.
    pub fn failed(steps: u32, why: String) -> Output {
        Output {
            result: DistillResult {
                steps,
                train_loss: None,
                eval: None,
                diverged: Some(why),
                seconds: 0.0,
            },
            latency_ms_per_token: None,
            failed: true,
        }
    }
}

/// The last non-empty line a failed program wrote on stderr.
pub(crate) fn last_line(stderr: &[u8]) -> String {
    let err = String::from_utf8_lossy(stderr);
    err.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Runs `jobs` on `threads` threads, each with its own state from `init`, calling
/// `done(index, output)` as each finishes; stops taking jobs once `stop` is set or `done`
/// returns false.
pub(crate) fn side_by_side<S>(
    jobs: &[Job],
    threads: usize,
    stop: &AtomicBool,
    done: &(dyn Fn(usize, Output) -> bool + Sync),
    init: &(dyn Fn() -> S + Sync),
    run: &(dyn Fn(&mut S, &Job) -> Output + Sync),
) {
    let next = AtomicUsize::new(0);
    let halted = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, jobs.len().max(1)) {
            s.spawn(|| {
                let mut state = init();
                loop {
                    if stop.load(Ordering::SeqCst) || halted.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = jobs.get(i) else { break };
                    if !done(i, run(&mut state, job)) {
                        halted.store(true, Ordering::SeqCst);
                    }
                }
            });
        }
    });
}

/// An executor that cannot go on (Slurm refused a submission, the shared directory is not
/// writable): one line. Results already handed back stay committed.
pub type ExecError = String;

/// Runs evaluation jobs.
pub trait Executor: Sync {
    /// Runs `jobs` on up to `workers` at a time, calling `done(index, output)` as each
    /// finishes (in any order, from any thread). Returns early, leaving jobs unrun, once
    /// `stop` is set or `done` returns false.
    fn run(
        &self,
        jobs: &[Job],
        workers: usize,
        stop: &AtomicBool,
        done: &(dyn Fn(usize, Output) -> bool + Sync),
    ) -> Result<(), ExecError>;

    /// The zero-cost proxies of each architecture (initialised with `init_seed(seed, id)`),
    /// on `workers` threads; `progress(done, total)`.
    fn proxies(
        &self,
        archs: &[Architecture],
        seed: u64,
        workers: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<ProxyScores>;
}

/// The executor an experiment's `[executor]` names.
pub enum Chosen<'a> {
    Local(Local<'a>),
    Slurm(Box<crate::slurm::Slurm<'a>>),
    Torch(Box<crate::runner::Torch<'a>>),
}

impl<'a> Chosen<'a> {
    /// `local` as it is, or the Slurm executor over its inputs (whose proxies it computes):
    /// the shared directory resolved (default `ARCHIVE/slurm`), the teacher's targets written
    /// into it under their content name, and the worker program found.
    pub fn of(
        exp: &genas_space::Experiment,
        archive_dir: &std::path::Path,
        local: Local<'a>,
        say: &'a (dyn Fn(&str) + Sync),
    ) -> anyhow::Result<Chosen<'a>> {
        if exp.executor.kind == genas_space::ExecutorKind::Local {
            return match crate::runner::device_plan(exp)? {
                crate::runner::DevicePlan::Engine { .. } => Ok(Chosen::Local(local)),
                crate::runner::DevicePlan::Torch { device, python, .. } => {
                    let root = archive_dir.join("torch");
                    let inputs = root.join("inputs");
                    let name = genas_proxies::inputs::store(&inputs, local.targets)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    Ok(Chosen::Torch(Box::new(crate::runner::Torch {
                        device,
                        python,
                        dir: std::path::absolute(root.join("jobs"))?,
                        targets: std::path::absolute(genas_proxies::inputs::path_in(
                            &inputs, &name,
                        ))?,
                        parallel: exp.search.device_jobs as usize,
                        local,
                    })))
                }
            };
        }
        let cluster =
            crate::slurm::Cluster::of(exp, archive_dir, say).map_err(anyhow::Error::msg)?;
        let targets = genas_proxies::inputs::store(&cluster.inputs(), local.targets)
            .map_err(|e| anyhow::anyhow!("executor.shared_dir: {e}"))?;
        Ok(Chosen::Slurm(Box::new(crate::slurm::Slurm {
            cluster,
            targets,
            local,
        })))
    }

    pub fn executor(&self) -> &dyn Executor {
        match self {
            Chosen::Local(l) => l,
            Chosen::Slurm(s) => s.as_ref(),
            Chosen::Torch(t) => t.as_ref(),
        }
    }
}

/// Worker threads on this machine, each with its own single-threaded CPU engine.
pub struct Local<'a> {
    pub targets: &'a TeacherTargets,
    pub proxy_batch: &'a Batch,
}

impl Executor for Local<'_> {
    fn run(
        &self,
        jobs: &[Job],
        workers: usize,
        stop: &AtomicBool,
        done: &(dyn Fn(usize, Output) -> bool + Sync),
    ) -> Result<(), ExecError> {
        side_by_side(
            jobs,
            workers,
            stop,
            done,
            &|| Cpu::<f32>::new(1),
            &|be, job| run_job(job, self.targets, be),
        );
        Ok(())
    }

    fn proxies(
        &self,
        archs: &[Architecture],
        seed: u64,
        workers: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<ProxyScores> {
        let pb = self.proxy_batch;
        crate::workers::parallel(
            archs,
            workers,
            &|a: &Architecture, be: &Cpu<f32>| {
                let mut m = Model::new(a, be.clone(), init_seed(seed, &a.id()));
                proxy_suite(a, &mut m, pb, init_seed(seed, &a.id()))
            },
            &|d, n, _| progress(d, n),
        )
    }
}

/// A tabulated benchmark read back: every job's result is the table's, at no cost.
pub struct Replay<'a> {
    rows: BTreeMap<&'a str, &'a crate::table::Row>,
}

impl<'a> Replay<'a> {
    pub fn new(table: &'a Table) -> Replay<'a> {
        Replay {
            rows: table.rows.iter().map(|r| (r.id.as_str(), r)).collect(),
        }
    }

    /// The table's row of `id`.
    pub fn row(&self, id: &str) -> Option<&'a crate::table::Row> {
        self.rows.get(id).copied()
    }
}

impl Executor for Replay<'_> {
    fn run(
        &self,
        jobs: &[Job],
        _workers: usize,
        stop: &AtomicBool,
        done: &(dyn Fn(usize, Output) -> bool + Sync),
    ) -> Result<(), ExecError> {
        for (i, job) in jobs.iter().enumerate() {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let row = self.row(&job.id);
            // Looked up by steps: a schedule may use some of the table's rungs.
            let evaluated = row.and_then(|r| r.rungs.iter().find(|e| e.steps == job.config.steps));
            let output = match evaluated {
                Some(e) => Output {
                    result: e.result.clone(),
                    latency_ms_per_token: if job.measure_latency {
                        row.and_then(|r| r.latency_ms_per_token)
                    } else {
                        None
                    },
                    failed: false,
                },
                // Not in the table: recorded as a failed evaluation, never invented.
                _ => Output {
                    result: DistillResult {
                        steps: job.config.steps,
                        train_loss: None,
                        eval: None,
                        diverged: Some(format!(
                            "not in the table at rung {} ({} steps)",
                            job.rung, job.config.steps
                        )),
                        seconds: 0.0,
                    },
                    latency_ms_per_token: None,
                    failed: false,
                },
            };
            if !done(i, output) {
                return Ok(());
            }
        }
        Ok(())
    }

    fn proxies(
        &self,
        archs: &[Architecture],
        _seed: u64,
        _workers: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<ProxyScores> {
        archs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                progress(i + 1, archs.len());
                self.row(&a.id())
                    .map(|r| r.proxies.clone())
                    .unwrap_or_else(|| ProxyScores {
                        scores: Default::default(),
                        millis: 0.0,
                    })
            })
            .collect()
    }
}
