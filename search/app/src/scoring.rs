//! The scoring commands: `genas teacher train` (train and store an experiment's teacher, or
//! reuse the stored one) and `genas proxies calibrate` (every zero-cost proxy and a brief
//! distillation for N sampled architectures, the correlation table and the fitted ensemble,
//! stored in the archive and written as CSV and JSON).

use crate::commands::{load, Loaded};
use anyhow::{Context, Result};
use genas_engine::train::evaluate;
use genas_engine::{checkpoint, Cpu, Model};
use genas_exec::local::{parallel, worker_count};
use genas_interop::pretrained::Checkpoint;
use genas_scoring::calibrate::{calibrate, Calibration};
use genas_scoring::distill::{DistillConfig, DistillResult, TeacherTargets};
use genas_scoring::teacher::{
    teacher_architecture, teacher_key, train_teacher, TeacherRecord, TEACHER_VAL_SEQUENCES,
};
use genas_scoring::zero_cost::{proxy_suite, ProxyScores, PROXY_NAMES};
use genas_scoring::Split;
use genas_search::init_seed;
use genas_search::job::{Executor, Job};
use genas_space::{Architecture, Cost, Rng};
use genas_store::Archive;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

/// A teacher ready for use, and where it came from.
#[derive(Serialize)]
pub struct TeacherOutcome {
    pub record: TeacherRecord,
    /// True when the stored teacher was reused, false when it was trained now.
    pub reused: bool,
    pub archive: PathBuf,
}

impl TeacherOutcome {
    fn new(record: TeacherRecord, reused: bool, archive: &Archive) -> TeacherOutcome {
        TeacherOutcome {
            record,
            reused,
            archive: archive.path().to_path_buf(),
        }
    }
}

pub fn render_teacher(t: &TeacherOutcome) -> String {
    let r = &t.record;
    let (what, how) = match &r.config.pretrained {
        Some(dir) => (
            format!("(pretrained, {})", dir.display()),
            if t.reused {
                "as recorded in"
            } else {
                "measured and recorded in"
            },
        ),
        None => (
            String::new(),
            if t.reused {
                "reused from"
            } else {
                "trained and stored in"
            },
        ),
    };
    let trained = match &r.config.pretrained {
        Some(_) => String::new(),
        None => format!(
            ", trained {} steps in {:.1} s",
            r.config.steps, r.train_seconds
        ),
    };
    format!(
        "teacher {}{}{what} {how} {}: {} ({} params), validation {:.4} {} ({:.4} nats/token){trained}\n",
        r.key,
        if what.is_empty() { "" } else { " " },
        t.archive.display(),
        r.architecture.summary(),
        crate::format::thousands(r.params),
        r.val_bits,
        r.bits_unit,
        r.val_ce,
    )
}

/// The experiment's teacher from `archive`, trained and stored first when the archive has
/// none for this data, `[teacher]` config and seed (`retrain` replaces a stored one).
/// `say` is told which of the two happens before any long work starts.
pub fn obtain_teacher(
    archive: &Archive,
    l: &Loaded,
    retrain: bool,
    say: &mut dyn FnMut(&str),
    on_step: &mut dyn FnMut(u32, f64),
) -> Result<(Model<Cpu<f32>>, TeacherOutcome)> {
    if let Some(ck) = &l.pretrained {
        return pretrained_teacher(archive, l, ck, say);
    }
    let cfg = &l.experiment.teacher;
    let seed = l.experiment.teacher.seed;
    let arch = teacher_architecture(cfg, l.data.vocab_size(), l.data.context);
    arch.validate()
        .with_context(|| format!("{}: [teacher]", l.experiment.source.display()))?;
    let key = teacher_key(&arch, cfg, &l.data.fingerprint, seed);
    let shards = std::thread::available_parallelism().map_or(1, |n| n.get());
    crate::commands::check_training_memory("the teacher", &arch, cfg.batch_size as usize, shards)
        .with_context(|| format!("{}: [teacher]", l.experiment.source.display()))?;
    if !retrain {
        if let Some((meta, weights)) = archive.teacher(&key)? {
            let record: TeacherRecord = serde_json::from_value(meta)
                .with_context(|| format!("archive {}: teacher {key}", archive.path().display()))?;
            let mut model = Model::new(&arch, Cpu::<f32>::new(0), seed);
            checkpoint::from_bytes(&mut model, &weights, &format!("teacher {key}"))?;
            say(&format!(
                "using the stored teacher {key} ({:.4} {})",
                record.val_bits, record.bits_unit
            ));
            return Ok((model, TeacherOutcome::new(record, true, archive)));
        }
    }
    say(&format!(
        "training the teacher {key} ({}, {} steps){}",
        arch.summary(),
        cfg.steps,
        if retrain {
            ""
        } else {
            ": the archive has none for this data and [teacher] config"
        }
    ));
    let (model, record) = match genas_exec::torch::device_plan(&l.experiment)? {
        genas_exec::torch::DevicePlan::Torch { device, python, .. } => {
            say(&format!("the teacher trains under PyTorch on {device}"));
            let dir = archive.path().join("torch");
            let (m, r, _) =
                genas_exec::torch::train_teacher(cfg, &l.data, seed, &dir, &python, &device)
                    .with_context(|| "training the teacher")?;
            (m, r)
        }
        genas_exec::torch::DevicePlan::Engine { .. } => {
            train_teacher(cfg, &l.data, seed, Cpu::<f32>::new(0), |s| {
                on_step(s.step, s.loss)
            })
            .with_context(|| "training the teacher")?
        }
    };
    let bytes = checkpoint::to_bytes(&model, &[("genas.teacher_key", key.clone())])
        .map_err(|e| anyhow::anyhow!("teacher {key}: {e}"))?;
    archive.put_teacher(&key, &serde_json::to_value(&record)?, &bytes)?;
    archive.flush()?;
    Ok((model, TeacherOutcome::new(record, false, archive)))
}

/// A `[teacher] pretrained` checkpoint as the teacher. The archive keeps its record under the
/// hash of its files (the weights stay in the checkpoint's folder, so a checkpoint is never
/// stored twice); the validation loss is measured on this data once and kept with it.
fn pretrained_teacher(
    archive: &Archive,
    l: &Loaded,
    ck: &Checkpoint,
    say: &mut dyn FnMut(&str),
) -> Result<(Model<Cpu<f32>>, TeacherOutcome)> {
    let exp = &l.experiment;
    let arch = ck.architecture_at(l.data.context)?;
    // The f32 weights once more while the checkpoint's tensors are converted.
    let converting = 4.0 * Cost::of(&arch).params as f64;
    check_inference_memory(
        "running the teacher",
        &arch,
        exp.fidelity.batch_size as usize,
        converting,
    )
    .with_context(|| format!("{}: [teacher] pretrained", exp.source.display()))?;
    let mut model = ck.load(Cpu::<f32>::new(0), l.data.context)?;
    if let Some((meta, _)) = archive.teacher(&ck.key)? {
        let record: TeacherRecord = serde_json::from_value(meta)
            .with_context(|| format!("archive {}: teacher {}", archive.path().display(), ck.key))?;
        if record.data_fingerprint == l.data.fingerprint && record.architecture == arch {
            say(&format!(
                "using the pretrained teacher {} from {} ({:.4} {})",
                ck.key,
                ck.dir.display(),
                record.val_bits,
                record.bits_unit
            ));
            return Ok((model, TeacherOutcome::new(record, true, archive)));
        }
    }
    say(&format!(
        "measuring the pretrained teacher {} ({}) on this data",
        ck.key,
        arch.summary()
    ));
    let val = l.data.eval_batches(
        Split::Validation,
        exp.teacher.batch_size as usize,
        TEACHER_VAL_SEQUENCES,
    );
    let val_ce = evaluate(&mut model, &val);
    let record = TeacherRecord {
        key: ck.key.clone(),
        params: model.num_params() as u64,
        architecture: arch,
        data_fingerprint: l.data.fingerprint.clone(),
        config: exp.teacher.clone(),
        seed: exp.teacher.seed,
        val_ce,
        val_bits: l.data.bits(val_ce),
        bits_unit: l.data.bits_unit().to_string(),
        train_seconds: 0.0,
    };
    archive.put_teacher(&ck.key, &serde_json::to_value(&record)?, &[])?;
    archive.flush()?;
    Ok((model, TeacherOutcome::new(record, false, archive)))
}

/// Refuses `what` (running `arch` on batches of `batch`, plus `extra` bytes) when it will not
/// fit the memory available: one line instead of an allocation that aborts.
fn check_inference_memory(what: &str, arch: &Architecture, batch: usize, extra: f64) -> Result<()> {
    use genas_engine::memory;
    memory::check(
        &format!("{what} ({}) on batches of {batch}", arch.summary()),
        memory::inference_bytes(arch, batch) + extra,
    )
    .map_err(anyhow::Error::msg)
}

/// `genas teacher train`.
pub fn teacher_train(
    file: &Path,
    archive_dir: &Path,
    retrain: bool,
    say: &mut dyn FnMut(&str),
    on_step: &mut dyn FnMut(u32, f64),
) -> Result<TeacherOutcome> {
    let l = load(file)?;
    if let Some(note) = genas_exec::torch::device_plan(&l.experiment)?.note() {
        say(note);
    }
    let archive = Archive::open(archive_dir)?;
    Ok(obtain_teacher(&archive, &l, retrain, say, on_step)?.1)
}

pub struct CalibrateOptions {
    pub n: usize,
    /// Brief-distillation steps (default: the last successive-halving rung).
    pub steps: Option<u32>,
    pub archive: PathBuf,
    /// Where the CSV and JSON go (default: calibration-<experiment>/ in the working directory).
    pub out: Option<PathBuf>,
    /// Candidates evaluated side by side (0 = every core), one thread each.
    pub threads: usize,
    /// Brief distillations per candidate from different initialisations (≥ 1). With 2 or
    /// more, the quality is their mean and the report gives the noise ceiling: Kendall τ
    /// between the first two repeats, the most any proxy could reach.
    pub repeats: usize,
}

/// One calibration candidate.
#[derive(Serialize)]
pub struct CandidateRow {
    pub id: String,
    pub architecture: String,
    pub params: u64,
    pub proxies: ProxyScores,
    pub distill: DistillResult,
    /// Further brief distillations from other initialisations (`--repeats`).
    pub repeats: Vec<DistillResult>,
    /// The architecture itself, so `genas report` can read its genes (absent from
    /// calibrations stored before it was kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<Architecture>,
}

impl CandidateRow {
    /// −(mean validation cross-entropy over every distillation); `None` if any diverged.
    pub fn quality(&self) -> Option<f64> {
        let all: Option<Vec<f64>> = std::iter::once(&self.distill)
            .chain(&self.repeats)
            .map(|d| d.eval.map(|e| e.val_ce))
            .collect();
        all.map(|v| -v.iter().sum::<f64>() / v.len() as f64)
    }
}

#[derive(Serialize)]
pub struct CalibrationReport {
    pub experiment: String,
    pub key: String,
    pub steps: u32,
    pub teacher: TeacherOutcome,
    pub bits_unit: String,
    pub calibration: Calibration,
    /// Kendall τ between two brief distillations of every candidate from different
    /// initialisations (with --repeats ≥ 2).
    pub noise_ceiling: Option<f64>,
    pub candidates: Vec<CandidateRow>,
    /// Mean cost per candidate, ms: the proxy suite, and a brief distillation.
    pub proxy_ms: f64,
    pub distill_ms: f64,
    pub teacher_targets_s: f64,
    pub wall_s: f64,
    pub csv: PathBuf,
    pub json: PathBuf,
}

/// Identifies a calibration: the data, space, constraints, distillation settings and
/// teacher. 16 hex digits.
pub fn calibration_key(l: &Loaded, cfg: &DistillConfig, teacher: &str) -> Result<String> {
    let mut h = Sha256::new();
    h.update(l.data.fingerprint.as_bytes());
    h.update(serde_json::to_string(&l.experiment.space)?.as_bytes());
    h.update(serde_json::to_string(&l.experiment.constraints)?.as_bytes());
    h.update(serde_json::to_string(cfg)?.as_bytes());
    h.update(teacher.as_bytes());
    Ok(genas_space::hex16(h))
}

/// The brief-distillation settings of an experiment's `[fidelity]` at `steps`.
pub fn distill_config(l: &Loaded, steps: u32) -> DistillConfig {
    DistillConfig::of_experiment(&l.experiment, steps)
}

/// `n` distinct architectures drawn uniformly from the space within the constraints.
fn sample_distinct(l: &Loaded, n: usize, rng: &mut Rng) -> Result<Vec<Architecture>> {
    // A space that holds no more than n: all of it.
    if let Some(all) = l.space.architectures_within(
        &l.experiment.constraints,
        genas_space::search_space::EXACT_COUNT_MAX,
    ) {
        if all.len() <= n {
            return Ok(all);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n * 50 {
        if out.len() == n {
            break;
        }
        if let Some(a) = l
            .space
            .sample_within(&l.experiment.constraints, rng, 10_000)
        {
            if seen.insert(a.id()) {
                out.push(a);
            }
        }
    }
    if out.len() < n {
        anyhow::bail!(
            "{}: only {} distinct architectures within the constraints turned up in many draws; loosen [constraints], or ask proxies calibrate for fewer with --n",
            l.experiment.source.display(),
            out.len()
        );
    }
    Ok(out)
}

/// `genas proxies calibrate`.
pub fn proxies_calibrate(
    file: &Path,
    o: &CalibrateOptions,
    say: &mut dyn FnMut(&str),
    on_step: &mut dyn FnMut(u32, f64),
    progress: &(dyn Fn(usize, usize, &CandidateRow) + Sync),
) -> Result<CalibrationReport> {
    let start = std::time::Instant::now();
    if o.n < 2 * genas_scoring::calibrate::FOLDS {
        anyhow::bail!(
            "--n must be at least {} (the ensembles are cross-validated over {} folds)",
            2 * genas_scoring::calibrate::FOLDS,
            genas_scoring::calibrate::FOLDS
        );
    }
    let l = load(file)?;
    let steps = o
        .steps
        .or_else(|| l.experiment.fidelity.rung_steps.last().copied())
        .unwrap_or(100);
    if steps == 0 {
        anyhow::bail!("--steps must be at least 1");
    }
    if o.repeats == 0 {
        anyhow::bail!("--repeats must be at least 1");
    }
    // What can be known to fail fails before the teacher trains.
    let mut n = o.n;
    let summary = l
        .space
        .summary(&l.experiment.constraints)
        .with_context(|| l.experiment.source.display().to_string())?;
    if let Some(k) = summary.architectures_within.map(|k| k as usize) {
        let min = 2 * genas_scoring::calibrate::FOLDS;
        if k < min {
            anyhow::bail!(
                "{}: the space holds only {} architectures within the constraints; calibration needs at least {min} (--n), so widen [space] or loosen [constraints]",
                l.experiment.source.display(),
                k
            );
        }
        if k < n {
            say(&format!(
                "the space holds only {} architectures within the constraints: calibrating on all of them (--n {} asked for more)",
                k, o.n
            ));
            n = k;
        }
    }
    crate::commands::check_plan_memory(&l, &summary, steps, worker_count(o.threads))?;
    if let Some(note) = genas_exec::torch::device_plan(&l.experiment)?.note() {
        say(note);
    }
    let archive = Archive::open(&o.archive)?;
    let (mut teacher, outcome) = obtain_teacher(&archive, &l, false, say, on_step)?;
    let cfg = distill_config(&l, steps);
    let key = calibration_key(&l, &cfg, &outcome.record.key)?;
    let targets = TeacherTargets::compute(&mut teacher, &l.data, &cfg, steps);
    drop(teacher);
    say(&format!(
        "teacher soft targets for {steps} steps cached ({:.1} MB, {:.1} s); scoring {} architectures",
        targets.bytes() as f64 / 1e6,
        targets.seconds,
        n
    ));
    // calibrate_with scores the proxies on its own batch; the executor only distills, so
    // its proxy batch goes unused here.
    let mut rng = Rng::seed_from_u64(l.experiment.search.seed ^ 0x9e37_79b9);
    let proxy_batch = l.data.train_batch(cfg.batch_size, &mut rng);
    let local = genas_exec::local::Local {
        targets: &targets,
        proxy_batch: &proxy_batch,
    };
    let say_line = |m: &str| eprintln!("{m}");
    let chosen = genas_exec::ExecutorChoice::of(&l.experiment, &o.archive, local, &say_line)?;
    let (candidates, calibration, noise_ceiling) = calibrate_with(
        &l,
        &cfg,
        n,
        o.repeats,
        chosen.executor(),
        o.threads,
        progress,
    )?;

    let n = candidates.len() as f64;
    let proxy_ms = candidates.iter().map(|c| c.proxies.millis).sum::<f64>() / n;
    let distill_ms = candidates
        .iter()
        .map(|c| c.distill.seconds * 1e3)
        .sum::<f64>()
        / n;
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("calibration-{}", l.experiment.name)));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let (csv, json) = (out.join("calibration.csv"), out.join("calibration.json"));
    let report = CalibrationReport {
        experiment: l.experiment.name.clone(),
        key: key.clone(),
        steps,
        teacher: outcome,
        bits_unit: l.data.bits_unit().to_string(),
        calibration,
        noise_ceiling,
        candidates,
        proxy_ms,
        distill_ms,
        teacher_targets_s: targets.seconds,
        wall_s: start.elapsed().as_secs_f64(),
        csv: csv.clone(),
        json: json.clone(),
    };
    let value = serde_json::to_value(&report)?;
    archive.put_calibration(&key, &value)?;
    archive.flush()?;
    std::fs::write(&csv, render_csv(&report))
        .with_context(|| format!("cannot write {}", csv.display()))?;
    std::fs::write(&json, serde_json::to_string_pretty(&value)? + "\n")
        .with_context(|| format!("cannot write {}", json.display()))?;
    Ok(report)
}

/// The calibration itself: `n` distinct architectures sampled within the constraints, each
/// scored with every proxy (here, on `threads` workers, 0 = every core) and `repeats` brief
/// distillations run by `executor` (on its teacher targets). Returns the rows, the
/// calibration and, with 2+ repeats, the noise ceiling.
pub fn calibrate_with(
    l: &Loaded,
    cfg: &DistillConfig,
    n: usize,
    repeats: usize,
    executor: &dyn Executor,
    threads: usize,
    progress: &(dyn Fn(usize, usize, &CandidateRow) + Sync),
) -> Result<(Vec<CandidateRow>, Calibration, Option<f64>)> {
    let seed = l.experiment.teacher.seed;
    let mut rng = Rng::seed_from_u64(seed ^ 0xca11_b7a7e);
    let archs = sample_distinct(l, n, &mut rng)?;
    let proxy_batch = l.data.train_batch(cfg.batch_size, &mut rng);
    let workers = worker_count(threads);
    // The proxies take milliseconds: here, side by side.
    let proxies = parallel(
        &archs,
        workers,
        &|arch: &Architecture, be: &Cpu<f32>| {
            let model_seed = init_seed(seed, &arch.id());
            let mut m = Model::new(arch, be.clone(), model_seed);
            proxy_suite(arch, &mut m, &proxy_batch, model_seed)
        },
        &|_, _, _| {},
    );
    // The distillations are jobs: the same initialisation seeds as the search's, so a
    // calibration row and a search evaluation of one architecture agree; a repeat r starts
    // from another seed.
    let repeats = repeats.max(1);
    let jobs: Vec<Job> = archs
        .iter()
        .flat_map(|arch| {
            let model_seed = init_seed(seed, &arch.id());
            (0..repeats).map(move |r| Job {
                id: arch.id(),
                architecture: arch.clone(),
                init_seed: model_seed.wrapping_add((r as u64) << 32),
                rung: 0,
                config: cfg.clone(),
                measure_latency: false,
            })
        })
        .collect();
    let results: Mutex<Vec<Vec<Option<DistillResult>>>> =
        Mutex::new(vec![vec![None; repeats]; archs.len()]);
    let rows_done = Mutex::new(0usize);
    let row = |i: usize, all: &[Option<DistillResult>]| CandidateRow {
        id: archs[i].id(),
        architecture: archs[i].summary(),
        params: Cost::of(&archs[i]).params,
        proxies: proxies[i].clone(),
        distill: all[0].clone().expect("complete"),
        repeats: all[1..]
            .iter()
            .map(|d| d.clone().expect("complete"))
            .collect(),
        spec: Some(archs[i].clone()),
    };
    let stop = AtomicBool::new(false);
    executor
        .run(&jobs, workers, &stop, &|k, out| {
            let (i, r) = (k / repeats, k % repeats);
            let mut res = results.lock().expect("results");
            res[i][r] = Some(out.result);
            if res[i].iter().all(Option::is_some) {
                let mut d = rows_done.lock().expect("rows");
                *d += 1;
                progress(*d, archs.len(), &row(i, &res[i]));
            }
            true
        })
        .map_err(anyhow::Error::msg)?;
    let results = results.into_inner().expect("results");
    if results.iter().flatten().any(Option::is_none) {
        anyhow::bail!("calibration stopped before every architecture was distilled");
    }
    let candidates: Vec<CandidateRow> = (0..archs.len()).map(|i| row(i, &results[i])).collect();
    let rows: Vec<(ProxyScores, Option<f64>)> = candidates
        .iter()
        .map(|c| (c.proxies.clone(), c.quality()))
        .collect();
    let calibration = calibrate(&rows);
    let noise_ceiling = (repeats >= 2).then(|| {
        let q = |d: &DistillResult| d.eval.map_or(f64::MIN, |e| -e.val_ce);
        let a: Vec<f64> = candidates.iter().map(|c| q(&c.distill)).collect();
        let b: Vec<f64> = candidates.iter().map(|c| q(&c.repeats[0])).collect();
        genas_scoring::stats::kendall_tau_b(&a, &b)
    });
    Ok((candidates, calibration, noise_ceiling))
}

fn cell(x: Option<f64>) -> String {
    x.map_or(String::new(), |v| format!("{v}"))
}

pub fn render_csv(r: &CalibrationReport) -> String {
    let mut out = String::from("id,architecture,params");
    for n in PROXY_NAMES {
        let _ = write!(out, ",{n}");
    }
    out.push_str(",val_ce,kl_to_teacher,agreement,diverged,proxy_ms,distill_ms\n");
    for c in &r.candidates {
        let _ = write!(out, "{},\"{}\",{}", c.id, c.architecture, c.params);
        for n in PROXY_NAMES {
            let _ = write!(out, ",{}", cell(c.proxies.get(n)));
        }
        let e = c.distill.eval;
        let _ = writeln!(
            out,
            ",{},{},{},{},{:.1},{:.1}",
            cell(e.map(|e| e.val_ce)),
            cell(e.map(|e| e.kl_to_teacher)),
            cell(e.map(|e| e.agreement)),
            c.distill.diverged.is_some(),
            c.proxies.millis,
            c.distill.seconds * 1e3
        );
    }
    out
}

/// The table of a calibration: `before` (other signals, such as rungs), every proxy and every
/// ensemble, with Kendall τ and Spearman ρ.
pub fn render_correlations(
    c: &genas_scoring::calibrate::Calibration,
    before: &[genas_scoring::calibrate::Correlation],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<22} {:>10} {:>10}",
        "proxy", "Kendall τ", "Spearman ρ"
    );
    for p in before.iter().chain(&c.proxies) {
        let _ = writeln!(
            out,
            "{:<22} {:>10.3} {:>10.3}",
            p.name, p.kendall, p.spearman
        );
    }
    for e in &c.ensembles {
        let _ = writeln!(
            out,
            "{:<22} {:>10.3} {:>10.3}   (ensemble, {}-fold out-of-fold)",
            e.name,
            e.kendall,
            e.spearman,
            genas_scoring::calibrate::FOLDS
        );
    }
    out
}

pub fn render_calibration(r: &CalibrationReport) -> String {
    let c = &r.calibration;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "calibration {} of {}: {} architectures, brief distillation {} steps ({} diverged)",
        r.key, r.experiment, c.n, r.steps, c.diverged
    );
    let _ = writeln!(
        out,
        "teacher     {} ({:.4} {})",
        r.teacher.record.key, r.teacher.record.val_bits, r.teacher.record.bits_unit
    );
    out += &render_correlations(c, &[]);
    if let Some(t) = r.noise_ceiling {
        let _ = writeln!(
            out,
            "{:<22} {:>10.3}              (two initialisations of every candidate)",
            "noise ceiling", t
        );
    }
    let _ = writeln!(
        out,
        "\nchosen      {} over {}",
        c.chosen.kind,
        c.chosen.members.join(", ")
    );
    let _ = writeln!(
        out,
        "cost        {:.0} ms/candidate for the proxy suite, {:.0} ms for a brief distillation; {:.1} s in all",
        r.proxy_ms, r.distill_ms, r.wall_s
    );
    let _ = writeln!(
        out,
        "written     {} and {}",
        r.csv.display(),
        r.json.display()
    );
    out
}

/// What `genas teacher import` found in a checkpoint.
#[derive(Serialize)]
pub struct ImportReport {
    pub dir: PathBuf,
    /// The key the archive would record it under (SHA-256 of its files).
    pub key: String,
    pub model_type: String,
    pub architecture: String,
    pub params: u64,
    pub context: u32,
    pub vocab_size: u32,
    pub weight_bytes: u64,
    /// With `--experiment`: the validation loss on its corpus, encoded with the checkpoint's
    /// tokenizer.
    pub validation: Option<ImportValidation>,
    /// Forward throughput on this machine (batches of 8 at the context below).
    pub tokens_per_s: f64,
    pub measured_context: u32,
    /// The check `genas_check.py` compares with transformers.
    pub check: genas_interop::export::Written,
}

#[derive(Serialize)]
pub struct ImportValidation {
    pub experiment: PathBuf,
    pub nats_per_token: f64,
    pub bits_per_token: f64,
    pub bits_per_char: f64,
    pub tokens_per_char: f64,
    pub sequences: usize,
}

/// A short text for the tokenizer's round trip when no corpus is given.
const IMPORT_SAMPLE: &str = "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.";

/// `genas teacher import DIR [--experiment FILE] [--out DIR]`.
pub fn teacher_import(
    dir: &Path,
    experiment: Option<&Path>,
    out: Option<&Path>,
    say: &mut dyn FnMut(&str),
) -> Result<ImportReport> {
    let ck = Checkpoint::open(dir)?;
    say(&format!(
        "{}: {} ({} params in {} of weights), key {}",
        dir.display(),
        ck.architecture.summary(),
        crate::format::thousands(Cost::of(&ck.architecture).params),
        crate::format::bytes(ck.weight_bytes as f64),
        ck.key
    ));
    let abs = dir
        .canonicalize()
        .with_context(|| format!("{}", dir.display()))?;
    let data = match experiment {
        Some(file) => {
            let mut exp = genas_space::Experiment::from_path(file)?;
            if exp.data.kind != genas_space::DataKind::Text {
                anyhow::bail!(
                    "{}: a pretrained teacher reads text; this experiment's data are images",
                    file.display()
                );
            }
            exp.teacher.pretrained = Some(abs.clone());
            if !exp
                .data
                .tokenizer
                .as_ref()
                .is_some_and(genas_space::Tokenizer::is_hf)
            {
                exp.data.tokenizer = Some(genas_space::Tokenizer::Teacher);
            }
            if exp.tokenizer_path().is_some_and(|p| !p.exists()) {
                anyhow::bail!(
                    "{}: has no tokenizer.json to encode {}'s corpus with",
                    dir.display(),
                    file.display()
                );
            }
            let data = crate::commands::load_dataset(&exp)?;
            Some((file.to_path_buf(), data))
        }
        None => None,
    };
    let context = match &data {
        Some((_, d)) => d.context,
        None => ck.architecture.context.min(64),
    };
    // The f32 model and, for the check's logits, its f64 twin (twice its size), each with a
    // batch of 8 in flight: refused in one line when that cannot fit, before anything is read.
    let arch = ck.architecture_at(context)?;
    let twin = 2.0 * genas_engine::memory::inference_bytes(&arch, 8);
    check_inference_memory(
        &format!("reading {} and checking it in f64", dir.display()),
        &arch,
        8,
        twin,
    )?;
    let mut model = ck.load(Cpu::<f32>::new(0), context)?;
    let arch = model.arch.clone();
    let validation = match &data {
        Some((file, d)) => {
            say("measuring the validation loss");
            let val = d.eval_batches(Split::Validation, 16, TEACHER_VAL_SEQUENCES);
            let ce = evaluate(&mut model, &val);
            let per_char = d.tokens_per_char.unwrap_or(1.0);
            Some(ImportValidation {
                experiment: file.clone(),
                nats_per_token: ce,
                bits_per_token: ce / std::f64::consts::LN_2,
                bits_per_char: d.bits(ce),
                tokens_per_char: per_char,
                sequences: val.iter().map(|b| b.b).sum(),
            })
        }
        None => None,
    };
    // Throughput: forward passes over batches of 8 for about a second.
    let b = 8usize;
    let t = context as usize;
    let mut rng = Rng::seed_from_u64(0);
    let tokens: Vec<u32> = (0..b * t)
        .map(|_| rng.below(u64::from(arch.vocab_size)) as u32)
        .collect();
    model.forward(&tokens, None, None, (b, t), false);
    let start = std::time::Instant::now();
    let mut reps = 0usize;
    while reps < 2 || start.elapsed().as_secs_f64() < 1.0 {
        model.forward(&tokens, None, None, (b, t), false);
        reps += 1;
    }
    let tokens_per_s = (reps * b * t) as f64 / start.elapsed().as_secs_f64();
    // The check: two sequences (validation ones when there is a corpus), logits in f64.
    let seqs: Vec<Vec<u32>> = match &data {
        Some((_, d)) => {
            let batch = d.eval_batches(Split::Validation, 2, 2).swap_remove(0);
            batch.inputs.chunks(batch.t).map(<[u32]>::to_vec).collect()
        }
        None => tokens.chunks(t).take(2).map(<[u32]>::to_vec).collect(),
    };
    let mut exact = ck.load(Cpu::<f64>::new(0), context)?;
    let flat: Vec<u32> = seqs.concat();
    exact.forward(&flat, None, None, (seqs.len(), t), false);
    let check = genas_interop::export::Check {
        tokens: seqs,
        logits: exact.logits(),
    };
    drop(exact);
    let tok_path = dir.join("tokenizer.json");
    let sample = if tok_path.exists() {
        let tok = genas_scoring::tokenize::HfTokenizer::from_file(&tok_path)
            .map_err(anyhow::Error::msg)?;
        let ids = tok.encode_one(IMPORT_SAMPLE).map_err(anyhow::Error::msg)?;
        Some(ids)
    } else {
        None
    };
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("teacher-{}", ck.key)));
    let written = genas_interop::export::write_checkpoint_check(
        &out,
        &abs,
        arch.vocab_size as usize,
        &check,
        sample.as_deref().map(|ids| (IMPORT_SAMPLE, ids)),
    )?;
    Ok(ImportReport {
        dir: dir.to_path_buf(),
        key: ck.key.clone(),
        model_type: ck.model_type.clone(),
        architecture: arch.summary(),
        params: Cost::of(&arch).params,
        context: ck.architecture.context,
        vocab_size: arch.vocab_size,
        weight_bytes: ck.weight_bytes,
        validation,
        tokens_per_s,
        measured_context: context,
        check: written,
    })
}

pub fn render_import(r: &ImportReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "checkpoint    {} ({}, key {})",
        r.dir.display(),
        r.model_type,
        r.key
    );
    let _ = writeln!(s, "architecture  {}", r.architecture);
    let _ = writeln!(
        s,
        "size          {} params, {} of weights on disk; context {}, vocabulary {}",
        crate::format::thousands(r.params),
        crate::format::bytes(r.weight_bytes as f64),
        r.context,
        crate::format::thousands(u64::from(r.vocab_size))
    );
    match &r.validation {
        Some(v) => {
            let _ = writeln!(
                s,
                "validation    {:.4} bits/token, {:.4} bits/char ({:.4} tokens/char) on {} sequences of {}",
                v.bits_per_token,
                v.bits_per_char,
                v.tokens_per_char,
                v.sequences,
                v.experiment.display()
            );
        }
        None => {
            let _ = writeln!(
                s,
                "validation    (pass --experiment FILE to measure it on a corpus)"
            );
        }
    }
    let _ = writeln!(
        s,
        "speed         {} tokens/s forward on this machine (batches of 8 × {})",
        crate::format::thousands(r.tokens_per_s.round() as u64),
        r.measured_context
    );
    let _ = writeln!(
        s,
        "check         written to {}: python3 {}",
        r.check.dir.display(),
        r.check.dir.join("genas_check.py").display()
    );
    s
}
