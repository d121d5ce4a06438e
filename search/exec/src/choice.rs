//! The executor an experiment's `[executor]` and `[search] device` name, set up over its
//! inputs.

use crate::local::Local;
use crate::slurm::{Cluster, Slurm};
use crate::torch::{device_plan, DevicePlan, Torch};
use genas_search::job::{ExecError, Executor};
use genas_space::{ExecutorKind, Experiment};
use std::path::Path;

/// The executor an experiment's `[executor]` names.
pub enum ExecutorChoice<'a> {
    Local(Local<'a>),
    Slurm(Box<Slurm<'a>>),
    Torch(Box<Torch<'a>>),
}

impl<'a> ExecutorChoice<'a> {
    /// `local` as it is, the PyTorch runner over its inputs, or the Slurm executor over its
    /// inputs (whose proxies it computes): the shared directory resolved (default
    /// `ARCHIVE/slurm`), the teacher's targets written into it under their content name, and
    /// the worker program found.
    pub fn of(
        exp: &Experiment,
        archive_dir: &Path,
        local: Local<'a>,
        say: &'a (dyn Fn(&str) + Sync),
    ) -> Result<ExecutorChoice<'a>, ExecError> {
        if exp.executor.kind == ExecutorKind::Local {
            return match device_plan(exp)? {
                DevicePlan::Engine { .. } => Ok(ExecutorChoice::Local(local)),
                DevicePlan::Torch {
                    device,
                    python,
                    options,
                    gpus,
                    slot_memory,
                    ..
                } => {
                    let root = archive_dir.join("torch");
                    let inputs = root.join("inputs");
                    let name = genas_scoring::inputs::store(&inputs, local.targets)
                        .map_err(|e| ExecError::Inputs(e.0))?;
                    let absolute = |p: std::path::PathBuf| {
                        std::path::absolute(&p)
                            .map_err(|e| ExecError::Inputs(format!("{}: {e}", p.display())))
                    };
                    let slots = crate::slots::Slots::new(
                        &python,
                        &device,
                        &gpus,
                        exp.search.device_jobs as usize,
                        &root.join("slots"),
                        Box::new(|line: &str| eprintln!("{line}")),
                    )
                    .map_err(|e| ExecError::Runner(format!("{}: {e}", root.display())))?;
                    Ok(ExecutorChoice::Torch(Box::new(Torch {
                        slots,
                        slot_memory,
                        dir: absolute(root.join("jobs"))?,
                        targets: absolute(genas_scoring::inputs::path_in(&inputs, &name))?,
                        options,
                        local,
                    })))
                }
            };
        }
        let cluster = Cluster::of(exp, archive_dir, say)?;
        let targets = genas_scoring::inputs::store(&cluster.inputs(), local.targets)
            .map_err(|e| ExecError::Inputs(format!("executor.shared_dir: {e}")))?;
        Ok(ExecutorChoice::Slurm(Box::new(Slurm {
            runner: crate::slurm::node_runner(exp),
            cluster,
            targets,
            local,
        })))
    }

    /// Checks everything the executor of `exp` needs before a run is created or anything
    /// is trained: the device (`device_plan`), and for Slurm its commands, controller,
    /// settings, worker program and shared directory (`Cluster::check`).
    pub fn check(exp: &Experiment, archive_dir: &Path) -> Result<(), ExecError> {
        device_plan(exp)?;
        if exp.executor.kind == ExecutorKind::Local {
            return Ok(());
        }
        let quiet = |_: &str| {};
        Cluster::of(exp, archive_dir, &quiet)?.check()
    }

    pub fn executor(&self) -> &dyn Executor {
        match self {
            ExecutorChoice::Local(l) => l,
            ExecutorChoice::Slurm(s) => s.as_ref(),
            ExecutorChoice::Torch(t) => t.as_ref(),
        }
    }
}
