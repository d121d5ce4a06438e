//! Distillation's own value: each front member trained on the hard labels alone (α = 1), with
//! the final distillation's steps, batches, learning rate, evaluation and early stopping,
//! against its final distillation.
//!
//! Two arms: `scratch` starts from the drawn initial weights the member's seed gives (no
//! teacher at all); `inherited`, for runs whose students start from the pruned teacher
//! (`[fidelity] init = "teacher"`), starts from those weights (a blockwise member from its
//! assembled blocks, as its final distillation does), so the soft targets' share of
//! the gain is told apart from the inheritance's. Each result is stored in the archive
//! (`run_ablations`) under `CANDIDATE/ARM/STEPS`, checkpointed while it trains (a killed run
//! resumes), and reused by every later report.

use super::effects::mean_interval;
use crate::runs::SearchReport;
use crate::teacher::obtain_teacher;
use crate::winners::distill::{final_config, ArchiveCheckpoints};
use crate::winners::RunAccess;
use anyhow::{bail, Context, Result};
use genas_engine::{checkpoint, Cpu, Model};
use genas_scoring::distill::{DistillError, FullConfig, TeacherTargets};
use genas_search::init_seed;
use genas_space::Architecture;
use genas_space::StudentInit;
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicBool;

/// A finished hard-label training, as the archive keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AblationRecord {
    pub candidate: String,
    pub arm: String,
    #[serde(flatten)]
    pub trained: Trained,
}

/// What a training the report ran ended with (kept flat in the records that hold it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trained {
    pub requested_steps: u32,
    pub steps: u32,
    pub best_step: u32,
    pub val_ce: f64,
    pub val_bits: f64,
    pub bits_unit: String,
    pub kl_to_teacher: f64,
    pub agreement: f64,
    pub seconds: f64,
    pub teacher_key: String,
}

/// One member: its final distillation and each arm's result (None: not trained yet).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub candidate: String,
    pub architecture: String,
    pub steps: u32,
    pub distilled_bits: f64,
    pub arms: Vec<Option<AblationRecord>>,
}

/// A paired comparison over the members: the mean difference in bits (for an arm:
/// distilled − arm, negative when distillation is better; for `inheritance`: inherited −
/// scratch, both on hard labels, negative when the inherited start is better).
#[derive(Clone, Debug, Serialize)]
pub struct ArmSummary {
    pub arm: String,
    pub n: usize,
    pub mean: f64,
    pub interval: Option<(f64, f64)>,
    /// Members where the first of the two ended better (the difference is negative).
    pub better: usize,
}

fn paired(arm: &str, d: &[f64]) -> ArmSummary {
    let (mean, interval) = mean_interval(d);
    ArmSummary {
        arm: arm.to_string(),
        n: d.len(),
        mean,
        interval,
        better: d.iter().filter(|x| **x < 0.0).count(),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Section {
    pub arms: Vec<String>,
    pub rows: Vec<Row>,
    pub summary: Vec<ArmSummary>,
    /// Inherited against scratch, both on hard labels (runs with `init = "teacher"`).
    pub inheritance: Option<ArmSummary>,
    /// Why the table is empty or partial, and how to fill it.
    pub note: Option<String>,
    /// Trainings this report ran (the rest were read from the archive).
    pub trained_now: usize,
}

pub const SCRATCH: &str = "scratch";
pub const INHERITED: &str = "inherited";

/// Where a training starts.
pub(super) enum Start {
    /// Drawn from the seed.
    Drawn,
    /// The teacher pruned to the architecture's shape (where the targets hold a parent).
    Pruned,
    /// A blockwise member's assembled blocks (a checkpoint): what its final distillation
    /// starts from.
    Assembled(Vec<u8>),
}

impl Start {
    /// What `cand` inherits in `access`'s run: its assembled blocks when a blockwise run
    /// made it, else the pruned teacher.
    pub(super) fn inherited(access: &RunAccess, cand: &str) -> Result<Start> {
        Ok(access
            .assembled_bytes(cand)?
            .map_or(Start::Pruned, Start::Assembled))
    }
}

fn arms(access: &RunAccess) -> Vec<String> {
    let mut a = vec![SCRATCH.to_string()];
    if access.loaded.experiment.fidelity.init == StudentInit::Teacher {
        a.push(INHERITED.to_string());
    }
    a
}

fn key(id: &str, arm: &str, steps: u32) -> String {
    format!("{id}/{arm}/{steps}")
}

/// A front member's final distillation: id, architecture, requested steps, bits.
type Distilled = (String, String, u32, f64);

/// The front's final distillations, and the members without one.
pub(super) fn distilled(
    access: &RunAccess,
    search: &SearchReport,
) -> Result<(Vec<Distilled>, Vec<String>)> {
    let run = &access.record.id;
    let (mut done, mut missing) = (Vec::new(), Vec::new());
    for f in &search.front {
        match access.archive.distilled::<serde_json::Value>(run, &f.id)? {
            Some(d) => {
                let steps = d["requested_steps"]
                    .as_u64()
                    .and_then(|s| u32::try_from(s).ok())
                    .with_context(|| format!("run {run}: distillation record of {}", f.id))?;
                let bits = d["val_bits"]
                    .as_f64()
                    .with_context(|| format!("run {run}: distillation record of {}", f.id))?;
                done.push((f.id.clone(), f.architecture.clone(), steps, bits));
            }
            None => missing.push(f.id.clone()),
        }
    }
    Ok((done, missing))
}

fn summarise(arms: &[String], rows: &[Row]) -> Vec<ArmSummary> {
    arms.iter()
        .enumerate()
        .map(|(k, arm)| {
            let d: Vec<f64> = rows
                .iter()
                .filter_map(|r| Some(r.distilled_bits - r.arms[k].as_ref()?.trained.val_bits))
                .collect();
            paired(arm, &d)
        })
        .collect()
}

/// What starting from the pruned teacher is worth on its own: inherited − scratch, both on
/// hard labels.
fn inheritance(arms: &[String], rows: &[Row]) -> Option<ArmSummary> {
    let s = arms.iter().position(|a| a == SCRATCH)?;
    let i = arms.iter().position(|a| a == INHERITED)?;
    let d: Vec<f64> = rows
        .iter()
        .filter_map(|r| {
            Some(r.arms[i].as_ref()?.trained.val_bits - r.arms[s].as_ref()?.trained.val_bits)
        })
        .collect();
    (!d.is_empty()).then(|| paired("inheritance", &d))
}

/// What the archive already holds, trained by an earlier `--ablate-kd`.
pub fn stored(access: &RunAccess, search: &SearchReport) -> Result<Section> {
    let run = &access.record.id;
    let arms = arms(access);
    let (done, missing) = distilled(access, search)?;
    let mut rows = Vec::new();
    let mut absent = 0;
    for (id, arch, steps, bits) in done {
        let mut got = Vec::new();
        for arm in &arms {
            let rec = access
                .archive
                .ablation::<AblationRecord>(run, &key(&id, arm, steps))?;
            absent += usize::from(rec.is_none());
            got.push(rec);
        }
        rows.push(Row {
            candidate: id,
            architecture: arch,
            steps,
            distilled_bits: bits,
            arms: got,
        });
    }
    let note = if !missing.is_empty() {
        Some(format!(
            "{} of {} front members have no final distillation to compare against: genas distill {run} --front, then genas report {run} --ablate-kd.",
            missing.len(),
            search.front.len()
        ))
    } else if absent > 0 {
        Some(format!(
            "{absent} trainings on hard labels alone are missing: genas report {run} --ablate-kd runs them (stored in the archive, reused afterwards)."
        ))
    } else {
        None
    };
    Ok(Section {
        summary: summarise(&arms, &rows),
        inheritance: inheritance(&arms, &rows),
        arms,
        rows,
        note,
        trained_now: 0,
    })
}

/// Trains what the archive does not hold yet, then reads it all back.
pub fn run(
    access: &RunAccess,
    search: &SearchReport,
    threads: usize,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Section> {
    let run = &access.record.id;
    let (done, missing) = distilled(access, search)?;
    if !missing.is_empty() {
        bail!(
            "--ablate-kd compares against the final distillation, which {} of {} front members lack: run genas distill {run} --front first",
            missing.len(),
            search.front.len()
        );
    }
    let arms = arms(access);
    let l = &access.loaded;
    let todo: Vec<(String, u32, String)> = done
        .iter()
        .flat_map(|(id, _, steps, _)| arms.iter().map(move |a| (id.clone(), *steps, a.clone())))
        .filter(|(id, steps, arm)| {
            !matches!(
                access
                    .archive
                    .ablation::<serde_json::Value>(run, &key(id, arm, *steps)),
                Ok(Some(_))
            )
        })
        .collect();
    if todo.is_empty() {
        say("the hard-label trainings are stored: reusing them");
        return stored(access, search);
    }
    let mut trainer = Trainer::new(access, threads, stop, progress, "--ablate-kd", say)?;
    let mut targets: Option<(u32, TeacherTargets)> = None;
    for (k, (id, steps, arm)) in todo.iter().enumerate() {
        let cand = access.candidate(id)?;
        let mut cfg = final_config(l, *steps);
        cfg.distill.alpha = 1.0;
        if targets.as_ref().is_none_or(|(s, _)| s != steps) {
            targets = Some((
                *steps,
                TeacherTargets::compute(&mut trainer.teacher, &l.data, &cfg.distill, 0),
            ));
        }
        let (_, val) = targets.as_ref().expect("set above");
        let k_ = key(id, arm, *steps);
        say(&format!(
            "[{}/{}] training {id} on hard labels alone ({arm} initial weights) for {steps} steps{}",
            k + 1,
            todo.len(),
            trainer.resuming(&k_)?
        ));
        let start = if arm == INHERITED {
            Start::inherited(access, id)?
        } else {
            Start::Drawn
        };
        let trained = trainer.train(
            &k_,
            &cand.architecture,
            start,
            init_seed(l.experiment.teacher.seed, &cand.id),
            val,
            &cfg,
        )?;
        let rec = AblationRecord {
            candidate: id.clone(),
            arm: arm.clone(),
            trained,
        };
        access.archive.put_ablation(run, &k_, &rec)?;
        say(&format!(
            "{id} ({arm}, hard labels): {:.4} {} after {} steps, {:.1} s",
            rec.trained.val_bits, rec.trained.bits_unit, rec.trained.steps, rec.trained.seconds
        ));
    }
    let mut section = stored(access, search)?;
    section.trained_now = todo.len();
    Ok(section)
}

/// What the report's trainings share (the hard-label ablation's and the baselines'): the run,
/// the teacher, the engine's threads, how to stop and what resumes a stopped training.
pub(super) struct Trainer<'a> {
    pub access: &'a RunAccess,
    pub teacher: Model<Cpu<f32>>,
    pub teacher_key: String,
    pub threads: usize,
    pub stop: &'a AtomicBool,
    pub progress: &'a (dyn Fn(&str, usize, usize) + Sync),
    /// The command that resumes a stopped training.
    pub rerun: String,
}

impl<'a> Trainer<'a> {
    /// The run's teacher (read from the archive) with what the trainings of `genas report RUN
    /// FLAG` share.
    pub(super) fn new(
        access: &'a RunAccess,
        threads: usize,
        stop: &'a AtomicBool,
        progress: &'a (dyn Fn(&str, usize, usize) + Sync),
        flag: &str,
        say: &mut dyn FnMut(&str),
    ) -> Result<Trainer<'a>> {
        let (teacher, outcome) =
            obtain_teacher(&access.archive, &access.loaded, false, say, &mut |_, _| {})?;
        Ok(Trainer {
            access,
            teacher,
            teacher_key: outcome.record.key,
            threads,
            stop,
            progress,
            rerun: format!("genas report {} {flag}", access.record.id),
        })
    }

    /// ", resuming from its checkpoint" when the training `key` has one, else nothing.
    pub(super) fn resuming(&self, key: &str) -> Result<&'static str> {
        let held = self
            .access
            .archive
            .checkpoint(&self.access.record.id, key)?;
        Ok(if held.is_some() {
            ", resuming from its checkpoint"
        } else {
            ""
        })
    }

    /// Trains `arch` with `cfg` against `val` from `start` (the pruned teacher needs `val` to
    /// hold a parent; a drawn model is `seed`'s draw), checkpointed in the archive under `key`
    /// so a stopped training resumes where it was, and says what it ended with.
    /// The caller stores the record.
    pub(super) fn train(
        &mut self,
        key: &str,
        arch: &Architecture,
        start: Start,
        seed: u64,
        val: &TeacherTargets,
        cfg: &FullConfig,
    ) -> Result<Trained> {
        let access = self.access;
        let run = &access.record.id;
        let l = &access.loaded;
        let threads = self.threads;
        let fresh = || -> Result<Model<Cpu<f32>>> {
            Ok(match &start {
                Start::Pruned => val.student(arch, Cpu::<f32>::new(threads), seed),
                Start::Drawn => Model::new(arch, Cpu::<f32>::new(threads), seed),
                Start::Assembled(bytes) => checkpoint::model_from_bytes(
                    arch,
                    Cpu::<f32>::new(threads),
                    bytes,
                    &format!("assembled weights of {key}"),
                )?,
            })
        };
        let mut store = ArchiveCheckpoints {
            archive: &access.archive,
            run,
            candidate: key,
        };
        let label: String = key.chars().take(40).collect();
        let steps = cfg.distill.steps as usize;
        let progress = self.progress;
        let mut model = fresh()?;
        let result = store.full_distill(
            &mut model,
            &fresh,
            &mut self.teacher,
            &l.data,
            val,
            cfg,
            self.stop,
            &|done| progress(&label, done, steps),
            &mut |_| {},
        )?;
        let r = match result {
            Ok(r) => r,
            Err(DistillError::Stopped(step)) => bail!(
                "stopped at step {step} of the training {key}; {} resumes it from its last checkpoint",
                self.rerun
            ),
            Err(e) => bail!("training {key}: {e}"),
        };
        let eval = r.result.eval.context("a finished training is evaluated")?;
        Ok(Trained {
            requested_steps: cfg.distill.steps,
            steps: r.result.steps,
            best_step: r.best_step,
            val_ce: eval.val_ce,
            val_bits: l.data.bits(eval.val_ce),
            bits_unit: l.data.bits_unit().to_string(),
            kl_to_teacher: eval.kl_to_teacher,
            agreement: eval.agreement,
            seconds: r.result.seconds,
            teacher_key: self.teacher_key.clone(),
        })
    }
}
