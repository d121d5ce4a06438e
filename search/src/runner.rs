//! The PyTorch runner: a brief distillation job trained by PyTorch (on a GPU, or on the CPU
//! for the parity tests) with genas's exact recipe, through the standalone module genas
//! exports and verifies (`model.py`). genas writes a job directory: `model/` (the candidate's
//! pytorch export at its initial weights, masks included), `job.json` (the training settings
//! and AdamW's decay groups), and a reference to the teacher targets file
//! (`genas_proxies::inputs`); `runner.py`, shipped inside the binary and written beside them,
//! trains and writes `result.json` (every step's loss, the validation figures, the device).
//! Users install nothing from genas but torch.
//!
//! It knows the job and the export, not the controller or where jobs come from.

use crate::executor::{Job, Output};
use anyhow::{bail, Context, Result};
use genas_proxies::distill::{DistillResult, Evaluation};
use genas_proxies::engine::train::TrainConfig;
use genas_proxies::engine::{Cpu, Model};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;

/// The runner, as shipped.
pub const RUNNER_PY: &str = include_str!("runner/runner.py");

/// What `job.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TorchJob {
    /// The teacher targets file (absolute).
    pub targets: String,
    pub temperature: f64,
    pub alpha: f64,
    /// Parameters under weight decay (matrices and embeddings).
    pub decay: Vec<String>,
    pub train: TrainConfig,
}

/// What `result.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TorchResult {
    pub steps: u32,
    /// The loss of every step.
    pub losses: Vec<f64>,
    pub diverged: Option<String>,
    pub train_loss: Option<f64>,
    pub eval: Option<Evaluation>,
    /// "cpu" or the GPU's name.
    pub device: String,
    pub seconds: f64,
}

impl TorchResult {
    /// The result record genas keeps, as the engine would have written it.
    pub fn output(&self) -> Output {
        let finite = self
            .eval
            .is_some_and(|e| e.val_ce.is_finite() && e.kl_to_teacher.is_finite());
        Output {
            result: DistillResult {
                steps: self.steps,
                train_loss: if self.diverged.is_some() {
                    None
                } else {
                    self.train_loss
                },
                eval: if finite { self.eval } else { None },
                diverged: self
                    .diverged
                    .clone()
                    .or_else(|| (!finite).then(|| "validation loss is not finite".to_string())),
                seconds: self.seconds,
            },
            latency_ms_per_token: None,
            failed: false,
        }
    }
}

/// Writes the job directory `dir` for `job`: the candidate at its initial weights, the
/// settings, and `runner.py`. `targets` is the teacher targets file, whose schedule has
/// `schedule_len` batches.
pub fn write_job(dir: &Path, job: &Job, targets: &Path, schedule_len: usize) -> Result<()> {
    let model = Model::new(&job.architecture, Cpu::<f32>::new(1), job.init_seed);
    let tensors = crate::winners::model_tensors(&model);
    genas_store::export::write_module(&dir.join("model"), &model.arch, &tensors)?;
    let c = &job.config;
    let steps = c.steps.min(u32::try_from(schedule_len).unwrap_or(u32::MAX));
    let torch = TorchJob {
        targets: std::path::absolute(targets)?.display().to_string(),
        temperature: c.temperature,
        alpha: c.alpha,
        decay: model
            .params
            .iter()
            .filter(|p| p.decay)
            .map(|p| p.name.clone())
            .collect(),
        train: TrainConfig::new(steps, c.batch_size, c.learning_rate, c.seed),
    };
    std::fs::write(dir.join("job.json"), serde_json::to_vec_pretty(&torch)?)
        .with_context(|| format!("cannot write {}", dir.display()))?;
    std::fs::write(dir.join("runner.py"), RUNNER_PY)
        .with_context(|| format!("cannot write {}", dir.display()))?;
    Ok(())
}

/// Runs the job in `dir` with `python` on `device` ("cpu", "cuda" or "auto").
pub fn run(dir: &Path, python: &str, device: &str) -> Result<TorchResult> {
    let o = Command::new(python)
        .arg(dir.join("runner.py"))
        .arg(dir)
        .args(["--device", device])
        .output()
        .with_context(|| format!("{python} could not be run"))?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let line = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!("the PyTorch runner failed ({}): {}", o.status, line.trim());
    }
    let path = dir.join("result.json");
    let bytes = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: unreadable", path.display()))
}
