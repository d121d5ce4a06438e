//! `genas bench search`: strategies compared on a tabulated benchmark (`genas bench table`),
//! in seconds instead of hours, as Syne Tune's simulator backend replays a blackbox. Each
//! simulated run is the real controller (proposals, constraints, screen, successive halving,
//! commits to a real, temporary archive) with the [`Replay`] executor, so it makes exactly the
//! decisions a search would make with those results. Its clock is simulated: every evaluation
//! advances it by the CPU time the table recorded for it, every screened proposal by its
//! proxy suite's, and a screened configuration starts with the calibration's cost
//! (`search.calibration` brief distillations at the top rung).
//!
//! For each configuration (strategy, with or without the screen, `eta`, `screen_keep`, the
//! table's top rung alone, a budget) and seed it records the hypervolume against simulated
//! compute, and reports, over seeds, the mean and 95% interval of the final hypervolume as a
//! share of the table's reference (every architecture at the top rung), the compute each needs
//! to reach 90/95/98% of it, the hypervolume at equal compute, and the anytime curves as a plot.
//! Beside that, how well each rung, proxy and ensemble ranks the table's sample by its final
//! quality (`correlations`, and `calibrate_from_table` in calibrate's own form).
//!
//! It knows nothing about how a table was made; it needs the experiment, to read the search
//! settings, and the table.

use anyhow::{bail, Context, Result};
use genas_exec::replay::Replay;
use genas_exec::replay::Table;
use genas_scoring::calibrate::{calibrate, Ensemble};
use genas_search::controller::{
    reference_point, CandidateRecord, Controller, RunContext, RunPlan, RungResult,
};
use genas_search::job::Executor;
use genas_space::{Experiment, Objective, Rng, SearchSpace, Strategy};
use genas_store::Archive;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// One setting of the search compared.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub name: String,
    pub strategy: Strategy,
    pub screen: bool,
    pub screen_keep: f64,
    pub eta: u32,
    /// The fidelity schedule: steps of each rung, each one of the table's, ending at its top
    /// rung (so every configuration's front is judged at the same fidelity).
    pub rung_steps: Vec<u32>,
    /// Proposals per run (search.candidates).
    pub candidates: u32,
    /// Architectures the screen is calibrated on (search.calibration).
    pub calibration: u32,
}

/// The share the screened configurations keep where the experiment itself has no screen.
pub const SCREEN_KEEP_COMPARED: f64 = 0.5;

/// The configurations `genas bench search` compares by default.
pub fn default_configs(exp: &Experiment, table_rungs: &[u32]) -> Vec<Config> {
    let f = &exp.fidelity;
    // The screened configurations keep the experiment's share, or half where it has no screen.
    let keep = if f.screen_keep < 1.0 {
        f.screen_keep
    } else {
        SCREEN_KEEP_COMPARED
    };
    let base = |name: String, strategy, screen| Config {
        name,
        strategy,
        screen,
        screen_keep: keep,
        eta: f.eta,
        rung_steps: f.rung_steps.clone(),
        candidates: exp.search.candidates,
        calibration: exp.search.calibration,
    };
    let mut out = Vec::new();
    for strategy in [Strategy::Random, Strategy::Evolution, Strategy::Nsga2] {
        for screen in [true, false] {
            out.push(base(config_name(strategy, "", screen), strategy, screen));
        }
    }
    let strategy = exp.search.strategy;
    let s = strategy_name(strategy);
    for (keep, eta) in [(0.25, f.eta), (keep, 2), (keep, 4)] {
        out.push(Config {
            screen_keep: keep,
            eta,
            ..base(format!("{s} keep{keep} eta{eta}"), strategy, true)
        });
    }
    // The top rung alone: no successive halving (random beside it, the baseline).
    if let Some(&top) = table_rungs.last() {
        if f.rung_steps.len() > 1 {
            let mut kinds = vec![strategy];
            if strategy != Strategy::Random {
                kinds.push(Strategy::Random);
            }
            for k in kinds {
                for screen in [true, false] {
                    out.push(Config {
                        rung_steps: vec![top],
                        ..base(config_name(k, " top-rung", screen), k, screen)
                    });
                }
            }
        }
    }
    out
}

/// `configs` with every run proposing `candidates` (named with it).
pub fn with_candidates(configs: Vec<Config>, candidates: u32) -> Vec<Config> {
    configs
        .into_iter()
        .map(|c| Config {
            name: format!("{} n{candidates}", c.name),
            candidates,
            ..c
        })
        .collect()
}

/// "nsga2", "evolution top-rung no-screen", ...
fn config_name(strategy: Strategy, variant: &str, screen: bool) -> String {
    let screen = if screen { "" } else { " no-screen" };
    format!("{}{variant}{screen}", strategy_name(strategy))
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::Random => "random",
        Strategy::Evolution => "evolution",
        Strategy::Nsga2 => "nsga2",
    }
}

/// One simulated run: (simulated compute in CPU-seconds, hypervolume) after every
/// evaluation, and its end.
#[derive(Clone, Debug, Serialize)]
pub struct Trajectory {
    pub seed: u64,
    pub points: Vec<(f64, f64)>,
    pub compute_s: f64,
    pub hypervolume: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConfigReport {
    pub config: Config,
    /// Final hypervolume / the reference's: mean and 95% interval over seeds.
    pub final_share: (f64, f64, f64),
    /// Simulated compute (CPU-seconds) of a whole run: mean over seeds.
    pub compute_s: f64,
    /// For 90, 95 and 98% of the reference hypervolume: seeds that reached it, and the mean
    /// compute (share of exhaustive compute) they needed.
    pub to_reach: Vec<(f64, usize, Option<f64>)>,
    /// Hypervolume / reference after at most 2, 5 and 10% of exhaustive compute: mean and 95%
    /// interval over seeds (a run that stopped earlier counts with its final value). This is
    /// the comparison at equal compute.
    pub at_compute: Vec<(f64, (f64, f64, f64))>,
    pub trajectories: Vec<Trajectory>,
}

/// The compute levels (share of exhaustive) `at_compute` reports.
pub const AT_COMPUTE: [f64; 3] = [0.02, 0.05, 0.10];

#[derive(Clone, Debug, Serialize)]
pub struct SearchBench {
    pub table_rows: usize,
    /// The table holds only its final sample: correlations, no simulated searches.
    pub sample_only: bool,
    pub seeds: usize,
    pub objectives: Vec<Objective>,
    /// Hypervolume of every architecture at the top rung (normalised, as runs report it).
    pub reference_hypervolume: f64,
    /// CPU-seconds of the top rung over the whole table.
    pub exhaustive_compute_s: f64,
    /// CPU-seconds charged to a screened run for its calibration.
    pub calibration_compute_s: f64,
    pub configs: Vec<ConfigReport>,
    pub correlations: Option<Correlations>,
    pub wall_s: f64,
}

/// How well each cheap signal ranks the sampled architectures by their quality after the
/// final fidelities (Kendall τ-b and Spearman ρ of −validation CE), and what picking the
/// front by a rung costs.
#[derive(Clone, Debug, Serialize)]
pub struct Correlations {
    /// Architectures with final results (diverged ones rank last).
    pub n: usize,
    pub final_steps: Vec<u32>,
    /// (signal, [(τ, ρ) against each final fidelity]).
    pub signals: Vec<(String, Vec<(f64, f64)>)>,
    /// (rung steps, regret): 1 − hypervolume at final quality of the front picked by that
    /// rung / that of the true final front, over the sample.
    pub regret: Vec<(u32, f64)>,
    /// Architectures the held-out ensemble was fitted on and judged on.
    pub held_out: (usize, usize),
}

/// Correlations of every rung, proxy and ensemble with the final quality on the table's
/// sample.
pub fn correlations(table: &Table, plan: &RunPlan) -> Option<Correlations> {
    use genas_scoring::stats::{kendall_tau_b, spearman};
    let sample: Vec<&genas_exec::replay::Row> = table
        .rows
        .iter()
        .filter(|r| r.finals.len() == table.final_steps.len())
        .collect();
    // Two halves of at least ten: the held-out ensembles cross-validate over five folds.
    if sample.len() < 20 {
        return None;
    }
    let q = |e: &genas_exec::replay::Evaluated| e.result.eval.map_or(f64::MIN, |v| -v.val_ce);
    // (τ, ρ) of `x` against each final fidelity's quality of `rows`.
    let correlate = |rows: &[&genas_exec::replay::Row], x: &[f64]| -> Vec<(f64, f64)> {
        (0..table.final_steps.len())
            .map(|k| {
                let t: Vec<f64> = rows.iter().map(|r| q(&r.finals[k])).collect();
                (kendall_tau_b(x, &t), spearman(x, &t))
            })
            .collect()
    };
    let against = |x: &[f64]| correlate(&sample, x);
    let mut signals = Vec::new();
    for (k, &steps) in table.rung_steps.iter().enumerate() {
        let x: Vec<f64> = sample.iter().map(|r| q(&r.rungs[k])).collect();
        signals.push((format!("rung {} ({steps} steps)", k + 1), against(&x)));
    }
    // The final fidelities against each other: how far a longer run still reorders.
    for (k, &steps) in table.final_steps.iter().enumerate() {
        let x: Vec<f64> = sample.iter().map(|r| q(&r.finals[k])).collect();
        signals.push((format!("{steps} steps (a final fidelity)"), against(&x)));
    }
    for name in genas_scoring::zero_cost::PROXY_NAMES {
        let x: Vec<f64> = sample
            .iter()
            .map(|r| r.proxies.get(name).unwrap_or(f64::MIN))
            .collect();
        signals.push((format!("proxy {name}"), against(&x)));
    }
    // An ensemble fitted as the search fits its screen (against the top rung), judged held out.
    let top = table.rung_steps.len() - 1;
    let (fit_on, judge): (Vec<&genas_exec::replay::Row>, Vec<&genas_exec::replay::Row>) = {
        let mut order: Vec<usize> = (0..sample.len()).collect();
        Rng::seed_from_u64(0x5917).shuffle(&mut order);
        let half = sample.len() / 2;
        (
            order[..half].iter().map(|&i| sample[i]).collect(),
            order[half..].iter().map(|&i| sample[i]).collect(),
        )
    };
    let on_judged = |x: &[f64]| correlate(&judge, x);
    let screen = fit(&fit_on, |r| r.rungs[top].result.eval.map(|e| -e.val_ce));
    let x: Vec<f64> = judge.iter().map(|r| screen.score(&r.proxies)).collect();
    signals.push((
        format!(
            "ensemble fitted to the top rung ({}, held out)",
            screen.kind
        ),
        on_judged(&x),
    ));
    let direct = fit(&fit_on, |r| r.finals[0].result.eval.map(|e| -e.val_ce));
    let x: Vec<f64> = judge.iter().map(|r| direct.score(&r.proxies)).collect();
    signals.push((
        format!(
            "ensemble fitted to the final fidelity ({}, held out)",
            direct.kind
        ),
        on_judged(&x),
    ));
    // Learning-curve extrapolation from the last two rungs: CE_top + k·(CE_top − CE_prev),
    // the slope k chosen on the fitting half (k = 0 is the top rung itself).
    if table.rung_steps.len() >= 2 {
        let (a, b) = (top - 1, top);
        let ce = |r: &genas_exec::replay::Row, k: usize| r.rungs[k].result.eval.map(|e| e.val_ce);
        let extrapolate = |r: &genas_exec::replay::Row, slope: f64| -> f64 {
            match (ce(r, a), ce(r, b)) {
                (Some(x), Some(y)) => -(y + slope * (y - x)),
                _ => f64::MIN,
            }
        };
        let slopes: Vec<f64> = (0..=20).map(|i| i as f64 * 0.05).collect();
        let best = slopes
            .iter()
            .copied()
            .map(|k| {
                let x: Vec<f64> = fit_on.iter().map(|r| extrapolate(r, k)).collect();
                (correlate(&fit_on, &x)[0].0, k)
            })
            .fold(
                (f64::NEG_INFINITY, 0.0),
                |m, c| if c.0 > m.0 { c } else { m },
            );
        let x: Vec<f64> = judge.iter().map(|r| extrapolate(r, best.1)).collect();
        signals.push((
            format!(
                "rungs {} and {} extrapolated, slope {:.2} (held out)",
                a + 1,
                b + 1,
                best.1
            ),
            on_judged(&x),
        ));
    }
    // Regret of picking the front by a rung.
    let records: Vec<CandidateRecord> = sample.iter().map(|r| as_candidate(r, false)).collect();
    // Sample member i's normalised objectives with its result `e` (none if it diverged).
    let point = |i: usize, e: &genas_exec::replay::Evaluated| -> Option<Vec<f64>> {
        let ce = e.result.eval?.val_ce;
        Some(
            genas_search::controller::objectives(&records[i], ce, &plan.objectives)
                .iter()
                .zip(&plan.reference)
                .map(|(x, r)| x / r)
                .collect(),
        )
    };
    // The sample members on the front of their results at `fidelity`.
    let front_by =
        |fidelity: &dyn Fn(&genas_exec::replay::Row) -> &genas_exec::replay::Evaluated| {
            let at: Vec<(usize, Vec<f64>)> = (0..sample.len())
                .filter_map(|i| point(i, fidelity(sample[i])).map(|p| (i, p)))
                .collect();
            let points: Vec<Vec<f64>> = at.iter().map(|(_, p)| p.clone()).collect();
            genas_search::pareto::front(&points)
                .into_iter()
                .map(|k| at[k].0)
                .collect::<Vec<usize>>()
        };
    let ones = vec![1.0; plan.reference.len()];
    let hv_final = |members: &[usize]| -> f64 {
        let pts: Vec<Vec<f64>> = members
            .iter()
            .filter_map(|&i| point(i, &sample[i].finals[0]))
            .collect();
        genas_search::pareto::hypervolume(&pts, &ones)
    };
    let best = hv_final(&front_by(&|r| &r.finals[0]));
    let regret = (0..table.rung_steps.len())
        .map(|k| {
            let picked = front_by(&|r| &r.rungs[k]);
            (table.rung_steps[k], 1.0 - hv_final(&picked) / best)
        })
        .collect();
    Some(Correlations {
        n: sample.len(),
        final_steps: table.final_steps.clone(),
        signals,
        regret,
        held_out: (fit_on.len(), judge.len()),
    })
}

/// `genas proxies calibrate --table`: the table's calibration, as `genas proxies calibrate`
/// reports one, against the quality at one of its fidelities, with the rungs beside the proxies.
#[derive(Clone, Debug, Serialize)]
pub struct TableCalibration {
    pub against_steps: u32,
    /// Rows calibrated on: the table's sample when `against` is a final fidelity, every row
    /// when it is a rung; at most `--n`, the first in table order.
    pub n: usize,
    /// Each rung shorter than `against`, as a signal (τ/ρ over the same rows).
    pub rungs: Vec<genas_scoring::calibrate::Correlation>,
    pub calibration: genas_scoring::calibrate::Calibration,
}

pub fn calibrate_from_table(
    table: &Table,
    against: Option<u32>,
    limit: usize,
) -> Result<TableCalibration> {
    use genas_exec::replay::Evaluated;
    use genas_scoring::calibrate::Correlation;
    use genas_scoring::stats::{kendall_tau_b, spearman};
    let steps = against
        .or(table.final_steps.first().copied())
        .or(table.rung_steps.last().copied())
        .context("the table has no fidelity")?;
    // Where a row holds its result at `steps`.
    let at = |r: &genas_exec::replay::Row| -> Option<Evaluated> {
        r.rungs
            .iter()
            .chain(&r.finals)
            .find(|e| e.steps == steps)
            .cloned()
    };
    if !table
        .rung_steps
        .iter()
        .chain(&table.final_steps)
        .any(|&s| s == steps)
    {
        bail!(
            "--against {steps}: the table holds rungs {:?} and final fidelities {:?}",
            table.rung_steps,
            table.final_steps
        );
    }
    let rows: Vec<(&genas_exec::replay::Row, Evaluated)> = table
        .rows
        .iter()
        .filter_map(|r| at(r).map(|e| (r, e)))
        .take(limit)
        .collect();
    if rows.len() < 10 {
        bail!(
            "only {} architectures of the table have a result at {steps} steps; calibration needs 10",
            rows.len()
        );
    }
    let q = |e: &Evaluated| e.result.eval.map(|v| -v.val_ce);
    let data: Vec<_> = rows
        .iter()
        .map(|(r, e)| (r.proxies.clone(), q(e)))
        .collect();
    let calibration = calibrate(&data);
    let target: Vec<f64> = rows.iter().map(|(_, e)| q(e).unwrap_or(f64::MIN)).collect();
    let rungs = table
        .rung_steps
        .iter()
        .enumerate()
        .filter(|(_, &s)| s < steps)
        .map(|(k, &s)| {
            let x: Vec<f64> = rows
                .iter()
                .map(|(r, _)| q(&r.rungs[k]).unwrap_or(f64::MIN))
                .collect();
            Correlation {
                name: format!("rung {} ({s} steps)", k + 1),
                kendall: kendall_tau_b(&x, &target),
                spearman: spearman(&x, &target),
            }
        })
        .collect();
    Ok(TableCalibration {
        against_steps: steps,
        n: rows.len(),
        rungs,
        calibration,
    })
}

pub fn render_table_calibration(r: &TableCalibration, table: &Path) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "calibration on the table {}: {} architectures against their quality after {} steps ({} diverged)\n",
        table.display(),
        r.n,
        r.against_steps,
        r.calibration.diverged
    );
    out += &crate::calibration::render_correlations(&r.calibration, &r.rungs);
    let _ = writeln!(
        out,
        "\nchosen      {} over {}",
        r.calibration.chosen.kind,
        r.calibration.chosen.members.join(", ")
    );
    out
}

/// A table row as the controller's candidate record (with its rung results, or none).
pub(crate) fn as_candidate(r: &genas_exec::replay::Row, with_rungs: bool) -> CandidateRecord {
    CandidateRecord {
        id: r.id.clone(),
        index: 0,
        round: 0,
        architecture: r.architecture.clone(),
        cost: r.cost.clone(),
        origin: "table".into(),
        proxies: None,
        screen_score: None,
        screened_out: false,
        rungs: if with_rungs {
            r.rungs
                .iter()
                .enumerate()
                .map(|(k, e)| RungResult {
                    rung: k,
                    steps: e.steps,
                    result: e.result.clone(),
                    cached: false,
                    failed: None,
                })
                .collect()
        } else {
            Vec::new()
        },
        latency_ms_per_token: r.latency_ms_per_token,
    }
}

/// The ensemble `calibrate` chooses for `rows`' proxies against `quality` (higher better).
fn fit(
    rows: &[&genas_exec::replay::Row],
    quality: impl Fn(&genas_exec::replay::Row) -> Option<f64>,
) -> Ensemble {
    let data: Vec<_> = rows
        .iter()
        .map(|r| (r.proxies.clone(), quality(r)))
        .collect();
    calibrate(&data).chosen
}

/// Compares `configs` over `seeds` seeds on `table` with the search settings of `exp`.
pub fn bench_search(
    exp: &Experiment,
    table: &Table,
    configs: &[Config],
    seeds: usize,
    progress: &dyn Fn(usize, usize),
) -> Result<SearchBench> {
    let start = std::time::Instant::now();
    let first = table.rows.first().context("the table is empty")?;
    check_rungs(table, configs)?;
    let (vocab, context) = (first.architecture.vocab_size, first.architecture.context);
    let space = SearchSpace::new(&exp.space, vocab, context)
        .with_context(|| exp.source.display().to_string())?;
    // A table answers for the space it was made from: every architecture the experiment
    // could propose must be in it (a sample-only table is read for its correlations alone).
    if !table.sample_only {
        if let Some(size) = table.sampled_from {
            bail!(
                "the table is a uniform sample of {} of a space of {size:.3e} architectures: a search is replayed against a surrogate fitted to it (--surrogate), not against its rows",
                table.rows.len()
            );
        }
        let within = space
            .architectures_within(
                &exp.constraints,
                crate::tabulate::MAX_TABLE_ARCHITECTURES as u128,
            )
            .with_context(|| {
                format!(
                    "{}: its space within the constraints holds more architectures than a table can",
                    exp.source.display()
                )
            })?;
        let rows: std::collections::BTreeSet<&str> =
            table.rows.iter().map(|r| r.id.as_str()).collect();
        let missing = within
            .iter()
            .filter(|a| !rows.contains(a.id().as_str()))
            .count();
        if missing > 0 {
            bail!(
                "{}: {missing} of the {} architectures within its constraints are not in the table, which was made for another space or constraints: replay a table made by genas bench table of this experiment",
                exp.source.display(),
                within.len()
            );
        }
    }
    let objectives = exp.search.objectives.clone();
    let plan = plan_for(exp, &space, table)?;
    if table.sample_only {
        // Too few rows to simulate a search on: the correlations alone.
        return Ok(SearchBench {
            table_rows: table.rows.len(),
            sample_only: true,
            seeds: 0,
            objectives,
            reference_hypervolume: f64::NAN,
            exhaustive_compute_s: f64::NAN,
            calibration_compute_s: f64::NAN,
            configs: Vec::new(),
            correlations: correlations(table, &plan),
            wall_s: start.elapsed().as_secs_f64(),
        });
    }
    let top = table.rung_steps.len() - 1;
    let replay = Replay::new(table);
    // The reference: every architecture of the table at the top rung.
    let mut cands = BTreeMap::new();
    for (i, r) in table.rows.iter().enumerate() {
        let mut c = as_candidate(r, true);
        c.index = i as u32;
        cands.insert(r.id.clone(), c);
    }
    let (_, reference_hv) = genas_search::controller::front_and_hypervolume(&cands, top, &plan);
    let exhaustive: f64 = table.rows.iter().map(|r| r.rungs[top].cpu_s).sum();
    let (_, calibration_compute) = calibration_of(exp, table, exp.search.calibration);
    let calibration = |n: u32| calibration_of(exp, table, n);
    let cpu = |id: &str, steps: Option<u32>| replay.row(id).map_or(0.0, |r| r.cpu_s(steps));
    let whole: Vec<genas_space::Architecture> =
        table.rows.iter().map(|r| r.architecture.clone()).collect();
    let bench = Bench {
        exp,
        space: &space,
        plan: &plan,
        executor: &replay,
        cpu: &cpu,
        calibration: &calibration,
        whole: Some(&whole),
    };
    let runs = simulate_runs(&bench, configs, seeds, progress)?;
    let reports = configs
        .iter()
        .zip(runs)
        .map(|(cfg, t)| summarise(cfg, t, reference_hv, exhaustive))
        .collect();
    Ok(SearchBench {
        table_rows: table.rows.len(),
        sample_only: false,
        seeds,
        objectives,
        reference_hypervolume: reference_hv,
        exhaustive_compute_s: exhaustive,
        calibration_compute_s: calibration_compute,
        configs: reports,
        correlations: correlations(table, &plan),
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// Refuses a configuration whose rungs are not the table's (ending at its top rung).
pub(crate) fn check_rungs(table: &Table, configs: &[Config]) -> Result<()> {
    for c in configs {
        let mut at = table.rung_steps.iter();
        if c.rung_steps.is_empty()
            || !c.rung_steps.iter().all(|s| at.any(|t| t == s))
            || c.rung_steps.last() != table.rung_steps.last()
        {
            bail!(
                "{}: rungs {:?} are not drawn from the table's rungs {:?} ending at its top rung",
                c.name,
                c.rung_steps,
                table.rung_steps
            );
        }
    }
    Ok(())
}

/// The plan a simulated run of `exp` on `table` keeps: its objectives and reference point.
pub(crate) fn plan_for(exp: &Experiment, space: &SearchSpace, table: &Table) -> Result<RunPlan> {
    let objectives = exp.search.objectives.clone();
    let reference = reference_point(&objectives, space, exp)?;
    Ok(RunPlan {
        objectives,
        reference,
        teacher_key: table.teacher_key.clone(),
        calibration_key: "simulated".into(),
        data_fingerprint: "simulated".into(),
        max_latency_ms_per_token: exp.constraints.max_latency_ms_per_token,
        tokens_per_char: None,
    })
}

/// The screen's calibration: `search.calibration` rows of the table (fixed by the teacher
/// seed, as a search's is), their proxies against the top rung; and the CPU seconds it cost
/// (their top rung and proxies).
pub(crate) fn calibration_of(exp: &Experiment, table: &Table, size: u32) -> (Ensemble, f64) {
    let top = table.rung_steps.len().saturating_sub(1);
    let mut rng = Rng::seed_from_u64(exp.teacher.seed ^ 0xca11_b7a7e);
    let mut order: Vec<usize> = (0..table.rows.len()).collect();
    rng.shuffle(&mut order);
    let picked: Vec<&genas_exec::replay::Row> = order
        .iter()
        .take((size as usize).min(table.rows.len()))
        .map(|&i| &table.rows[i])
        .collect();
    let ensemble = fit(&picked, |r| {
        r.rungs
            .get(top)
            .and_then(|e| e.result.eval.map(|e| -e.val_ce))
    });
    let compute = picked
        .iter()
        .map(|r| r.rungs.get(top).map_or(0.0, |e| e.cpu_s) + r.proxies_cpu_s)
        .sum();
    (ensemble, compute)
}

/// What simulated searches read their results from.
pub(crate) struct Bench<'a> {
    pub exp: &'a Experiment,
    pub space: &'a SearchSpace,
    pub plan: &'a RunPlan,
    pub executor: &'a (dyn Executor + Sync),
    /// The CPU seconds the clock is charged for a candidate's proxies (`None`) or its brief
    /// distillation of `steps` steps.
    pub cpu: &'a (dyn Fn(&str, Option<u32>) -> f64 + Sync),
    /// The screen's calibration on so many architectures, and the CPU seconds a screened run
    /// is charged for it.
    pub calibration: &'a (dyn Fn(u32) -> (Ensemble, f64) + Sync),
    /// The whole space within the constraints, where it is known: a run whose budget covers
    /// it evaluates it exhaustively, as a search plans it.
    pub whole: Option<&'a [genas_space::Architecture]>,
}

/// Every configuration's runs, one per seed: each the real controller, its own archive in a
/// scratch directory, the seeds run side by side on the machine's cores (each run is
/// deterministic, so the order they finish in changes nothing).
pub(crate) fn simulate_runs(
    b: &Bench,
    configs: &[Config],
    seeds: usize,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<Vec<Trajectory>>> {
    let scratch = scratch_dir()?;
    let total = configs.len() * seeds;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = Vec::new();
    for (ci, cfg) in configs.iter().enumerate() {
        let whole_space = b
            .whole
            .filter(|w| w.len() <= cfg.candidates as usize)
            .map(|w| w.to_vec());
        let (ensemble, calibration_compute) = (b.calibration)(cfg.calibration);
        let one = |seed: u64| -> Result<Trajectory> {
            let mut e = b.exp.clone();
            e.search.seed = seed;
            e.search.strategy = cfg.strategy;
            e.search.candidates = cfg.candidates;
            e.fidelity.eta = cfg.eta;
            e.fidelity.screen_keep = cfg.screen_keep;
            e.fidelity.rung_steps = cfg.rung_steps.clone();
            let dir = scratch.path().join(format!("c{ci}-s{seed}"));
            let archive = Archive::open(&dir)?;
            let run =
                archive.create_run(&serde_json::json!({"simulated": cfg.name, "seed": seed}))?;
            let stop = AtomicBool::new(false);
            let screened = cfg.screen && whole_space.is_none();
            let cx = RunContext {
                experiment: &e,
                space: b.space,
                archive: &archive,
                run: run.clone(),
                plan: b.plan.clone(),
                ensemble: screened.then(|| ensemble.clone()),
                exhaustive: whole_space
                    .clone()
                    .map(|w| genas_search::controller::exhaustive_order(w, seed)),
                executor: b.executor,
                workers: 1,
                stop: &stop,
                warn: &|m: &str| eprintln!("{m}"),
            };
            let mut c = Controller::open(cx)?;
            c.run(&|_, _, _| {})?;
            let events = archive.events(&run)?;
            let base = if screened { calibration_compute } else { 0.0 };
            drop(c);
            drop(archive);
            let _ = std::fs::remove_dir_all(&dir);
            Ok(trajectory(seed, &events, b.cpu, &cfg.rung_steps, base))
        };
        let one = &one;
        let mut trajectories = Vec::with_capacity(seeds);
        let all: Vec<u64> = (0..seeds as u64).collect();
        for chunk in all.chunks(workers) {
            let done: Vec<Result<Trajectory>> = std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|&seed| s.spawn(move || one(seed)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("a simulated run panicked")))
                    })
                    .collect()
            });
            for t in done {
                trajectories.push(t?);
            }
            progress(ci * seeds + trajectories.len(), total);
        }
        out.push(trajectories);
    }
    Ok(out)
}

/// A directory for the runs' archives: in memory where the machine has one (/dev/shm), so
/// thousands of flushed commits cost little.
fn scratch_dir() -> Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("genas-sim-")
            .tempdir_in(shm)
            .or_else(|_| tempfile::Builder::new().prefix("genas-sim-").tempdir())
    } else {
        tempfile::Builder::new().prefix("genas-sim-").tempdir()
    };
    dir.context("cannot create a scratch directory for the simulated runs")
}

/// The run's (compute, hypervolume) after each evaluation, from its event log.
fn trajectory(
    seed: u64,
    events: &[serde_json::Value],
    cpu: &(dyn Fn(&str, Option<u32>) -> f64 + Sync),
    rung_steps: &[u32],
    base: f64,
) -> Trajectory {
    let mut compute = base;
    let mut last_batch: Vec<String> = Vec::new();
    let mut points = Vec::new();
    let mut hv = 0.0;
    for ev in events {
        match ev["event"].as_str() {
            Some("proposed") => {
                last_batch = ev["candidates"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
            }
            Some("screened") => {
                compute += last_batch.iter().map(|id| cpu(id, None)).sum::<f64>();
            }
            Some("evaluated") => {
                let id = ev["candidate"].as_str().unwrap_or_default();
                let rung = ev["rung"].as_u64().unwrap_or(0) as usize;
                let steps = rung_steps.get(rung).copied().unwrap_or(0);
                compute += cpu(id, Some(steps));
                hv = ev["hypervolume"].as_f64().unwrap_or(hv);
                points.push((compute, hv));
            }
            _ => {}
        }
    }
    Trajectory {
        seed,
        points,
        compute_s: compute,
        hypervolume: hv,
    }
}

/// Mean and 95% interval (Student t) of `x`.
pub fn mean_interval(x: &[f64]) -> (f64, f64, f64) {
    let n = x.len() as f64;
    if x.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mean = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (mean, mean, mean);
    }
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    // Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom, then normal.
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    let df = x.len() - 1;
    let t = if df <= 30 { T[df - 1] } else { 1.96 };
    let half = t * (var / n).sqrt();
    (mean, mean - half, mean + half)
}

fn summarise(
    cfg: &Config,
    trajectories: Vec<Trajectory>,
    reference_hv: f64,
    exhaustive: f64,
) -> ConfigReport {
    let shares: Vec<f64> = trajectories
        .iter()
        .map(|t| t.hypervolume / reference_hv)
        .collect();
    let to_reach = [0.90, 0.95, 0.98]
        .iter()
        .map(|&level| {
            let reached: Vec<f64> = trajectories
                .iter()
                .filter_map(|t| {
                    t.points
                        .iter()
                        .find(|(_, hv)| *hv >= level * reference_hv)
                        .map(|(c, _)| c / exhaustive)
                })
                .collect();
            let mean =
                (!reached.is_empty()).then(|| reached.iter().sum::<f64>() / reached.len() as f64);
            (level, reached.len(), mean)
        })
        .collect();
    let at_compute = AT_COMPUTE
        .iter()
        .map(|&level| {
            let at: Vec<f64> = trajectories
                .iter()
                .map(|t| share_at(t, level * exhaustive, reference_hv))
                .collect();
            (level, mean_interval(&at))
        })
        .collect();
    ConfigReport {
        config: cfg.clone(),
        at_compute,
        final_share: mean_interval(&shares),
        compute_s: trajectories.iter().map(|t| t.compute_s).sum::<f64>()
            / trajectories.len().max(1) as f64,
        to_reach,
        trajectories,
    }
}

/// A run's hypervolume share after at most `compute` CPU-seconds (0 before its first
/// evaluation; its final value once it ended).
fn share_at(t: &Trajectory, compute: f64, reference_hv: f64) -> f64 {
    t.points
        .iter()
        .take_while(|(c, _)| *c <= compute)
        .last()
        .map_or(0.0, |(_, hv)| hv / reference_hv)
}

/// The mean anytime curve of a configuration: hypervolume share at `grid` compute values
/// (each run's last value carried forward; 0 before its first evaluation).
pub fn anytime(r: &ConfigReport, grid: &[f64], reference_hv: f64) -> Vec<(f64, f64, f64)> {
    grid.iter()
        .map(|&g| {
            let at: Vec<f64> = r
                .trajectories
                .iter()
                .map(|t| share_at(t, g, reference_hv))
                .collect();
            mean_interval(&at)
        })
        .collect()
}

pub fn render(b: &SearchBench) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(c) = &b.correlations {
        let _ = writeln!(
            out,
            "Against the final quality of {} sampled architectures (Kendall τ-b / Spearman ρ of −validation CE; held-out ensembles fitted on {} and judged on {}):",
            c.n, c.held_out.0, c.held_out.1
        );
        let heads: Vec<String> = c
            .final_steps
            .iter()
            .map(|s| format!("{:>18}", format!("{s} steps τ / ρ")))
            .collect();
        let _ = writeln!(out, "{:<64}{}", "signal", heads.join(""));
        for (name, v) in &c.signals {
            let cells: Vec<String> = v
                .iter()
                .map(|(t, r)| format!("{:>18}", format!("{t:.2} / {r:.2}")))
                .collect();
            let _ = writeln!(out, "{name:<64}{}", cells.join(""));
        }
        let regrets: Vec<String> = c
            .regret
            .iter()
            .map(|(s, r)| format!("{s} steps {:.1}%", 100.0 * r))
            .collect();
        let _ = writeln!(
            out,
            "regret of picking the front by a rung instead of by final quality (hypervolume lost): {}\n",
            regrets.join(", ")
        );
    }
    if b.sample_only {
        out += &format!(
            "a table of its final sample only ({} architectures): no search is simulated on it\n",
            b.table_rows
        );
        return out;
    }
    out += &format!(
        "{} seeds on a table of {} architectures; reference hypervolume {:.4} (every architecture at the top rung, {:.0} CPU-s); calibration {:.0} CPU-s\n\n",
        b.seeds, b.table_rows, b.reference_hypervolume, b.exhaustive_compute_s, b.calibration_compute_s
    );
    let _ = writeln!(
        out,
        "{:<36} {:>24} {:>12}   {:>22} {:>22} {:>22}",
        "configuration",
        "final HV / reference",
        "compute",
        "to 90%: runs, compute",
        "to 95%",
        "to 98%"
    );
    for r in &b.configs {
        let (m, lo, hi) = r.final_share;
        let reach: Vec<String> = r
            .to_reach
            .iter()
            .map(|(_, n, c)| match c {
                Some(c) => format!("{n:>2}/{}, {:>6.1}%", b.seeds, 100.0 * c),
                None => format!("{n:>2}/{}, {:>7}", b.seeds, "-"),
            })
            .collect();
        let _ = writeln!(
            out,
            "{:<36} {:>7.4} [{:.4}, {:.4}] {:>8.1}% ex   {:>22} {:>22} {:>22}",
            r.config.name,
            m,
            lo,
            hi,
            100.0 * r.compute_s / b.exhaustive_compute_s,
            reach[0],
            reach[1],
            reach[2]
        );
    }
    let _ = writeln!(
        out,
        "\n{:<36} {}",
        "at equal compute",
        AT_COMPUTE
            .iter()
            .map(|l| format!("{:>26}", format!("HV / ref at {:.0}% ex", 100.0 * l)))
            .collect::<Vec<_>>()
            .join("")
    );
    for r in &b.configs {
        let cells: Vec<String> = r
            .at_compute
            .iter()
            .map(|(_, (m, lo, hi))| format!("{:>26}", format!("{m:.4} [{lo:.4}, {hi:.4}]")))
            .collect();
        let _ = writeln!(out, "{:<36} {}", r.config.name, cells.join(""));
    }
    let _ = writeln!(
        out,
        "\ncompute is simulated CPU time as a share of exhaustive (every architecture at the top rung); runs that never reach a level are left out of its mean"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_match_hand_worked_cases() {
        let (m, lo, hi) = mean_interval(&[1.0, 2.0, 3.0]);
        // sd = 1, se = 1/√3, t(2) = 4.303.
        assert!((m - 2.0).abs() < 1e-12);
        assert!((hi - (2.0 + 4.303 / 3f64.sqrt())).abs() < 1e-9);
        assert!((lo - (2.0 - 4.303 / 3f64.sqrt())).abs() < 1e-9);
        assert_eq!(mean_interval(&[5.0]), (5.0, 5.0, 5.0));
    }
}
