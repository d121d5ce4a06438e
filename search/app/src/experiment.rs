//! An experiment loaded for a command: the file parsed, its data read (a pretrained teacher's
//! checkpoint opened and checked first), its space built, and the preflights every command
//! runs before it allocates or records anything (vocabulary, training and plan memory).
//! Errors carry their context (file, key) and render as one line.

use crate::format::thousands;
use crate::shipped::ShippedTeacher;
use anyhow::{Context, Result};
use genas_interop::pretrained::Checkpoint;
use genas_scoring::Dataset;
use genas_space::{Architecture, Experiment, SearchSpace};
use std::path::Path;

/// An experiment with its data loaded and its space checked against that data.
pub struct LoadedExperiment {
    pub experiment: Experiment,
    pub data: Dataset,
    pub space: SearchSpace,
    /// `[teacher] pretrained`: the checkpoint, opened and checked (weights not yet read).
    pub pretrained: Option<Checkpoint>,
    /// `[teacher] checkpoint`: the teacher genas trained for this config and data, read and
    /// checked (`shipped::read`).
    pub shipped: Option<ShippedTeacher>,
}

impl LoadedExperiment {
    /// The teacher's architecture at the data's context: the checkpoint's, or `[teacher]`'s.
    pub fn teacher_architecture(&self) -> Result<Architecture> {
        match &self.pretrained {
            Some(ck) => Ok(ck.architecture_at(self.data.context)?),
            None => Ok(genas_scoring::teacher::teacher_architecture(
                &self.experiment.teacher,
                self.data.vocab_size(),
                self.data.context,
            )),
        }
    }
}

/// Reads the experiment file, loads its data and builds its space.
pub fn load(path: &Path) -> Result<LoadedExperiment> {
    load_experiment(Experiment::from_path(path)?)
}

/// Loads the data of a parsed experiment and builds its space.
pub fn load_experiment(experiment: Experiment) -> Result<LoadedExperiment> {
    // A device that cannot be used is refused before any data is read.
    genas_exec::torch::device_plan(&experiment)?;
    // A checkpoint genas cannot compute is refused before the corpus is encoded.
    let pretrained =
        match experiment.teacher_dir() {
            Some(dir) => Some(Checkpoint::open(&dir).with_context(|| {
                format!("{}: [teacher] pretrained", experiment.source.display())
            })?),
            None => None,
        };
    let data = if experiment.tokenizer_path().is_some() {
        // Drawn on stderr when it is a terminal, from the first report on (a cached stream
        // reports nothing).
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "encoding the corpus [{bar:30}] {bytes}/{total_bytes} ETA {eta}",
            )
            .map_err(|e| anyhow::anyhow!("progress bar: {e}"))?
            .progress_chars("=> "),
        );
        let data = Dataset::load_with(
            &experiment,
            teacher_vocab(&experiment)?,
            genas_scoring::tokenize::default_cache_dir().as_deref(),
            &|done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        );
        bar.finish_and_clear();
        data?
    } else {
        Dataset::load(&experiment)?
    };
    if let Some(ck) = &pretrained {
        ck.architecture_at(data.context)
            .with_context(|| format!("{}: [data] seq_len", experiment.source.display()))?;
    }
    check_vocabulary_fits(&experiment, &data)?;
    let mut space = SearchSpace::new(&experiment.space, data.vocab_size(), data.context)
        .with_context(|| format!("{}", experiment.source.display()))?;
    // `genas space check` says what the space lacks of a pretrained teacher's block.
    if let Some(note) = pretrained.as_ref().and_then(|ck| ck.family_note(&space)) {
        space.notes.push(note);
    }
    // A trained teacher's file is checked before anything is written: it must be the teacher
    // this [teacher] config trains on this data.
    let shipped = match experiment.teacher_checkpoint() {
        Some(path) => {
            let cfg = &experiment.teacher;
            let arch =
                genas_scoring::teacher::teacher_architecture(cfg, data.vocab_size(), data.context);
            let key = genas_scoring::teacher::teacher_key(&arch, cfg, &data.fingerprint, cfg.seed);
            let (t, _) = crate::shipped::read(&path, &arch, &key).with_context(|| {
                format!("{}: [teacher] checkpoint", experiment.source.display())
            })?;
            Some(t)
        }
        None => None,
    };
    Ok(LoadedExperiment {
        experiment,
        data,
        space,
        pretrained,
        shipped,
    })
}

/// The vocabulary size of the experiment's pretrained teacher (`vocab_size` in its
/// `config.json`), which a tokenizer's ids must stay below; none without one.
pub fn teacher_vocab(exp: &Experiment) -> Result<Option<u32>> {
    Ok(exp
        .teacher_dir()
        .map(|dir| genas_interop::pretrained::config_vocab_size(&dir))
        .transpose()?)
}

/// The experiment's data set, without a progress bar.
pub fn load_dataset(exp: &Experiment) -> Result<Dataset> {
    Ok(Dataset::load_with(
        exp,
        teacher_vocab(exp)?,
        genas_scoring::tokenize::default_cache_dir().as_deref(),
        &|_, _| {},
    )?)
}

/// Refuses a vocabulary whose embedding alone exceeds `[constraints] max_params` at the
/// space's narrowest width: no student could be drawn, and the reason would be hidden.
fn check_vocabulary_fits(exp: &Experiment, data: &Dataset) -> Result<()> {
    let (Some(max), Some(&d)) = (exp.constraints.max_params, exp.space.d_model.iter().min()) else {
        return Ok(());
    };
    let embedding = u64::from(data.vocab_size()) * u64::from(d);
    if embedding > max {
        anyhow::bail!(
            "{}: the vocabulary of {} tokens takes {} parameters in the embedding alone at the space's narrowest d_model {d}, above [constraints] max_params = {}: raise max_params, or use a smaller vocabulary",
            exp.source.display(),
            thousands(u64::from(data.vocab_size())),
            thousands(embedding),
            thousands(max)
        );
    }
    Ok(())
}

/// Refuses to train `arch` on batches of `batch` when the cost model says it will not fit
/// the memory available: one line instead of an allocation that aborts.
pub fn check_training_memory(
    what: &str,
    arch: &Architecture,
    batch: usize,
    shards: usize,
) -> Result<()> {
    use genas_engine::memory;
    memory::check(
        &format!("training {what} ({}) on batches of {batch}", arch.summary()),
        memory::training_bytes(arch, batch, shards),
    )
    .map_err(anyhow::Error::msg)
}

/// The memory a search, calibration or table of `l` will hold at its peak
/// (`crate::memory::search`: the teacher and its soft targets, then `workers` students side by
/// side, the largest the space holds within the constraints), checked before any work.
pub fn check_plan_memory(
    l: &LoadedExperiment,
    steps: u32,
    workers: usize,
) -> Result<crate::memory::Estimate> {
    let estimate = crate::memory::search(l, steps, workers)?;
    estimate.check()?;
    if let Some(line) = crate::memory::device(l, steps)? {
        eprintln!("{line}");
    }
    Ok(estimate)
}

/// The brief-distillation settings of an experiment's `[fidelity]` at `steps`.
pub fn distill_config(l: &LoadedExperiment, steps: u32) -> genas_scoring::distill::DistillConfig {
    genas_scoring::distill::DistillConfig::of_experiment(&l.experiment, steps)
}
