//! Worker threads on this machine: one pool for every kind of work that runs side by side
//! (evaluation jobs, zero-cost proxies, tabulated candidates, the PyTorch runner's jobs).
//! Each worker owns its state (a single-threaded CPU engine, or nothing) and takes the next
//! item; every result depends only on its item, so what the caller gets does not depend on
//! the number of workers.

use genas_engine::{checkpoint, latency_ms, sub_block_latency_ms, Cpu, Model};
use genas_scoring::distill::{brief_distill, TeacherTargets};
use genas_scoring::local::{local_distill, Activations, LayerActivations, SubBlock};
use genas_scoring::zero_cost::{proxy_suite, ProxyScores};
use genas_scoring::Batch;
use genas_search::job::{init_seed, BlockJob, BlockOutput, ExecError, Executor, Job, Output};
use genas_space::Architecture;
use genas_space::BlockObjective;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Worker threads for `threads` (0 = every core).
pub fn worker_count(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    }
}

/// The pool: runs `run` over `items` on `threads` threads, each with its own state from
/// `init`, calling `done(index, result)` as each finishes (from the worker's thread); stops
/// taking items once `stop` is set or `done` returns false.
pub fn side_by_side<T: Sync, R, S>(
    items: &[T],
    threads: usize,
    stop: &AtomicBool,
    done: &(dyn Fn(usize, R) -> bool + Sync),
    init: &(dyn Fn() -> S + Sync),
    run: &(dyn Fn(&mut S, &T) -> R + Sync),
) {
    let next = AtomicUsize::new(0);
    let halted = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                let mut state = init();
                loop {
                    if stop.load(Ordering::SeqCst) || halted.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    if !done(i, run(&mut state, item)) {
                        halted.store(true, Ordering::SeqCst);
                    }
                }
            });
        }
    });
}

/// `f` over `items` on `workers` threads of the pool (one single-threaded engine each);
/// results in item order. `progress(done, total, result)` is called as each item finishes.
pub fn parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: &(dyn Fn(&T, &Cpu<f32>) -> R + Sync),
    progress: &(dyn Fn(usize, usize, &R) + Sync),
) -> Vec<R> {
    let finished = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    side_by_side(
        items,
        workers,
        &AtomicBool::new(false),
        &|i, r: R| {
            progress(finished.fetch_add(1, Ordering::SeqCst) + 1, items.len(), &r);
            slots.lock().expect("no worker panics holding it")[i] = Some(r);
            true
        },
        &|| Cpu::<f32>::new(1),
        &|be, x| f(x, be),
    );
    slots
        .into_inner()
        .expect("workers finished")
        .into_iter()
        .map(|r| r.expect("every item done"))
        .collect()
}

/// Trains `job` on `be` against `targets`: what every executor runs, here or on another
/// machine.
pub fn run_job(job: &Job, targets: &TeacherTargets, be: &Cpu<f32>) -> Output {
    let mut m = match start(job, targets, be.clone()) {
        Ok(m) => m,
        Err(e) => return Output::failed(job.config.steps, UNREADABLE_START, &e),
    };
    let result = brief_distill(&mut m, targets, &job.config);
    let latency_ms_per_token =
        (job.measure_latency && result.eval.is_some()).then(|| latency_ms(&m));
    Output {
        result,
        latency_ms_per_token,
        failed: None,
    }
}

/// How a job whose initial weights cannot be read fails (one class for every such job).
pub const UNREADABLE_START: &str = "its initial weights are unreadable";

/// `job`'s network at its initial weights on `be`: the checkpoint `job.initial` names where
/// it names one (read with a bound: four bytes a parameter and a megabyte of header), else
/// drawn from its seed or pruned from the teacher.
pub fn start(job: &Job, targets: &TeacherTargets, be: Cpu<f32>) -> Result<Model<Cpu<f32>>, String> {
    let Some(path) = &job.initial else {
        return Ok(targets.student(&job.architecture, be, job.init_seed));
    };
    // Every weight (and mask) comes from the checkpoint: nothing to prune.
    let limit = 4 * genas_space::Cost::of(&job.architecture).params + (1 << 20);
    let bytes = genas_space::files::read_bounded(path, limit)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    checkpoint::model_from_bytes(&job.architecture, be, &bytes, &path.display().to_string())
        .map_err(|e| e.to_string())
}

/// Trains block `job` on `be` against `targets` (and, for the normalised error, the
/// teacher's activations cached in `job.activations`): what every executor runs for a block,
/// here or on another machine. The weights it returns are the sub-block's own tensors, the
/// rest being the teacher's.
pub fn run_block(job: &BlockJob, targets: &TeacherTargets, be: &Cpu<f32>) -> BlockOutput {
    let c = &job.config;
    let mut model = targets.student(&job.architecture, be.clone(), job.init_seed);
    let result = match job.objective {
        BlockObjective::Mse => {
            let Some(path) = &job.activations else {
                return BlockOutput::failed(
                    c.steps,
                    "no teacher activations",
                    "the normalised error trains on the teacher's cached activations",
                );
            };
            let steps = (c.steps as usize).min(targets.schedule.len());
            let (b, t, _) = targets.schedule.shape(0);
            let d = job.architecture.d_model as usize;
            let mut cache = match LayerActivations::open(path, steps, (b, t, d)) {
                Ok(cache) => cache,
                Err(e) => {
                    return BlockOutput::failed(
                        c.steps,
                        "the teacher's activations are unreadable",
                        &e,
                    )
                }
            };
            let sub = SubBlock {
                layer: job.layer,
                attention: job.attention,
            };
            local_distill(&mut model, Activations::Cached(&mut cache), targets, c, sub)
        }
        BlockObjective::Kl => brief_distill(&mut model, targets, c),
    };
    // Timed where it trained, as the search's top rung times its candidates: the sub-block's
    // share and every other's (the teacher's), for the choice's latency cost.
    let latency = result.eval.is_some().then(|| sub_block_latency_ms(&model));
    let own = |name: &str| c.train_only.iter().any(|p| name.starts_with(p.as_str()));
    match checkpoint::to_bytes_of(&model, &own, &[("genas.block", job.id.clone())]) {
        Ok(weights) => BlockOutput {
            result,
            weights,
            latency,
            failed: None,
        },
        Err(e) => BlockOutput::failed(c.steps, "the trained weights could not be written", &e),
    }
}

/// A copy of `m`'s network and weights on an engine of `threads` threads (one worker's
/// teacher: one).
pub fn engine_copy(m: &Model<Cpu<f32>>, threads: usize) -> Model<Cpu<f32>> {
    let mut c = Model::new(&m.arch, Cpu::<f32>::new(threads), 0);
    for i in 0..m.params.len() {
        c.set_weights(i, &m.weights(i));
    }
    c
}

/// The last non-empty line a failed program wrote on stderr.
pub(crate) fn last_line(stderr: &[u8]) -> String {
    last_lines(stderr, 1)
}

/// The last `n` non-empty lines of a program's output, trimmed, as one line joined by " | "
/// ("no output" when there are none).
pub(crate) fn last_lines(output: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return "no output".into();
    }
    lines[lines.len().saturating_sub(n)..].join(" | ")
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
        parallel(
            archs,
            workers,
            &|a: &Architecture, be: &Cpu<f32>| {
                let mut m = Model::new(a, be.clone(), init_seed(seed, &a.id()));
                proxy_suite(a, &mut m, pb, init_seed(seed, &a.id()))
            },
            &|d, n, _| progress(d, n),
        )
    }

    fn blocks(
        &self,
        jobs: &[BlockJob],
        workers: usize,
        stop: &AtomicBool,
        done: &(dyn Fn(usize, BlockOutput) -> bool + Sync),
    ) -> Result<(), ExecError> {
        side_by_side(
            jobs,
            workers,
            stop,
            done,
            &|| Cpu::<f32>::new(1),
            &|be, job| run_block(job, self.targets, be),
        );
        Ok(())
    }
}
