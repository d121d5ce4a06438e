//! A tabulated benchmark (`genas bench table`, in the manner of NAS-Bench-201 and
//! HW-GPT-Bench): the table's format, read and written, and [`Replay`], the executor that
//! reads a job's result back from it instead of training, for simulating searches on a
//! simulated clock (`genas bench search`).

use genas_scoring::distill::DistillResult;
use genas_scoring::zero_cost::{with_descriptors, ProxyScores};
use genas_search::job::{ExecError, Executor, Job, Output};
use genas_space::{Architecture, Cost};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// A table that cannot be read: one line naming the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TableError(pub String);

/// The largest (compressed) table file genas reads; tables of 20,000 rows are a few MB.
const MAX_TABLE_FILE_BYTES: u64 = 1 << 30;

/// Version of the table format this genas writes and reads.
pub const TABLE_VERSION: u32 = 1;

/// One brief distillation in the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluated {
    pub steps: u32,
    pub result: DistillResult,
    /// CPU time of the evaluation (its thread's), seconds.
    pub cpu_s: f64,
}

/// One architecture of the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    pub architecture: Architecture,
    pub cost: Cost,
    pub proxies: ProxyScores,
    /// CPU time of the proxy suite, seconds.
    pub proxies_cpu_s: f64,
    /// One per rung of `[fidelity] rung_steps`, in order.
    pub rungs: Vec<Evaluated>,
    /// Generation latency after the top rung, ms/token (measured on the machine named in
    /// the provenance).
    pub latency_ms_per_token: Option<f64>,
    /// For the sampled rows: at `final_steps` and at 3 × `final_steps`.
    pub finals: Vec<Evaluated>,
}

impl Row {
    /// The CPU seconds of its proxy suite (`None`) or of its brief distillation of `steps`
    /// steps (0 where it has none): what a simulated clock charges for it.
    pub fn cpu_s(&self, steps: Option<u32>) -> f64 {
        match steps {
            None => self.proxies_cpu_s,
            Some(s) => self
                .rungs
                .iter()
                .find(|e| e.steps == s)
                .map_or(0.0, |e| e.cpu_s),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Provenance {
    pub command: String,
    pub genas: String,
    pub commit: String,
    pub machine: String,
    pub cores: usize,
    pub workers: usize,
    pub created_unix_s: u64,
    pub wall_s: f64,
}

/// What a table's figures were measured from. A table is continued (`genas bench table`
/// over its partial file) only with the same recipe; one measured from another corpus,
/// teacher, space or schedule is another table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// The corpus as tokenised (`Dataset::fingerprint`).
    pub data_fingerprint: String,
    pub teacher_key: String,
    /// A hash of the ids of the architectures tabulated, in order (the space within its
    /// constraints, or its sample).
    pub architectures: String,
    pub rung_steps: Vec<u32>,
    pub final_steps: Vec<u32>,
    /// The brief distillation's settings at the longest fidelity.
    pub distill: serde_json::Value,
    /// The seeds of the initial weights, of the proxies' batch and of the final sample.
    pub seeds: Vec<u64>,
    /// The genas that measured it.
    pub genas: String,
}

impl Recipe {
    /// The names of the fields in which `other` differs from this one.
    pub fn differences(&self, other: &Recipe) -> Vec<&'static str> {
        let mut d = Vec::new();
        let mut check = |same: bool, name: &'static str| {
            if !same {
                d.push(name);
            }
        };
        check(
            self.data_fingerprint == other.data_fingerprint,
            "the corpus",
        );
        check(self.teacher_key == other.teacher_key, "the teacher");
        check(
            self.architectures == other.architectures,
            "the architectures (space, constraints or sample)",
        );
        check(self.rung_steps == other.rung_steps, "the rung steps");
        check(self.final_steps == other.final_steps, "the final steps");
        check(self.distill == other.distill, "the distillation recipe");
        check(self.seeds == other.seeds, "the seeds");
        check(self.genas == other.genas, "the genas version");
        d
    }
}

/// A tabulated benchmark.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Table {
    pub format: String,
    pub version: u32,
    pub provenance: Provenance,
    /// The experiment file's text.
    pub experiment_toml: String,
    pub teacher_key: String,
    pub teacher_val_bits: f64,
    pub rung_steps: Vec<u32>,
    pub final_steps: Vec<u32>,
    /// Only the sampled architectures were tabulated (`--sample-only`): enough to correlate
    /// the rungs and proxies with the final quality, not to simulate a search.
    #[serde(default)]
    pub sample_only: bool,
    /// The rows are a uniform sample (`genas bench table --sample`) of a space of about this
    /// many architectures, too large to tabulate whole: a search is replayed against a
    /// surrogate fitted to it (`genas bench search --surrogate`), not against its rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_from: Option<f64>,
    /// What the figures were measured from (absent in tables made before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<Recipe>,
    pub rows: Vec<Row>,
}

impl Table {
    /// A table made in code rather than measured (tests, `genas bench fuzz`): `command` says
    /// what made it; no machine, no recipe, not a sample.
    pub fn made_by(
        command: &str,
        teacher_key: &str,
        (rung_steps, final_steps): (Vec<u32>, Vec<u32>),
        rows: Vec<Row>,
    ) -> Table {
        Table {
            format: "genas-table".into(),
            version: TABLE_VERSION,
            provenance: Provenance {
                command: command.into(),
                genas: env!("CARGO_PKG_VERSION").into(),
                commit: "none".into(),
                machine: "none".into(),
                cores: 1,
                workers: 1,
                created_unix_s: 0,
                wall_s: 0.0,
            },
            experiment_toml: String::new(),
            teacher_key: teacher_key.into(),
            teacher_val_bits: 3.0,
            rung_steps,
            final_steps,
            sample_only: false,
            sampled_from: None,
            recipe: None,
            rows,
        }
    }

    /// Reads a table written by `genas bench table` (gzip JSON).
    pub fn read(path: &Path) -> Result<Table, TableError> {
        let raw = genas_space::files::read_bounded(path, MAX_TABLE_FILE_BYTES)
            .map_err(|e| TableError(format!("cannot read {}: {e}", path.display())))?;
        let mut text = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(flate2::read::GzDecoder::new(raw.as_slice()), 1 << 32),
            &mut text,
        )
        .map_err(|e| {
            TableError(format!(
                "{}: not a gzip-compressed table: {e}",
                path.display()
            ))
        })?;
        let mut table: Table = serde_json::from_slice(&text)
            .map_err(|e| TableError(format!("{}: not a genas table: {e}", path.display())))?;
        if table.format != "genas-table" || table.version > TABLE_VERSION {
            return Err(TableError(format!(
                "{}: a {} table of version {}; this genas reads genas-table up to version {TABLE_VERSION}",
                path.display(),
                table.format,
                table.version
            )));
        }
        // Descriptors are functions of the architecture: a table made by an older genas gets
        // this one's.
        for r in &mut table.rows {
            r.proxies = with_descriptors(std::mem::take(&mut r.proxies), &r.architecture);
        }
        Ok(table)
    }
    /// Writes the table as gzip JSON, atomically (a temporary file renamed into place).
    pub fn write(&self, out: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(self)?;
        let tmp = PathBuf::from(format!("{}.tmp", out.display()));
        {
            let f = std::fs::File::create(&tmp).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot write {}: {e}", tmp.display()))
            })?;
            let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::best());
            gz.write_all(&json)?;
            gz.finish()?.sync_all()?;
        }
        std::fs::rename(&tmp, out).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot write {}: {e}", out.display()))
        })
    }
}

/// A tabulated benchmark read back: every job's result is the table's, at no cost.
pub struct Replay<'a> {
    rows: BTreeMap<&'a str, &'a Row>,
}

impl<'a> Replay<'a> {
    pub fn new(table: &'a Table) -> Replay<'a> {
        Replay {
            rows: table.rows.iter().map(|r| (r.id.as_str(), r)).collect(),
        }
    }

    /// The table's row of `id`.
    pub fn row(&self, id: &str) -> Option<&'a Row> {
        self.rows.get(id).copied()
    }
}

/// What replaying `job` against `row` gives: the row's rung of the job's steps (a schedule may
/// use some of a table's rungs), with its latency where the job measures it; without one, a
/// failed evaluation saying `missing()`, never an invented figure.
pub(crate) fn replayed(row: Option<&Row>, job: &Job, missing: impl FnOnce() -> String) -> Output {
    match row.and_then(|r| r.rungs.iter().find(|e| e.steps == job.config.steps)) {
        Some(e) => Output {
            result: e.result.clone(),
            latency_ms_per_token: if job.measure_latency {
                row.and_then(|r| r.latency_ms_per_token)
            } else {
                None
            },
            failed: None,
        },
        None => Output {
            result: DistillResult {
                steps: job.config.steps,
                train_loss: None,
                eval: None,
                diverged: Some(missing()),
                seconds: 0.0,
            },
            latency_ms_per_token: None,
            failed: None,
        },
    }
}

/// A replaying executor's `run`: each job's `output` handed over in order, until told to stop.
pub(crate) fn replay_each(
    jobs: &[Job],
    stop: &AtomicBool,
    done: &(dyn Fn(usize, Output) -> bool + Sync),
    output: impl Fn(&Job) -> Output,
) -> Result<(), ExecError> {
    for (i, job) in jobs.iter().enumerate() {
        if stop.load(Ordering::SeqCst) || !done(i, output(job)) {
            return Ok(());
        }
    }
    Ok(())
}

impl Executor for Replay<'_> {
    fn run(
        &self,
        jobs: &[Job],
        _workers: usize,
        stop: &AtomicBool,
        done: &(dyn Fn(usize, Output) -> bool + Sync),
    ) -> Result<(), ExecError> {
        replay_each(jobs, stop, done, |job| {
            replayed(self.row(&job.id), job, || {
                format!(
                    "not in the table at rung {} ({} steps)",
                    job.rung, job.config.steps
                )
            })
        })
    }

    fn proxies(
        &self,
        archs: &[Architecture],
        _seed: u64,
        _workers: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<ProxyScores> {
        archs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                progress(i + 1, archs.len());
                self.row(&a.id())
                    .map(|r| r.proxies.clone())
                    .unwrap_or_else(|| ProxyScores {
                        scores: Default::default(),
                        millis: 0.0,
                    })
            })
            .collect()
    }
}
