//! The job boundary between deciding and executing. The controller decides *what* to
//! evaluate and commits results in queue order; an [`Executor`] only runs a batch of
//! evaluation jobs and hands each result back as it finishes. A job is plain, serialisable
//! data: the architecture, its initialisation seed and the distillation settings; the
//! executor brings the inputs they refer to (the teacher's cached soft targets, the proxy
//! batch). Executors live in `genas-exec`; the controller knows only this trait.

use genas_scoring::distill::{DistillConfig, DistillResult};
use genas_scoring::zero_cost::ProxyScores;
use genas_space::{Architecture, BlockObjective};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::atomic::AtomicBool;

/// One brief distillation to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub architecture: Architecture,
    /// Seed of the initial weights.
    pub init_seed: u64,
    /// Which rung of the schedule (for executors that look results up).
    pub rung: usize,
    pub config: DistillConfig,
    /// Measure generation latency after training (the top rung does).
    pub measure_latency: bool,
    /// The network's whole initial weights, a genas checkpoint on this machine named by its
    /// content (a blockwise member's assembled blocks, see [`initial_name`]); none: drawn
    /// from `init_seed`, or pruned from the teacher, as the recipe says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<std::path::PathBuf>,
}

/// The file name a job's initial weights go under: named by their content, so that a shared
/// directory holding several runs' never hands one job another's weights.
pub fn initial_name(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    format!("init-{}.safetensors", genas_space::hex16(h))
}

/// What a job produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub result: DistillResult,
    pub latency_ms_per_token: Option<f64>,
    /// The executor could not get a result (the PyTorch runner exited non-zero, a Slurm task
    /// failed every try): the class of failure, one short phrase; `result.diverged` holds it
    /// with the error's last lines. Recorded in the run as a failure, never cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl Output {
    /// A result the executor could not get: `class` (a short phrase naming what failed, the
    /// same for every job that failed the same way) and `detail` (the error's last lines).
    pub fn failed(steps: u32, class: &str, detail: &str) -> Output {
        Output {
            result: DistillResult {
                steps,
                train_loss: None,
                eval: None,
                diverged: Some(format!("{class}: {detail}")),
                seconds: 0.0,
            },
            latency_ms_per_token: None,
            failed: Some(class.to_string()),
        }
    }
}

/// One blockwise local distillation: the teacher's network with one sub-block replaced by a
/// variant, that sub-block trained with every other weight held at the teacher's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockJob {
    /// The block's archive key.
    pub id: String,
    /// The teacher with the one sub-block replaced.
    pub architecture: Architecture,
    /// Seed of the weights the teacher's cannot give (where the variant is larger).
    pub init_seed: u64,
    /// The recipe; `train_only` names the sub-block's parameters, the only ones trained.
    pub config: DistillConfig,
    pub layer: usize,
    /// The attention half (else the FFN half).
    pub attention: bool,
    pub objective: BlockObjective,
    /// The layer's cached teacher activations (`genas_scoring::local::cache_activations`),
    /// where the executor reads them: what the normalised error trains on (the KL needs none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<std::path::PathBuf>,
}

/// What a block job produced.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockOutput {
    /// Its eval is the replace-one score (KL to the teacher, validation loss).
    pub result: DistillResult,
    /// The trained tensors (those `train_only` names) as a safetensors file; empty when
    /// `failed`.
    pub weights: Vec<u8>,
    /// Its network's generation latency, sub-block by sub-block, where it trained.
    pub latency: Option<genas_engine::SubBlockLatency>,
    /// As [`Output::failed`]: the executor could not get a result.
    pub failed: Option<String>,
}

impl BlockOutput {
    /// A block the executor could not train (see [`Output::failed`]).
    pub fn failed(steps: u32, class: &str, detail: &str) -> BlockOutput {
        let o = Output::failed(steps, class, detail);
        BlockOutput {
            result: o.result,
            weights: Vec::new(),
            latency: None,
            failed: o.failed,
        }
    }
}

/// The initialisation seed of a candidate: from the run seed and the architecture id, so the
/// same architecture gets the same result whatever order it is evaluated in.
pub fn init_seed(seed: u64, arch_id: &str) -> u64 {
    let h = Sha256::digest(arch_id.as_bytes());
    seed ^ u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))
}

/// An executor that cannot go on (Slurm refused a submission, the shared directory is not
/// writable, the PyTorch runner failed): one line. Results already handed back stay committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The cluster refused or lost work: sbatch, squeue or the shared directory.
    #[error("{0}")]
    Cluster(String),
    /// The PyTorch runner could not run or returned no result.
    #[error("{0}")]
    Runner(String),
    /// The device an experiment names cannot be used (no torch, or no GPU it sees).
    #[error("{0}")]
    Device(String),
    /// A job's inputs (the teacher's targets, weights, token streams) could not be written
    /// or read where the executor needs them.
    #[error("{0}")]
    Inputs(String),
}

/// Runs evaluation jobs.
pub trait Executor: Sync {
    /// Runs `jobs` on up to `workers` at a time, calling `done(index, output)` as each
    /// finishes (in any order, from any thread). Returns early, leaving jobs unrun, once
    /// `stop` is set or `done` returns false.
    fn run(
        &self,
        jobs: &[Job],
        workers: usize,
        stop: &AtomicBool,
        done: &(dyn Fn(usize, Output) -> bool + Sync),
    ) -> Result<(), ExecError>;

    /// The zero-cost proxies of each architecture (initialised with `init_seed(seed, id)`),
    /// on `workers` threads; `progress(done, total)`.
    fn proxies(
        &self,
        archs: &[Architecture],
        seed: u64,
        workers: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<ProxyScores>;

    /// Runs blockwise local distillations as [`Executor::run`] runs jobs. An executor that
    /// cannot train sub-blocks says so in one line, before running any.
    fn blocks(
        &self,
        jobs: &[BlockJob],
        workers: usize,
        stop: &AtomicBool,
        done: &(dyn Fn(usize, BlockOutput) -> bool + Sync),
    ) -> Result<(), ExecError> {
        let _ = (jobs, workers, stop, done);
        Err(ExecError::Runner(
            "this executor does not train sub-blocks: blockwise search runs on the CPU engine, on local threads or Slurm".into(),
        ))
    }
}
