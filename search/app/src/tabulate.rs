//! `genas bench table`: a tabulated benchmark of a whole (small) space, in the manner of
//! NAS-Bench-201 and HW-GPT-Bench. Every architecture within the constraints gets its cost,
//! its zero-cost proxies and a brief distillation at every rung of the experiment's fidelity
//! schedule (with the measured generation latency after the top rung); a uniform sample of
//! them is also distilled at the final fidelity (`final_steps`) and at three times that.
//! Each evaluation records the CPU time it took.
//!
//! The recipe is the search's own, to the bit: the same teacher and cached soft targets, the
//! same batch schedule, the same initialisation seed per architecture and the same proxy
//! batch, so a table row is what a search of the experiment would have measured (tested).
//! The final fidelities use the same brief-distillation recipe for longer.
//!
//! A table takes hours to make; it is written as it goes to `OUT.partial.jsonl`, and a rerun of
//! the same command continues from it. The finished table is one gzip-compressed JSON document
//! with its provenance (command, genas version and commit, machine, date).

use crate::experiment::distill_config;
use crate::experiment::load;
use crate::teacher::obtain_teacher;
use anyhow::{bail, Context, Result};
use genas_engine::latency_ms;
use genas_engine::{Backend, Cpu, Model};
use genas_exec::replay::{Evaluated, Provenance, Recipe, Row, Table, TABLE_VERSION};
use genas_scoring::distill::{brief_distill, TeacherTargets};
use genas_scoring::zero_cost::proxy_suite;
use genas_search::init_seed;
use genas_space::{Architecture, Cost, Rng};
use genas_store::Archive;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The most architectures a table enumerates.
pub const MAX_TABLE_ARCHITECTURES: usize = 20_000;

pub struct TableOptions {
    pub out: PathBuf,
    pub archive: PathBuf,
    /// Architectures distilled at the final fidelities.
    pub final_sample: usize,
    /// Tabulate only the sampled architectures.
    pub sample_only: bool,
    /// Final fidelities: 1 = `final_steps`, 2 = also 3 × `final_steps`, 0 = none (the
    /// sample's rungs alone).
    pub final_fidelities: usize,
    pub threads: usize,
    pub seed: u64,
    /// Tabulate a uniform sample of this many architectures within the constraints instead of
    /// enumerating the space (0: enumerate), for spaces too large to tabulate whole.
    pub sample: usize,
}

/// The most draws `sample_space` makes per architecture it keeps.
const DRAWS_PER_SAMPLE: usize = 200;

/// `n` distinct architectures drawn uniformly from `space` within `constraints` (by rejection),
/// fixed by `seed`, in the order drawn.
pub fn sample_space(
    space: &genas_space::SearchSpace,
    constraints: &genas_space::Constraints,
    n: usize,
    seed: u64,
) -> Result<Vec<Architecture>> {
    let mut rng = Rng::seed_from_u64(seed ^ 0x5a3b_1e5e);
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(n.min(1 << 20));
    let mut draws = 0usize;
    while out.len() < n {
        if draws >= n.saturating_mul(DRAWS_PER_SAMPLE) {
            bail!(
                "--sample {n}: {} distinct architectures within the constraints in {draws} draws; the space within them is smaller or rarer than that (enumerate it without --sample, or ask for fewer)",
                out.len()
            );
        }
        draws += 1;
        let a = space.sample(&mut rng);
        if genas_space::satisfies(&Cost::of(&a), constraints) && seen.insert(a.id()) {
            out.push(a);
        }
    }
    Ok(out)
}

/// What one unit of work produced, as written to the partial file; its first line is the
/// recipe the rows were measured from.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Done {
    Recipe(Box<Recipe>),
    Row(Box<Row>),
    Finals { id: String, finals: Vec<Evaluated> },
}

/// The most a partial file may hold (20,000 rows are some tens of MB).
const MAX_PARTIAL_BYTES: u64 = 4 << 30;

/// CPU time of the calling thread, seconds.
fn thread_cpu_s() -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a pointer to a live local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

/// Runs `f` and returns its value with the CPU seconds it took (wall seconds where the
/// thread's CPU time is not available).
fn timed<R>(f: impl FnOnce() -> R) -> (R, f64) {
    let (cpu, wall) = (thread_cpu_s(), std::time::Instant::now());
    let r = f();
    let spent = match (cpu, thread_cpu_s()) {
        (Some(a), Some(b)) => b - a,
        _ => wall.elapsed().as_secs_f64(),
    };
    (r, spent)
}

/// `genas bench table`.
pub fn make_table(
    file: &Path,
    o: &TableOptions,
    say: &mut dyn FnMut(&str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Table> {
    if o.sample_only && o.final_sample == 0 {
        bail!("--sample-only needs a --final-sample of at least 1");
    }
    let start = std::time::Instant::now();
    let text = genas_space::files::read_text_bounded(file, genas_space::MAX_EXPERIMENT_BYTES)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let l = load(file)?;
    let exp = &l.experiment;
    let workers = genas_exec::local::worker_count(if o.threads == 0 {
        exp.search.threads as usize
    } else {
        o.threads
    });
    let all = if o.sample > 0 {
        sample_space(&l.space, &exp.constraints, o.sample, o.seed)
            .with_context(|| file.display().to_string())?
    } else {
        l.space
            .architectures_within(&exp.constraints, MAX_TABLE_ARCHITECTURES as u128)
            .with_context(|| {
                format!(
                    "{}: a table enumerates its space, and this one holds more than {MAX_TABLE_ARCHITECTURES} architectures: tabulate a uniform sample of it with --sample N (and replay searches against a surrogate fitted to it, genas bench search --surrogate)",
                    file.display()
                )
            })?
    };
    if all.is_empty() {
        bail!(
            "{}: no architecture meets the [constraints]",
            file.display()
        );
    }
    let rung_steps = exp.fidelity.rung_steps.clone();
    let finals: Vec<u32> = [exp.fidelity.final_steps, 3 * exp.fidelity.final_steps]
        .into_iter()
        .take(o.final_fidelities.min(2))
        .collect();
    let longest = finals.iter().chain(&rung_steps).copied().max().unwrap_or(1);
    // The space's summary refuses constraints no architecture meets.
    l.space
        .summary(&exp.constraints)
        .with_context(|| file.display().to_string())?;
    crate::experiment::check_plan_memory(&l, longest, workers)?;
    // The uniform sample for the final fidelities, fixed by --seed.
    let mut order: Vec<usize> = (0..all.len()).collect();
    Rng::seed_from_u64(o.seed ^ 0x7ab1_e5ee).shuffle(&mut order);
    let sampled: std::collections::BTreeSet<String> = order
        .iter()
        .take(o.final_sample.min(all.len()))
        .map(|&i| all[i].id())
        .collect();
    let finals_said: Vec<String> = finals.iter().map(|f| f.to_string()).collect();
    let within = if o.sample > 0 {
        format!(
            "a uniform sample of {} of the space's {:.3e} architectures, those within the constraints",
            all.len(),
            l.space.size_approx()
        )
    } else {
        format!("{} architectures within the constraints", all.len())
    };
    say(&if finals.is_empty() {
        format!(
            "{within}; the rungs of a sample of {} of them",
            sampled.len()
        )
    } else {
        format!(
            "{within}; {} of them also at {} steps{}",
            sampled.len(),
            finals_said.join(" and "),
            if o.sample_only {
                " (only those are tabulated)"
            } else {
                ""
            }
        )
    });
    let all: Vec<Architecture> = if o.sample_only {
        all.into_iter()
            .filter(|a| sampled.contains(&a.id()))
            .collect()
    } else {
        all
    };

    let recipe = Recipe {
        data_fingerprint: l.data.fingerprint.clone(),
        teacher_key: crate::teacher::expected_teacher_key(&l),
        architectures: {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            for a in &all {
                h.update(a.id().as_bytes());
                h.update(b"\n");
            }
            genas_space::hex16(h)
        },
        rung_steps: rung_steps.clone(),
        final_steps: finals.clone(),
        distill: serde_json::to_value(distill_config(&l, longest))?,
        seeds: vec![exp.teacher.seed, exp.search.seed, o.seed],
        genas: env!("CARGO_PKG_VERSION").into(),
    };

    // What an earlier run of this command left: continued only if measured the same way.
    let partial = PathBuf::from(format!("{}.partial.jsonl", o.out.display()));
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut final_done: BTreeMap<String, Vec<Evaluated>> = BTreeMap::new();
    let mut has_recipe = false;
    if partial.exists() {
        let text = genas_space::files::read_text_bounded(&partial, MAX_PARTIAL_BYTES)
            .with_context(|| format!("cannot read {}", partial.display()))?;
        for line in text.lines() {
            // A torn last line (a kill mid-write) is dropped and redone.
            match serde_json::from_str::<Done>(line) {
                Ok(Done::Recipe(r)) => {
                    let differs = recipe.differences(&r);
                    if !differs.is_empty() {
                        bail!(
                            "{}: its rows were measured from a different recipe ({}): it is not continued; remove it to start this table afresh, or give another --out",
                            partial.display(),
                            differs.join(", ")
                        );
                    }
                    has_recipe = true;
                }
                Ok(Done::Row(r)) => {
                    rows.insert(r.id.clone(), *r);
                }
                Ok(Done::Finals { id, finals }) => {
                    final_done.insert(id, finals);
                }
                Err(_) => {}
            }
        }
        let rows_left = !rows.is_empty() || !final_done.is_empty();
        if rows_left && !has_recipe {
            bail!(
                "{} does not say what its rows were measured from (an older genas wrote it): it is not continued; remove it to start this table afresh",
                partial.display()
            );
        }
        say(&format!(
            "continuing {}: {} rows and {} final evaluations already done",
            partial.display(),
            rows.len(),
            final_done.len()
        ));
    }

    if let Some(view) = crate::teacher::existing_read_only(&o.archive)? {
        crate::teacher::check_stored_teacher(&view, &l)?;
    }
    let archive = Archive::open(&o.archive)?;
    let (mut teacher, t) = obtain_teacher(&archive, &l, false, say, &mut |step, loss| {
        progress(
            &format!("training the teacher, loss {loss:.3}"),
            step as usize + 1,
            exp.teacher.steps as usize,
        )
    })?;
    drop(archive);
    let cfg_longest = distill_config(&l, longest);
    let targets = TeacherTargets::compute_with_progress(
        &mut teacher,
        &l.data,
        &cfg_longest,
        longest,
        &mut |d, n| progress("caching soft targets", d, n),
    );
    drop(teacher);
    let student = |a: &Architecture, be: &Cpu<f32>, seed: u64| targets.student(a, be.clone(), seed);
    let mut rng = Rng::seed_from_u64(exp.search.seed ^ 0x9e37_79b9);
    let proxy_batch = l
        .data
        .train_batch(exp.fidelity.batch_size as usize, &mut rng);
    let seed = exp.teacher.seed;

    let file_out = Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?,
    );
    let record = |done: &Done| -> Result<()> {
        let mut line = serde_json::to_string(done)?;
        line.push('\n');
        let mut f = file_out.lock().expect("no writer panics holding it");
        f.write_all(line.as_bytes())
            .and_then(|_| f.flush())
            .with_context(|| format!("cannot write {}", partial.display()))
    };
    if !has_recipe {
        record(&Done::Recipe(Box::new(recipe.clone())))?;
    }

    // Work: a row for every architecture not done, then the finals of the sample.
    enum Job<'a> {
        Row(&'a Architecture),
        Finals(&'a Architecture),
    }
    let mut jobs: Vec<Job> = all
        .iter()
        .filter(|a| !rows.contains_key(&a.id()))
        .map(Job::Row)
        .collect();
    jobs.extend(
        all.iter()
            .filter(|a| {
                !finals.is_empty() && sampled.contains(&a.id()) && !final_done.contains_key(&a.id())
            })
            .map(Job::Finals),
    );
    // Longest first, so the last minutes are not one worker alone on a 3× final.
    jobs.sort_by_key(|j| std::cmp::Reverse(matches!(j, Job::Finals(_))));
    let error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let results = genas_exec::local::parallel(
        &jobs,
        workers,
        &|job: &Job, be: &Cpu<f32>| -> Option<Done> {
            if error.lock().expect("e").is_some() {
                return None;
            }
            let done = match job {
                Job::Row(a) => {
                    let id = a.id();
                    // Timed on the engine's own thread, where the work runs.
                    let (proxies, proxies_cpu_s) = be.install(|| {
                        timed(|| {
                            let mut m = Model::new(a, be.clone(), init_seed(seed, &id));
                            proxy_suite(a, &mut m, &proxy_batch, init_seed(seed, &id))
                        })
                    });
                    let mut rungs = Vec::new();
                    let mut latency = None;
                    for (r, &steps) in rung_steps.iter().enumerate() {
                        let cfg = distill_config(&l, steps);
                        let ((result, lat), cpu_s) = be.install(|| {
                            timed(|| {
                                let mut m = student(a, be, init_seed(seed, &id));
                                let result = brief_distill(&mut m, &targets, &cfg);
                                let top = r + 1 == rung_steps.len();
                                let lat = (top && result.eval.is_some()).then(|| latency_ms(&m));
                                (result, lat)
                            })
                        });
                        latency = latency.or(lat);
                        rungs.push(Evaluated {
                            steps,
                            result,
                            cpu_s,
                        });
                    }
                    Done::Row(Box::new(Row {
                        id,
                        architecture: (*a).clone(),
                        cost: Cost::of(a),
                        proxies,
                        proxies_cpu_s,
                        rungs,
                        latency_ms_per_token: latency,
                        finals: Vec::new(),
                    }))
                }
                Job::Finals(a) => {
                    let id = a.id();
                    let finals = finals
                        .iter()
                        .map(|&steps| {
                            let cfg = distill_config(&l, steps);
                            let (result, cpu_s) = be.install(|| {
                                timed(|| {
                                    let mut m = student(a, be, init_seed(seed, &id));
                                    brief_distill(&mut m, &targets, &cfg)
                                })
                            });
                            Evaluated {
                                steps,
                                result,
                                cpu_s,
                            }
                        })
                        .collect();
                    Done::Finals { id, finals }
                }
            };
            if let Err(e) = record(&done) {
                *error.lock().expect("e") = Some(e);
            }
            Some(done)
        },
        &|d, n, _| progress("tabulating", d, n),
    );
    if let Some(e) = error.into_inner().expect("e") {
        return Err(e);
    }
    for done in results.into_iter().flatten() {
        match done {
            Done::Row(r) => {
                rows.insert(r.id.clone(), *r);
            }
            Done::Finals { id, finals } => {
                final_done.insert(id, finals);
            }
            Done::Recipe(_) => {}
        }
    }
    let mut out_rows: Vec<Row> = all.iter().filter_map(|a| rows.remove(&a.id())).collect();
    for r in &mut out_rows {
        if let Some(f) = final_done.remove(&r.id) {
            r.finals = f;
        }
    }
    if t.record.key != recipe.teacher_key {
        bail!(
            "the teacher's key {} is not the one its recipe expected ({}): a bug, please report it",
            t.record.key,
            recipe.teacher_key
        );
    }
    let table = Table {
        format: "genas-table".into(),
        version: TABLE_VERSION,
        provenance: Provenance {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            genas: env!("CARGO_PKG_VERSION").into(),
            commit: git_commit(),
            machine: machine(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            workers,
            created_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            wall_s: start.elapsed().as_secs_f64(),
        },
        experiment_toml: text,
        teacher_key: t.record.key.clone(),
        teacher_val_bits: t.record.val_bits,
        rung_steps,
        final_steps: finals,
        sample_only: o.sample_only,
        sampled_from: (o.sample > 0).then(|| l.space.size_approx()),
        recipe: Some(recipe),
        rows: out_rows,
    };
    table.write(&o.out)?;
    let _ = std::fs::remove_file(&partial);
    Ok(table)
}

/// The commit of the working tree genas runs in (with `+dirty` when it has changes), or
/// "unknown" outside a git checkout.
fn git_commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}+dirty")
            } else {
                c
            }
        }
        _ => "unknown".into(),
    }
}

fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// A one-screen summary of a table.
pub fn render(t: &Table) -> String {
    let finals = t.rows.iter().filter(|r| !r.finals.is_empty()).count();
    let compute: f64 = t
        .rows
        .iter()
        .map(|r| {
            r.proxies_cpu_s
                + r.rungs.iter().map(|e| e.cpu_s).sum::<f64>()
                + r.finals.iter().map(|e| e.cpu_s).sum::<f64>()
        })
        .sum();
    format!(
        "table of {} architectures (rungs {:?}), {} of them also at {:?} steps; {:.0} CPU-seconds of evaluation, {:.0} s wall on {} workers\n",
        t.rows.len(),
        t.rung_steps,
        finals,
        t.final_steps,
        compute,
        t.provenance.wall_s,
        t.provenance.workers
    )
}
