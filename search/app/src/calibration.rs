//! `genas proxies calibrate`: every zero-cost proxy and a brief distillation for N sampled
//! architectures, the correlation table and the fitted ensemble, stored in the archive and
//! written as CSV and JSON; and [`calibrate_with`], the calibration a search runs first.

use crate::experiment::distill_config;
use crate::experiment::{load, LoadedExperiment};
use crate::teacher::{obtain_teacher, TeacherOutcome};
use anyhow::{Context, Result};
use genas_engine::{Cpu, Model};
use genas_exec::local::{parallel, worker_count};
use genas_scoring::calibrate::{calibrate, Calibration};
use genas_scoring::distill::{DistillConfig, DistillResult, TeacherTargets};
use genas_scoring::zero_cost::{proxy_suite, ProxyScores, PROXY_NAMES};
use genas_search::init_seed;
use genas_search::job::{Executor, Job};
use genas_space::{Architecture, Cost, Rng};
use genas_store::Archive;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

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
pub fn calibration_key(l: &LoadedExperiment, cfg: &DistillConfig, teacher: &str) -> Result<String> {
    let mut h = Sha256::new();
    h.update(l.data.fingerprint.as_bytes());
    h.update(serde_json::to_string(&l.experiment.space)?.as_bytes());
    h.update(serde_json::to_string(&l.experiment.constraints)?.as_bytes());
    h.update(serde_json::to_string(cfg)?.as_bytes());
    h.update(teacher.as_bytes());
    Ok(genas_space::hex16(h))
}

/// `n` distinct architectures drawn uniformly from the space within the constraints.
fn sample_distinct(l: &LoadedExperiment, n: usize, rng: &mut Rng) -> Result<Vec<Architecture>> {
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
    crate::experiment::check_plan_memory(&l, steps, worker_count(o.threads))?;
    genas_exec::ExecutorChoice::check(&l.experiment, &o.archive)?;
    if let Some(note) = genas_exec::torch::device_plan(&l.experiment)?.note() {
        say(note);
    }
    if let Some(view) = crate::teacher::existing_read_only(&o.archive)? {
        crate::teacher::check_stored_teacher(&view, &l)?;
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
        &say_line,
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
/// distillations run by `executor` (on its teacher targets). An architecture whose
/// distillation the executor could not run is left out, with a warning to `warn`; none
/// left is an error. Returns the rows, the calibration and, with 2+ repeats, the noise
/// ceiling.
#[allow(clippy::too_many_arguments)]
pub fn calibrate_with(
    l: &LoadedExperiment,
    cfg: &DistillConfig,
    n: usize,
    repeats: usize,
    executor: &dyn Executor,
    threads: usize,
    progress: &(dyn Fn(usize, usize, &CandidateRow) + Sync),
    warn: &dyn Fn(&str),
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
                initial: None,
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
    // A job the executor could not run is no measurement: its architecture is left out of
    // the calibration (never counted as a divergence), and the first failure kept to say why.
    let failures: Mutex<(BTreeSet<usize>, Option<String>)> = Mutex::new((BTreeSet::new(), None));
    executor
        .run(&jobs, workers, &stop, &|k, out| {
            let (i, r) = (k / repeats, k % repeats);
            if out.failed.is_some() {
                let mut f = failures.lock().expect("failures");
                f.0.insert(i);
                f.1.get_or_insert_with(|| out.result.diverged.clone().unwrap_or_default());
                return true;
            }
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
    let (failed, why) = failures.into_inner().expect("failures");
    if let Some(why) = why {
        if failed.len() == archs.len() {
            anyhow::bail!("calibration: every brief distillation failed: {why}");
        }
        warn(&format!(
            "warning: calibration: {} of {} architecture(s) left out, their brief distillation failed: {why}",
            failed.len(),
            archs.len()
        ));
    }
    let results = results.into_inner().expect("results");
    let kept: Vec<usize> = (0..archs.len()).filter(|i| !failed.contains(i)).collect();
    if kept.iter().any(|&i| results[i].iter().any(Option::is_none)) {
        anyhow::bail!("calibration stopped before every architecture was distilled");
    }
    let candidates: Vec<CandidateRow> = kept.iter().map(|&i| row(i, &results[i])).collect();
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
