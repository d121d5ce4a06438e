//! What happens to a run's winners: the final full distillation of front members
//! (`genas distill`, checkpointed in the archive and resumed after a kill), their export to
//! training code (`genas export`, formats in `genas_interop::export`) and sampling from them
//! (`genas sample`: text, or a PNG grid of images).
//!
//! Candidates are named by their id or any unique prefix of it. Weights are either the
//! candidate's initialisation (the seed the search used) or its distilled weights.

use crate::commands::{load_experiment, Loaded};
use crate::run::{experiment_of, load_run, report, RunRecord};
use crate::scoring::{distill_config, obtain_teacher};
use anyhow::{anyhow, bail, Context, Result};
use genas_engine::{checkpoint, Cpu, Generator, Model, SampleConfig};
use genas_interop::export::{self, Check, Export, Format, Tensor, Vocab, Written};
use genas_scoring::data::{dequantise, Dataset, Split, Vocabulary};
use genas_scoring::distill::{
    full_distill, CheckpointStore, DistillError, FullConfig, FullResult, TeacherTargets,
};
use genas_search::controller::CandidateRecord;
use genas_search::init_seed;
use genas_space::{DataKind, Rng};
use genas_store::Archive;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Which weights of a candidate to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// As initialised for the search (seed from the run's seed and the architecture id).
    Init,
    /// From `genas distill`.
    Distilled,
}

impl Weights {
    pub fn name(self) -> &'static str {
        match self {
            Weights::Init => "init",
            Weights::Distilled => "distilled",
        }
    }
}

/// A run opened for its winners: the archive, the run's record and candidates, and its
/// experiment with the data loaded.
pub struct RunAccess {
    pub archive: Archive,
    pub record: RunRecord,
    pub candidates: BTreeMap<String, CandidateRecord>,
    pub loaded: Loaded,
}

impl RunAccess {
    /// `writable` for a command that stores results (distill); otherwise the archive is
    /// read from a copy and never changed, even while a search holds it.
    pub fn open(archive_dir: &Path, run: &str, writable: bool) -> Result<RunAccess> {
        let archive = if writable {
            Archive::open_existing(archive_dir)?
        } else {
            Archive::open_read_only(archive_dir)?
        };
        let (record, _, candidates) = load_run(&archive, run)?;
        let loaded = load_experiment(experiment_of(&record)?)?;
        if let Some(plan) = &record.plan {
            if plan.data_fingerprint != loaded.data.fingerprint {
                bail!(
                    "run {run}: its data changed since it ran (fingerprint {} now {})",
                    plan.data_fingerprint,
                    loaded.data.fingerprint
                );
            }
            // Only distillation reads the teacher; export and sample do not need it unchanged.
            let changed = loaded
                .pretrained
                .as_ref()
                .filter(|ck| ck.key != plan.teacher_key);
            if let Some(ck) = changed.filter(|_| writable) {
                bail!(
                    "run {run}: its teacher changed since it ran (key {} now {}): restore the checkpoint it ran with",
                    plan.teacher_key,
                    ck.key
                );
            }
        }
        Ok(RunAccess {
            archive,
            record,
            candidates,
            loaded,
        })
    }

    /// The candidate whose id is or starts with `name`.
    pub fn candidate(&self, name: &str) -> Result<&CandidateRecord> {
        let run = &self.record.id;
        let matches: Vec<&CandidateRecord> = self
            .candidates
            .values()
            .filter(|c| c.id.starts_with(name))
            .collect();
        match matches.as_slice() {
            [one] if !name.is_empty() => Ok(one),
            [] | [_] => bail!("run {run} has no candidate {name:?} (see genas show {run})"),
            many => bail!(
                "{name:?} names {} candidates of run {run} ({}, ...): give more of the id",
                many.len(),
                many.iter()
                    .take(3)
                    .map(|c| c.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The candidate's network with the chosen weights (f32 engine, `threads` threads, 0 =
    /// every core).
    pub fn model(
        &self,
        cand: &CandidateRecord,
        weights: Weights,
        threads: usize,
    ) -> Result<Model<Cpu<f32>>> {
        let seed = init_seed(self.loaded.experiment.teacher.seed, &cand.id);
        use genas_engine::memory;
        memory::check(
            &format!("candidate {}", cand.id),
            memory::inference_bytes(&cand.architecture, 8),
        )
        .map_err(anyhow::Error::msg)?;
        let exp = &self.loaded.experiment;
        let mut model =
            if weights == Weights::Init && exp.fidelity.init == genas_space::StudentInit::Teacher {
                // The initial weights the run's students started from: pruned from its teacher.
                let (mut t, _) = obtain_teacher(
                    &self.archive,
                    &self.loaded,
                    false,
                    &mut |_| {},
                    &mut |_, _| {},
                )?;
                let parent =
                    genas_scoring::distill::parent_of(&mut t, &self.loaded.data, exp.teacher.seed);
                let initial = parent.initial(&cand.architecture);
                Model::with_initial(&cand.architecture, Cpu::<f32>::new(threads), seed, initial)
            } else {
                Model::new(&cand.architecture, Cpu::<f32>::new(threads), seed)
            };
        if weights == Weights::Distilled {
            let run = &self.record.id;
            let bytes = self.archive.weights(run, &cand.id)?.with_context(|| {
                format!(
                    "candidate {} of run {run} has no distilled weights: run genas distill {run} {} first, or pass --weights init",
                    cand.id, cand.id
                )
            })?;
            checkpoint::from_bytes(&mut model, &bytes, &format!("weights of {}", cand.id))?;
        }
        Ok(model)
    }
}

// ---------------------------------------------------------------------------------------------
// Final distillation.

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
pub fn final_config(l: &Loaded, steps: u32) -> FullConfig {
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
    let access = RunAccess::open(&o.archive, run, true)?;
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
        if let Some(done) = access.archive.distilled(run, id)? {
            let mut rec: DistilledRecord = serde_json::from_value(done)
                .with_context(|| format!("run {run}: unreadable distillation of {id}"))?;
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
    if l.experiment.executor.kind == genas_space::ExecutorKind::Slurm && !pending.is_empty() {
        out.extend(distill_on_slurm(
            &access, o, run, &pending, steps, &cfg, stop, say,
        )?);
        return Ok(out);
    }
    let plan = genas_exec::torch::device_plan(&l.experiment)?;
    if let (Some(note), false) = (plan.note(), pending.is_empty()) {
        say(note);
    }
    for (k, id) in pending.iter().enumerate() {
        let cand = access.candidate(id)?;
        if teacher.is_none() {
            let (mut t, outcome) = obtain_teacher(&access.archive, l, false, say, &mut |_, _| {})?;
            let targets = TeacherTargets::compute(&mut t, &l.data, &cfg.distill, 0);
            teacher = Some((t, outcome.record.key, targets));
        }
        let (t, teacher_key, targets) = teacher.as_mut().expect("set above");
        // The student at its initial weights: drawn, or with `[fidelity] init = "teacher"`
        // pruned from the teacher.
        let fresh = |targets: &TeacherTargets| -> Result<Model<Cpu<f32>>> {
            if targets.parent.is_some() {
                let seed = init_seed(l.experiment.teacher.seed, &cand.id);
                Ok(targets.student(&cand.architecture, Cpu::<f32>::new(o.threads), seed))
            } else {
                access.model(cand, Weights::Init, o.threads)
            }
        };
        let mut model = fresh(targets)?;
        let (r, device) = if let genas_exec::torch::DevicePlan::Torch { device, python, .. } = &plan
        {
            // Under PyTorch: the runner checkpoints in its job directory, and a rerun of the
            // same request resumes from there.
            let jd = access
                .archive
                .path()
                .join("torch")
                .join("final")
                .join(format!("{run}-{id}-{steps}"));
            say(&format!(
                "[{}/{}] distilling {id} {} for {steps} steps under PyTorch on {device}{}",
                k + 1,
                pending.len(),
                cand.architecture.summary(),
                if jd.join("checkpoint.pt").is_file() {
                    ", resuming from its checkpoint"
                } else {
                    ""
                }
            ));
            let (r, _, on) = genas_exec::torch::final_distill(
                &mut model, t, &l.data, targets, &cfg, &jd, python, device,
            )
            .with_context(|| format!("distilling {id}"))?;
            (r, Some(on))
        } else {
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
    };
    access
        .archive
        .put_distilled(run, id, &serde_json::to_value(&rec)?, weights)?;
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
            Ok(Task::Final(FinalJob {
                run: run.to_string(),
                candidate: id.clone(),
                architecture: cand.architecture.clone(),
                init_seed: init_seed(seed, id),
                config: cfg.clone(),
                teacher: tname.clone(),
                data: dname.clone(),
                threads: l.experiment.executor.cpus_per_task as usize,
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
                    failed.push(format!("{id}: {why}"));
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
                        None,
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

// ---------------------------------------------------------------------------------------------
// Export.

/// Sequences in the check batch.
const CHECK_SEQUENCES: usize = 2;
/// Characters (or bytes) of the tokenizer round-trip sample.
const TEXT_SAMPLE: usize = 400;

fn export_vocab(v: &Vocabulary) -> Result<Vocab> {
    Ok(match v {
        Vocabulary::Chars { chars } => Vocab::Chars(chars.clone()),
        Vocabulary::Bytes => Vocab::Bytes,
        Vocabulary::Pixels { levels } => Vocab::Pixels { levels: *levels },
        Vocabulary::Hf { tokenizer, .. } => Vocab::Tokenizer {
            json: tokenizer.file_bytes().to_vec(),
            sha256: tokenizer.hash.clone(),
            entries: tokenizer.size,
        },
        Vocabulary::Ids { .. } => bail!("ids that stand for nothing have no vocabulary to export"),
    })
}

/// The check batch (the first validation sequences, whole context) and the logits of `model`'s
/// weights for it, computed in f64 so that the reference is as exact as the weights are.
fn check_batch(data: &Dataset, model: &Model<Cpu<f32>>) -> Check {
    let batch = data
        .eval_batches(Split::Validation, CHECK_SEQUENCES, CHECK_SEQUENCES)
        .swap_remove(0);
    let mut exact = Model::new(&model.arch, Cpu::<f64>::new(1), 0);
    for i in 0..model.params.len() {
        exact.set_weights(i, &model.weights(i));
    }
    exact.forward(&batch.inputs, None, None, (batch.b, batch.t), false);
    Check {
        tokens: batch.inputs.chunks(batch.t).map(<[u32]>::to_vec).collect(),
        logits: exact.logits(),
    }
}

/// A validation text and its tokens, when the vocabulary is text and they round-trip.
fn text_sample(data: &Dataset) -> Option<(String, Vec<u32>)> {
    let tokens: Vec<u32> = data.validation.iter().take(TEXT_SAMPLE).copied().collect();
    let text = match &data.vocab {
        Vocabulary::Chars { chars } => {
            // A validation character the training split lacks has no token of its own.
            if tokens.iter().any(|&t| t as usize >= chars.len()) {
                return None;
            }
            data.vocab.decode(&tokens)
        }
        Vocabulary::Bytes => {
            let bytes: Vec<u8> = tokens.iter().map(|&t| t as u8).collect();
            String::from_utf8(bytes).ok()?
        }
        Vocabulary::Hf { .. } => {
            // Whole tokens decode to text that encodes back to them only sometimes (a cut
            // through a multi-byte character, merges across the cut): keep the sample only
            // when it round-trips.
            let text = data.vocab.decode(&tokens);
            match &data.vocab {
                Vocabulary::Hf { tokenizer, .. }
                    if tokenizer.encode_one(&text).ok().as_ref() == Some(&tokens) =>
                {
                    text
                }
                _ => return None,
            }
        }
        Vocabulary::Pixels { .. } | Vocabulary::Ids { .. } => return None,
    };
    Some((text, tokens))
}

/// `genas export RUN CANDIDATE --format F --out DIR [--weights W] [--densify]`.
pub fn export_candidate(
    archive_dir: &Path,
    run: &str,
    name: &str,
    format: Format,
    out: &Path,
    weights: Weights,
    densify: bool,
) -> Result<Written> {
    let access = RunAccess::open(archive_dir, run, false)?;
    let cand = access.candidate(name)?;
    let model = access.model(cand, weights, 1)?;
    let distilled = access.archive.distilled(run, &cand.id)?;
    let record = serde_json::json!({
        "run": run,
        "experiment": access.record.name,
        "candidate": cand.id,
        "summary": cand.architecture.summary(),
        "weights": weights.name(),
        "bits_unit": access.loaded.data.bits_unit(),
        "cost": cand.cost,
        "proxies": cand.proxies,
        "screen_score": cand.screen_score,
        "rungs": cand.rungs,
        "latency_ms_per_token": cand.latency_ms_per_token,
        "distilled": distilled,
    });
    export_model(&model, &access.loaded.data, record, format, out, densify)
}

/// Exports `model` (trained on `data`) as `format` into `out`, with `record` as
/// `candidate.json` and the check batch drawn from `data`'s validation split.
/// Every parameter of `model` (f32, with its mask) as the export formats take them.
pub fn model_tensors(model: &Model<Cpu<f32>>) -> Vec<Tensor> {
    model
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| Tensor {
            name: p.name.clone(),
            shape: p.shape.clone(),
            data: model.weights(i).iter().map(|&x| x as f32).collect(),
            mask: model.mask(i).map(|m| m.iter().map(|&x| x as f32).collect()),
        })
        .collect()
}

pub fn export_model(
    model: &Model<Cpu<f32>>,
    data: &Dataset,
    record: serde_json::Value,
    format: Format,
    out: &Path,
    densify: bool,
) -> Result<Written> {
    let tensors = model_tensors(model);
    let check = check_batch(data, model);
    let vocab = export_vocab(&data.vocab)?;
    let text = text_sample(data);
    // The check's logits are the original network's: densifying must not change them.
    let (arch, tensors, notes) = if densify {
        export::densify(&model.arch, &tensors)?
    } else {
        (model.arch.clone(), tensors, Vec::new())
    };
    let e = Export {
        arch: &arch,
        tensors: &tensors,
        vocab: &vocab,
        check: &check,
        text: text.as_ref().map(|(s, t)| (s.as_str(), t.as_slice())),
        record,
    };
    let mut w = export::export(format, &e, out)?;
    w.notes.splice(0..0, notes);
    Ok(w)
}

pub fn render_export(w: &Written) -> String {
    let mut s = format!(
        "{} export written to {}{}: {}\n",
        w.format,
        w.dir.display(),
        w.hf_class.map(|c| format!(" ({c})")).unwrap_or_default(),
        w.files.join(", ")
    );
    for n in &w.notes {
        s += &format!("note: {n}\n");
    }
    if w.files.iter().any(|f| f == "genas_check.py") {
        s += &format!(
            "verify it with: python3 {}\n",
            w.dir.join("genas_check.py").display()
        );
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Sampling.

pub struct SampleOptions {
    pub n: usize,
    /// Tokens per text sample (images: always one whole image).
    pub length: usize,
    pub temperature: f64,
    pub top_k: Option<usize>,
    /// Text the samples continue (text experiments; default a newline).
    pub prompt: Option<String>,
    pub seed: u64,
    pub weights: Weights,
    /// Text: write the samples here instead of printing them. Images: the PNG (default
    /// `samples-RUN-ID.png`).
    pub out: Option<PathBuf>,
}

#[derive(Serialize)]
pub struct Samples {
    pub run: String,
    pub candidate: String,
    pub weights: &'static str,
    /// Text samples (prompt included).
    pub texts: Vec<String>,
    /// Where the image grid or the text went, if written.
    pub file: Option<PathBuf>,
    pub ms_per_token: f64,
}

/// Tokens of `prompt` under a text vocabulary.
fn encode(v: &Vocabulary, prompt: &str) -> Result<Vec<u32>> {
    match v {
        Vocabulary::Chars { chars } => prompt
            .chars()
            .map(|c| {
                chars
                    .iter()
                    .position(|&x| x == c)
                    .map(|i| i as u32)
                    .ok_or_else(|| anyhow!("the prompt's character {c:?} is not in the vocabulary"))
            })
            .collect(),
        Vocabulary::Bytes => Ok(prompt.bytes().map(u32::from).collect()),
        Vocabulary::Hf { tokenizer, .. } => tokenizer.encode_one(prompt).map_err(|e| anyhow!(e)),
        Vocabulary::Pixels { .. } => bail!("image experiments take no --prompt"),
        Vocabulary::Ids { .. } => bail!("ids that stand for nothing take no --prompt"),
    }
}

/// `genas sample RUN CANDIDATE`.
pub fn sample(archive_dir: &Path, run: &str, name: &str, o: &SampleOptions) -> Result<Samples> {
    let access = RunAccess::open(archive_dir, run, false)?;
    let cand = access.candidate(name)?;
    let model = access.model(cand, o.weights, 1)?;
    let data = &access.loaded.data;
    let cfg = SampleConfig {
        temperature: o.temperature,
        top_k: o.top_k,
    };
    if !(o.temperature >= 0.0 && o.temperature.is_finite()) || o.n == 0 {
        bail!("--temperature must be a number ≥ 0 and --n at least 1");
    }
    let mut gen = Generator::new(&model);
    let mut rng = Rng::seed_from_u64(o.seed);
    let start = std::time::Instant::now();
    let mut generated = 0usize;
    let mut out = Samples {
        run: run.to_string(),
        candidate: cand.id.clone(),
        weights: o.weights.name(),
        texts: Vec::new(),
        file: None,
        ms_per_token: 0.0,
    };
    match (data.kind, &data.vocab) {
        (DataKind::Image, Vocabulary::Pixels { levels }) => {
            let side = (data.context as f64).sqrt().round() as usize;
            if side * side != data.context as usize {
                bail!("the context {} is not a square image", data.context);
            }
            let images: Vec<Vec<u32>> = (0..o.n)
                .map(|_| {
                    generated += side * side;
                    gen.generate(&[*levels], side * side, cfg, &mut rng)
                })
                .collect();
            let png = image_grid(&images, side, *levels)?;
            let path = o
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("samples-{run}-{}.png", cand.id)));
            std::fs::write(&path, png)
                .with_context(|| format!("cannot write {}", path.display()))?;
            out.file = Some(path);
        }
        _ => {
            let prompt = encode(&data.vocab, o.prompt.as_deref().unwrap_or("\n"))?;
            if prompt.is_empty() {
                bail!("--prompt is empty");
            }
            for _ in 0..o.n {
                let tokens = gen.generate(&prompt, o.length, cfg, &mut rng);
                generated += tokens.len();
                let mut all = prompt.clone();
                all.extend(tokens);
                out.texts.push(data.vocab.decode(&all));
            }
            if let Some(path) = &o.out {
                std::fs::write(path, out.texts.join("\n\n----\n\n") + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
                out.file = Some(path.clone());
            }
        }
    }
    out.ms_per_token = start.elapsed().as_secs_f64() * 1e3 / generated.max(1) as f64;
    Ok(out)
}

/// Pixels per image pixel, and gap between images, in the PNG grid.
const ZOOM: usize = 4;
const GAP: usize = 4;

/// Images (gray levels, raster order) side by side in a near-square grid, as PNG.
pub(crate) fn image_grid(images: &[Vec<u32>], side: usize, levels: u32) -> Result<Vec<u8>> {
    use resvg::tiny_skia::{Pixmap, PremultipliedColorU8};
    let cols = (images.len() as f64).sqrt().ceil() as usize;
    let rows = images.len().div_ceil(cols);
    let cell = side * ZOOM + GAP;
    let (w, h) = (cols * cell + GAP, rows * cell + GAP);
    let mut pm = Pixmap::new(w as u32, h as u32).context("image grid too large")?;
    let white = PremultipliedColorU8::from_rgba(255, 255, 255, 255).expect("opaque");
    pm.pixels_mut().fill(white);
    for (k, img) in images.iter().enumerate() {
        let (x0, y0) = (GAP + (k % cols) * cell, GAP + (k / cols) * cell);
        for (p, &tok) in img.iter().enumerate() {
            // A begin-of-image token sampled in place of a pixel is drawn black.
            let v = if tok < levels {
                dequantise(tok, levels)
            } else {
                0
            };
            let c = PremultipliedColorU8::from_rgba(v, v, v, 255).expect("opaque");
            let (px, py) = (x0 + (p % side) * ZOOM, y0 + (p / side) * ZOOM);
            for dy in 0..ZOOM {
                let row = (py + dy) * w;
                pm.pixels_mut()[row + px..row + px + ZOOM].fill(c);
            }
        }
    }
    pm.encode_png().map_err(|e| anyhow!("PNG encoding: {e}"))
}

pub fn render_samples(s: &Samples) -> String {
    let mut out = String::new();
    if s.texts.is_empty() || s.file.is_some() {
        out += &format!(
            "samples of {} ({} weights) written to {}\n",
            s.candidate,
            s.weights,
            s.file
                .as_ref()
                .map_or("-".into(), |p| p.display().to_string())
        );
    } else {
        for (i, t) in s.texts.iter().enumerate() {
            out += &format!(
                "--- sample {} of {} ({} weights) ---\n{t}\n",
                i + 1,
                s.candidate,
                s.weights
            );
        }
    }
    out += &format!("{:.3} ms/token\n", s.ms_per_token);
    out
}
