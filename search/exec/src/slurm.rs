//! The Slurm executor: each batch of evaluation jobs becomes one job array on a Slurm
//! cluster, and each array task runs `genas worker DIR/INDEX` on a node.
//!
//! Everything goes through a directory every node sees (`[executor] shared_dir`):
//! - `inputs/NAME.safetensors`: what tasks read, named by their content
//!   (`genas_scoring::inputs`): the teacher's soft targets, weights, token streams;
//! - `results/KEY.*`: each task's result, named by the hash of the task itself (`KEY`): the
//!   worker's output `KEY.out.json` (written to a temporary file and renamed, so it is whole or
//!   absent), a final distillation's weights and checkpoint, and `KEY.where.json`, where the
//!   task last ran (its array, index and log);
//! - `jobs/BATCH/`: one submission, named by the hash of its tasks' keys: `INDEX.json` (a
//!   [`TaskFile`]), `INDEX.log` (every try appended), `keys.json` and `task.sh`, the script the
//!   array runs. Its job name is `genas-BATCH`.
//!
//! The coordinator polls `squeue` (every `genas-` array pending or running, mapped to task
//! keys through `keys.json`) and the result files; it never needs `sacct`, which clusters
//! without slurmdbd lack. A task is done when its result is there, waited for while it is
//! queued anywhere, and otherwise submitted: a task that ran before and is neither queued nor
//! done has failed, timed out, been cancelled or vanished, and is submitted again up to
//! `retries` times, then handed back as failed with its log's last lines; the search goes on.
//!
//! Kill the coordinator at any moment and resume: whatever batches the resumed run asks for,
//! each task keeps its key, so tasks still queued are adopted, results on disk are read rather
//! than recomputed, and only what is neither is submitted. No task runs twice.
//!
//! It must not know about the archive, the strategies or the fidelity schedule.

use crate::local::{last_line, last_lines, run_block, run_job, Local};
use genas_engine::{checkpoint, Cpu, Model};
use genas_scoring::distill::{dir_store, full_distill, FullConfig, FullResult, TeacherTargets};
use genas_scoring::zero_cost::ProxyScores;
use genas_search::job::{BlockJob, BlockOutput, ExecError, Executor, Job, Output};
use genas_space::{Architecture, ExecutorConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A task as a worker reads it from `INDEX.json`; inputs are named by their content in
/// `SHARED/inputs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// A brief distillation on the run's cached teacher targets; writes an [`Output`]. With
    /// `runner`, trained through the PyTorch runner on the task's GPU.
    Brief {
        job: Job,
        targets: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runner: Option<NodeRunner>,
        /// The job's initial weights, by file name in the inputs directory (its own
        /// `initial`, a path on the coordinator, is left out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        initial: Option<String>,
    },
    /// A final distillation of a front member; writes a [`FinalOutput`] and the weights.
    Final(FinalJob),
    /// A blockwise local distillation on the run's cached teacher targets (and, for the
    /// normalised error, the teacher's cached activations); writes a [`BlockFile`] and the
    /// trained sub-block's tensors.
    Block {
        job: BlockJob,
        targets: String,
        /// The layer's cached teacher activations, by file name in the inputs directory.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        activations: Option<String>,
        /// Trained through the PyTorch runner on the task's GPU.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runner: Option<NodeRunner>,
    },
}

/// What a block task wrote, and where its trained tensors are.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockFile {
    pub result: genas_scoring::distill::DistillResult,
    /// `results/KEY.block.safetensors`; none when `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<genas_engine::SubBlockLatency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// What `jobs/BATCH/INDEX.json` holds: a task and its key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskFile {
    pub key: String,
    pub task: Task,
}

/// A task's key: 16 hex digits of the SHA-256 of its JSON.
pub fn task_key(task: &Task) -> Result<String, ExecError> {
    task_key_inner(task).map_err(ExecError::Cluster)
}

fn task_key_inner(task: &Task) -> Result<String, String> {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(task).map_err(|e| e.to_string())?);
    Ok(genas_space::hex16(h))
}

/// Where a task last ran: recorded before each submission, completed with the job id after.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Where {
    dir: PathBuf,
    index: usize,
    job: Option<String>,
}

/// A final (full) distillation: the candidate, the settings, the teacher's weights and the
/// data set's tokens. It checkpoints into `results/KEY.ckpt/`, so a task that is preempted or
/// runs out of time resumes where it stopped when it is submitted again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinalJob {
    pub run: String,
    pub candidate: String,
    pub architecture: Architecture,
    pub init_seed: u64,
    pub config: FullConfig,
    pub teacher: String,
    pub data: String,
    /// Engine threads of the task.
    pub threads: usize,
    /// Trained through the PyTorch runner on the task's GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<NodeRunner>,
    /// The initial weights a blockwise run assembled for the candidate (a checkpoint, by
    /// file name in the inputs directory); none: drawn, or pruned from the teacher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<String>,
}

/// The runner of `exp`'s tasks: with `[search] device = "cuda"`, PyTorch on the GPU each task
/// is given (torch's CPU under GENAS_RUNNER_DEVICE=cpu, which tries the path on a cluster
/// without GPUs); none on the CPU engine.
pub fn node_runner(exp: &genas_space::Experiment) -> Option<NodeRunner> {
    (exp.search.device == genas_space::Device::Cuda).then(|| {
        let cpu_only = std::env::var("GENAS_RUNNER_DEVICE").is_ok_and(|d| d == "cpu");
        NodeRunner {
            python: crate::torch::python(),
            device: if cpu_only { "cpu" } else { "cuda" }.into(),
            options: crate::torch::RunnerOptions::of(exp),
        }
    })
}

/// How a task trains through the PyTorch runner on its node: the interpreter, the device
/// (`cuda`: the GPU Slurm gave the task, which it sees as device 0 through
/// CUDA_VISIBLE_DEVICES) and the runner's options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRunner {
    pub python: String,
    pub device: String,
    pub options: crate::torch::RunnerOptions,
}

/// What a final distillation task wrote, and where its weights are.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinalOutput {
    pub result: FullResult,
    /// `results/KEY.weights.safetensors`.
    pub weights: PathBuf,
    /// The PyTorch runner's device ("cpu" or the GPU's name); none on the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// Slurm array indices run from 0 below this (Slurm's default `MaxArraySize` is 1001).
const MAX_ARRAY: usize = 1000;

/// Lines of a failed task's log kept in its failure message.
const LOG_LINES: usize = 5;

/// A Slurm cluster reached through a shared directory: runs tasks as job arrays.
pub struct Cluster<'a> {
    pub config: ExecutorConfig,
    /// The shared directory, absolute.
    pub shared: PathBuf,
    /// The program the tasks run.
    pub worker: PathBuf,
    /// Told what the cluster is doing (submissions, retries), one line each.
    pub say: &'a (dyn Fn(&str) + Sync),
}

impl<'a> Cluster<'a> {
    /// The cluster an experiment's `[executor]` describes: the shared directory resolved
    /// (default `ARCHIVE/slurm`) and the worker program found.
    pub fn of(
        exp: &genas_space::Experiment,
        archive_dir: &Path,
        say: &'a (dyn Fn(&str) + Sync),
    ) -> Result<Cluster<'a>, ExecError> {
        Self::of_inner(exp, archive_dir, say).map_err(ExecError::Cluster)
    }

    fn of_inner(
        exp: &genas_space::Experiment,
        archive_dir: &Path,
        say: &'a (dyn Fn(&str) + Sync),
    ) -> Result<Cluster<'a>, String> {
        let x = &exp.executor;
        let shared = match &x.shared_dir {
            Some(d) => exp.base_dir.join(d),
            None => archive_dir.join("slurm"),
        };
        let shared = std::path::absolute(&shared)
            .map_err(|e| format!("executor.shared_dir {}: {e}", shared.display()))?;
        let worker = match &x.worker {
            Some(w) => std::path::absolute(exp.base_dir.join(w))
                .map_err(|e| format!("executor.worker {w}: {e}"))?,
            None => std::env::current_exe()
                .map_err(|e| format!("the path of this genas program: {e}"))?,
        };
        Ok(Cluster {
            config: x.clone(),
            shared,
            worker,
            say,
        })
    }

    /// The directory of the content-addressed inputs.
    pub fn inputs(&self) -> PathBuf {
        inputs_dir(&self.shared)
    }

    fn results(&self) -> PathBuf {
        self.shared.join("results")
    }
}

/// The Slurm executor over one run's brief distillations.
pub struct Slurm<'a> {
    pub cluster: Cluster<'a>,
    /// Tasks train through the PyTorch runner on their GPU.
    pub runner: Option<NodeRunner>,
    /// The name of the teacher targets in the inputs directory.
    pub targets: String,
    /// The zero-cost proxies are computed here: they take milliseconds.
    pub local: Local<'a>,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let name = path
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: {e}", path.display())
        })
}

/// The inputs directory of a shared directory.
pub fn inputs_dir(shared: &Path) -> PathBuf {
    shared.join("inputs")
}

/// A word quoted for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn run_command(cmd: &mut Command) -> Result<String, String> {
    let name = format!("{:?}", cmd.get_program());
    let out = cmd
        .output()
        .map_err(|e| format!("{name} could not be run ({e}); is Slurm installed here?"))?;
    if !out.status.success() {
        return Err(format!(
            "{name} failed ({}): {}",
            out.status,
            last_line(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `JobState` and `ExitCode` of a task as `scontrol` still knows it (for `MinJobAge`
/// seconds after it ended); `None` once it has forgotten it.
fn task_state(job_id: &str, index: usize) -> Option<String> {
    let out = Command::new("scontrol")
        .args(["--oneliner", "show", "job", &format!("{job_id}_{index}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(k).map(str::to_string))
    };
    let state = field("JobState=")?;
    Some(match field("ExitCode=") {
        Some(code) => format!("{state}, exit {code}"),
        None => state,
    })
}

/// The last `n` non-empty lines of a log, one line joined by " | ".
fn log_tail(path: &Path, n: usize) -> String {
    // A log can be long: only its end is read.
    const TAIL: u64 = 64 * 1024;
    let read = || -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(TAIL)))?;
        let mut bytes = Vec::new();
        f.take(TAIL).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    match read() {
        Ok(bytes) if bytes.iter().any(|b| !b.is_ascii_whitespace()) => last_lines(&bytes, n),
        _ => "no log".into(),
    }
}

/// Runs one task: what `genas worker DIR/INDEX` does on a node. Reads `DIR/INDEX.json` and
/// the inputs it names in `DIR/../../inputs`, trains, and writes `results/KEY.out.json` whole
/// or not at all (a final distillation writes its weights first).
pub fn work(task: &Path) -> Result<PathBuf, ExecError> {
    work_inner(task).map_err(ExecError::Cluster)
}

fn work_inner(task: &Path) -> Result<PathBuf, String> {
    let dir = task
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let index = task
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if index.parse::<usize>().is_err() {
        return Err(format!(
            "{}: a task is JOB_DIR/INDEX, INDEX a number",
            task.display()
        ));
    }
    let job_path = dir.join(format!("{index}.json"));
    // A task file is a job's settings: kilobytes.
    let text = genas_space::files::read_text_bounded(&job_path, 64 << 20)
        .map_err(|e| format!("{}: {e}", job_path.display()))?;
    let file: TaskFile = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a genas task ({e})", job_path.display()))?;
    if task_key(&file.task).map_err(|e| e.to_string())? != file.key {
        return Err(format!(
            "{}: its task does not match its key {}",
            job_path.display(),
            file.key
        ));
    }
    let shared = dir
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{}: not inside SHARED/jobs/BATCH", dir.display()))?;
    let inputs = inputs_dir(shared);
    let results = shared.join("results");
    let key = &file.key;
    let bytes = match file.task {
        Task::Brief {
            mut job,
            targets,
            runner,
            initial,
        } => {
            job.architecture
                .validate()
                .map_err(|e| format!("{}: {e}", job_path.display()))?;
            if let Some(name) = initial {
                job.initial = Some(inputs.join(input_name(&name, "initial weights", &job_path)?));
            }
            // Only the shards of the steps this job trains are read (and checked).
            let loaded =
                genas_scoring::inputs::load_steps(&inputs, &targets, job.config.steps as usize)?;
            let out = match runner {
                None => run_job(&job, &loaded, &Cpu::<f32>::new(1)),
                Some(r) => {
                    let (file, jd) = runner_dir(&inputs, &targets, &results, key)?;
                    crate::torch::torch_job(&jd, &job, &file, &loaded, &r.options, &|jd| {
                        crate::torch::run(jd, &r.python, &r.device)
                    })
                }
            };
            serde_json::to_vec(&out)
        }
        Task::Block {
            mut job,
            targets,
            activations,
            runner,
        } => {
            job.architecture
                .validate()
                .map_err(|e| format!("{}: {e}", job_path.display()))?;
            if let Some(name) = activations {
                job.activations = Some(inputs.join(input_name(&name, "activations", &job_path)?));
            }
            let loaded =
                genas_scoring::inputs::load_steps(&inputs, &targets, job.config.steps as usize)?;
            let out = match runner {
                None => run_block(&job, &loaded, &Cpu::<f32>::new(1)),
                Some(r) => {
                    let (file, jd) = runner_dir(&inputs, &targets, &results, key)?;
                    crate::torch::torch_block(&jd, &job, &file, &loaded, &r.options, &|jd| {
                        crate::torch::run(jd, &r.python, &r.device)
                    })
                }
            };
            let weights = match out.failed {
                Some(_) => None,
                None => {
                    let w = std::path::absolute(results.join(format!("{key}.block.safetensors")))
                        .map_err(|e| e.to_string())?;
                    write_atomic(&w, &out.weights)?;
                    Some(w)
                }
            };
            serde_json::to_vec(&BlockFile {
                result: out.result,
                weights,
                latency: out.latency,
                failed: out.failed,
            })
        }
        Task::Final(f) => {
            f.architecture
                .validate()
                .map_err(|e| format!("{}: {e}", job_path.display()))?;
            let weights = std::path::absolute(results.join(format!("{key}.weights.safetensors")))
                .map_err(|e| e.to_string())?;
            let (result, device) =
                final_distill(&f, &inputs, &results.join(format!("{key}.ckpt")), |model| {
                    let bytes = checkpoint::to_bytes(
                        model,
                        &[
                            ("genas.run", f.run.clone()),
                            ("genas.candidate", f.candidate.clone()),
                        ],
                    )?;
                    write_atomic(&weights, &bytes)
                })?;
            serde_json::to_vec(&FinalOutput {
                result,
                weights,
                device,
            })
        }
    }
    .map_err(|e| e.to_string())?;
    let out_path = results.join(format!("{key}.out.json"));
    write_atomic(&out_path, &bytes)?;
    Ok(out_path)
}

/// Where a task with key `key` trains through the runner: the targets file `targets` in
/// `inputs` (absolute, as the job reads it) and an empty job directory in `results`.
fn runner_dir(
    inputs: &Path,
    targets: &str,
    results: &Path,
    key: &str,
) -> Result<(PathBuf, PathBuf), String> {
    let file = std::path::absolute(genas_scoring::inputs::path_in(inputs, targets))
        .map_err(|e| e.to_string())?;
    let jd = results.join(format!("{key}.torch"));
    let _ = std::fs::remove_dir_all(&jd);
    std::fs::create_dir_all(&jd).map_err(|e| format!("{}: {e}", jd.display()))?;
    Ok((file, jd))
}

/// `name`, a task's `what` in the inputs directory, when it is a plain file name there.
fn input_name<'a>(name: &'a str, what: &str, job_path: &Path) -> Result<&'a str, String> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(format!(
            "{}: {what} {name:?} is not a file name",
            job_path.display()
        ));
    }
    Ok(name)
}

/// A final distillation from its inputs, checkpointing into `ckpt`; `save` gets the trained
/// model before the result is returned with the runner's device (none on the engine).
fn final_distill(
    f: &FinalJob,
    inputs: &Path,
    ckpt: &Path,
    save: impl FnOnce(&Model<Cpu<f32>>) -> Result<(), String>,
) -> Result<(FullResult, Option<String>), String> {
    let be = Cpu::<f32>::new(f.threads);
    let mut teacher = genas_scoring::inputs::load_teacher(inputs, &f.teacher, be.clone())?;
    let data = genas_scoring::inputs::load_data(inputs, &f.data)?;
    let targets = TeacherTargets::compute(&mut teacher, &data, &f.config.distill, 0);
    // The assembled weights replace every weight: the teacher is pruned only without them.
    let mut model = match &f.initial {
        None => targets.student(&f.architecture, be, f.init_seed),
        Some(name) => {
            let bytes =
                genas_scoring::inputs::load_bytes(inputs, name).map_err(|e| e.to_string())?;
            checkpoint::model_from_bytes(
                &f.architecture,
                be,
                &bytes,
                &format!("assembled weights of {}", f.candidate),
            )
            .map_err(|e| e.to_string())?
        }
    };
    if let Some(r) = &f.runner {
        // The runner's job directory is the task's checkpoint directory: a task run again
        // (preempted, out of time) resumes from the runner's checkpoint there.
        let jd = ckpt.with_extension("torch");
        let distilled = crate::torch::write_final(
            &model, &teacher, &data, &targets, &f.config, &jd, &r.options,
        )
        .and_then(|_| crate::torch::run(&jd, &r.python, &r.device))
        .and_then(|out| crate::torch::read_final(&mut model, &jd, &out))
        .map_err(|e| format!("distilling {}: {e}", f.candidate))?;
        save(&model)?;
        return Ok((distilled.0, Some(distilled.2)));
    }
    std::fs::create_dir_all(ckpt).map_err(|e| format!("{}: {e}", ckpt.display()))?;
    let mut store = dir_store(ckpt);
    let r = full_distill(
        &mut model,
        &mut teacher,
        &data,
        &targets,
        &f.config,
        &mut store,
        |_, _| ControlFlow::Continue(()),
    )
    .map_err(|e| format!("distilling {}: {e}", f.candidate))?;
    save(&model)?;
    Ok((r, None))
}

impl Cluster<'_> {
    /// Writes a batch of `(key, task)` as `jobs/BATCH/` and returns its directory and job name;
    /// the same tasks make the same batch.
    fn write_batch(&self, tasks: &[(&str, &Task)]) -> Result<(PathBuf, String), String> {
        let mut h = Sha256::new();
        for (k, _) in tasks {
            h.update(k.as_bytes());
        }
        let batch = genas_space::hex16(h);
        let dir = self.shared.join("jobs").join(&batch);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (i, (key, task)) in tasks.iter().enumerate() {
            let path = dir.join(format!("{i}.json"));
            if !path.is_file() {
                let file = TaskFile {
                    key: key.to_string(),
                    task: (*task).clone(),
                };
                let bytes = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
                write_atomic(&path, &bytes)?;
            }
        }
        let keys: Vec<&str> = tasks.iter().map(|(k, _)| *k).collect();
        let bytes = serde_json::to_vec(&keys).map_err(|e| e.to_string())?;
        write_atomic(&dir.join("keys.json"), &bytes)?;
        let script = format!(
            "#!/bin/sh\n# One genas evaluation task per array task (written by genas).\nexec {} worker {}/\"$SLURM_ARRAY_TASK_ID\"\n",
            sh_quote(&self.worker.to_string_lossy()),
            sh_quote(&dir.to_string_lossy()),
        );
        write_atomic(&dir.join("task.sh"), script.as_bytes())?;
        Ok((dir, format!("genas-{batch}")))
    }

    /// `sbatch` with the settings of `[executor]` every task of it is submitted with.
    fn sbatch(&self) -> Command {
        let c = &self.config;
        let mut cmd = Command::new("sbatch");
        cmd.arg("--ntasks=1")
            .arg(format!("--cpus-per-task={}", c.cpus_per_task));
        if c.gpus_per_task > 0 {
            cmd.arg(format!("--gres=gpu:{}", c.gpus_per_task));
        }
        for (flag, value) in [
            ("--partition", &c.partition),
            ("--account", &c.account),
            ("--time", &c.time),
            ("--mem", &c.mem),
        ] {
            if let Some(v) = value {
                cmd.arg(format!("{flag}={v}"));
            }
        }
        cmd.args(&c.sbatch_args);
        cmd
    }

    /// Everything the cluster needs, checked before a run is created or anything trained:
    /// the worker program is an executable file, the shared directory can be written (the
    /// nearest existing folder of it, so nothing is created here), and the Slurm controller
    /// answers and would take a task with the `[executor]` settings (`sbatch --test-only`:
    /// the partition, account, time, memory and extra flags are checked by Slurm itself,
    /// nothing is queued).
    pub fn check(&self) -> Result<(), ExecError> {
        self.check_inner().map_err(ExecError::Cluster)
    }

    fn check_inner(&self) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let w = &self.worker;
        match std::fs::metadata(w) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
            Ok(_) => {
                return Err(format!(
                    "executor.worker {}: not an executable file",
                    w.display()
                ))
            }
            Err(e) => return Err(format!("executor.worker {}: {e}", w.display())),
        }
        let shared = &self.shared;
        let existing = shared
            .ancestors()
            .find(|a| a.exists())
            .unwrap_or(Path::new("/"));
        tempfile::tempfile_in(existing).map_err(|e| {
            format!(
                "executor.shared_dir {}: cannot be written ({}: {e})",
                shared.display(),
                existing.display()
            )
        })?;
        let mut cmd = self.sbatch();
        cmd.arg("--test-only")
            .arg("--job-name=genas-check")
            .arg("--output=/dev/null")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            format!("sbatch could not be run ({e}); is Slurm installed here, and on the PATH?")
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            // The script Slurm checks: it is never queued.
            let _ = stdin.write_all(b"#!/bin/sh\ntrue\n");
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("sbatch --test-only: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "Slurm would not take a task with these [executor] settings (sbatch --test-only {}): {}",
                out.status,
                last_lines(&out.stderr, 2)
            ));
        }
        run_command(Command::new("squeue").args(["--noheader", "--me", "--format=%i"]))?;
        Ok(())
    }

    /// Submits the whole batch in `dir` as one array; returns its job id.
    fn submit(&self, dir: &Path, name: &str, n: usize) -> Result<String, String> {
        let c = &self.config;
        let mut cmd = self.sbatch();
        cmd.arg("--parsable")
            .arg(format!("--job-name={name}"))
            .arg(format!("--array=0-{}%{}", n - 1, c.max_in_flight))
            .arg(format!("--output={}/%a.log", dir.display()))
            .arg("--open-mode=append")
            .arg(format!("--chdir={}", dir.display()))
            .arg(dir.join("task.sh"));
        let out = run_command(&mut cmd)?;
        // --parsable prints "jobid" or "jobid;cluster".
        let id = out.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|ch| ch.is_ascii_digit()) {
            return Err(format!("sbatch printed no job id ({:?})", out.trim()));
        }
        Ok(id)
    }

    /// The keys of every task queued or running in a `genas-` array of this shared directory.
    fn in_flight(
        &self,
        batches: &mut BTreeMap<String, Vec<String>>,
    ) -> Result<BTreeSet<String>, String> {
        // This user's tasks only: a big cluster's whole queue is thousands of lines.
        let out = run_command(Command::new("squeue").args([
            "--me",
            "--noheader",
            "--array",
            "--format",
            "%j|%K",
        ]))?;
        let mut keys = BTreeSet::new();
        for line in out.lines() {
            let Some((name, index)) = line.trim().split_once('|') else {
                continue;
            };
            let (Some(batch), Ok(index)) = (name.strip_prefix("genas-"), index.parse::<usize>())
            else {
                continue;
            };
            if !batches.contains_key(batch) {
                let listed = std::fs::read(self.shared.join("jobs").join(batch).join("keys.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok());
                // Another shared directory's array: not ours.
                let Some(listed) = listed else { continue };
                batches.insert(batch.to_string(), listed);
            }
            if let Some(k) = batches[batch].get(index) {
                keys.insert(k.clone());
            }
        }
        Ok(keys)
    }

    fn read_json<O: DeserializeOwned>(path: &Path) -> Option<O> {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Runs `tasks` on the cluster, calling `done(index, output)` as each finishes, or
    /// `done(index, Err(why))` for one that failed every try. `names` name the tasks in
    /// messages. False once stopped or `done` said so; tasks still queued then keep running,
    /// and a later call with the same tasks adopts them.
    pub fn run_tasks<O: DeserializeOwned>(
        &self,
        tasks: &[Task],
        names: &[String],
        stop: &AtomicBool,
        done: &mut dyn FnMut(usize, Result<O, String>) -> bool,
    ) -> Result<bool, ExecError> {
        self.run_tasks_inner(tasks, names, stop, done)
            .map_err(ExecError::Cluster)
    }

    fn run_tasks_inner<O: DeserializeOwned>(
        &self,
        tasks: &[Task],
        names: &[String],
        stop: &AtomicBool,
        done: &mut dyn FnMut(usize, Result<O, String>) -> bool,
    ) -> Result<bool, String> {
        let keys = tasks
            .iter()
            .map(task_key)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let results = self.results();
        std::fs::create_dir_all(&results).map_err(|e| format!("{}: {e}", results.display()))?;
        let file = |key: &str, what: &str| results.join(format!("{key}.{what}"));
        // Failed tries of each task in this call.
        let mut failures: BTreeMap<usize, u32> = BTreeMap::new();
        let mut open: BTreeSet<usize> = (0..tasks.len()).collect();
        let mut batches = BTreeMap::new();
        let poll = Duration::from_secs_f64(self.config.poll_interval);
        let mut adopted = false;
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
            // The queue first, then the files: a task that leaves the queue has written its
            // result before it exited.
            let flying = self.in_flight(&mut batches)?;
            if !adopted {
                adopted = true;
                let n = open.iter().filter(|&&i| flying.contains(&keys[i])).count();
                if n > 0 {
                    (self.say)(&format!(
                        "slurm: adopting {n} task(s) still queued or running"
                    ));
                }
            }
            let finished: Vec<(usize, O)> = open
                .iter()
                .filter_map(|&i| Self::read_json::<O>(&file(&keys[i], "out.json")).map(|o| (i, o)))
                .collect();
            for (i, out) in finished {
                open.remove(&i);
                if !done(i, Ok(out)) {
                    return Ok(false);
                }
            }
            if open.is_empty() {
                return Ok(true);
            }
            let mut again: Vec<usize> = Vec::new();
            let mut submitting = BTreeSet::new();
            let idle: Vec<usize> = open
                .iter()
                .copied()
                .filter(|&i| !flying.contains(&keys[i]))
                .collect();
            for i in idle {
                if !submitting.insert(keys[i].clone()) {
                    continue; // the same task twice in one call: one run serves both
                }
                let Some(was) = Self::read_json::<Where>(&file(&keys[i], "where.json")) else {
                    again.push(i);
                    continue;
                };
                // It ran (or was about to) and is neither queued nor done: a failed try.
                let state = was
                    .job
                    .as_deref()
                    .and_then(|id| task_state(id, was.index))
                    .unwrap_or_else(|| "left the queue without a result".into());
                let log_path = was.dir.join(format!("{}.log", was.index));
                let log = log_tail(&log_path, LOG_LINES);
                let tries = failures.entry(i).or_insert(0);
                *tries += 1;
                if *tries > self.config.retries {
                    let message = format!(
                        "{tries} time(s) (last: {state}; log {}: {log})",
                        log_path.display()
                    );
                    (self.say)(&format!("slurm: {} failed {message}", names[i]));
                    submitting.remove(&keys[i]);
                    open.remove(&i);
                    if !done(i, Err(message)) {
                        return Ok(false);
                    }
                    continue;
                }
                (self.say)(&format!(
                    "slurm: {} failed ({state}; {log}); submitting it again",
                    names[i]
                ));
                again.push(i);
            }
            if open.is_empty() {
                return Ok(true);
            }
            if again.is_empty() {
                std::thread::sleep(poll);
                continue;
            }
            for chunk in again.chunks(MAX_ARRAY) {
                let batch: Vec<(&str, &Task)> = chunk
                    .iter()
                    .map(|&i| (keys[i].as_str(), &tasks[i]))
                    .collect();
                let (dir, name) = self.write_batch(&batch)?;
                // Recorded before submitting: a coordinator killed in between counts the task
                // as a failed try and submits it again, nothing runs twice.
                let record = |job: Option<String>| -> Result<(), String> {
                    for (index, (key, _)) in batch.iter().enumerate() {
                        let w = Where {
                            dir: dir.clone(),
                            index,
                            job: job.clone(),
                        };
                        let bytes = serde_json::to_vec(&w).map_err(|e| e.to_string())?;
                        write_atomic(&file(key, "where.json"), &bytes)?;
                    }
                    Ok(())
                };
                record(None)?;
                let id = self.submit(&dir, &name, batch.len())?;
                record(Some(id.clone()))?;
                (self.say)(&format!(
                    "slurm: submitted {} task(s) as {name}, job {id}",
                    batch.len()
                ));
            }
        }
    }
}

impl Executor for Slurm<'_> {
    fn run(
        &self,
        jobs: &[Job],
        _workers: usize,
        stop: &AtomicBool,
        done: &(dyn Fn(usize, Output) -> bool + Sync),
    ) -> Result<(), ExecError> {
        let inputs = self.cluster.inputs();
        let mut tasks: Vec<Task> = Vec::new();
        for job in jobs {
            // Initial weights go to the inputs under their content's name, as activations do.
            let initial = share(job.initial.as_deref(), &inputs)?;
            tasks.push(Task::Brief {
                job: Job {
                    initial: None,
                    ..job.clone()
                },
                targets: self.targets.clone(),
                runner: self.runner.clone(),
                initial,
            });
        }
        let names: Vec<String> = jobs.iter().map(|j| format!("job {}", j.id)).collect();
        let all_done = self
            .cluster
            .run_tasks::<Output>(&tasks, &names, stop, &mut |i, out| {
                let out = out.unwrap_or_else(|why| {
                    Output::failed(
                        jobs[i].config.steps,
                        "a task failed on Slurm every try",
                        &why,
                    )
                });
                done(i, out)
            })?;
        if all_done {
            unshare(&tasks, &inputs);
        }
        Ok(())
    }

    fn proxies(
        &self,
        archs: &[Architecture],
        seed: u64,
        workers: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<ProxyScores> {
        self.local.proxies(archs, seed, workers, progress)
    }

    /// Each block a task, on the CPU engine of its node or through the runner on its GPU,
    /// reading its layer's cached activations from the inputs; its trained tensors come back
    /// through the shared directory.
    fn blocks(
        &self,
        jobs: &[BlockJob],
        _workers: usize,
        stop: &AtomicBool,
        done: &(dyn Fn(usize, BlockOutput) -> bool + Sync),
    ) -> Result<(), ExecError> {
        let inputs = self.cluster.inputs();
        let mut tasks: Vec<Task> = Vec::new();
        for job in jobs {
            // The cached activations go to the inputs once (linked where the file system
            // allows), and the task names them there.
            let activations = share(job.activations.as_deref(), &inputs)?;
            tasks.push(Task::Block {
                job: BlockJob {
                    activations: None,
                    ..job.clone()
                },
                targets: self.targets.clone(),
                activations,
                runner: self.runner.clone(),
            });
        }
        let names: Vec<String> = jobs.iter().map(|j| format!("block {}", j.id)).collect();
        let all_done =
            self.cluster
                .run_tasks::<BlockFile>(&tasks, &names, stop, &mut |i, out| {
                    let steps = jobs[i].config.steps;
                    let out = match out {
                        Err(why) => {
                            BlockOutput::failed(steps, "a task failed on Slurm every try", &why)
                        }
                        Ok(f) => match (&f.failed, &f.weights) {
                            (None, Some(w)) => match read_block(w, &jobs[i]) {
                                Ok(weights) => BlockOutput {
                                    result: f.result,
                                    weights,
                                    latency: f.latency,
                                    failed: None,
                                },
                                Err(why) => {
                                    BlockOutput::failed(steps, "its weights are unreadable", &why)
                                }
                            },
                            _ => BlockOutput {
                                result: f.result,
                                weights: Vec::new(),
                                latency: None,
                                failed: Some(f.failed.unwrap_or_else(|| "no weights".into())),
                            },
                        },
                    };
                    done(i, out)
                })?;
        if all_done {
            // No task reads them any more (a task not yet done keeps them for its retry).
            unshare(&tasks, &inputs);
        }
        Ok(())
    }
}

/// `path`, where there is one, shared into `inputs` ([`share_file`]): its name there.
fn share(path: Option<&Path>, inputs: &Path) -> Result<Option<String>, ExecError> {
    path.map(|p| share_file(p, inputs))
        .transpose()
        .map_err(ExecError::Inputs)
}

/// Removes from `inputs` what [`share`] put there for `tasks` (a member's initial weights, a
/// layer's activations), once every one of them is done.
fn unshare(tasks: &[Task], inputs: &Path) {
    for t in tasks {
        let name = match t {
            Task::Brief { initial, .. } => initial,
            Task::Block { activations, .. } => activations,
            Task::Final(_) => &None,
        };
        if let Some(name) = name {
            let _ = std::fs::remove_file(inputs.join(name));
        }
    }
}

/// `path` in `inputs` under its own name (a hard link, else a copy renamed into place; kept
/// where it is already there at the same size): its name there.
fn share_file(path: &Path, inputs: &Path) -> Result<String, String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{}: not a file", path.display()))?;
    let to = inputs.join(&name);
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    if size(&to).is_some() && size(&to) == size(path) {
        return Ok(name);
    }
    std::fs::create_dir_all(inputs).map_err(|e| format!("{}: {e}", inputs.display()))?;
    let _ = std::fs::remove_file(&to);
    if std::fs::hard_link(path, &to).is_err() {
        let tmp = inputs.join(format!(".{name}.{}.tmp", std::process::id()));
        std::fs::copy(path, &tmp)
            .and_then(|_| std::fs::rename(&tmp, &to))
            .map_err(|e| format!("{}: {e}", to.display()))?;
    }
    Ok(name)
}

/// A block task's trained tensors, read with a bound: four bytes per parameter of the
/// network it trained in, and a megabyte for the header.
fn read_block(path: &Path, job: &BlockJob) -> Result<Vec<u8>, String> {
    let limit = 4 * genas_space::Cost::of(&job.architecture).params + (1 << 20);
    genas_space::files::read_bounded(path, limit).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(sh_quote("/a b/c"), "'/a b/c'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn a_log_tail_is_one_line_of_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, "a\n\nb\nc\nd\ne\nf\n").unwrap();
        assert_eq!(log_tail(&p, 3), "d | e | f");
        assert_eq!(log_tail(&dir.path().join("none"), 3), "no log");
    }
}
