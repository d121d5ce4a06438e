//! Runs: `genas search` starts one, `genas resume` continues it, `genas runs`, `genas show`
//! and `genas front` read them. A run's record holds the experiment text as it was at start
//! (so editing the file later does not change a run), the seed, and the plan fixed at start
//! (objectives, hypervolume reference point, teacher and calibration keys).

use crate::commands::{load_experiment, Loaded};
use crate::scoring::{calibrate_with, distill_config, obtain_teacher, TeacherOutcome};
use anyhow::{anyhow, bail, Context, Result};
use genas_scoring::calibrate::Ensemble;
use genas_scoring::distill::TeacherTargets;
use genas_search::controller::{
    front_and_hypervolume, CandidateRecord, Controller, ControllerState, Outcome, Phase,
    RunContext, RunPlan,
};
use genas_space::{Experiment, Rng};
use genas_store::Archive;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub name: String,
    /// The experiment file's text at start, where it was, and the folder data paths are
    /// relative to.
    pub experiment_toml: String,
    pub source: PathBuf,
    pub base_dir: PathBuf,
    pub seed: u64,
    pub created_unix_s: u64,
    /// "running", "interrupted" or "finished".
    pub status: String,
    pub wall_s: f64,
    pub plan: Option<RunPlan>,
}

pub struct SearchOptions {
    pub archive: PathBuf,
    pub seed: Option<u64>,
    /// Candidates evaluated side by side (0 = the experiment's search.threads, then every core).
    pub threads: usize,
}

/// The experiment of a run, parsed again from its stored text.
pub fn experiment_of(r: &RunRecord) -> Result<Experiment> {
    let mut e = Experiment::from_str_in(
        &r.experiment_toml,
        &r.source.display().to_string(),
        &r.base_dir,
    )?;
    e.source = r.source.clone();
    e.base_dir = r.base_dir.clone();
    if e.name.is_empty() {
        e.name = r.name.clone();
    }
    e.search.seed = r.seed;
    Ok(e)
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read_run(archive: &Archive, id: &str) -> Result<RunRecord> {
    let v = archive.run(id)?.with_context(|| {
        format!(
            "archive {} has no run {id} (see genas runs)",
            archive.path().display()
        )
    })?;
    serde_json::from_value(v).with_context(|| format!("run {id}: unreadable record"))
}

/// `genas search`: creates a run and drives it.
pub fn search(
    file: &Path,
    o: &SearchOptions,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<SearchReport> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut exp = Experiment::from_path(file)?;
    if let Some(s) = o.seed {
        exp.search.seed = s;
    }
    // Load and check before creating the run, so bad data or a plan that cannot work never
    // leaves a run behind.
    let l = load_experiment(exp.clone())?;
    let space_plan = preflight(&l, o.threads)?;
    let archive = Archive::open(&o.archive)?;
    // Absolute, so that `genas resume`, `distill`, `sample` and `report` find the run's data
    // from any working directory, not only from the one the search started in.
    let base_dir = if exp.base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        exp.base_dir.clone()
    };
    let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
    let record = RunRecord {
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
    };
    let id = archive.create_run(&serde_json::to_value(&record)?)?;
    let mut record = RunRecord {
        id: id.clone(),
        ..record
    };
    archive.update_run(&id, &serde_json::to_value(&record)?)?;
    say(&format!(
        "run {id} of {} in {} (seed {})",
        exp.name,
        archive.path().display(),
        exp.search.seed
    ));
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
    let archive = Archive::open_existing(&o.archive)?;
    let mut record = read_run(&archive, run)?;
    say(&format!("resuming run {run} of {}", record.name));
    drive(&archive, &mut record, None, o.threads, stop, say, progress)
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
    loaded: Option<(Loaded, SpacePlan)>,
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
            let plan = preflight(&l, threads)?;
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
    let calibration_key = crate::scoring::calibration_key(&l, &cfg, &t.record.key)?;
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
            record.plan = Some(p.clone());
            archive.update_run(&record.id, &serde_json::to_value(&*record)?)?;
            p
        }
    };
    say("caching the teacher's soft targets for the rung schedule");
    let targets =
        TeacherTargets::compute_with_progress(&mut teacher, &l.data, &cfg, last, &mut |d, n| {
            progress("caching soft targets", d, n)
        });
    drop(teacher);
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
    };
    let mut c = Controller::open(cx)?;
    record.status = "running".into();
    archive.update_run(&record.id, &serde_json::to_value(&*record)?)?;
    let outcome = c.run(progress)?;
    record.status = match outcome {
        Outcome::Finished => "finished",
        Outcome::Interrupted => "interrupted",
    }
    .into();
    record.wall_s += start.elapsed().as_secs_f64();
    archive.update_run(&record.id, &serde_json::to_value(&*record)?)?;
    archive.flush()?;
    report(archive, &record.id)
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
}

/// Checks everything about a search of `l` that can be known before it starts (the space
/// within the constraints, the memory it will hold) and decides how small spaces are
/// searched: a space no larger than the budget is evaluated exhaustively, one smaller than
/// the calibration sample is calibrated on what it holds, or not at all when that is too
/// few to cross-validate.
pub fn preflight(l: &Loaded, threads: usize) -> Result<SpacePlan> {
    let exp = &l.experiment;
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
    crate::commands::check_plan_memory(l, &summary, last, workers)?;
    let budget = exp.search.candidates as usize;
    let min_calibration = 2 * genas_scoring::calibrate::FOLDS;
    let mut plan = SpacePlan {
        exhaustive: None,
        calibration_n: Some(exp.search.calibration as usize),
        note: None,
        warnings: summary.warnings,
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
    } else if k < min_calibration {
        plan.calibration_n = None;
        plan.note = Some(format!(
            "the space holds only {k} architectures within the constraints, too few to calibrate the zero-cost proxies on (at least {min_calibration}): no screen, every proposal is distilled"
        ));
    } else if k < exp.search.calibration as usize {
        plan.calibration_n = Some(k);
        plan.note = Some(format!(
            "the space holds only {k} architectures within the constraints: the proxies are calibrated on all of them"
        ));
    }
    Ok(plan)
}

/// The order an exhaustive run proposes the whole space in: fixed by the search seed.
pub fn exhaustive_order(
    mut all: Vec<genas_space::Architecture>,
    seed: u64,
) -> Vec<genas_space::Architecture> {
    Rng::seed_from_u64(seed ^ 0xe4a0_5717).shuffle(&mut all);
    all
}

/// The calibrated ensemble for the screen: the archive's, or a calibration run now (and
/// stored) when there is none for this space, data, fidelity and teacher.
#[allow(clippy::too_many_arguments)]
fn screen_ensemble(
    archive: &Archive,
    l: &Loaded,
    cfg: &genas_scoring::distill::DistillConfig,
    plan: &RunPlan,
    t: &TeacherOutcome,
    n: usize,
    executor: &dyn genas_search::job::Executor,
    workers: usize,
    say: &mut dyn FnMut(&str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Ensemble> {
    if let Some(v) = archive.calibration(&plan.calibration_key)? {
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
    let (rows, calibration, _) = calibrate_with(l, cfg, n, 1, executor, workers, &|d, n, _| {
        progress("calibrating the proxies", d, n)
    })?;
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

/// One member of a front, as the table shows it.
#[derive(Clone, Debug, Serialize)]
pub struct FrontRow {
    pub id: String,
    pub architecture: String,
    pub params: u64,
    pub nonzero_params: u64,
    pub flops_per_token: f64,
    pub ms_per_token: Option<f64>,
    pub val_ce: f64,
    pub val_bits: f64,
    pub kl_to_teacher: f64,
    pub agreement: f64,
    /// After `genas distill`: validation bits and KL to the teacher of the final weights.
    pub final_bits: Option<f64>,
    pub final_kl_to_teacher: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SearchReport {
    pub run: String,
    pub experiment: String,
    pub status: String,
    pub wall_s: f64,
    pub bits_unit: String,
    /// Hugging Face tokenizers: tokens per character, by which bits per token become
    /// `bits_unit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_char: Option<f64>,
    pub proposed: u32,
    pub rejected_by_constraints: u32,
    pub screened: u32,
    /// Candidates evaluated at each rung (steps, count).
    pub per_rung: Vec<(u32, u32)>,
    pub evaluations: u32,
    pub cache_hits: u32,
    pub hypervolume: f64,
    pub hypervolume_history: Vec<(u32, f64)>,
    pub objectives: Vec<genas_space::Objective>,
    pub reference: Vec<f64>,
    pub front: Vec<FrontRow>,
    /// Set when the report was read while another process (a running search) held the
    /// archive: who, and that this is its state as of its last commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
}

pub fn load_run(
    archive: &Archive,
    id: &str,
) -> Result<(
    RunRecord,
    Option<ControllerState>,
    BTreeMap<String, CandidateRecord>,
)> {
    let record = read_run(archive, id)?;
    let state: Option<ControllerState> = archive
        .state(id)?
        .map(serde_json::from_value)
        .transpose()
        .with_context(|| format!("run {id}: unreadable controller state"))?;
    let mut cands = BTreeMap::new();
    for (cid, v) in archive.candidates(id)? {
        let c: CandidateRecord = serde_json::from_value(v)
            .with_context(|| format!("run {id}: unreadable candidate {cid}"))?;
        cands.insert(cid, c);
    }
    Ok((record, state, cands))
}

/// The report of a run as the archive holds it.
pub fn report(archive: &Archive, id: &str) -> Result<SearchReport> {
    let (record, state, cands) = load_run(archive, id)?;
    let exp = experiment_of(&record)?;
    let plan = record.plan.clone();
    let steps = exp.fidelity.rung_steps.clone();
    let bits_unit = if exp.data.kind == genas_space::DataKind::Image {
        "bits/dim"
    } else if exp.data.tokenizer == Some(genas_space::Tokenizer::Byte) {
        "bits/byte"
    } else {
        "bits/char"
    };
    let per_token = plan.as_ref().and_then(|p| p.tokens_per_char).unwrap_or(1.0);
    let bits = |nats: f64| nats / std::f64::consts::LN_2 * per_token;
    let (front, hv) = match &plan {
        Some(p) if !steps.is_empty() => front_and_hypervolume(&cands, steps.len() - 1, p),
        _ => (Vec::new(), 0.0),
    };
    let mut rows: Vec<FrontRow> = front
        .iter()
        .filter_map(|fid| {
            let c = cands.get(fid)?;
            let e = c.rungs.last()?.result.eval?;
            let distilled = archive.distilled(id, fid).ok().flatten();
            let field = |k: &str| distilled.as_ref().and_then(|d| d[k].as_f64());
            Some(FrontRow {
                id: c.id.clone(),
                architecture: c.architecture.summary(),
                params: c.cost.params,
                nonzero_params: c.cost.nonzero_params,
                flops_per_token: c.cost.flops_per_token,
                ms_per_token: c.latency_ms_per_token,
                val_ce: e.val_ce,
                val_bits: bits(e.val_ce),
                kl_to_teacher: e.kl_to_teacher,
                agreement: e.agreement,
                final_bits: field("val_bits"),
                final_kl_to_teacher: field("kl_to_teacher"),
            })
        })
        .collect();
    rows.sort_by(|a, b| a.params.cmp(&b.params).then(a.val_ce.total_cmp(&b.val_ce)));
    let st =
        state.unwrap_or_else(|| genas_search::controller::initial_state(record.seed, steps.len()));
    Ok(SearchReport {
        run: record.id.clone(),
        experiment: record.name.clone(),
        status: if st.phase == Phase::Done {
            "finished".into()
        } else {
            record.status.clone()
        },
        wall_s: record.wall_s,
        bits_unit: bits_unit.into(),
        tokens_per_char: plan.as_ref().and_then(|p| p.tokens_per_char),
        proposed: st.proposed,
        rejected_by_constraints: st.rejected_by_constraints,
        screened: st.screened,
        per_rung: steps
            .iter()
            .copied()
            .zip(st.per_rung.iter().copied())
            .collect(),
        evaluations: st.evaluations,
        cache_hits: cands
            .values()
            .flat_map(|c| &c.rungs)
            .filter(|r| r.cached)
            .count() as u32,
        hypervolume: hv,
        hypervolume_history: st.hypervolume.clone(),
        objectives: plan
            .as_ref()
            .map(|p| p.objectives.clone())
            .unwrap_or_default(),
        reference: plan.map(|p| p.reference).unwrap_or_default(),
        front: rows,
        live: archive.live().map(|h| {
            format!("live view: the archive is in use by {h}; shown as of its last commit")
        }),
    })
}

pub fn render_report(r: &SearchReport) -> String {
    let mut out = String::new();
    if let Some(live) = &r.live {
        let _ = writeln!(out, "{live}");
    }
    let rungs: Vec<String> = r
        .per_rung
        .iter()
        .map(|(s, n)| format!("{n} at {s} steps"))
        .collect();
    let _ = writeln!(
        out,
        "run {} of {}: {}, {:.1} s; {} proposed ({} draws rejected by the constraints), {} screened, distilled {}{}",
        r.run,
        r.experiment,
        r.status,
        r.wall_s,
        r.proposed,
        r.rejected_by_constraints,
        r.screened,
        rungs.join(", "),
        if r.cache_hits > 0 {
            format!(" ({} from the cache)", r.cache_hits)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "hypervolume {:.4} (objectives {:?}, normalised by the reference point)\n",
        r.hypervolume, r.objectives
    );
    // Final-distillation columns once any member has been through genas distill.
    let finals = r.front.iter().any(|f| f.final_bits.is_some());
    let _ = writeln!(
        out,
        "{:<17} {:>9} {:>9} {:>12} {:>9} {:>10} {:>8}{}  architecture",
        "Pareto front",
        "params",
        "non-zero",
        "FLOPs/token",
        "ms/token",
        r.bits_unit,
        "KL",
        if finals {
            format!(" {:>10} {:>8}", "final bits", "final KL")
        } else {
            String::new()
        }
    );
    let opt = |x: Option<f64>, w: usize| x.map_or(format!("{:>w$}", "-"), |v| format!("{v:>w$.4}"));
    for f in &r.front {
        let _ = writeln!(
            out,
            "{:<17} {:>9} {:>9} {:>12} {:>9} {:>10.4} {:>8.4}{}  {}",
            f.id,
            crate::format::thousands(f.params),
            crate::format::thousands(f.nonzero_params),
            crate::format::flops(f.flops_per_token),
            f.ms_per_token.map_or("-".into(), |m| format!("{m:.3}")),
            f.val_bits,
            f.kl_to_teacher,
            if finals {
                format!(
                    " {} {}",
                    opt(f.final_bits, 10),
                    opt(f.final_kl_to_teacher, 8)
                )
            } else {
                String::new()
            },
            f.architecture
        );
    }
    if !finals && !r.front.is_empty() {
        let _ = writeln!(
            out,
            "({} and KL after the search's brief distillation. Next: genas distill {} --front for the final one, then genas export {} ID --format pytorch|hf|json --out DIR)",
            r.bits_unit, r.run, r.run
        );
    }
    out
}

/// `genas runs`.
#[derive(Serialize)]
pub struct RunLine {
    pub id: String,
    pub experiment: String,
    pub status: String,
    pub proposed: u32,
    pub evaluations: u32,
    pub front: usize,
    pub hypervolume: f64,
    /// Read while another process held the archive (its state as of its last commit).
    pub live: bool,
}

pub fn runs(archive_dir: &Path) -> Result<Vec<RunLine>> {
    let archive = Archive::open_read_only(archive_dir)?;
    let mut out = Vec::new();
    for (id, _) in archive.runs()? {
        let r = report(&archive, &id)?;
        out.push(RunLine {
            id,
            experiment: r.experiment,
            status: r.status,
            proposed: r.proposed,
            evaluations: r.evaluations,
            front: r.front.len(),
            hypervolume: r.hypervolume,
            live: r.live.is_some(),
        });
    }
    Ok(out)
}

pub fn render_runs(lines: &[RunLine]) -> String {
    let live = if lines.iter().any(|l| l.live) {
        "live view: the archive is in use by a running search; shown as of its last commit\n"
    } else {
        ""
    };
    let mut out = live.to_string()
        + &format!(
            "{:<6} {:<16} {:<12} {:>9} {:>11} {:>6} {:>12}\n",
            "run", "experiment", "status", "proposed", "evaluations", "front", "hypervolume"
        );
    for l in lines {
        let _ = writeln!(
            out,
            "{:<6} {:<16} {:<12} {:>9} {:>11} {:>6} {:>12.4}",
            l.id, l.experiment, l.status, l.proposed, l.evaluations, l.front, l.hypervolume
        );
    }
    out
}

/// `genas show`: the run and every candidate.
#[derive(Serialize)]
pub struct ShowReport {
    pub report: SearchReport,
    pub candidates: Vec<CandidateRecord>,
}

pub fn show(archive_dir: &Path, id: &str) -> Result<ShowReport> {
    let archive = Archive::open_read_only(archive_dir)?;
    let report = report(&archive, id)?;
    let (_, _, cands) = load_run(&archive, id)?;
    let mut candidates: Vec<CandidateRecord> = cands.into_values().collect();
    candidates.sort_by_key(|c| c.index);
    Ok(ShowReport { report, candidates })
}

pub fn render_show(s: &ShowReport) -> String {
    let mut out = render_report(&s.report);
    let _ = writeln!(
        out,
        "\n{:>4} {:<17} {:>9} {:>8}  {:<24} architecture",
        "#", "candidate", "params", "screen", "validation CE per rung"
    );
    for c in &s.candidates {
        let rungs: Vec<String> = c
            .rungs
            .iter()
            .map(|r| {
                r.result
                    .eval
                    .map_or("diverged".into(), |e| format!("{:.3}", e.val_ce))
            })
            .collect();
        let status = if c.screened_out {
            "screened out".to_string()
        } else {
            rungs.join(" → ")
        };
        let _ = writeln!(
            out,
            "{:>4} {:<17} {:>9} {:>8} {:<24} {}",
            c.index,
            c.id,
            crate::format::thousands(c.cost.params),
            c.screen_score.map_or("-".into(), |s| format!("{s:.3}")),
            status,
            c.architecture.summary()
        );
    }
    out
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
    let svg = crate::plot::pareto_svg(r, cands);
    let bytes = match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("svg") => svg.into_bytes(),
        Some(e) if e.eq_ignore_ascii_case("png") => {
            crate::plot::svg_to_png(&svg, 2.0).map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
        _ => bail!(
            "{}: the plot is written as SVG or PNG; name a .svg or .png file",
            path.display()
        ),
    };
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
