//! `genas bench search --surrogate`: search strategies compared on a space too large to
//! tabulate (a per-layer space of 10⁹ architectures and more). A table of a uniform sample of
//! it (`genas bench table --sample N`) is fitted with boosted trees (`genas_exec::surrogate`);
//! the real controller then runs against the surrogate, with the simulated clock of the table
//! replay: each brief distillation costs the CPU time the surrogate predicts for it, each
//! screened proposal its proxy suite's (the proxies computed for real, their time predicted
//! from the table's), and a screened
//! run starts with its calibration's cost, measured on the table's own rows.
//!
//! Each strategy, with and without the screen (and the top rung alone, without successive
//! halving, for the experiment's strategy and random), runs at each budget (proposals: 32, 64 and 200
//! by default) for every seed; its final hypervolume is read as a share of the best front the
//! surrogate knows: the Pareto front, at the top rung, of every architecture it predicted —
//! each run's, and a uniform sample of the space. Beside it, the difference with random
//! search at the same budget and screen, paired by seed.
//!
//! It knows the table, the surrogate and the simulation; it reads the experiment's corpus
//! only for the zero-cost proxies.

use crate::experiment::load;
use crate::simulate::{
    as_candidate, calibration_of, check_rungs, correlations, default_configs, mean_interval,
    plan_for, simulate_runs, with_candidates, Bench, Config, Correlations, Trajectory,
};
use anyhow::{bail, Context, Result};
use genas_engine::{Backend, Cpu, Model};
use genas_exec::replay::Table;
use genas_exec::surrogate::{Fit, Surrogate, SurrogateReplay, MIN_HELD_OUT_TAU};
use genas_scoring::zero_cost::proxy_suite;
use genas_search::init_seed;
use genas_space::{Architecture, Objective, Rng, Strategy};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

pub struct SurrogateOptions {
    pub seeds: usize,
    /// Proposals per run, one configuration set each.
    pub budgets: Vec<u32>,
    /// The held-out τ the surrogate must reach (top rung) to be used.
    pub min_tau: f64,
    /// Architectures drawn uniformly from the space and predicted, beside the runs', for the
    /// best front the surrogate knows.
    pub pool: usize,
}

impl Default for SurrogateOptions {
    fn default() -> Self {
        SurrogateOptions {
            seeds: 20,
            budgets: vec![32, 64, 200],
            min_tau: MIN_HELD_OUT_TAU,
            pool: 20_000,
        }
    }
}

/// One configuration at one budget.
#[derive(Clone, Debug, Serialize)]
pub struct SurrogateRow {
    pub config: Config,
    /// Final hypervolume / the best the surrogate knows: mean and 95% interval over seeds.
    pub share: (f64, f64, f64),
    /// Minus random search's share at the same budget and screen, paired by seed: mean and 95%
    /// interval (none for random itself).
    pub against_random: Option<(f64, f64, f64)>,
    /// Simulated CPU-seconds of a run, mean over seeds.
    pub compute_s: f64,
    pub shares: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SurrogateBench {
    pub table_rows: usize,
    /// About how many architectures the space holds (within and beyond the constraints).
    pub space_size: f64,
    pub fit: Fit,
    pub seeds: usize,
    pub budgets: Vec<u32>,
    pub objectives: Vec<Objective>,
    /// Architectures the surrogate predicted: the runs' and the uniform pool.
    pub known: usize,
    pub pool: usize,
    /// Hypervolume of the best front the surrogate knows (normalised, as runs report it).
    pub reference_hypervolume: f64,
    pub calibration_compute_s: f64,
    pub rows: Vec<SurrogateRow>,
    /// The table's own signals against its final sample, as `genas bench search` reports them.
    pub correlations: Option<Correlations>,
    pub wall_s: f64,
}

/// Random, evolution and NSGA-II, each with and without the screen, at the experiment's
/// schedule; the experiment's strategy and random with the top rung alone; and the
/// experiment's strategy screened after a calibration on 10 and on 20 architectures instead of
/// `search.calibration`.
pub fn surrogate_configs(exp: &genas_space::Experiment, table: &Table) -> Vec<Config> {
    let mut out: Vec<Config> = default_configs(exp, &table.rung_steps)
        .into_iter()
        .filter(|c| !c.name.contains(" keep"))
        .collect();
    let strategy = exp.search.strategy;
    if let Some(base) = out
        .iter()
        .find(|c| c.strategy == strategy && c.screen && c.rung_steps == exp.fidelity.rung_steps)
        .cloned()
    {
        for n in [10, 20, 40] {
            if n != exp.search.calibration {
                out.push(Config {
                    name: format!("{} calibration {n}", base.name),
                    calibration: n,
                    ..base.clone()
                });
            }
        }
    }
    out
}

pub fn bench_search_surrogate(
    file: &Path,
    table: &Table,
    o: &SurrogateOptions,
    say: &mut dyn FnMut(&str),
    progress: &dyn Fn(usize, usize),
) -> Result<SurrogateBench> {
    let start = std::time::Instant::now();
    let l = load(file)?;
    let exp = &l.experiment;
    if let Some(r) = &table.recipe {
        if r.data_fingerprint != l.data.fingerprint {
            bail!(
                "{}: its corpus is not the table's (the proxies computed here would not be the table's): give the experiment the table was made from",
                file.display()
            );
        }
    }
    let configs: Vec<Config> = o
        .budgets
        .iter()
        .flat_map(|&n| with_candidates(surrogate_configs(exp, table), n))
        .collect();
    if configs.is_empty() {
        bail!("no configuration to simulate");
    }
    check_rungs(table, &configs)?;
    say(&format!(
        "fitting boosted trees to the {} rows of the table (five folds, then all of them)",
        table.rows.len()
    ));
    let surrogate = Surrogate::fit(table, exp.search.seed)?;
    let tau = surrogate.fit.top_tau();
    let taus: Vec<String> = surrogate
        .fit
        .held_out_tau
        .iter()
        .map(|(s, t)| format!("{s} steps {t:.3}"))
        .collect();
    say(&format!(
        "held-out Kendall τ of the predicted validation CE: {}",
        taus.join(", ")
    ));
    if tau.is_nan() || tau < o.min_tau {
        bail!(
            "the surrogate ranks held-out architectures at τ {tau:.3} at the top rung, below the {:.2} it must reach to stand in for training: tabulate a larger sample (genas bench table --sample N)",
            o.min_tau
        );
    }
    let plan = plan_for(exp, &l.space, table)?;
    let (_, calibration_compute) = calibration_of(exp, table, exp.search.calibration);
    let calibration = |n: u32| calibration_of(exp, table, n);

    // The zero-cost proxies, computed as the table computed them: the same batch and seeds.
    let mut rng = Rng::seed_from_u64(exp.search.seed ^ 0x9e37_79b9);
    let batch = l
        .data
        .train_batch(exp.fidelity.batch_size as usize, &mut rng);
    let seed = exp.teacher.seed;
    thread_local! {
        static ENGINE: Cpu<f32> = Cpu::new(1);
    }
    let proxies_of = |a: &Architecture| {
        ENGINE.with(|be| {
            be.install(|| {
                let id = a.id();
                let mut m = Model::new(a, be.clone(), init_seed(seed, &id));
                proxy_suite(a, &mut m, &batch, init_seed(seed, &id))
            })
        })
    };
    let replay = SurrogateReplay::new(&surrogate, &proxies_of);
    let cpu = |id: &str, steps: Option<u32>| replay.row(id).map_or(0.0, |r| r.cpu_s(steps));
    let bench = Bench {
        exp,
        space: &l.space,
        plan: &plan,
        executor: &replay,
        cpu: &cpu,
        calibration: &calibration,
        whole: None,
    };
    say(&format!(
        "{} configurations × {} seeds against the surrogate",
        configs.len(),
        o.seeds
    ));
    let runs = simulate_runs(&bench, &configs, o.seeds, progress)?;

    // The best front the surrogate knows: every architecture it predicted, and a pool drawn
    // uniformly from the space within the constraints.
    let pool = crate::tabulate::sample_space(&l.space, &exp.constraints, o.pool, 0x9001)
        .or_else(|_| {
            // A space with fewer distinct architectures than the pool: what could be drawn.
            crate::tabulate::sample_space(&l.space, &exp.constraints, o.pool / 10, 0x9001)
        })
        .context("cannot draw the pool of architectures for the surrogate's best front")?;
    let mut known: BTreeMap<String, genas_exec::replay::Row> = replay
        .rows()
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    for r in surrogate.predict(&pool) {
        known.entry(r.id.clone()).or_insert(r);
    }
    let top = table.rung_steps.len() - 1;
    let cands: BTreeMap<String, genas_search::controller::CandidateRecord> = known
        .values()
        .enumerate()
        .map(|(i, r)| {
            let mut c = as_candidate(r, true);
            c.index = i as u32;
            (r.id.clone(), c)
        })
        .collect();
    let (_, reference_hv) = genas_search::controller::front_and_hypervolume(&cands, top, &plan);
    let rows = summarise(&configs, &runs, reference_hv);
    Ok(SurrogateBench {
        table_rows: table.rows.len(),
        space_size: l.space.size_approx(),
        fit: surrogate.fit.clone(),
        seeds: o.seeds,
        budgets: o.budgets.clone(),
        objectives: plan.objectives.clone(),
        known: known.len(),
        pool: pool.len(),
        reference_hypervolume: reference_hv,
        calibration_compute_s: calibration_compute,
        rows,
        correlations: correlations(table, &plan),
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// Each configuration's shares, and its difference with random search at the same budget and
/// screen, paired by seed.
fn summarise(configs: &[Config], runs: &[Vec<Trajectory>], reference_hv: f64) -> Vec<SurrogateRow> {
    let shares: Vec<Vec<f64>> = runs
        .iter()
        .map(|t| t.iter().map(|t| t.hypervolume / reference_hv).collect())
        .collect();
    configs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let random = configs.iter().position(|r| {
                r.strategy == Strategy::Random
                    && r.screen == c.screen
                    && r.candidates == c.candidates
                    && r.rung_steps == c.rung_steps
            });
            let against_random = random.filter(|&r| r != i).map(|r| {
                let d: Vec<f64> = shares[i]
                    .iter()
                    .zip(&shares[r])
                    .map(|(a, b)| a - b)
                    .collect();
                mean_interval(&d)
            });
            SurrogateRow {
                config: c.clone(),
                share: mean_interval(&shares[i]),
                against_random,
                compute_s: runs[i].iter().map(|t| t.compute_s).sum::<f64>()
                    / runs[i].len().max(1) as f64,
                shares: shares[i].clone(),
            }
        })
        .collect()
}

pub fn render(b: &SurrogateBench) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let taus: Vec<String> = b
        .fit
        .held_out_tau
        .iter()
        .map(|(s, t)| format!("{s} steps {t:.3}"))
        .collect();
    let _ = writeln!(
        out,
        "surrogate: boosted trees fitted to {} sampled architectures ({} features) of a space of {:.3e}; held-out Kendall τ (five folds) of the predicted validation CE: {}",
        b.fit.rows,
        b.fit.features,
        b.space_size,
        taus.join(", ")
    );
    if let Some((steps, n, t)) = b.fit.final_tau {
        let _ = writeln!(
            out,
            "its held-out top-rung prediction against the {steps}-step quality of {n} sampled architectures: τ {t:.3}"
        );
    }
    let _ = writeln!(
        out,
        "the best front it knows: {} architectures predicted (the runs' and a uniform sample of {}), hypervolume {:.4}; a screened run starts with its calibration, {:.0} CPU-s\n",
        b.known, b.pool, b.reference_hypervolume, b.calibration_compute_s
    );
    let mut names: Vec<String> = Vec::new();
    for r in &b.rows {
        let base = base_name(&r.config);
        if !names.contains(&base) {
            names.push(base);
        }
    }
    let heads: Vec<String> = b
        .budgets
        .iter()
        .map(|n| format!("{:>44}", format!("{n} evaluations: HV share, − random")))
        .collect();
    let _ = writeln!(out, "{:<32}{}", "configuration", heads.join(""));
    for name in &names {
        let cells: Vec<String> = b
            .budgets
            .iter()
            .map(|&n| {
                let Some(r) = b
                    .rows
                    .iter()
                    .find(|r| r.config.candidates == n && &base_name(&r.config) == name)
                else {
                    return format!("{:>44}", "-");
                };
                let (m, lo, hi) = r.share;
                let vs = r.against_random.map_or(String::new(), |(d, dl, dh)| {
                    format!(" {d:+.3} [{dl:+.3},{dh:+.3}]")
                });
                format!("{:>44}", format!("{m:.3} [{lo:.3},{hi:.3}]{vs}"))
            })
            .collect();
        let _ = writeln!(out, "{name:<32}{}", cells.join(""));
    }
    let _ = writeln!(
        out,
        "\nmean and 95% interval over {} seeds; − random: the difference with random search at the same budget and screen, paired by seed (beyond the interval where it excludes 0)",
        b.seeds
    );
    out
}

/// A configuration's name without its budget.
fn base_name(c: &Config) -> String {
    c.name
        .rsplit_once(" n")
        .map_or(c.name.clone(), |(b, _)| b.to_string())
}
