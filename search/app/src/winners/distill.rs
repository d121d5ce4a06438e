//! `genas distill`: the final distillation of a run's winners, longer than any rung, through
//! the engine, the PyTorch runner or Slurm tasks, checkpointed in the archive so a killed one
//! resumes where it stopped.

use super::{RunAccess, Weights};
use crate::experiment::distill_config;
use crate::experiment::LoadedExperiment;
use crate::runs::report;
use crate::teacher::obtain_teacher;
use anyhow::{anyhow, bail, Context, Result};
use genas_engine::{checkpoint, Cpu, Model};
use genas_scoring::data::Dataset;
use genas_scoring::distill::{
    full_distill, CheckpointStore, DistillError, FullConfig, FullResult, TeacherTargets,
};
use genas_search::init_seed;
use genas_store::Archive;
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// The record of a finished final distillation, as the archive keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DistilledRecord {
    pub candidate: String,
    pub architecture: String,
    /// Steps asked for (`steps` is fewer when it stopped early).
    #[serde(default)]
    pub requested_steps: u32,
    pub steps: u32,
    pub best_step: u32,
    pub stopped_early: bool,
    pub resumed_from: Option<u32>,
    pub val_ce: f64,
    pub val_bits: f64,
    pub bits_unit: String,
    pub kl_to_teacher: f64,
    pub agreement: f64,
    pub train_loss: Option<f64>,
    pub seconds: f64,
    pub history: Vec<(u32, f64)>,
    pub teacher_key: String,
    /// Validation bits at the top rung of the search, for comparison.
    pub search_val_bits: Option<f64>,
    /// True when this invocation found it already done.
    #[serde(default)]
    pub reused: bool,
    /// Where it trained, when through the PyTorch runner: "cpu" or the GPU's name (absent:
    /// the genas engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The training loss of every step (absent from records written before genas kept them),
    /// what `train.py` of `genas export --with-training` reproduces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub losses: Vec<f64>,
}

pub struct DistillOptions {
    pub archive: PathBuf,
    /// Steps (default: the experiment's `[fidelity] final_steps`).
    pub steps: Option<u32>,
    /// Engine threads (0 = every core).
    pub threads: usize,
}

/// The final distillation's checkpoint, kept in the archive under the run and candidate.
pub(crate) struct ArchiveCheckpoints<'a> {
    pub(crate) archive: &'a Archive,
    pub(crate) run: &'a str,
    /// The candidate id (or an ablation's key: `genas report --ablate-kd`).
    pub(crate) candidate: &'a str,
}

impl CheckpointStore for ArchiveCheckpoints<'_> {
    fn save(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.archive
            .put_checkpoint(self.run, self.candidate, bytes)
            .map_err(|e| e.to_string())
    }
    fn load(&self) -> Result<Option<Vec<u8>>, String> {
        self.archive
            .checkpoint(self.run, self.candidate)
            .map_err(|e| e.to_string())
    }
}

impl ArchiveCheckpoints<'_> {
    /// `full_distill` of `model` from this store's checkpoint (if any), drawing `progress`
    /// with each step done and stopping at the next step once `stop` is set. A checkpoint of
    /// other settings (an unfinished run with another --steps) is dropped, told to `dropped`,
    /// and the training starts over from `fresh()`. The distillation's own error (stopped,
    /// diverged) is returned for the caller to word.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn full_distill(
        &mut self,
        model: &mut Model<Cpu<f32>>,
        fresh: &dyn Fn() -> Result<Model<Cpu<f32>>>,
        teacher: &mut Model<Cpu<f32>>,
        data: &Dataset,
        val: &TeacherTargets,
        cfg: &FullConfig,
        stop: &AtomicBool,
        progress: &dyn Fn(usize),
        dropped: &mut dyn FnMut(&str),
    ) -> Result<Result<FullResult, DistillError>> {
        let on_step = |s: u32, _: f64| {
            progress(s as usize + 1);
            if stop.load(Ordering::SeqCst) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let result = full_distill(model, teacher, data, val, cfg, self, on_step);
        if let Err(DistillError::Foreign(what)) = &result {
            dropped(what);
            self.archive.remove_checkpoint(self.run, self.candidate)?;
            *model = fresh()?;
            return Ok(full_distill(model, teacher, data, val, cfg, self, on_step));
        }
        Ok(result)
    }
}

/// The full-distillation settings for `steps`: evaluate 10 times over the run, checkpoint at
/// every evaluation, stop after 3 evaluations without a new best validation loss.
pub fn final_config(l: &LoadedExperiment, steps: u32) -> FullConfig {
    let every = (steps / 10).max(1);
    FullConfig {
        distill: distill_config(l, steps),
        eval_every: every,
        checkpoint_every: every,
        patience: 3,
    }
}

/// `genas distill RUN CANDIDATE` (`names` = one) or `--front` (`names` = None: every front
/// member in turn). A candidate already distilled for the same number of steps is reported,
/// not redone. `stop` interrupts at the next step; the checkpoint then holds the last saved
/// step and a rerun resumes from it.
pub fn distill(
    o: &DistillOptions,
    run: &str,
    names: Option<&[String]>,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Vec<DistilledRecord>> {
    // Everything that can refuse is checked on a read-only view; the archive is opened
    // writable only when there is something to distill.
    let access = RunAccess::open(&o.archive, run)?;
    let ids: Vec<String> = match names {
        Some(names) => names
            .iter()
            .map(|n| access.candidate(n).map(|c| c.id.clone()))
            .collect::<Result<_>>()?,
        None => {
            let r = report(&access.archive, run)?;
            if r.front.is_empty() {
                bail!("run {run} has no Pareto front yet (see genas show {run})");
            }
            r.front.iter().map(|f| f.id.clone()).collect()
        }
    };
    let l = &access.loaded;
    let steps = o.steps.unwrap_or(l.experiment.fidelity.final_steps);
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let cfg = final_config(l, steps);
    let mut teacher: Option<(Model<Cpu<f32>>, String, TeacherTargets)> = None;
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for id in &ids {
        if let Some(mut rec) = access.archive.distilled::<DistilledRecord>(run, id)? {
            if rec.requested_steps == steps {
                say(&format!(
                    "{id} was already distilled for {steps} steps ({:.4} {}); nothing to do",
                    rec.val_bits, rec.bits_unit
                ));
                rec.reused = true;
                out.push(rec);
                continue;
            }
        }
        pending.push(id.clone());
    }
    if pending.is_empty() {
        return Ok(out);
    }
    genas_exec::ExecutorChoice::check(&l.experiment, &o.archive)?;
    crate::teacher::check_stored_teacher(&access.archive, l)?;
    // Distilled here (Slurm's tasks hold their own): refused before the archive is written.
    let mut memory = if l.experiment.executor.kind == genas_space::ExecutorKind::Slurm {
        None
    } else {
        let students: Vec<genas_space::Architecture> = pending
            .iter()
            .map(|id| access.candidate(id).map(|c| c.architecture.clone()))
            .collect::<Result<_>>()?;
        let memory = crate::memory::distill(l, &students, steps)?;
        memory.check()?;
        Some(memory)
    };
    let access = access.writable(&o.archive)?;
    let l = &access.loaded;
    if l.experiment.executor.kind == genas_space::ExecutorKind::Slurm {
        out.extend(distill_on_slurm(
            &access, o, run, &pending, steps, &cfg, stop, say,
        )?);
        return Ok(out);
    }
    let plan = genas_exec::torch::device_plan(&l.experiment)?;
    if let (Some(note), false) = (plan.note(), pending.is_empty()) {
        say(note);
    }
    if let genas_exec::torch::DevicePlan::Torch {
        device,
        python,
        options,
        gpus,
        slot_memory,
        ..
    } = &plan
    {
        if let Some(m) = memory.take() {
            say(&m.reheld().line());
        }
        let (mut t, outcome) = obtain_teacher(&access.archive, l, false, say, &mut |_, _| {})?;
        // The validation targets and the parent's measurement on the device too.
        let mut pass = genas_exec::torch::RunnerTeacher::new(
            &t,
            &access.archive.path().join("torch").join("teacher-pass"),
            (python, device),
            gpus.first().copied(),
            options,
        )?;
        let targets = TeacherTargets::compute_via(
            &mut t,
            Some(&mut pass),
            &l.data,
            &cfg.distill,
            0,
            Box::<genas_scoring::distill::Held>::default(),
            &mut |_, _| {},
        )
        .map_err(|e| anyhow!("the teacher's validation targets: {e}"))?;
        drop(pass);
        let runner = Runner {
            device,
            python,
            options,
            gpus,
            slot_memory: *slot_memory,
        };
        let teacher = (&t, outcome.record.key.as_str(), &targets);
        out.extend(distill_under_torch(
            &access, o, run, &pending, &cfg, teacher, runner, stop, say,
        )?);
        return Ok(out);
    }
    for (k, id) in pending.iter().enumerate() {
        let cand = access.candidate(id)?;
        if teacher.is_none() {
            // Said as the work starts, with what is held then (the check above counted the
            // read-only view the preflight read, a bound).
            if let Some(m) = memory.take() {
                say(&m.reheld().line());
            }
            let (mut t, outcome) = obtain_teacher(&access.archive, l, false, say, &mut |_, _| {})?;
            let targets = TeacherTargets::compute(&mut t, &l.data, &cfg.distill, 0);
            teacher = Some((t, outcome.record.key, targets));
        }
        let (t, teacher_key, targets) = teacher.as_mut().expect("set above");
        // The student at its initial weights: drawn, or with `[fidelity] init = "teacher"`
        // pruned from the teacher.
        let fresh = |targets: &TeacherTargets| -> Result<Model<Cpu<f32>>> {
            if let Some(model) = access.assembled(cand, o.threads)? {
                Ok(model)
            } else if targets.parent.is_some() {
                let seed = init_seed(l.experiment.teacher.seed, &cand.id);
                Ok(targets.student(&cand.architecture, Cpu::<f32>::new(o.threads), seed))
            } else {
                access.model(cand, Weights::Init, o.threads)
            }
        };
        let mut model = fresh(targets)?;
        let (r, device) = {
            let mut store = ArchiveCheckpoints {
                archive: &access.archive,
                run,
                candidate: id,
            };
            if store.load().map_err(|e| anyhow!(e))?.is_some() {
                say(&format!("{id}: resuming from its checkpoint"));
            }
            say(&format!(
                "[{}/{}] distilling {id} {} for {steps} steps",
                k + 1,
                pending.len(),
                cand.architecture.summary()
            ));
            let label = format!("distill {id}");
            let result = store.full_distill(
                &mut model,
                &|| fresh(targets),
                t,
                &l.data,
                targets,
                &cfg,
                stop,
                &|done| progress(&label, done, steps as usize),
                // An unfinished distillation with other settings (another --steps): this
                // request replaces it.
                &mut |what| {
                    say(&format!(
                        "{id}: dropping the checkpoint of an unfinished distillation ({what}) and starting over"
                    ))
                },
            )?;
            match result {
                Ok(r) => (r, None),
                Err(DistillError::Stopped(step)) => bail!(
                    "stopped at step {step} of {id}; run genas distill {run} {id} again to resume from its last checkpoint"
                ),
                Err(e) => bail!("distilling {id}: {e}"),
            }
        };
        let bytes = checkpoint::to_bytes(
            &model,
            &[
                ("genas.run", run.to_string()),
                ("genas.candidate", id.clone()),
            ],
        )
        .map_err(|e| anyhow!("weights of {id}: {e}"))?;
        out.push(store_distilled(
            &access,
            run,
            id,
            steps,
            r,
            teacher_key,
            &bytes,
            device,
            say,
        )?);
    }
    Ok(out)
}

/// Where the PyTorch runner trains: the device plan's parts.
struct Runner<'a> {
    device: &'a str,
    python: &'a str,
    options: &'a genas_exec::torch::RunnerOptions,
    gpus: &'a [u32],
    slot_memory: Option<u64>,
}

/// The final distillations of `pending` under the PyTorch runner, side by side: one job per
/// member (`ARCHIVE/torch/final/RUN-ID-STEPS`, kept until its result is stored, so a rerun
/// resumes each from its checkpoint), as many at once as there are device slots, each stored
/// as it finishes.
#[allow(clippy::too_many_arguments)]
fn distill_under_torch(
    access: &RunAccess,
    o: &DistillOptions,
    run: &str,
    pending: &[String],
    cfg: &FullConfig,
    (t, teacher_key, targets): (&Model<Cpu<f32>>, &str, &TeacherTargets),
    runner: Runner,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
) -> Result<Vec<DistilledRecord>> {
    let l = &access.loaded;
    let steps = cfg.distill.steps;
    let root = access.archive.path().join("torch");
    let mut jobs = Vec::new();
    for (k, id) in pending.iter().enumerate() {
        let cand = access.candidate(id)?;
        // The student at its initial weights: assembled by a blockwise run, drawn, or with
        // `[fidelity] init = "teacher"` pruned from the teacher.
        let model = if let Some(model) = access.assembled(cand, o.threads)? {
            model
        } else if targets.parent.is_some() {
            let seed = init_seed(l.experiment.teacher.seed, &cand.id);
            targets.student(&cand.architecture, Cpu::<f32>::new(o.threads), seed)
        } else {
            access.model(cand, Weights::Init, o.threads)?
        };
        let jd = root.join("final").join(format!("{run}-{id}-{steps}"));
        say(&format!(
            "[{}/{}] distilling {id} {} for {steps} steps under PyTorch on {}{}",
            k + 1,
            pending.len(),
            cand.architecture.summary(),
            runner.device,
            if jd.join("checkpoint.pt").is_file() {
                ", resuming from its checkpoint"
            } else {
                ""
            }
        ));
        let options = genas_exec::torch::fitted(
            &cand.architecture,
            &cfg.distill,
            l.data.context,
            Some(&t.arch),
            runner.options,
            runner.slot_memory,
        )
        .map_err(|why| anyhow!("distilling {id} under PyTorch: {why}"))?;
        genas_exec::torch::write_final(&model, t, &l.data, targets, cfg, &jd, &options)
            .with_context(|| format!("distilling {id}"))?;
        jobs.push(jd);
    }
    let slots = genas_exec::slots::Slots::new(
        runner.python,
        runner.device,
        runner.gpus,
        l.experiment.search.device_jobs as usize,
        &root.join("slots"),
        Box::new(|line: &str| eprintln!("{line}")),
    )
    .with_context(|| root.display().to_string())?;
    if slots.len() > 1 && jobs.len() > 1 {
        say(&format!(
            "{} distillations at a time, one per device slot",
            slots.len().min(jobs.len())
        ));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let mut out = Vec::new();
    std::thread::scope(|s| -> Result<()> {
        let slots = &slots;
        let jobs = &jobs;
        s.spawn(move || {
            genas_exec::local::side_by_side(
                jobs,
                slots.len(),
                stop,
                &|i, r| tx.send((i, r)).is_ok(),
                &|| (),
                &|_, jd| slots.run(jd),
            )
        });
        for (i, r) in rx {
            let id = &pending[i];
            let r = r
                .map_err(|e| anyhow!(e))
                .with_context(|| format!("distilling {id}"))?;
            let cand = access.candidate(id)?;
            let mut model = Model::new(&cand.architecture, Cpu::<f32>::new(o.threads), 0);
            let (r, _, on) = genas_exec::torch::read_final(&mut model, &jobs[i], &r)
                .with_context(|| format!("distilling {id}"))?;
            let bytes = checkpoint::to_bytes(
                &model,
                &[
                    ("genas.run", run.to_string()),
                    ("genas.candidate", id.clone()),
                ],
            )
            .map_err(|e| anyhow!("weights of {id}: {e}"))?;
            let rec = store_distilled(
                access,
                run,
                id,
                steps,
                r,
                teacher_key,
                &bytes,
                Some(on),
                say,
            )?;
            out.push((i, rec));
        }
        Ok(())
    })?;
    out.sort_by_key(|(i, _)| *i);
    let out: Vec<DistilledRecord> = out.into_iter().map(|(_, r)| r).collect();
    if out.len() < pending.len() {
        bail!(
            "stopped after {} of {} distillations; run genas distill {run} again to resume the others from their checkpoints",
            out.len(),
            pending.len()
        );
    }
    Ok(out)
}

/// Records a finished final distillation of `id` and its weights in the archive.
#[allow(clippy::too_many_arguments)]
fn store_distilled(
    access: &RunAccess,
    run: &str,
    id: &str,
    steps: u32,
    r: FullResult,
    teacher_key: &str,
    weights: &[u8],
    device: Option<String>,
    say: &mut dyn FnMut(&str),
) -> Result<DistilledRecord> {
    let l = &access.loaded;
    let cand = access.candidate(id)?;
    let eval = r
        .result
        .eval
        .context("a finished distillation is evaluated")?;
    let bits = |nats: f64| l.data.bits(nats);
    let rec = DistilledRecord {
        candidate: id.to_string(),
        architecture: cand.architecture.summary(),
        requested_steps: steps,
        steps: r.result.steps,
        best_step: r.best_step,
        stopped_early: r.stopped_early,
        resumed_from: r.resumed_from,
        val_ce: eval.val_ce,
        val_bits: bits(eval.val_ce),
        bits_unit: l.data.bits_unit().to_string(),
        kl_to_teacher: eval.kl_to_teacher,
        agreement: eval.agreement,
        train_loss: r.result.train_loss,
        seconds: r.result.seconds,
        history: r.history,
        teacher_key: teacher_key.to_string(),
        search_val_bits: cand.best_rung().map(|(_, ce)| bits(ce)),
        reused: false,
        device,
        losses: r.losses,
    };
    access.archive.put_distilled(run, id, &rec, weights)?;
    say(&format!(
        "{id}: {:.4} {} after {} steps (best at {}), {:.1} s",
        rec.val_bits, rec.bits_unit, rec.steps, rec.best_step, rec.seconds
    ));
    Ok(rec)
}

/// The final distillations of `ids` as one Slurm job array of long tasks, each checkpointing
/// in the shared directory (a task preempted or out of time resumes when submitted again).
/// Results are stored as they arrive; a coordinator stopped or killed leaves its tasks running,
/// and running `genas distill` again adopts them.
#[allow(clippy::too_many_arguments)]
fn distill_on_slurm(
    access: &RunAccess,
    o: &DistillOptions,
    run: &str,
    ids: &[String],
    steps: u32,
    cfg: &FullConfig,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
) -> Result<Vec<DistilledRecord>> {
    use genas_exec::slurm::{Cluster, FinalJob, FinalOutput, Task};
    let l = &access.loaded;
    let say_line = |m: &str| eprintln!("{m}");
    let cluster = Cluster::of(&l.experiment, &o.archive, &say_line).map_err(anyhow::Error::msg)?;
    let (teacher, outcome) = obtain_teacher(&access.archive, l, false, say, &mut |_, _| {})?;
    let teacher_key = outcome.record.key.clone();
    let inputs = cluster.inputs();
    let tname = genas_scoring::inputs::store_teacher(&inputs, &teacher).map_err(|e| anyhow!(e))?;
    drop(teacher);
    let dname = genas_scoring::inputs::store_data(&inputs, &l.data).map_err(|e| anyhow!(e))?;
    let seed = l.experiment.teacher.seed;
    let tasks: Vec<Task> = ids
        .iter()
        .map(|id| {
            let cand = access.candidate(id)?;
            // A blockwise member starts from its assembled blocks, as it does here.
            let initial = match access.assembled_bytes(id)? {
                Some(bytes) => Some(
                    genas_scoring::inputs::store_bytes(&inputs, &bytes).map_err(|e| anyhow!(e))?,
                ),
                None => None,
            };
            Ok(Task::Final(FinalJob {
                run: run.to_string(),
                candidate: id.clone(),
                architecture: cand.architecture.clone(),
                init_seed: init_seed(seed, id),
                config: cfg.clone(),
                teacher: tname.clone(),
                data: dname.clone(),
                threads: l.experiment.executor.cpus_per_task as usize,
                runner: genas_exec::slurm::node_runner(&l.experiment),
                initial,
            }))
        })
        .collect::<Result<_>>()?;
    let names: Vec<String> = ids
        .iter()
        .map(|id| format!("final distillation of {id}"))
        .collect();
    say(&format!(
        "distilling {} front member(s) for {steps} steps on Slurm through {}",
        ids.len(),
        cluster.shared.display()
    ));
    let mut out = Vec::new();
    let mut failed = Vec::new();
    let mut error = None;
    let finished = cluster
        .run_tasks::<FinalOutput>(&tasks, &names, stop, &mut |i, r| {
            let id = &ids[i];
            let f = match r {
                Ok(f) => f,
                // Failed every try: the others go on.
                Err(why) => {
                    failed.push(format!("{id}: failed on Slurm {why}"));
                    return true;
                }
            };
            let stored = std::fs::read(&f.weights)
                .with_context(|| format!("weights of {id}: {}", f.weights.display()))
                .and_then(|w| {
                    store_distilled(
                        access,
                        run,
                        id,
                        steps,
                        f.result,
                        &teacher_key,
                        &w,
                        f.device,
                        say,
                    )
                });
            match stored {
                Ok(rec) => out.push(rec),
                Err(e) => {
                    error = Some(e);
                    return false;
                }
            }
            true
        })
        .map_err(anyhow::Error::msg)?;
    if let Some(e) = error {
        return Err(e);
    }
    if !finished {
        bail!(
            "stopped; the tasks still queued keep running: run genas distill {run} again to collect them"
        );
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} final distillation(s) failed: {}",
            failed.len(),
            ids.len(),
            failed.join("; ")
        );
    }
    // In the front's order, as a local run gives them.
    out.sort_by_key(|r| ids.iter().position(|id| *id == r.candidate));
    Ok(out)
}

pub fn render_distilled(recs: &[DistilledRecord]) -> String {
    let mut s = format!(
        "{:<17} {:>6} {:>5} {:>12} {:>12} {:>8} {:>6} {:>7}  architecture\n",
        "candidate", "steps", "best", "search bits", "final bits", "KL", "agree", "time s"
    );
    for r in recs {
        s += &format!(
            "{:<17} {:>6} {:>5} {:>12} {:>12.4} {:>8.4} {:>6.3} {:>7.1}  {}\n",
            r.candidate,
            r.steps,
            r.best_step,
            r.search_val_bits.map_or("-".into(), |b| format!("{b:.4}")),
            r.val_bits,
            r.kl_to_teacher,
            r.agreement,
            r.seconds,
            r.architecture
        );
    }
    if let Some(r) = recs.first() {
        s += &format!("(bits are validation {})\n", r.bits_unit);
    }
    s
}
