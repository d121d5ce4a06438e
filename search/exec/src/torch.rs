//! The PyTorch runner: a brief distillation job trained by PyTorch (on a GPU, or on the CPU
//! for the parity tests) with genas's exact recipe, through the standalone module genas
//! exports and verifies (`model.py`). genas writes a job directory: `model/` (the candidate's
//! pytorch export at its initial weights, masks included), `job.json` (the training settings
//! and AdamW's decay groups), and a reference to the teacher targets file
//! (`genas_scoring::inputs`); `runner.py`, shipped inside the binary and written beside them,
//! trains and writes `result.json` (every step's loss, the validation figures, the device).
//! Users install nothing from genas but torch.
//!
//! `[search] device = "cuda"` (or `"auto"` on a machine where torch sees a GPU) sends the
//! search's brief distillations, calibration included, through the runner ([`Torch`], an
//! executor): `device_jobs` jobs train side by side on the device, and results are committed
//! in queue order as on the CPU. They are not bit-reproducible on a GPU (kernels differ from
//! run to run in their last bits); a resumed run never re-runs a committed result. The
//! teacher's training ([`train_teacher`]) and the final distillation ([`final_distill`]) run
//! through the runner too; the teacher's soft targets and validation and the zero-cost proxies
//! are computed on the CPU engine.
//!
//! It knows the job boundary, the export and the executor interface, not the controller.

use crate::local::{last_line, last_lines, side_by_side, Local};
use anyhow::{bail, Context, Result};
use genas_engine::train::TrainConfig;
use genas_engine::{checkpoint, Cpu, Model};
use genas_scoring::distill::{DistillConfig, DistillResult, Evaluation, TeacherTargets};
use genas_scoring::zero_cost::ProxyScores;
use genas_search::job::{init_seed, BlockJob, BlockOutput, ExecError, Executor, Job, Output};
use genas_space::{Architecture, BlockObjective, Device, Experiment};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

/// A runner failure as the executor's error: the context chain in one line.
fn runner_error(e: anyhow::Error) -> ExecError {
    ExecError::Runner(format!("{e:#}"))
}

/// A device that cannot be used, as the executor's error.
fn device_error(e: anyhow::Error) -> ExecError {
    ExecError::Device(format!("{e:#}"))
}

/// Lines of the runner's error output kept when it fails.
const ERROR_LINES: usize = 5;

/// The most `result.json` may hold: a loss per step and a few figures (a million steps fit).
const MAX_RESULT_BYTES: u64 = 256 << 20;

/// The runner, as shipped.
pub use genas_interop::RUNNER_PY;

/// What `job.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TorchJob {
    /// "distill" (a brief distillation), "train" (the teacher, on hard labels) or "final"
    /// (a full distillation, `genas distill`).
    #[serde(default = "distill_kind")]
    pub kind: String,
    /// The teacher targets file (for "final", its validation set alone), or for "train" the
    /// batches file (a relative path is read against the job directory).
    pub targets: String,
    pub temperature: f64,
    pub alpha: f64,
    /// Parameters under weight decay (matrices and embeddings).
    pub decay: Vec<String>,
    pub train: TrainConfig,
    /// "final": the training schedule's batches file, the teacher's module folder, and the
    /// full distillation's settings.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub final_: Option<FinalSettings>,
    /// "distill" and "block": only the parameters under these prefixes train (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train_only: Vec<String>,
    /// "block": which sub-block trains, on which cached activations.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub block: Option<BlockSettings>,
    /// How it runs on the device.
    #[serde(flatten)]
    pub options: RunnerOptions,
}

/// A "block" job's own settings: layer `layer`'s attention half (`attention`) or FFN half,
/// trained on the normalised error against the teacher's activations in `activations`
/// (`genas_scoring::local::cache_activations`' file of that layer), batches of `shape`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockSettings {
    pub layer: usize,
    pub attention: bool,
    pub activations: String,
    pub shape: (usize, usize),
}

/// The bound on bf16's relative difference from the engine's float32: every step's loss over
/// the parity cases' 50 steps, the validation CE and KL. Held by the test
/// `micro_batches_checkpointing_loss_chunks_and_bf16_train_as_the_engine_does` on torch's
/// CPU, where the worst measured is 1.2e-4 (a step's loss) and 2.8e-5 (validation CE); it
/// leaves room for the longer sums of larger models. fp32 stays within 1e-6.
pub const BF16_TOLERANCE: f64 = 1e-2;

/// How a runner job runs on its device; none of it changes the recipe. In fp32 the result
/// is the engine's to float rounding whatever the micro-batch, checkpointing or loss chunks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunnerOptions {
    /// "fp32" or "bf16" (autocast, float32 master weights).
    pub precision: String,
    /// Sequences per forward/backward pass, their gradients summed into the step of the
    /// whole batch (0: the whole batch).
    pub micro_batch: u32,
    /// Each block's activations recomputed in the backward pass.
    pub checkpointing: bool,
    /// Rows of logits the loss makes at once (0: as many as 2^25 entries hold).
    pub loss_rows: u32,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            precision: "fp32".into(),
            micro_batch: 0,
            checkpointing: false,
            loss_rows: 0,
        }
    }
}

impl RunnerOptions {
    /// The options `exp` states (`[fidelity] precision`, `[search] micro_batch` and
    /// `checkpointing`).
    pub fn of(exp: &Experiment) -> RunnerOptions {
        RunnerOptions {
            precision: exp.fidelity.precision.name().into(),
            micro_batch: exp.search.micro_batch,
            checkpointing: exp.search.checkpointing,
            loss_rows: 0,
        }
    }

    /// These options at `precision`.
    pub fn at(&self, precision: genas_space::Precision) -> RunnerOptions {
        RunnerOptions {
            precision: precision.name().into(),
            ..self.clone()
        }
    }
}

/// A "final" job's own settings (`distill::FullConfig`, the soft targets' k, the files).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinalSettings {
    pub batches: String,
    pub teacher: String,
    pub top_k: usize,
    pub eval_every: u32,
    pub checkpoint_every: u32,
    pub patience: u32,
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
    /// A "final" job's: the step whose weights were kept, whether it stopped early, the step
    /// it resumed from, and (step, validation CE) at every evaluation.
    #[serde(default)]
    pub best_step: Option<u32>,
    #[serde(default)]
    pub stopped_early: Option<bool>,
    #[serde(default)]
    pub resumed_from: Option<u32>,
    #[serde(default)]
    pub history: Option<Vec<(u32, f64)>>,
    /// A "proxies" job's: each of `zero_cost::MEASURED_NAMES` (null where undefined).
    #[serde(default)]
    pub proxies: Option<std::collections::BTreeMap<String, Option<f64>>>,
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
            failed: None,
        }
    }
}

fn distill_kind() -> String {
    "distill".into()
}

/// Writes the job directory `dir` for `job`: the candidate at its initial weights (those
/// `job.initial` names, else drawn, or pruned from the teacher with `init = "teacher"`), the
/// settings, and `runner.py`. `file` is the teacher targets file holding `targets`.
pub fn write_job(
    dir: &Path,
    job: &Job,
    file: &Path,
    targets: &TeacherTargets,
    options: &RunnerOptions,
) -> std::result::Result<(), ExecError> {
    write_job_inner(dir, job, file, targets, options).map_err(runner_error)
}

fn write_job_inner(
    dir: &Path,
    job: &Job,
    file: &Path,
    targets: &TeacherTargets,
    options: &RunnerOptions,
) -> Result<()> {
    let model =
        crate::local::start(job, targets, Cpu::<f32>::new(1)).map_err(anyhow::Error::msg)?;
    let c = &job.config;
    let steps = c
        .steps
        .min(u32::try_from(targets.schedule.len()).unwrap_or(u32::MAX));
    let train = TrainConfig::new(steps, c.batch_size, c.learning_rate, c.seed);
    write_torch_job(
        dir,
        &model,
        ("distill", file),
        (c.temperature, c.alpha),
        train,
        None,
        (c.train_only.clone(), None),
        options.at(c.precision),
    )
}

/// Writes a job directory: `model` at its weights as the module genas exports, `job.json`
/// (`kind`, the file it reads, temperature and alpha, the decay groups and `train`; for a
/// blockwise job the parameters it trains and its block's settings), and `runner.py`.
#[allow(clippy::too_many_arguments)]
fn write_torch_job(
    dir: &Path,
    model: &Model<Cpu<f32>>,
    (kind, file): (&str, &Path),
    (temperature, alpha): (f64, f64),
    train: TrainConfig,
    final_: Option<FinalSettings>,
    (train_only, block): (Vec<String>, Option<BlockSettings>),
    options: RunnerOptions,
) -> Result<()> {
    let tensors = genas_interop::model_tensors(model);
    genas_interop::export::write_module(&dir.join("model"), &model.arch, &tensors)?;
    let torch = TorchJob {
        final_,
        train_only,
        block,
        kind: kind.into(),
        // A relative path is read against the job directory.
        targets: file.display().to_string(),
        temperature,
        alpha,
        decay: model
            .params
            .iter()
            .filter(|p| p.decay)
            .map(|p| p.name.clone())
            .collect(),
        train,
        options,
    };
    std::fs::write(dir.join("job.json"), serde_json::to_vec_pretty(&torch)?)
        .with_context(|| format!("cannot write {}", dir.display()))?;
    std::fs::write(dir.join("runner.py"), RUNNER_PY)
        .with_context(|| format!("cannot write {}", dir.display()))?;
    Ok(())
}

/// Writes the training schedule `data.train_schedule(b, steps, seed)` as a batches file in
/// `inputs`; returns its content name.
fn store_schedule(
    inputs: &Path,
    data: &genas_scoring::Dataset,
    b: usize,
    steps: u32,
    seed: u64,
) -> Result<String> {
    let bytes = genas_scoring::inputs::encode_batches(&data.train_schedule(b, steps, seed))
        .map_err(anyhow::Error::msg)?;
    genas_scoring::inputs::store_bytes(inputs, &bytes).map_err(anyhow::Error::msg)
}

/// A teacher trained under the runner: the model, its record, the loss of every step.
pub type TrainedTeacher = (
    Model<Cpu<f32>>,
    genas_scoring::teacher::TeacherRecord,
    Vec<f64>,
);

/// Trains the teacher of `cfg` under the runner on `device`, in a job directory under `dir`:
/// genas's initial weights, the batches genas's own training draws (written as a batches
/// file), genas's recipe on the hard labels. The trained weights come back and are scored on
/// the engine, as `train_teacher` scores them. Returns the teacher, its record, and the loss
/// of every step.
pub fn train_teacher(
    cfg: &genas_space::TeacherConfig,
    data: &genas_scoring::Dataset,
    seed: u64,
    dir: &Path,
    (python, device): (&str, &str),
    options: &RunnerOptions,
) -> std::result::Result<TrainedTeacher, ExecError> {
    train_teacher_inner(cfg, data, seed, dir, (python, device), options).map_err(runner_error)
}

fn train_teacher_inner(
    cfg: &genas_space::TeacherConfig,
    data: &genas_scoring::Dataset,
    seed: u64,
    dir: &Path,
    (python, device): (&str, &str),
    options: &RunnerOptions,
) -> Result<TrainedTeacher> {
    use genas_scoring::teacher::{teacher_architecture, teacher_record, teacher_train_config};
    let arch = teacher_architecture(cfg, data.vocab_size(), data.context);
    let mut model = Model::new(&arch, Cpu::<f32>::new(0), seed);
    let train = teacher_train_config(cfg, seed);
    let inputs = dir.join("inputs");
    let name = store_schedule(&inputs, data, train.batch_size, train.steps, train.seed)?;
    let jd = dir
        .join("jobs")
        .join(format!("teacher-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&jd);
    std::fs::create_dir_all(&jd).with_context(|| jd.display().to_string())?;
    let file = std::path::absolute(genas_scoring::inputs::path_in(&inputs, &name))?;
    write_torch_job(
        &jd,
        &model,
        ("train", &file),
        (1.0, 1.0),
        train,
        None,
        Default::default(),
        options.clone(),
    )?;
    let r = run(&jd, python, device)?;
    if let Some(why) = &r.diverged {
        bail!("the teacher's training under PyTorch failed: {why}");
    }
    checkpoint::load(&mut model, &jd.join("trained.safetensors"))
        .context("the teacher's trained weights")?;
    let _ = std::fs::remove_dir_all(&jd);
    let record = teacher_record(&mut model, cfg, data, seed, r.seconds);
    Ok((model, record, r.losses))
}

/// `genas distill`'s full distillation of `student` (at its initial weights) under the
/// runner on `device`, in the job directory `jd`: the teacher's module and logits at every
/// step, the training schedule genas's own full distillation draws (a batches file), the
/// validation set of `val`, evaluation, early stopping and checkpoints as `full_distill` does
/// them. A checkpoint left in `jd` by an interrupted run of the same job is resumed. On
/// success `student` holds the best weights and `jd` is removed; returns the result, the loss
/// of every step and the device it trained on.
#[allow(clippy::too_many_arguments)]
pub fn final_distill(
    student: &mut Model<Cpu<f32>>,
    teacher: &Model<Cpu<f32>>,
    data: &genas_scoring::Dataset,
    val: &TeacherTargets,
    cfg: &genas_scoring::distill::FullConfig,
    jd: &Path,
    (python, device): (&str, &str),
    options: &RunnerOptions,
) -> std::result::Result<(genas_scoring::distill::FullResult, Vec<f64>, String), ExecError> {
    final_distill_inner(
        student,
        teacher,
        data,
        val,
        cfg,
        jd,
        (python, device),
        options,
    )
    .map_err(runner_error)
}

#[allow(clippy::too_many_arguments)]
fn final_distill_inner(
    student: &mut Model<Cpu<f32>>,
    teacher: &Model<Cpu<f32>>,
    data: &genas_scoring::Dataset,
    val: &TeacherTargets,
    cfg: &genas_scoring::distill::FullConfig,
    jd: &Path,
    (python, device): (&str, &str),
    options: &RunnerOptions,
) -> Result<(genas_scoring::distill::FullResult, Vec<f64>, String)> {
    write_final_inner(student, teacher, data, val, cfg, jd, options)?;
    let r = run(jd, python, device)?;
    read_final_inner(student, jd, &r)
}

/// Writes the job directory `jd` of [`final_distill`] (kept as it is where it holds the
/// same job, so its checkpoint is resumed), to be run by [`run`] or a slot.
#[allow(clippy::too_many_arguments)]
pub fn write_final(
    student: &Model<Cpu<f32>>,
    teacher: &Model<Cpu<f32>>,
    data: &genas_scoring::Dataset,
    val: &TeacherTargets,
    cfg: &genas_scoring::distill::FullConfig,
    jd: &Path,
    options: &RunnerOptions,
) -> std::result::Result<(), ExecError> {
    write_final_inner(student, teacher, data, val, cfg, jd, options).map_err(runner_error)
}

fn write_final_inner(
    student: &Model<Cpu<f32>>,
    teacher: &Model<Cpu<f32>>,
    data: &genas_scoring::Dataset,
    val: &TeacherTargets,
    cfg: &genas_scoring::distill::FullConfig,
    jd: &Path,
    options: &RunnerOptions,
) -> Result<()> {
    let d = &cfg.distill;
    let inputs = jd.join("inputs");
    let bname = store_schedule(&inputs, data, d.batch_size, d.steps, d.seed)?;
    let vname = genas_scoring::inputs::store(&inputs, val).map_err(anyhow::Error::msg)?;
    let rel = |name: &str| format!("inputs/{name}.safetensors");
    let tensors = genas_interop::model_tensors(teacher);
    genas_interop::export::write_module(&jd.join("teacher"), &teacher.arch, &tensors)?;
    let train = TrainConfig::new(d.steps, d.batch_size, d.learning_rate, d.seed);
    let settings = FinalSettings {
        batches: rel(&bname),
        teacher: "teacher".into(),
        top_k: d.top_k,
        eval_every: cfg.eval_every,
        checkpoint_every: cfg.checkpoint_every,
        patience: cfg.patience,
    };
    write_torch_job(
        jd,
        student,
        ("final", Path::new(&rel(&vname))),
        (d.temperature, d.alpha),
        train,
        Some(settings),
        Default::default(),
        options.at(d.precision),
    )
}

/// The outcome of a final job that ran in `jd` with result `r`: the best weights loaded into
/// `student` (an architecture's model at any weights), `jd` removed; the result, the loss of
/// every step and the device.
pub fn read_final(
    student: &mut Model<Cpu<f32>>,
    jd: &Path,
    r: &TorchResult,
) -> std::result::Result<(genas_scoring::distill::FullResult, Vec<f64>, String), ExecError> {
    read_final_inner(student, jd, r).map_err(runner_error)
}

fn read_final_inner(
    student: &mut Model<Cpu<f32>>,
    jd: &Path,
    r: &TorchResult,
) -> Result<(genas_scoring::distill::FullResult, Vec<f64>, String)> {
    if let Some(why) = &r.diverged {
        bail!("{why}");
    }
    checkpoint::load(student, &jd.join("trained.safetensors")).context("the distilled weights")?;
    let out = r.output();
    let full = genas_scoring::distill::FullResult {
        result: out.result,
        best_step: r.best_step.unwrap_or(r.steps),
        stopped_early: r.stopped_early.unwrap_or(false),
        resumed_from: r.resumed_from,
        history: r.history.clone().unwrap_or_default(),
        losses: r.losses.clone(),
    };
    let _ = std::fs::remove_dir_all(jd);
    Ok((full, r.losses.clone(), r.device.clone()))
}

/// Runs the job in `dir` with `python` on `device` ("cpu", "cuda" or "auto").
pub fn run(dir: &Path, python: &str, device: &str) -> std::result::Result<TorchResult, ExecError> {
    run_inner(dir, python, device).map_err(runner_error)
}

/// Torch's threads (`OMP_NUM_THREADS`) for one of `processes` runner processes on `device`,
/// unless the user set it: none said for one process on a GPU. Torch otherwise gives every
/// process a thread per core, and K slots on torch's CPU spin K times as many threads as there
/// are cores (four slots on two cores ran a small search 2.6× slower than with one thread
/// each). On torch's CPU every process gets one thread, however many share the machine, so
/// that a job's numbers do not depend on the slot count (torch's CPU sums split by thread);
/// on a GPU the slots share the cores, whose threads only feed it.
pub fn runner_threads(device: &str, processes: usize) -> Option<usize> {
    if std::env::var_os("OMP_NUM_THREADS").is_some() {
        return None;
    }
    if device == "cpu" {
        return Some(1);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (processes > 1).then(|| (cores / processes).max(1))
}

fn run_inner(dir: &Path, python: &str, device: &str) -> Result<TorchResult> {
    let mut cmd = Command::new(python);
    cmd.arg(dir.join("runner.py"))
        .arg(dir)
        .args(["--device", device]);
    if let Some(n) = runner_threads(device, 1) {
        cmd.env("OMP_NUM_THREADS", n.to_string());
    }
    let o = cmd
        .output()
        .with_context(|| format!("{python} could not be run"))?;
    if !o.status.success() {
        bail!(
            "the PyTorch runner failed ({}): {}",
            o.status,
            last_lines(&o.stderr, ERROR_LINES)
        );
    }
    read_result(dir)
}

/// The `result.json` a runner wrote in `dir`, read with a bound.
pub(crate) fn read_result(dir: &Path) -> Result<TorchResult> {
    let path = dir.join("result.json");
    let bytes = genas_space::files::read_bounded(&path, MAX_RESULT_BYTES)
        .with_context(|| format!("{}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: unreadable", path.display()))
}

/// The Python that runs the runner: `GENAS_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("GENAS_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Where an experiment's training runs.
#[derive(Clone, Debug, PartialEq)]
pub enum DevicePlan {
    /// The genas engine on the CPU; a note for the user when the experiment asked for more.
    Engine { note: Option<String> },
    /// The PyTorch runner on `device` ("cuda"; "cpu" under `GENAS_RUNNER_DEVICE=cpu`, which
    /// tries the GPU path on a machine without one), with `python`.
    Torch {
        device: String,
        python: String,
        note: String,
        options: RunnerOptions,
        /// The GPUs the slots are pinned to (`CUDA_VISIBLE_DEVICES`), `search.device_jobs`
        /// each; none pinned when empty.
        gpus: Vec<u32>,
        /// Bytes of memory each slot may use (a GPU's over its `device_jobs`): the GPU's as
        /// torch reports it, or GENAS_DEVICE_MEMORY's; none known on torch's CPU.
        slot_memory: Option<u64>,
    },
}

impl DevicePlan {
    /// What to tell the user about where training runs, if anything.
    pub fn note(&self) -> Option<&str> {
        match self {
            DevicePlan::Engine { note } => note.as_deref(),
            DevicePlan::Torch { note, .. } => Some(note),
        }
    }
}

/// What `python` says of torch: its version, whether it sees CUDA, the first device's name and
/// how many devices it sees.
#[derive(Clone, Debug)]
struct TorchInfo {
    version: String,
    cuda: bool,
    name: String,
    devices: u32,
    /// Bytes of the first GPU's memory.
    memory: u64,
}

type Probe = Result<TorchInfo, String>;

/// What `python` says of torch, or why it cannot say.
/// Asked once per process (importing torch takes a second or two).
fn probe(python: &str) -> Probe {
    static SEEN: std::sync::Mutex<Vec<(String, Probe)>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = seen.iter().find(|(p, _)| p == python) {
        return p.clone();
    }
    let p = ask_torch(python);
    seen.push((python.to_string(), p.clone()));
    p
}

fn ask_torch(python: &str) -> Probe {
    let code = "import torch; c = torch.cuda.is_available(); \
                print(torch.__version__, int(c), torch.cuda.device_count() if c else 0, \
                torch.cuda.get_device_properties(0).total_memory if c else 0, \
                torch.cuda.get_device_name() if c else 'none', sep='|')";
    let o = Command::new(python)
        .args(["-c", code])
        .output()
        .map_err(|e| format!("{python} could not be run ({e})"))?;
    if !o.status.success() {
        return Err(format!(
            "{python} cannot import torch ({})",
            last_line(&o.stderr)
        ));
    }
    let out = String::from_utf8_lossy(&o.stdout);
    let mut parts = out.trim().splitn(5, '|');
    let (v, c, n, m, name) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    );
    match (
        v,
        c,
        n.and_then(|n| n.parse().ok()),
        m.and_then(|m| m.parse().ok()),
        name,
    ) {
        (Some(v), Some(c), Some(devices), Some(memory), Some(name)) => Ok(TorchInfo {
            version: v.to_string(),
            cuda: c == "1",
            name: name.to_string(),
            devices,
            memory,
        }),
        _ => Err(format!(
            "{python} printed {:?} for torch's version",
            out.trim()
        )),
    }
}

/// The device plan of `exp`, decided before anything is trained: `cuda` without torch, or
/// with a torch that sees no GPU, is one line saying which.
pub fn device_plan(exp: &Experiment) -> std::result::Result<DevicePlan, ExecError> {
    device_plan_inner(exp).map_err(device_error)
}

fn device_plan_inner(exp: &Experiment) -> Result<DevicePlan> {
    let file = exp.source.display();
    let cpu_only = std::env::var("GENAS_RUNNER_DEVICE").is_ok_and(|d| d == "cpu");
    let python = python();
    if exp.executor.kind == genas_space::ExecutorKind::Slurm {
        // The tasks decide on their nodes (`slurm::node_runner`); the teacher and what the
        // coordinator computes stay on this machine's engine.
        return Ok(DevicePlan::Engine {
            note: (exp.search.device == Device::Cuda).then(|| {
                format!(
                    "brief and final distillations through PyTorch on the Slurm tasks' GPUs ({} each{}); the teacher on this machine's CPU engine",
                    exp.executor.gpus_per_task,
                    if cpu_only { ", torch's CPU under GENAS_RUNNER_DEVICE=cpu" } else { "" }
                )
            }),
        });
    }
    let plan = device_plan_of(exp, cpu_only, python)?;
    if let (DevicePlan::Engine { .. }, genas_space::Precision::Bf16) =
        (&plan, exp.fidelity.precision)
    {
        bail!(
            "{file}: fidelity.precision = \"bf16\" needs the PyTorch runner on a GPU, and training runs on the CPU engine here (float32 only): remove it or use a machine whose torch sees a GPU"
        );
    }
    Ok(plan)
}

/// GENAS_DEVICE_MEMORY: the memory of each GPU to plan for instead of what torch reports
/// (bytes, or with a suffix K, M, G: "24G"), e.g. to leave room for another process.
fn device_memory_override() -> Result<Option<u64>> {
    let Ok(text) = std::env::var("GENAS_DEVICE_MEMORY") else {
        return Ok(None);
    };
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let scale: u64 = match unit.trim() {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        _ => bail!("GENAS_DEVICE_MEMORY={text}: not a size (bytes, or a number with K, M or G)"),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .map(Some)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "GENAS_DEVICE_MEMORY={text}: not a size (bytes, or a number with K, M or G)"
            )
        })
}

fn device_plan_of(exp: &Experiment, cpu_only: bool, python: String) -> Result<DevicePlan> {
    let file = exp.source.display();
    let options = RunnerOptions::of(exp);
    let what = |on: &str, gpus: &[u32]| {
        let slots = exp.search.device_jobs as usize * gpus.len().max(1);
        format!(
            "training through PyTorch on {on}: the teacher, brief distillations ({slots} at a time: {} per {}) and final distillations",
            exp.search.device_jobs,
            if gpus.is_empty() { "device".to_string() } else { format!("GPU, GPUs {gpus:?}") }
        )
    };
    let torch = |info: &TorchInfo, device: &str| -> Result<DevicePlan> {
        let listed = &exp.search.gpus;
        let gpus: Vec<u32> = if device == "cuda" {
            if let Some(g) = listed.iter().find(|&&g| g >= info.devices) {
                bail!(
                    "{file}: search.gpus lists GPU {g}, but torch {} sees {} (numbered from 0)",
                    info.version,
                    info.devices
                );
            }
            if listed.is_empty() {
                (0..info.devices).collect()
            } else {
                listed.clone()
            }
        } else {
            // Torch's CPU (GENAS_RUNNER_DEVICE=cpu): slots pinned as listed, for trying the
            // GPU path's plumbing on a machine without one.
            listed.clone()
        };
        let on = if device == "cuda" {
            format!("{} ({} {})", info.name, info.version, device)
        } else {
            format!("the CPU (torch {}, GENAS_RUNNER_DEVICE=cpu)", info.version)
        };
        let memory = device_memory_override()?.or((device == "cuda").then_some(info.memory));
        Ok(DevicePlan::Torch {
            device: device.into(),
            note: what(&on, &gpus),
            python: python.clone(),
            options: options.clone(),
            gpus,
            slot_memory: memory.map(|m| m / u64::from(exp.search.device_jobs.max(1))),
        })
    };
    match exp.search.device {
        Device::Cpu => Ok(DevicePlan::Engine { note: None }),
        Device::Cuda => {
            let info = probe(&python).map_err(|e| anyhow::anyhow!("{file}: search.device = \"cuda\": {e}; install PyTorch with CUDA support, or use \"cpu\""))?;
            if !info.cuda && !cpu_only {
                bail!(
                    "{file}: search.device = \"cuda\": torch {} ({python}) sees no CUDA device; use \"cpu\" or \"auto\"",
                    info.version
                );
            }
            torch(
                &info,
                if info.cuda && !cpu_only {
                    "cuda"
                } else {
                    "cpu"
                },
            )
        }
        Device::Auto => match probe(&python) {
            Ok(info) if info.cuda && !cpu_only => {
                let mut plan = torch(&info, "cuda")?;
                if let DevicePlan::Torch { note, .. } = &mut plan {
                    *note = format!("search.device = \"auto\": {note}");
                }
                Ok(plan)
            }
            Ok(info) => Ok(DevicePlan::Engine {
                note: Some(format!(
                    "search.device = \"auto\": torch {} sees no CUDA device: training on the CPU",
                    info.version
                )),
            }),
            Err(e) => Ok(DevicePlan::Engine {
                note: Some(format!(
                    "search.device = \"auto\": {e}: training on the CPU"
                )),
            }),
        },
    }
}

/// The runner as an executor: each job in its own directory under `dir`, one per device slot
/// at once.
pub struct Torch<'a> {
    pub slots: crate::slots::Slots,
    /// Bytes each slot may use: each job's micro-batch is the largest that fits
    /// (`device_memory::fit`), and a job that fits at none fails saying so.
    pub slot_memory: Option<u64>,
    pub dir: PathBuf,
    /// The file of `local`'s teacher targets.
    pub targets: PathBuf,
    pub options: RunnerOptions,
    /// Its teacher targets and the zero-cost proxies' batch, in memory.
    pub local: Local<'a>,
}

/// The classes of a runner job's failure, as the search's warnings group them.
const WRITING: &str = "writing the PyTorch runner's job";
const RUNNING: &str = "running the PyTorch runner";
const READING: &str = "reading the PyTorch runner's trained weights";
const DEVICE_MEMORY: &str = "too large for the device's memory";

/// `options` with the micro-batch at which a job training `arch` with `cfg` (from `teacher`'s
/// logits in a final job) fits in `slot_memory` bytes (`device_memory::fit`); as they are
/// where the memory is not known. Why not, in one line, where it fits at none.
pub fn fitted(
    arch: &Architecture,
    cfg: &genas_scoring::distill::DistillConfig,
    seq: u32,
    teacher: Option<&Architecture>,
    options: &RunnerOptions,
    slot_memory: Option<u64>,
) -> std::result::Result<RunnerOptions, String> {
    let Some(budget) = slot_memory else {
        return Ok(options.clone());
    };
    let options = options.at(cfg.precision);
    let job = crate::device_memory::DeviceJob {
        arch,
        batch: cfg.batch_size as u64,
        seq: u64::from(seq),
        targets: crate::device_memory::Targets::of(arch.vocab_size, cfg.top_k),
        teacher,
        options: &options,
    };
    let e = crate::device_memory::fit(&job, budget).map_err(|why| {
        format!(
            "{} ({}) {why}; set search.checkpointing = true, lower fidelity.batch_size or search.device_jobs",
            arch.summary(),
            arch.id()
        )
    })?;
    Ok(RunnerOptions {
        micro_batch: e.micro_batch as u32,
        loss_rows: e.loss_rows as u32,
        ..options
    })
}

impl Torch<'_> {
    /// A job's directory (named `prefix` and the hash of the job and the targets file) and
    /// the runner's options fitted to the slot's memory; or the failure's class and why.
    fn prepare<J: Serialize>(
        &self,
        prefix: &str,
        job: &J,
        arch: &Architecture,
        config: &DistillConfig,
    ) -> std::result::Result<(PathBuf, RunnerOptions), (&'static str, String)> {
        let jd = {
            let mut h = Sha256::new();
            h.update(serde_json::to_vec(job).unwrap_or_default());
            h.update(self.targets.to_string_lossy().as_bytes());
            self.dir.join(format!("{prefix}{}", genas_space::hex16(h)))
        };
        std::fs::create_dir_all(&jd).map_err(|e| (WRITING, format!("{}: {e}", jd.display())))?;
        let options = fitted(
            arch,
            config,
            arch.context,
            None,
            &self.options,
            self.slot_memory,
        )
        .map_err(|why| (DEVICE_MEMORY, why))?;
        Ok((jd, options))
    }

    /// One job through the runner: its directory and fitted options ([`Self::prepare`]),
    /// then `train` there on a slot; a job that cannot be prepared fails in one line, as
    /// `failed` builds its output.
    fn through<J: Serialize, O>(
        &self,
        prefix: &str,
        job: &J,
        (arch, config): (&Architecture, &DistillConfig),
        failed: fn(u32, &str, &str) -> O,
        train: impl FnOnce(&Path, &RunnerOptions, &RunOn<'_>) -> O,
    ) -> O {
        match self.prepare(prefix, job, arch, config) {
            Ok((jd, options)) => train(&jd, &options, &|jd| {
                self.slots.run(jd).map_err(ExecError::Runner)
            }),
            Err((class, why)) => failed(config.steps, class, &why.replace('\n', " ")),
        }
    }

    fn one(&self, job: &Job) -> Output {
        let of = (&job.architecture, &job.config);
        self.through("", job, of, Output::failed, |jd, options, run| {
            torch_job(jd, job, &self.targets, self.local.targets, options, run)
        })
    }
}

/// How a job directory is run: on a slot, or by a test's stand-in.
type RunOn<'a> = dyn Fn(&Path) -> std::result::Result<TorchResult, ExecError> + 'a;

/// A brief distillation through the runner in the job directory `jd` (removed after):
/// written, run by `run`, its result read back as genas keeps it (the generation latency, where
/// the job asks for it, the CPU engine's on the trained weights). A failure is the job's
/// output, classed as the search's warnings group them.
pub fn torch_job(
    jd: &Path,
    job: &Job,
    file: &Path,
    targets: &TeacherTargets,
    options: &RunnerOptions,
    run: &RunOn<'_>,
) -> Output {
    let steps = job.config.steps;
    let failed = |class: &str, e: &dyn std::fmt::Display| {
        Output::failed(steps, class, &e.to_string().replace('\n', " "))
    };
    if let Err(e) = write_job(jd, job, file, targets, options) {
        return failed(WRITING, &e);
    }
    let mut out = match run(jd) {
        Ok(r) => r.output(),
        Err(e) => return failed(RUNNING, &e),
    };
    if job.measure_latency && out.result.eval.is_some() {
        // Generation latency is the CPU engine's, on the trained weights.
        let mut m = Model::new(&job.architecture, Cpu::<f32>::new(1), job.init_seed);
        if let Err(e) = checkpoint::load(&mut m, &jd.join("trained.safetensors")) {
            return failed(READING, &e);
        }
        out.latency_ms_per_token = Some(genas_engine::latency_ms(&m));
    }
    let _ = std::fs::remove_dir_all(jd);
    out
}

/// Trains block `job` through the runner in `jd` (written, then run by `run`): the
/// normalised error on the teacher's cached activations (`job.activations`), or the KL at
/// the output, with only the sub-block's parameters trained; its trained tensors read back,
/// and its network timed sub-block by sub-block on the engine, as a brief job's latency is.
pub fn torch_block(
    jd: &Path,
    job: &BlockJob,
    file: &Path,
    targets: &TeacherTargets,
    options: &RunnerOptions,
    run: &RunOn<'_>,
) -> BlockOutput {
    let c = &job.config;
    let failed = |class: &str, e: &dyn std::fmt::Display| {
        BlockOutput::failed(c.steps, class, &e.to_string().replace('\n', " "))
    };
    let mut model = targets.student(&job.architecture, Cpu::<f32>::new(1), job.init_seed);
    let steps = c
        .steps
        .min(u32::try_from(targets.schedule.len()).unwrap_or(u32::MAX));
    let block = match (job.objective, &job.activations) {
        (BlockObjective::Kl, _) => None,
        (BlockObjective::Mse, Some(a)) => match std::path::absolute(a) {
            Ok(a) => {
                let (b, t, _) = targets.schedule.shape(0);
                Some(BlockSettings {
                    layer: job.layer,
                    attention: job.attention,
                    activations: a.display().to_string(),
                    shape: (b, t),
                })
            }
            Err(e) => return failed(WRITING, &e),
        },
        (BlockObjective::Mse, None) => {
            return failed(
                WRITING,
                &"the normalised error needs the teacher's cached activations",
            )
        }
    };
    let kind = if block.is_some() { "block" } else { "distill" };
    let written = write_torch_job(
        jd,
        &model,
        (kind, file),
        (c.temperature, c.alpha),
        TrainConfig::new(steps, c.batch_size, c.learning_rate, c.seed),
        None,
        (c.train_only.clone(), block),
        options.at(c.precision),
    );
    if let Err(e) = written {
        return failed(WRITING, &e);
    }
    let result = match run(jd) {
        Ok(r) => r.output().result,
        Err(e) => return failed(RUNNING, &e),
    };
    if result.eval.is_none() {
        let _ = std::fs::remove_dir_all(jd);
        return BlockOutput {
            result,
            weights: Vec::new(),
            latency: None,
            failed: None,
        };
    }
    if let Err(e) = checkpoint::load(&mut model, &jd.join("trained.safetensors")) {
        return failed(READING, &e);
    }
    let own = |name: &str| c.train_only.iter().any(|p| name.starts_with(p.as_str()));
    let out = match checkpoint::to_bytes_of(&model, &own, &[("genas.block", job.id.clone())]) {
        Ok(weights) => BlockOutput {
            result,
            weights,
            latency: Some(genas_engine::sub_block_latency_ms(&model)),
            failed: None,
        },
        Err(e) => failed(READING, &e),
    };
    let _ = std::fs::remove_dir_all(jd);
    out
}

impl Executor for Torch<'_> {
    fn run(
        &self,
        jobs: &[Job],
        _workers: usize,
        stop: &AtomicBool,
        done: &(dyn Fn(usize, Output) -> bool + Sync),
    ) -> Result<(), ExecError> {
        side_by_side(jobs, self.slots.len(), stop, done, &|| (), &|_, job| {
            self.one(job)
        });
        Ok(())
    }

    /// Each block a runner job on the slots side by side (its memory fitted as a brief
    /// distillation of its network, which bounds it).
    fn blocks(
        &self,
        jobs: &[BlockJob],
        _workers: usize,
        stop: &AtomicBool,
        done: &(dyn Fn(usize, BlockOutput) -> bool + Sync),
    ) -> Result<(), ExecError> {
        side_by_side(jobs, self.slots.len(), stop, done, &|| (), &|_, job| {
            let of = (&job.architecture, &job.config);
            self.through(
                "block-",
                job,
                of,
                BlockOutput::failed,
                |jd, options, run| {
                    torch_block(jd, job, &self.targets, self.local.targets, options, run)
                },
            )
        });
        Ok(())
    }

    /// On the device, one job per architecture on the slots side by side; one that fails
    /// there (too large for the device's memory, say) is scored by the engine, with a warning.
    fn proxies(
        &self,
        archs: &[Architecture],
        seed: u64,
        workers: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<ProxyScores> {
        let batch = match self.write_proxy_batch() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("warning: the zero-cost proxies run on the engine: {e:#}");
                return self.local.proxies(archs, seed, workers, progress);
            }
        };
        let out: Vec<std::sync::Mutex<Option<ProxyScores>>> =
            archs.iter().map(|_| Default::default()).collect();
        let index: Vec<usize> = (0..archs.len()).collect();
        let count = std::sync::atomic::AtomicUsize::new(0);
        side_by_side(
            &index,
            self.slots.len(),
            &AtomicBool::new(false),
            &|i, s: ProxyScores| {
                *out[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                let done = 1 + count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                progress(done, archs.len());
                true
            },
            &|| (),
            &|_, &i| {
                let a = &archs[i];
                self.proxies_of(a, &batch, init_seed(seed, &a.id()))
                    .unwrap_or_else(|e| {
                        eprintln!(
                            "warning: candidate {}'s zero-cost proxies run on the engine: {e:#}",
                            a.id()
                        );
                        let mut m = Model::new(a, Cpu::<f32>::new(1), init_seed(seed, &a.id()));
                        genas_scoring::zero_cost::proxy_suite(
                            a,
                            &mut m,
                            self.local.proxy_batch,
                            init_seed(seed, &a.id()),
                        )
                    })
            },
        );
        out.into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .unwrap_or_default()
            })
            .collect()
    }
}

impl Torch<'_> {
    /// The proxies' batch as a batches file in the runner's directory; its path.
    fn write_proxy_batch(&self) -> Result<PathBuf> {
        let bytes =
            genas_scoring::inputs::encode_batches(std::slice::from_ref(self.local.proxy_batch))
                .map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(&self.dir).with_context(|| self.dir.display().to_string())?;
        let path = self.dir.join("proxy-batch.safetensors");
        std::fs::write(&path, bytes).with_context(|| path.display().to_string())?;
        Ok(path)
    }

    /// `arch`'s zero-cost proxies at its initial weights (drawn from `seed`, as the engine
    /// draws them) computed by a runner job: the candidate's module, the batch, and the rows
    /// of its input embedding zen_score reads, perturbed as `zero_cost::zen_rows` draws them.
    fn proxies_of(&self, arch: &Architecture, batch: &Path, seed: u64) -> Result<ProxyScores> {
        use genas_scoring::zero_cost::{scores_of, zen_name, zen_rows, MEASURED_NAMES};
        let jd = self.dir.join(format!("proxies-{}", arch.id()));
        std::fs::create_dir_all(&jd).with_context(|| jd.display().to_string())?;
        let model = Model::new(arch, Cpu::<f32>::new(1), seed);
        let tensors = genas_interop::model_tensors(&model);
        genas_interop::export::write_module(&jd.join("model"), arch, &tensors)?;
        // Only the rows the batch reads: its positions, or under rope its tokens.
        let pb = self.local.proxy_batch;
        let name = zen_name(&model);
        let rows: Vec<usize> = if name == "wpe.weight" {
            (0..pb.t).collect()
        } else {
            let mut t: Vec<usize> = pb.inputs.iter().map(|&x| x as usize).collect();
            t.sort_unstable();
            t.dedup();
            t
        };
        let noisy = zen_rows(&model, seed, &rows).with_context(|| {
            format!(
                "the proxy batch reads past the input embedding of {}",
                arch.id()
            )
        })?;
        let c = arch.d_model as usize;
        let index: Vec<u8> = rows
            .iter()
            .flat_map(|&r| (r as i64).to_le_bytes())
            .collect();
        let values: Vec<u8> = noisy
            .iter()
            .flat_map(|&x| (x as f32).to_le_bytes())
            .collect();
        use safetensors::tensor::TensorView;
        let views = [
            (
                "rows",
                TensorView::new(safetensors::Dtype::I64, vec![rows.len()], &index)?,
            ),
            (
                "values",
                TensorView::new(safetensors::Dtype::F32, vec![rows.len(), c], &values)?,
            ),
        ];
        std::fs::write(
            jd.join("zen.safetensors"),
            safetensors::serialize(views, None)?,
        )?;
        let mut job = serde_json::to_value(&self.options)?;
        job["kind"] = serde_json::json!("proxies");
        job["batches"] = serde_json::json!(batch.display().to_string());
        job["zen"] = serde_json::json!(name);
        job["decay"] = serde_json::json!(model
            .params
            .iter()
            .filter(|p| p.decay)
            .map(|p| p.name.clone())
            .collect::<Vec<_>>());
        std::fs::write(jd.join("job.json"), serde_json::to_vec(&job)?)?;
        let result = self.slots.run(&jd).map_err(anyhow::Error::msg)?;
        let got = result
            .proxies
            .context("the runner's result has no proxies")?;
        let mut measured = [None; 8];
        for (m, &name) in measured.iter_mut().zip(MEASURED_NAMES) {
            *m = *got
                .get(name)
                .with_context(|| format!("the runner's result has no {name}"))?;
            if m.is_some_and(|x| !x.is_finite()) {
                bail!("the runner's {name} is not finite");
            }
        }
        let _ = std::fs::remove_dir_all(&jd);
        Ok(scores_of(arch, measured, result.seconds * 1e3))
    }
}

/// The teacher's passes without gradients through the PyTorch runner (`TeacherPass`): its
/// soft targets, validation cross-entropy and activation sums (`Importance`) computed on the
/// device by one long-lived slot, a call's batches at a time, read back into the engine's
/// form (`SoftTargets`), so `TeacherTargets::compute_via` writes them as it writes the
/// engine's.
pub struct RunnerTeacher {
    dir: PathBuf,
    slots: crate::slots::Slots,
    options: RunnerOptions,
    vocab: usize,
    arch: genas_space::Architecture,
}

/// Batches of one runner teacher pass.
const TEACHER_BATCHES_PER_CALL: usize = 16;

impl RunnerTeacher {
    /// The runner's pass of `teacher` (its module written into `dir`), on `device` with
    /// `python`, pinned to `gpu` when given.
    pub fn new(
        teacher: &Model<Cpu<f32>>,
        dir: &Path,
        (python, device): (&str, &str),
        gpu: Option<u32>,
        options: &RunnerOptions,
    ) -> std::result::Result<RunnerTeacher, ExecError> {
        let inner = || -> Result<RunnerTeacher> {
            std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
            let tensors = genas_interop::model_tensors(teacher);
            genas_interop::export::write_module(&dir.join("teacher"), &teacher.arch, &tensors)?;
            let gpus: Vec<u32> = gpu.into_iter().collect();
            let slots = crate::slots::Slots::new(
                python,
                device,
                &gpus,
                1,
                &dir.join("slot"),
                Box::new(|l: &str| eprintln!("{l}")),
            )
            .with_context(|| dir.display().to_string())?;
            Ok(RunnerTeacher {
                dir: dir.to_path_buf(),
                slots,
                options: options.clone(),
                vocab: teacher.arch.vocab_size as usize,
                arch: teacher.arch.clone(),
            })
        };
        inner().map_err(runner_error)
    }

    fn pass_inner(
        &mut self,
        batches: &[genas_scoring::data::Batch],
        temperature: f64,
        top_k: usize,
        ce: bool,
    ) -> Result<Vec<(genas_scoring::distill::SoftTargets, f64)>> {
        // What the pass can hold: each batch's rows times k (or the vocabulary), 8 bytes an
        // entry, and a header.
        let v = self.vocab;
        let dense = v <= genas_scoring::distill::DENSE_VOCAB_MAX;
        let k = top_k.clamp(1, v.max(1));
        let rows: usize = batches.iter().map(|b| b.b * b.t).sum();
        let most = rows * if dense { 4 * v } else { 8 * k } + (1 << 20) + batches.len() * 512;
        let settings = [
            ("temperature", serde_json::json!(temperature)),
            ("top_k", serde_json::json!(top_k)),
            ("ce", serde_json::json!(ce)),
        ];
        let bytes = self.run_pass("teacher", batches, &settings, most)?;
        let path = self.dir.join("out.safetensors");
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let sums: Vec<f64> = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("genas.teacher_pass"))
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .and_then(|t| serde_json::from_value(t["ce"].clone()).ok())
            .context("the teacher pass's output has no cross-entropy")?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let f32s = |name: &str, n: usize| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .with_context(|| format!("{}: no {name}", path.display()))?;
            if t.dtype() != safetensors::Dtype::F32 || t.data().len() != 4 * n {
                bail!("{}: {name} is not {n} float32 values", path.display());
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let mut out = Vec::with_capacity(batches.len());
        for (i, b) in batches.iter().enumerate() {
            let n = b.b * b.t;
            let soft = if dense {
                genas_scoring::distill::SoftTargets::Dense(f32s(&format!("step.{i}.probs"), n * v)?)
            } else {
                let name = format!("step.{i}.index");
                let t = st
                    .tensor(&name)
                    .with_context(|| format!("{}: no {name}", path.display()))?;
                if t.dtype() != safetensors::Dtype::I32 || t.data().len() != 4 * n * k {
                    bail!("{}: {name} is not {} int32 values", path.display(), n * k);
                }
                let index: Vec<u32> = t
                    .data()
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .map(|x| u32::try_from(x).ok().filter(|&x| (x as usize) < v))
                    .collect::<Option<_>>()
                    .with_context(|| {
                        format!(
                            "{}: {name} holds a token outside the vocabulary",
                            path.display()
                        )
                    })?;
                genas_scoring::distill::SoftTargets::TopK {
                    k,
                    index,
                    prob: f32s(&format!("step.{i}.probs"), n * k)?,
                }
            };
            let sum = sums
                .get(i)
                .copied()
                .context("a batch's cross-entropy is missing")?;
            out.push((soft, sum));
        }
        Ok(out)
    }
}

impl RunnerTeacher {
    /// Writes `job.json` of `kind` (with `extra` settings) and `batches` beside the teacher,
    /// runs it on the slot, and reads back `out.safetensors`, at most `most` bytes.
    fn run_pass(
        &mut self,
        kind: &str,
        batches: &[genas_scoring::data::Batch],
        extra: &[(&str, serde_json::Value)],
        most: usize,
    ) -> Result<Vec<u8>> {
        let bytes = genas_scoring::inputs::encode_batches(batches).map_err(anyhow::Error::msg)?;
        std::fs::write(self.dir.join("batches.safetensors"), bytes)?;
        let mut job = serde_json::to_value(&self.options)?;
        job["kind"] = serde_json::json!(kind);
        job["batches"] = serde_json::json!("batches.safetensors");
        for (k, v) in extra {
            job[*k] = v.clone();
        }
        std::fs::write(self.dir.join("job.json"), serde_json::to_vec(&job)?)?;
        let _ = std::fs::remove_file(self.dir.join("out.safetensors"));
        self.slots.run(&self.dir).map_err(anyhow::Error::msg)?;
        let path = self.dir.join("out.safetensors");
        genas_space::files::read_bounded(&path, most as u64)
            .with_context(|| path.display().to_string())
    }

    fn importance_inner(
        &mut self,
        batch: &genas_scoring::data::Batch,
        arch: &genas_space::Architecture,
    ) -> Result<genas_scoring::inherit::Importance> {
        use genas_scoring::inherit::Importance;
        let mut sums = Importance::new(arch);
        let values = sums.channel.len()
            + sums.cos.len()
            + [&sums.head_norm, &sums.value_abs, &sums.neuron]
                .iter()
                .flat_map(|v| v.iter().map(Vec::len))
                .sum::<usize>();
        let most = 8 * values + (1 << 16) + 256 * 3 * arch.depth();
        let bytes = self.run_pass("importance", std::slice::from_ref(batch), &[], most)?;
        let path = self.dir.join("out.safetensors");
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        sums.rows = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("genas.importance"))
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .and_then(|t| t["rows"].as_u64())
            .and_then(|r| usize::try_from(r).ok())
            .context("the importance pass's output has no row count")?;
        if sums.rows != batch.b * batch.t {
            bail!(
                "{}: {} rows summed for a batch of {}",
                path.display(),
                sums.rows,
                batch.b * batch.t
            );
        }
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let read = |name: &str, into: &mut Vec<f64>| -> Result<()> {
            let t = st
                .tensor(name)
                .with_context(|| format!("{}: no {name}", path.display()))?;
            if t.dtype() != safetensors::Dtype::F64 || t.data().len() != 8 * into.len() {
                bail!(
                    "{}: {name} is not {} float64 values",
                    path.display(),
                    into.len()
                );
            }
            for (x, c) in into.iter_mut().zip(t.data().chunks_exact(8)) {
                *x = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            }
            Ok(())
        };
        read("importance.channel", &mut sums.channel)?;
        read("importance.cos", &mut sums.cos)?;
        for l in 0..arch.depth() {
            read(&format!("importance.head_norm.{l}"), &mut sums.head_norm[l])?;
            read(&format!("importance.value_abs.{l}"), &mut sums.value_abs[l])?;
            read(&format!("importance.neuron.{l}"), &mut sums.neuron[l])?;
        }
        if !sums.fits(arch) {
            bail!(
                "{}: the teacher's activation sums are not finite",
                path.display()
            );
        }
        Ok(sums)
    }
}

impl genas_scoring::distill::TeacherPass for RunnerTeacher {
    fn pass(
        &mut self,
        batches: &[genas_scoring::data::Batch],
        temperature: f64,
        top_k: usize,
        ce: bool,
    ) -> std::result::Result<Vec<(genas_scoring::distill::SoftTargets, f64)>, String> {
        self.pass_inner(batches, temperature, top_k, ce)
            .map_err(|e| format!("the teacher's pass under PyTorch: {e:#}"))
    }

    fn importance(
        &mut self,
        batch: &genas_scoring::data::Batch,
    ) -> std::result::Result<genas_scoring::inherit::Importance, String> {
        let arch = self.arch.clone();
        self.importance_inner(batch, &arch)
            .map_err(|e| format!("the teacher's importance under PyTorch: {e:#}"))
    }

    fn batches_per_call(&self) -> usize {
        TEACHER_BATCHES_PER_CALL
    }
}

#[cfg(test)]
mod tests {
    use super::runner_threads;

    /// On torch's CPU a runner uses one thread whatever the slot count; on a GPU the slots
    /// share the cores and a lone process is left to torch. (OMP_NUM_THREADS set by whoever
    /// runs the tests decides instead, and then nothing is said.)
    #[test]
    fn runner_threads_share_the_cores() {
        if std::env::var_os("OMP_NUM_THREADS").is_some() {
            assert_eq!(runner_threads("cpu", 4), None);
            return;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(runner_threads("cpu", 1), Some(1));
        assert_eq!(runner_threads("cpu", 8), Some(1));
        assert_eq!(runner_threads("cuda", 1), None);
        assert_eq!(runner_threads("cuda", 2), Some((cores / 2).max(1)));
        assert_eq!(runner_threads("cuda", 4 * cores), Some(1));
    }
}
