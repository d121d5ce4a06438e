//! What happens to a run's winners: the final full distillation of front members
//! (`genas distill`, checkpointed in the archive and resumed after a kill), their export to
//! training code (`genas export`, formats in `genas_interop::export`) and sampling from them
//! (`genas sample`: text, or a PNG grid of images).
//!
//! This module opens a run's winners for the three (`distill`, `export`, `sample`).
//! Candidates are named by their id or any unique prefix of it. Weights are either the
//! candidate's initialisation (the seed the search used) or its distilled weights.

pub mod distill;
pub mod export;
pub mod sample;

use crate::experiment::{load_experiment, LoadedExperiment};
use crate::runs::{experiment_of, load_run, RunRecord};
use crate::teacher::obtain_teacher;
use anyhow::{bail, Context, Result};
use genas_engine::{checkpoint, Cpu, Model};
use genas_search::controller::CandidateRecord;
use genas_search::init_seed;
use genas_store::Archive;
use std::collections::BTreeMap;
use std::path::Path;

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

/// The archive key of the weights a blockwise run assembled for candidate `id`: what its
/// final distillation, its KD ablation and `--weights init` start from.
pub fn init_key(id: &str) -> String {
    format!("init-{id}")
}

/// A run opened for its winners: the archive, the run's record and candidates, and its
/// experiment with the data loaded.
pub struct RunAccess {
    pub archive: Archive,
    pub record: RunRecord,
    pub candidates: BTreeMap<String, CandidateRecord>,
    pub loaded: LoadedExperiment,
}

impl RunAccess {
    /// The run on a read-only view of the archive (a copy, never changed, readable even
    /// while a search holds it); a command that stores results makes it [`writable`] once
    /// its checks have passed.
    ///
    /// [`writable`]: RunAccess::writable
    pub fn open(archive_dir: &Path, run: &str) -> Result<RunAccess> {
        let archive = Archive::open_read_only(archive_dir)?;
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
        }
        Ok(RunAccess {
            archive,
            record,
            candidates,
            loaded,
        })
    }

    /// This access made writable, for a command about to store results: the run's teacher
    /// must be the one it ran with, and the archive is opened writable (which rewrites sled's
    /// files) only now, after everything that can refuse was checked on the read-only view,
    /// so a command that fails first leaves the archive as it was.
    pub fn writable(self, archive_dir: &Path) -> Result<RunAccess> {
        let run = self.record.id.clone();
        if let (Some(plan), Some(ck)) = (&self.record.plan, &self.loaded.pretrained) {
            if ck.key != plan.teacher_key {
                bail!(
                    "run {run}: its teacher changed since it ran (key {} now {}): restore the checkpoint it ran with",
                    plan.teacher_key,
                    ck.key
                );
            }
        }
        drop(self.archive);
        let archive = Archive::open_existing(archive_dir)?;
        let (record, _, candidates) = load_run(&archive, &run)?;
        Ok(RunAccess {
            archive,
            record,
            candidates,
            loaded: self.loaded,
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

    /// The checkpoint a blockwise run assembled for candidate `id` ([`init_key`]); none for a
    /// candidate of a search.
    pub fn assembled_bytes(&self, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.archive.weights(&self.record.id, &init_key(id))?)
    }

    /// The initial weights a blockwise run assembled for `cand` from its trained sub-blocks
    /// (what its final distillation and `--weights init` start from); none for a candidate
    /// of a search.
    pub fn assembled(
        &self,
        cand: &CandidateRecord,
        threads: usize,
    ) -> Result<Option<Model<Cpu<f32>>>> {
        let Some(bytes) = self.assembled_bytes(&cand.id)? else {
            return Ok(None);
        };
        Ok(Some(checkpoint::model_from_bytes(
            &cand.architecture,
            Cpu::<f32>::new(threads),
            &bytes,
            &format!("assembled weights of {}", cand.id),
        )?))
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
        if weights == Weights::Init {
            if let Some(model) = self.assembled(cand, threads)? {
                return Ok(model);
            }
        }
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
