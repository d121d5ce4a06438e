//! Runs as they are made: `genas search` starts one, `genas resume` continues it, and `genas
//! front` prints and plots one. Before a run starts, its preflight checks the plan's memory;
//! then the teacher is obtained, the proxies calibrated, the executor chosen and the
//! controller driven until the budget is spent or the user stops it.
use crate::calibration::calibrate_with;
use crate::experiment::distill_config;
use crate::experiment::{load_experiment, LoadedExperiment};
use crate::runs::{experiment_of, load_run, read_run, report, RunRecord, SearchReport};
use crate::teacher::{obtain_teacher, TeacherOutcome};
use anyhow::{bail, Context, Result};
use genas_scoring::calibrate::Ensemble;
use genas_scoring::distill::TeacherTargets;
use genas_search::controller::exhaustive_order;
use genas_search::controller::{CandidateRecord, Controller, Outcome, RunContext, RunPlan};
use genas_space::{Experiment, Rng};
use genas_store::Archive;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

pub struct SearchOptions {
    pub archive: PathBuf,
    pub seed: Option<u64>,
    /// Candidates evaluated side by side (0 = the experiment's search.threads, then every core).
    pub threads: usize,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `genas search`: creates a run and drives it.
pub fn search(
    file: &Path,
    o: &SearchOptions,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<SearchReport> {
    let text = genas_space::files::read_text_bounded(file, genas_space::MAX_EXPERIMENT_BYTES)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let mut exp = Experiment::from_path(file)?;
    if let Some(s) = o.seed {
        exp.search.seed = s;
    }
    // Load and check before creating the run, so bad data or a plan that cannot work never
    // leaves a run behind.
    let l = load_experiment(exp.clone())?;
    if !l.experiment.search.mode.is_search() {
        crate::blockwise::check(&l)?;
    }
    let space_plan = preflight(&l, o.threads, &o.archive)?;
    check_stored_records(&o.archive, &l)?;
    let archive = Archive::open(&o.archive)?;
    // Absolute, so that `genas resume`, `distill`, `sample` and `report` find the run's data
    // from any working directory, not only from the one the search started in.
    let base_dir = if exp.base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        exp.base_dir.clone()
    };
    let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
    // The run is created once everything it needs is in hand (the teacher, the calibration,
    // the executor): a search that cannot start leaves no run behind.
    let mut record = RunRecord {
        id: String::new(),
        name: exp.name.clone(),
        experiment_toml: text,
        source: file.to_path_buf(),
        base_dir,
        seed: exp.search.seed,
        created_unix_s: now_unix(),
        status: "running".into(),
        wall_s: 0.0,
        plan: None,
        baseline_of: None,
        defaults: crate::runs::DEFAULTS,
    };
    drive(
        &archive,
        &mut record,
        Some((l, space_plan)),
        o.threads,
        stop,
        say,
        progress,
    )
}

/// `genas resume`: continues a run where it stopped.
pub fn resume(
    run: &str,
    o: &SearchOptions,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<SearchReport> {
    // A writable open rewrites sled's files: a resume that cannot proceed (no such run) is
    // found out on a read-only view first, so it leaves the archive as it was.
    read_run(&Archive::open_read_only(&o.archive)?, run)?;
    let archive = Archive::open_existing(&o.archive)?;
    let mut record = read_run(&archive, run)?;
    say(&format!("resuming run {run} of {}", record.name));
    drive(&archive, &mut record, None, o.threads, stop, say, progress)
}

/// The records of an existing archive a search of `l` will read (its teacher and its
/// calibration), read first on a read-only view: one this genas cannot use fails the search
/// before the writable open, which rewrites sled's files.
fn check_stored_records(path: &Path, l: &LoadedExperiment) -> Result<()> {
    let Some(archive) = crate::teacher::existing_read_only(path)? else {
        return Ok(());
    };
    crate::teacher::check_stored_teacher(&archive, l)?;
    let key = crate::teacher::expected_teacher_key(l);
    let last = l
        .experiment
        .fidelity
        .rung_steps
        .iter()
        .copied()
        .max()
        .unwrap_or(1);
    let calibration = crate::calibration::calibration_key(l, &distill_config(l, last), &key)?;
    archive.calibration::<serde_json::Value>(&calibration)?;
    Ok(())
}

/// A run resumes only with the teacher it started with (a pretrained checkpoint's files can
/// change under it, and its soft targets with them).
fn teacher_unchanged(run: &str, started: &str, now: &str) -> Result<()> {
    if started != now {
        bail!(
            "run {run}: its teacher changed since it started (key {started} now {now}): restore the checkpoint it started with, or start a new run"
        );
    }
    Ok(())
}

fn drive(
    archive: &Archive,
    record: &mut RunRecord,
    loaded: Option<(LoadedExperiment, SpacePlan)>,
    threads: usize,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<SearchReport> {
    let start = std::time::Instant::now();
    let (l, space_plan) = match loaded {
        Some(loaded) => loaded,
        None => {
            let l = load_experiment(experiment_of(record)?)?;
            let plan = preflight(&l, threads, archive.path())?;
            (l, plan)
        }
    };
    let exp = &l.experiment;
    if let Some(note) = genas_exec::torch::device_plan(exp)?.note() {
        say(note);
    }
    if exp.fidelity.rung_steps.is_empty() {
        bail!("{}: [fidelity] rung_steps is empty", exp.source.display());
    }
    let workers = genas_exec::local::worker_count(if threads == 0 {
        exp.search.threads as usize
    } else {
        threads
    });
    for w in &space_plan.warnings {
        say(&format!("warning: {w}"));
    }
    // A pretrained teacher whose files changed is refused before it is read or recorded.
    if let (Some(p), Some(ck)) = (&record.plan, &l.pretrained) {
        teacher_unchanged(&record.id, &p.teacher_key, &ck.key)?;
    }
    // Said as the work starts, with what is held then.
    say(&space_plan.memory.clone().reheld().line());
    let teacher_steps = exp.teacher.steps as usize;
    let (mut teacher, t) = obtain_teacher(archive, &l, false, say, &mut |step, loss| {
        progress(
            &format!("training the teacher, loss {loss:.3}"),
            step as usize + 1,
            teacher_steps,
        )
    })?;
    let last = *exp.fidelity.rung_steps.iter().max().expect("non-empty");
    let cfg = distill_config(&l, last);
    let blockwise = !exp.search.mode.is_search();
    // The schedule the soft targets are cached for: every rung's, and a blockwise run's
    // sub-block training.
    let schedule = if blockwise {
        last.max(exp.search.block_steps)
    } else {
        last
    };
    let calibration_key = crate::calibration::calibration_key(&l, &cfg, &t.record.key)?;
    let plan = match &record.plan {
        Some(p) => {
            if p.data_fingerprint != l.data.fingerprint {
                bail!(
                    "run {}: its data changed since it started (fingerprint {} now {})",
                    record.id,
                    p.data_fingerprint,
                    l.data.fingerprint
                );
            }
            teacher_unchanged(&record.id, &p.teacher_key, &t.record.key)?;
            p.clone()
        }
        None => {
            let objectives = exp.search.objectives.clone();
            let p = RunPlan {
                reference: genas_search::controller::reference_point(&objectives, &l.space, exp)?,
                objectives,
                teacher_key: t.record.key.clone(),
                calibration_key: calibration_key.clone(),
                data_fingerprint: l.data.fingerprint.clone(),
                max_latency_ms_per_token: exp.constraints.max_latency_ms_per_token,
                tokens_per_char: l.data.tokens_per_char,
            };
            // Stored with the run when it is created, below.
            record.plan = Some(p.clone());
            p
        }
    };
    say("caching the teacher's soft targets for the rung schedule");
    // Written as shards as they are computed (ARCHIVE/targets, content-addressed, kept for a
    // resume), so the schedule is never held whole; jobs read the steps they train.
    let shards = genas_scoring::inputs::ShardWriter::new(
        &archive.path().join("targets"),
        l.data.vocab_size() as usize,
    );
    // Under the PyTorch runner the teacher's passes run on the device (its first GPU).
    let mut on_device = match genas_exec::torch::device_plan(exp)? {
        genas_exec::torch::DevicePlan::Torch {
            device,
            python,
            options,
            gpus,
            ..
        } => {
            let importance = if cfg.init == genas_space::StudentInit::Teacher {
                ", the importance that prunes it"
            } else {
                ""
            };
            say(&format!(
                "the teacher's soft targets, validation loss{importance} under PyTorch on {device}"
            ));
            Some(genas_exec::torch::RunnerTeacher::new(
                &teacher,
                &archive.path().join("torch").join("teacher-pass"),
                (&python, &device),
                gpus.first().copied(),
                &options,
            )?)
        }
        genas_exec::torch::DevicePlan::Engine { .. } => None,
    };
    let targets = TeacherTargets::compute_via(
        &mut teacher,
        on_device
            .as_mut()
            .map(|p| p as &mut dyn genas_scoring::distill::TeacherPass),
        &l.data,
        &cfg,
        schedule,
        Box::new(shards),
        &mut |d, n| progress("caching soft targets", d, n),
    )
    .map_err(|e| anyhow::anyhow!("the teacher's soft targets: {e}"))?;
    drop(on_device);
    if blockwise {
        // Kept for its weights only (the assembly reads them): its passes' buffers go.
        teacher.release_buffers();
        genas_engine::memory::give_back();
        return drive_blockwise(
            archive, record, &l, &plan, &teacher, &targets, workers, stop, say, progress, start,
        );
    }
    drop(teacher);
    genas_engine::memory::give_back();
    if let Some(note) = &space_plan.note {
        say(note);
    }
    let mut rng = Rng::seed_from_u64(exp.search.seed ^ 0x9e37_79b9);
    let proxy_batch = l
        .data
        .train_batch(exp.fidelity.batch_size as usize, &mut rng);
    let local = genas_exec::local::Local {
        targets: &targets,
        proxy_batch: &proxy_batch,
    };
    let say_line = |m: &str| eprintln!("{m}");
    let chosen = genas_exec::ExecutorChoice::of(exp, archive.path(), local, &say_line)?;
    if let genas_exec::ExecutorChoice::Slurm(x) = &chosen {
        say(&format!(
            "evaluating on Slurm through {} (at most {} task(s) of a batch at a time)",
            x.cluster.shared.display(),
            exp.executor.max_in_flight
        ));
    }
    let executor = chosen.executor();
    let ensemble = match space_plan.calibration_n {
        Some(n) => Some(screen_ensemble(
            archive, &l, &cfg, &plan, &t, n, executor, workers, say, progress,
        )?),
        None => None,
    };
    if record.id.is_empty() {
        record.id = archive.create_run(&*record)?;
        say(&format!(
            "run {} of {} in {} (seed {})",
            record.id,
            exp.name,
            archive.path().display(),
            exp.search.seed
        ));
    }
    let cx = RunContext {
        experiment: exp,
        space: &l.space,
        archive,
        run: record.id.clone(),
        plan,
        ensemble,
        exhaustive: space_plan.exhaustive,
        executor,
        workers,
        stop,
        warn: &say_line,
    };
    record.status = "running".into();
    archive.update_run(&record.id, &*record)?;
    let ran = Controller::open(cx).and_then(|mut c| c.run(progress));
    let outcome = match ran {
        Ok(outcome) => outcome,
        Err(e) => {
            // What was committed stays; the run is marked failed (never left "running") and
            // resumes from there.
            record.status = "failed".into();
            record.wall_s += start.elapsed().as_secs_f64();
            archive.update_run(&record.id, &*record)?;
            archive.flush()?;
            bail!(
                "{e}; run {} is marked failed and keeps what it committed: genas resume {} continues it once the cause is fixed",
                record.id,
                record.id
            );
        }
    };
    record.status = match outcome {
        Outcome::Finished => "finished",
        Outcome::Interrupted => "interrupted",
    }
    .into();
    record.wall_s += start.elapsed().as_secs_f64();
    archive.update_run(&record.id, &*record)?;
    archive.flush()?;
    report(archive, &record.id)
}

/// A blockwise run (`[search] mode = "blockwise"`) from its teacher and soft targets: created
/// if new, driven to its end or until stopped, and marked as `drive` marks a search.
#[allow(clippy::too_many_arguments)]
fn drive_blockwise(
    archive: &Archive,
    record: &mut RunRecord,
    l: &LoadedExperiment,
    plan: &RunPlan,
    teacher: &genas_engine::Model<genas_engine::Cpu<f32>>,
    targets: &TeacherTargets,
    workers: usize,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
    start: std::time::Instant,
) -> Result<SearchReport> {
    if record.id.is_empty() {
        record.id = archive.create_run(&*record)?;
        say(&format!(
            "run {} of {} in {} (blockwise)",
            record.id,
            l.experiment.name,
            archive.path().display()
        ));
    }
    record.status = "running".into();
    archive.update_run(&record.id, &*record)?;
    let b = crate::blockwise::Blockwise {
        l,
        archive,
        run: &record.id,
        plan,
        teacher,
        targets,
        workers,
        stop,
    };
    // The executor's proxy batch goes unused: blocks are scored by training them.
    let unused = l.data.train_batch(1, &mut Rng::seed_from_u64(0));
    let local = genas_exec::local::Local {
        targets,
        proxy_batch: &unused,
    };
    let say_line = |m: &str| eprintln!("{m}");
    let ended = genas_exec::ExecutorChoice::of(&l.experiment, archive.path(), local, &say_line)
        .map_err(anyhow::Error::from)
        .and_then(|chosen| {
            if let genas_exec::ExecutorChoice::Slurm(x) = &chosen {
                say(&format!(
                    "distilling sub-blocks on Slurm through {}",
                    x.cluster.shared.display()
                ));
            }
            b.run(chosen.executor(), say, progress)
        });
    record.wall_s += start.elapsed().as_secs_f64();
    record.status = match &ended {
        Ok(crate::blockwise::Ended::Finished) => "finished",
        Ok(crate::blockwise::Ended::Interrupted) => "interrupted",
        Err(_) => "failed",
    }
    .into();
    archive.update_run(&record.id, &*record)?;
    archive.flush()?;
    if let Err(e) = ended {
        bail!(
            "{e}; run {} is marked failed and keeps what it stored: genas resume {} continues it once the cause is fixed",
            record.id,
            record.id
        );
    }
    report(archive, &record.id)
}

/// The random search of run `of`'s experiment (`[search] strategy = "random"`, everything else
/// as it ran: space, constraints, proposals, rungs, screen, seed) in the same archive, for
/// `genas report --baselines`: made the first time (its calibration, teacher and soft targets
/// are the run's, read from the archive), resumed while unfinished, read once finished.
pub fn random_twin(
    archive: &Archive,
    of: &RunRecord,
    threads: usize,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<SearchReport> {
    if let Some(mut twin) = find_twin(archive, &of.id)? {
        if twin.status == "finished" {
            return report(archive, &twin.id);
        }
        say(&format!(
            "resuming run {}, the random search of run {} at its budget",
            twin.id, of.id
        ));
        return drive(archive, &mut twin, None, threads, stop, say, progress);
    }
    let mut table: toml::Table = of
        .experiment_toml
        .parse()
        .with_context(|| format!("run {}: its experiment text", of.id))?;
    let search = table
        .entry("search")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(search) = search.as_table_mut() else {
        bail!("run {}: its experiment's [search] is not a table", of.id);
    };
    search.insert("strategy".into(), toml::Value::String("random".into()));
    // Random search has no selection: the experiment refuses a tournament size with it.
    search.remove("tournament");
    let text = format!(
        "# The random search of run {} at its budget, made by genas report --baselines.\n{}",
        of.id,
        toml::to_string(&table).context("writing the random search's experiment")?
    );
    let mut record = RunRecord {
        id: String::new(),
        name: format!("{} (random search, baseline of {})", of.name, of.id),
        experiment_toml: text,
        source: of.source.clone(),
        base_dir: of.base_dir.clone(),
        seed: of.seed,
        created_unix_s: now_unix(),
        status: "running".into(),
        wall_s: 0.0,
        plan: None,
        baseline_of: Some(of.id.clone()),
        // Read as the run it is a baseline of is.
        defaults: of.defaults,
    };
    let l = load_experiment(experiment_of(&record)?)?;
    let plan = preflight(&l, threads, archive.path())?;
    say(&format!(
        "searching the space of run {} at random with its budget ({} proposals), as its baseline",
        of.id, l.experiment.search.candidates
    ));
    drive(
        archive,
        &mut record,
        Some((l, plan)),
        threads,
        stop,
        say,
        progress,
    )
}

/// The random search `random_twin` made for run `of`, if any.
pub fn find_twin(archive: &Archive, of: &str) -> Result<Option<RunRecord>> {
    Ok(archive
        .runs::<RunRecord>()?
        .into_iter()
        .map(|(_, r)| r)
        .find(|r| r.baseline_of.as_deref() == Some(of)))
}

/// What a search will do with its space, decided before the teacher or anything expensive.
pub struct SpacePlan {
    /// Every architecture within the constraints in the order the run proposes them, when
    /// they are no more than `search.candidates`.
    pub exhaustive: Option<Vec<genas_space::Architecture>>,
    /// Architectures to calibrate the screen on; `None`: no calibration and no screen.
    pub calibration_n: Option<usize>,
    /// What to tell the user about the plan, if it differs from the usual one.
    pub note: Option<String>,
    /// The space's own warnings (values that can never be valid, ...).
    pub warnings: Vec<String>,
    /// The estimate of the run's peak memory, as the preflight checked it.
    pub memory: crate::memory::Estimate,
}

/// Checks everything about a search of `l` that can be known before it starts (the
/// executor's commands, settings and folders, with the archive at `archive`; the space
/// within the constraints; the memory it will hold) and decides how small spaces are
/// searched: a space no larger than the budget is evaluated exhaustively, one smaller than
/// the calibration sample is calibrated on what it holds, or not at all when that is too
/// few to cross-validate. With `fidelity.screen_keep = 1` (the default) there is no screen
/// and nothing is calibrated.
pub fn preflight(l: &LoadedExperiment, threads: usize, archive: &Path) -> Result<SpacePlan> {
    let exp = &l.experiment;
    genas_exec::ExecutorChoice::check(exp, archive)?;
    let file = exp.source.display().to_string();
    let summary = l
        .space
        .summary(&exp.constraints)
        .with_context(|| file.clone())?;
    let workers = genas_exec::local::worker_count(if threads == 0 {
        exp.search.threads as usize
    } else {
        threads
    });
    let last = exp.fidelity.rung_steps.iter().copied().max().unwrap_or(1);
    let memory = crate::experiment::check_plan_memory(l, last, workers)?;
    let budget = exp.search.candidates as usize;
    let min_calibration = 2 * genas_scoring::calibrate::FOLDS;
    let screened = exp.fidelity.screen_keep < 1.0;
    let mut plan = SpacePlan {
        exhaustive: None,
        calibration_n: screened.then_some(exp.search.calibration as usize),
        note: None,
        warnings: summary.warnings,
        memory,
    };
    // Counted exactly by the summary for spaces it enumerates; larger ones are never small.
    let Some(k) = summary.architectures_within.map(|k| k as usize) else {
        return Ok(plan);
    };
    if k == 0 {
        bail!("{file}: no architecture of the space meets the [constraints]; loosen them");
    }
    if k <= budget {
        let all = l
            .space
            .architectures_within(&exp.constraints, genas_space::search_space::EXACT_COUNT_MAX)
            .unwrap_or_default();
        plan.exhaustive = Some(exhaustive_order(all, exp.search.seed));
        plan.calibration_n = None;
        plan.note = Some(format!(
            "the space holds {k} architectures within the constraints, no more than search.candidates = {budget}: evaluating every one once, without calibration or the zero-cost screen"
        ));
    } else if screened && k < min_calibration {
        plan.calibration_n = None;
        plan.note = Some(format!(
            "the space holds only {k} architectures within the constraints, too few to calibrate the zero-cost proxies on (at least {min_calibration}): no screen, every proposal is distilled"
        ));
    } else if screened && k < exp.search.calibration as usize {
        plan.calibration_n = Some(k);
        plan.note = Some(format!(
            "the space holds only {k} architectures within the constraints: the proxies are calibrated on all of them"
        ));
    }
    Ok(plan)
}

/// The calibrated ensemble for the screen: the archive's, or a calibration run now (and
/// stored) when there is none for this space, data, fidelity and teacher.
#[allow(clippy::too_many_arguments)]
fn screen_ensemble(
    archive: &Archive,
    l: &LoadedExperiment,
    cfg: &genas_scoring::distill::DistillConfig,
    plan: &RunPlan,
    t: &TeacherOutcome,
    n: usize,
    executor: &dyn genas_search::job::Executor,
    workers: usize,
    say: &mut dyn FnMut(&str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Ensemble> {
    if let Some(v) = archive.calibration::<serde_json::Value>(&plan.calibration_key)? {
        let e: Ensemble = serde_json::from_value(v["calibration"]["chosen"].clone())
            .with_context(|| format!("calibration {}: unreadable", plan.calibration_key))?;
        say(&format!(
            "screening with the stored calibration {} ({} ensemble)",
            plan.calibration_key, e.kind
        ));
        return Ok(e);
    }
    say(&format!(
        "no calibration of the proxies for this space yet: calibrating on {n} architectures"
    ));
    let (rows, calibration, _) = calibrate_with(
        l,
        cfg,
        n,
        1,
        executor,
        workers,
        &|d, n, _| progress("calibrating the proxies", d, n),
        &|m| eprintln!("{m}"),
    )?;
    let tau = calibration
        .ensembles
        .iter()
        .find(|e| e.name == calibration.chosen.kind)
        .map_or(f64::NAN, |e| e.kendall);
    say(&format!(
        "calibrated: {} ensemble, out-of-fold Kendall τ {tau:.2}",
        calibration.chosen.kind
    ));
    let value = serde_json::json!({
        "experiment": l.experiment.name,
        "key": plan.calibration_key,
        "steps": cfg.steps,
        "teacher": t,
        "calibration": calibration,
        "candidates": rows,
    });
    archive.put_calibration(&plan.calibration_key, &value)?;
    Ok(calibration.chosen)
}

/// `genas front`: the report, and the plot written to `plot` when given.
pub fn front(archive_dir: &Path, id: &str, plot: Option<&Path>) -> Result<SearchReport> {
    let archive = Archive::open_read_only(archive_dir)?;
    let r = report(&archive, id)?;
    if let Some(p) = plot {
        let (_, _, cands) = load_run(&archive, id)?;
        write_plot(&r, &cands, p)?;
    }
    Ok(r)
}

/// Writes the Pareto plot (quality vs parameters, every top-rung candidate, the front joined)
/// and the hypervolume history, as SVG or PNG (2 pixels per SVG unit) by the file's extension.
pub fn write_plot(
    r: &SearchReport,
    cands: &BTreeMap<String, CandidateRecord>,
    path: &Path,
) -> Result<()> {
    crate::plot::write(crate::plot::front::pareto_svg(r, cands), path)
}
