//! What the search is worth against what a practitioner does without it: at three sizes
//! spanning the front (its smallest, middle and largest finally distilled member by
//! parameters), hand-designed students of the same parameter count (±5%, `shapes`: depth-only,
//! width-only, uniform), pruned from the teacher by importance as Minitron prunes, and the
//! member of a random search's front (`[search] strategy = "random"`, same proposals, rungs,
//! screen and seed: `search::random_twin`) nearest that size. Each is distilled with exactly
//! the final distillation's recipe and budget (the anchor member's steps).
//!
//! Intervals come from training seeds: every baseline and every anchor member is trained at
//! `seeds` seeds (seed 0 is the run's own: the anchor's stored final distillation; seed k
//! changes the batch order and whatever the initialisation draws). At seed k the front's
//! quality at the baseline's parameter count is the anchor's at seed k plus the front's slope
//! between the anchor and that count (interpolated on a log scale along the Pareto front of
//! the final distillations); the paired differences over the seeds give the mean and its 95%
//! t-interval. Everything trained is stored in the archive (`run_ablations`, under
//! `baseline/…`), checkpointed while it trains, and reused by every later report.

use super::ablation::{distilled, Start, Trained, Trainer};
use super::effects::mean_interval;
use super::shapes::{hand_designed, Kind};
use crate::runs::{load_run, SearchReport};
use crate::winners::distill::final_config;
use crate::winners::RunAccess;
use anyhow::{bail, Result};
use genas_scoring::distill::TeacherTargets;
use genas_scoring::zero_cost::params;
use genas_search::init_seed;
use genas_space::{Architecture, StudentInit};
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicBool;

/// Seeds each baseline is trained at unless `--baseline-seeds` says otherwise.
pub const DEFAULT_SEEDS: u32 = 3;

/// A finished baseline (or anchor) training, as the archive keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BaselineRecord {
    /// "front" (an anchor member at another seed) or the baseline's kind.
    pub arm: String,
    pub architecture: String,
    pub params: f64,
    pub seed: u32,
    pub trained: Trained,
}

/// One of the three sizes: the front member it is anchored on.
#[derive(Clone, Debug, Serialize)]
pub struct Size {
    pub anchor: String,
    pub params: f64,
    pub steps: u32,
    /// The anchor's quality at each seed (seed 0: its final distillation).
    pub bits: Vec<Option<f64>>,
}

/// A baseline at one size.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub kind: Kind,
    pub size: usize,
    /// Its architecture, or why there is none at this size.
    pub architecture: Result<String, String>,
    pub params: Option<f64>,
    /// The random search's candidate (random only).
    pub candidate: Option<String>,
    /// The front's quality at `params`, interpolated along the final distillations' front.
    pub front_bits: Option<f64>,
    /// True when `params` lies outside the front's range (the front's end is used).
    pub beyond_front: bool,
    /// Its quality at each seed.
    pub bits: Vec<Option<f64>>,
    /// front − baseline over the seeds where both are trained (negative: the front is better).
    pub difference: Option<Difference>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Difference {
    pub n: usize,
    pub mean: f64,
    pub interval: Option<(f64, f64)>,
}

impl Difference {
    /// -1: the front is better beyond the interval, 1: worse beyond it, 0: neither.
    pub fn verdict(&self) -> i8 {
        match self.interval {
            Some((_, hi)) if hi < 0.0 => -1,
            Some((lo, _)) if lo > 0.0 => 1,
            _ => 0,
        }
    }
}

/// The random search made for the comparison.
#[derive(Clone, Debug, Serialize)]
pub struct RandomRun {
    pub run: String,
    pub status: String,
    pub proposed: u32,
    pub evaluations: u32,
    pub hypervolume: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Section {
    pub seeds: u32,
    pub sizes: Vec<Size>,
    pub rows: Vec<Row>,
    pub random: Option<RandomRun>,
    /// This run's hypervolume, against the random search's.
    pub hypervolume: f64,
    pub note: Option<String>,
    pub trained_now: usize,
}

const FRONT: &str = "front";

fn key(arm: &str, id: &str, seed: u32, steps: u32) -> String {
    format!("baseline/{arm}/{id}/{seed}/{steps}")
}

/// The training seed of replicate `k` (0: the run's own).
fn replicate(seed: u64, k: u32) -> u64 {
    if k == 0 {
        seed
    } else {
        seed ^ u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// A training to do or to read: where it is kept and what it trains.
struct Job {
    key: String,
    arm: String,
    arch: Architecture,
    /// The id its initial draw is seeded by (the candidate's, or the architecture's).
    id: String,
    seed: u32,
    steps: u32,
    /// Starts from the teacher pruned to its shape (else drawn).
    pruned: bool,
}

/// The final distillations' Pareto front in (params, bits), by params.
fn pareto(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut p = points.to_vec();
    p.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for q in p {
        if out.last().is_none_or(|l| q.1 < l.1) {
            out.push(q);
        }
    }
    out
}

/// The front's quality at `x` params, linear in log params between its members; its end
/// outside their range (and whether it was outside).
pub fn along(front: &[(f64, f64)], x: f64) -> Option<(f64, bool)> {
    let (first, last) = (front.first()?, front.last()?);
    if x <= first.0 {
        return Some((first.1, x < first.0));
    }
    if x >= last.0 {
        return Some((last.1, x > last.0));
    }
    let w = front.windows(2).find(|w| x <= w[1].0)?;
    let t = (x / w[0].0).ln() / (w[1].0 / w[0].0).ln();
    Some((w[0].1 + t * (w[1].1 - w[0].1), false))
}

/// Indices of the smallest, middle and largest of `n` members sorted by size.
fn three(n: usize) -> Vec<usize> {
    let mut k = vec![0, (n.saturating_sub(1)) / 2, n.saturating_sub(1)];
    k.dedup();
    k.truncate(n);
    k
}

struct Planned {
    sizes: Vec<Size>,
    rows: Vec<Row>,
    /// (the row it fills, or None for the size's anchor; the size; the training)
    jobs: Vec<(Option<usize>, usize, Job)>,
    random: Option<RandomRun>,
    missing: Vec<String>,
}

fn plan(access: &RunAccess, search: &SearchReport, seeds: u32) -> Result<Planned> {
    let run = &access.record.id;
    let (done, missing) = distilled(access, search)?;
    let params_of = |id: &str| {
        search
            .front
            .iter()
            .find(|f| f.id == id)
            .map_or(0.0, |f| f.params as f64)
    };
    let mut members: Vec<(String, f64, u32, f64)> = done
        .iter()
        .map(|(id, _, steps, bits)| (id.clone(), params_of(id), *steps, *bits))
        .collect();
    members.sort_by(|a, b| a.1.total_cmp(&b.1));
    let front = pareto(&members.iter().map(|m| (m.1, m.3)).collect::<Vec<_>>());
    let teacher = access.loaded.teacher_architecture()?;
    let l = &access.loaded;
    let twin = crate::search::find_twin(&access.archive, run)?;
    let twin_front = match &twin {
        Some(t) if t.status == "finished" => {
            let r = crate::runs::report(&access.archive, &t.id)?;
            let (_, _, cands) = load_run(&access.archive, &t.id)?;
            Some((r, cands))
        }
        _ => None,
    };
    let random = match (&twin, &twin_front) {
        (Some(t), Some((r, _))) => Some(RandomRun {
            run: t.id.clone(),
            status: t.status.clone(),
            proposed: r.proposed,
            evaluations: r.evaluations,
            hypervolume: r.hypervolume,
        }),
        (Some(t), None) => Some(RandomRun {
            run: t.id.clone(),
            status: t.status.clone(),
            proposed: 0,
            evaluations: 0,
            hypervolume: 0.0,
        }),
        _ => None,
    };
    let (mut sizes, mut rows, mut jobs) = (Vec::new(), Vec::new(), Vec::new());
    for (s, &m) in three(members.len()).iter().enumerate() {
        let (id, p, steps, bits) = &members[m];
        let cand = access.candidate(id)?;
        for k in 1..seeds {
            jobs.push((
                None,
                s,
                Job {
                    key: key(FRONT, id, k, *steps),
                    arm: FRONT.into(),
                    arch: cand.architecture.clone(),
                    id: id.clone(),
                    seed: k,
                    steps: *steps,
                    pruned: l.experiment.fidelity.init == StudentInit::Teacher,
                },
            ));
        }
        let mut size_bits = vec![None; seeds as usize];
        if let Some(b) = size_bits.first_mut() {
            *b = Some(*bits);
        }
        sizes.push(Size {
            anchor: id.clone(),
            params: *p,
            steps: *steps,
            bits: size_bits,
        });
        for kind in Kind::ALL {
            let (arch, candidate, pruned) = match kind {
                Kind::Random => {
                    let Some((r, cands)) = &twin_front else {
                        continue;
                    };
                    let near = r.front.iter().min_by(|a, b| {
                        let d = |x: u64| (x as f64 / p).ln().abs();
                        d(a.params).total_cmp(&d(b.params))
                    });
                    match near.and_then(|f| cands.get(&f.id)) {
                        Some(c) => (
                            Ok(c.architecture.clone()),
                            Some(c.id.clone()),
                            l.experiment.fidelity.init == StudentInit::Teacher,
                        ),
                        None => (Err("its front is empty".to_string()), None, false),
                    }
                }
                _ => (hand_designed(&teacher, kind, *p), None, true),
            };
            let r = rows.len();
            let (architecture, bp) = match &arch {
                Ok(a) => (Ok(a.summary()), Some(params(a))),
                Err(e) => (Err(e.clone()), None),
            };
            let (front_bits, beyond_front) = match bp.and_then(|x| along(&front, x)) {
                Some((b, out)) => (Some(b), out),
                None => (None, false),
            };
            rows.push(Row {
                kind,
                size: s,
                architecture,
                params: bp,
                candidate: candidate.clone(),
                front_bits,
                beyond_front,
                bits: vec![None; seeds as usize],
                difference: None,
            });
            if let Ok(a) = arch {
                let id = candidate.unwrap_or_else(|| a.id());
                for k in 0..seeds {
                    jobs.push((
                        Some(r),
                        s,
                        Job {
                            key: key(kind.key(), &id, k, *steps),
                            arm: kind.key().into(),
                            arch: a.clone(),
                            id: id.clone(),
                            seed: k,
                            steps: *steps,
                            pruned,
                        },
                    ));
                }
            }
        }
    }
    Ok(Planned {
        sizes,
        rows,
        jobs,
        random,
        missing,
    })
}

/// The stored figures into the plan's rows; the differences where both sides are in.
fn fill(access: &RunAccess, p: &mut Planned) -> Result<usize> {
    let run = &access.record.id;
    let mut absent = 0;
    for (row, size, job) in &p.jobs {
        let got = access.archive.ablation::<BaselineRecord>(run, &job.key)?;
        absent += usize::from(got.is_none());
        let bits = got.map(|g| g.trained.val_bits);
        let k = job.seed as usize;
        match row {
            Some(r) => p.rows[*r].bits[k] = bits,
            None => p.sizes[*size].bits[k] = bits,
        }
    }
    for row in &mut p.rows {
        let (Some(front_at), size) = (row.front_bits, &p.sizes[row.size]) else {
            continue;
        };
        let Some(anchor0) = size.bits.first().copied().flatten() else {
            continue;
        };
        let d: Vec<f64> = size
            .bits
            .iter()
            .zip(&row.bits)
            .filter_map(|(a, b)| Some(a.as_ref()? + (front_at - anchor0) - b.as_ref()?))
            .collect();
        if !d.is_empty() {
            let (mean, interval) = mean_interval(&d);
            row.difference = Some(Difference {
                n: d.len(),
                mean,
                interval,
            });
        }
    }
    Ok(absent)
}

fn section(p: Planned, search: &SearchReport, seeds: u32, note: Option<String>) -> Section {
    Section {
        seeds,
        sizes: p.sizes,
        rows: p.rows,
        random: p.random,
        hypervolume: search.hypervolume,
        note,
        trained_now: 0,
    }
}

/// What the archive already holds, trained by an earlier `--baselines`.
pub fn stored(access: &RunAccess, search: &SearchReport, seeds: u32) -> Result<Section> {
    let run = &access.record.id;
    let mut p = plan(access, search, seeds)?;
    let absent = fill(access, &mut p)?;
    let wants_random = access.loaded.experiment.search.strategy != genas_space::Strategy::Random;
    let no_random = wants_random && p.random.as_ref().is_none_or(|r| r.status != "finished");
    let note = if p.sizes.is_empty() {
        Some(format!(
            "No front member has a final distillation to compare against: genas distill {run} --front, then genas report {run} --baselines."
        ))
    } else if absent == p.jobs.len() && no_random {
        Some(format!(
            "Not measured yet: genas report {run} --baselines runs a random search at this run's budget and trains the baselines at {seeds} seeds (stored in the archive, reused afterwards)."
        ))
    } else if absent > 0 || no_random {
        Some(format!(
            "{absent} baseline trainings are missing{}: genas report {run} --baselines runs them (stored in the archive, reused afterwards).",
            if no_random { " and the random search has not finished" } else { "" }
        ))
    } else if !p.missing.is_empty() {
        Some(format!(
            "{} of {} front members have no final distillation and are left out of the front the baselines are read against.",
            p.missing.len(),
            search.front.len()
        ))
    } else {
        None
    };
    Ok(section(p, search, seeds, note))
}

/// Runs the random search and trains what the archive does not hold yet, then reads it all.
#[allow(clippy::too_many_arguments)]
pub fn run(
    access: &RunAccess,
    search: &SearchReport,
    seeds: u32,
    threads: usize,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Section> {
    let run = &access.record.id;
    let (done, _) = distilled(access, search)?;
    if done.is_empty() {
        bail!(
            "--baselines compares against the final distillation, which no front member has: run genas distill {run} --front first"
        );
    }
    if access.loaded.experiment.search.strategy != genas_space::Strategy::Random {
        let twin = crate::search::random_twin(
            &access.archive,
            &access.record,
            threads,
            stop,
            say,
            progress,
        )?;
        if twin.status != "finished" {
            bail!(
                "the random search {} stopped ({}): genas report {run} --baselines resumes it",
                twin.run,
                twin.status
            );
        }
    }
    let p = plan(access, search, seeds)?;
    let todo: Vec<&Job> = p
        .jobs
        .iter()
        .map(|(_, _, j)| j)
        .filter(|j| {
            !matches!(
                access.archive.ablation::<serde_json::Value>(run, &j.key),
                Ok(Some(_))
            )
        })
        .collect();
    // One training per key, however many sizes share it.
    let mut seen = std::collections::BTreeSet::new();
    let todo: Vec<&Job> = todo.into_iter().filter(|j| seen.insert(&j.key)).collect();
    if !todo.is_empty() {
        let l = &access.loaded;
        let mut trainer = Trainer::new(access, threads, stop, progress, "--baselines", say)?;
        // The validation targets and the pruned teacher, measured at the run's own seed (a
        // replicate seed changes the training, not what students start from).
        let mut cfg = final_config(l, 1);
        cfg.distill.init = StudentInit::Teacher;
        let targets = TeacherTargets::compute(&mut trainer.teacher, &l.data, &cfg.distill, 0);
        for (k, job) in todo.iter().enumerate() {
            let mut cfg = final_config(l, job.steps);
            cfg.distill.seed = replicate(cfg.distill.seed, job.seed);
            let init = init_seed(replicate(l.experiment.teacher.seed, job.seed), &job.id);
            let what = if job.arm == FRONT {
                format!("the front member {}", job.id)
            } else {
                format!("the {} baseline", job.arm)
            };
            say(&format!(
                "[{}/{}] training {what} {} ({} params) at seed {} for {} steps{}",
                k + 1,
                todo.len(),
                job.arch.summary(),
                crate::format::thousands(params(&job.arch).round() as u64),
                job.seed,
                job.steps,
                trainer.resuming(&job.key)?
            ));
            // A front member starts where its final distillation did (a blockwise member from
            // its assembled blocks); a baseline from the pruned teacher or drawn.
            let start = match (job.pruned, job.arm == FRONT) {
                (true, true) => Start::inherited(access, &job.id)?,
                (true, false) => Start::Pruned,
                (false, _) => Start::Drawn,
            };
            let trained = trainer.train(&job.key, &job.arch, start, init, &targets, &cfg)?;
            let line = format!(
                "{what} at seed {}: {:.4} {} after {} steps, {:.1} s",
                job.seed, trained.val_bits, trained.bits_unit, trained.steps, trained.seconds
            );
            access.archive.put_ablation(
                run,
                &job.key,
                &BaselineRecord {
                    arm: job.arm.clone(),
                    architecture: job.arch.summary(),
                    params: params(&job.arch),
                    seed: job.seed,
                    trained,
                },
            )?;
            say(&line);
        }
    }
    let mut section = stored(access, search, seeds)?;
    section.trained_now = todo.len();
    Ok(section)
}

/// What `genas bench baselines` is asked.
pub struct BenchOptions {
    pub archive: std::path::PathBuf,
    pub out: std::path::PathBuf,
    pub seeds: u32,
    pub threads: usize,
}

/// `genas bench baselines FILE`: the whole comparison on one experiment. Its run in the archive
/// (the first whose experiment text is the file's and that is no baseline itself) is made,
/// resumed or reused; its front is distilled with the final recipe (what is done is kept);
/// then the report with `--baselines` is written to `out`. Every step is stored, so a stopped
/// bench continues where it was.
pub fn bench(
    file: &std::path::Path,
    o: &BenchOptions,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<super::Report> {
    let text = genas_space::files::read_text_bounded(file, genas_space::MAX_EXPERIMENT_BYTES)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let mine = match crate::teacher::existing_read_only(&o.archive)? {
        Some(a) => a
            .runs::<crate::runs::RunRecord>()?
            .into_iter()
            .map(|(_, r)| r)
            .find(|r| r.baseline_of.is_none() && r.experiment_toml == text),
        None => None,
    };
    let search = crate::search::SearchOptions {
        archive: o.archive.clone(),
        seed: None,
        threads: o.threads,
    };
    let searched = match mine {
        Some(r) if r.status == "finished" => {
            say(&format!(
                "run {} of {} is finished: using it",
                r.id,
                file.display()
            ));
            r.id
        }
        Some(r) => crate::search::resume(&r.id, &search, stop, say, progress)?.run,
        None => crate::search::search(file, &search, stop, say, progress)?.run,
    };
    let status = crate::runs::read_run(
        &genas_store::Archive::open_read_only(&o.archive)?,
        &searched,
    )?
    .status;
    if status != "finished" {
        bail!(
            "run {searched} stopped ({status}): genas bench baselines {} continues it",
            file.display()
        );
    }
    crate::winners::distill::distill(
        &crate::winners::distill::DistillOptions {
            archive: o.archive.clone(),
            steps: None,
            threads: o.threads,
        },
        &searched,
        None,
        stop,
        say,
        progress,
    )?;
    super::report(
        &super::ReportOptions {
            archive: o.archive.clone(),
            out: o.out.clone(),
            ablate_kd: false,
            baselines: true,
            baseline_seeds: o.seeds,
            threads: o.threads,
        },
        &searched,
        stop,
        say,
        progress,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_is_read_between_its_members_on_a_log_scale() {
        // A dominated member (200, 3.5) is not part of the front.
        let f = pareto(&[(100.0, 4.0), (400.0, 3.0), (200.0, 3.5), (300.0, 3.6)]);
        assert_eq!(f, vec![(100.0, 4.0), (200.0, 3.5), (400.0, 3.0)]);
        // Halfway between 100 and 200 on a log scale is 141.4.
        let (y, out) = along(&f, 200f64.sqrt() * 10.0).unwrap();
        assert!((y - 3.75).abs() < 1e-12 && !out);
        assert_eq!(along(&f, 400.0), Some((3.0, false)));
        assert_eq!(along(&f, 50.0), Some((4.0, true)));
        assert_eq!(along(&f, 800.0), Some((3.0, true)));
        assert_eq!(along(&[], 1.0), None);
        assert_eq!(three(1), vec![0]);
        assert_eq!(three(2), vec![0, 1]);
        assert_eq!(three(5), vec![0, 2, 4]);
        assert_eq!(three(0), Vec::<usize>::new());
    }

    #[test]
    fn replicate_zero_is_the_runs_own_seed_and_the_others_differ() {
        assert_eq!(replicate(7, 0), 7);
        let s: std::collections::BTreeSet<u64> = (0..20).map(|k| replicate(7, k)).collect();
        assert_eq!(s.len(), 20);
    }
}
