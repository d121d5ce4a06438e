//! genas-exec: where evaluation jobs run.
//!
//! Every executor implements `genas_search::job::Executor` and trains a job through
//! [`local::run_job`] (or the PyTorch runner's exact copy of that recipe), so where a job runs
//! does not change its result:
//!
//! - [`local`]: worker threads on this machine (one pool for all side-by-side work);
//! - [`slurm`]: one job array per batch on a Slurm cluster, each task a `genas worker`, and
//!   the final distillations as tasks of their own;
//! - [`torch`]: the PyTorch runner, `device_jobs` jobs side by side on each GPU, plus teacher
//!   training and final distillation through it;
//! - [`slots`]: the long-lived runner processes those jobs go to, one per slot, each pinned
//!   to its GPU;
//! - [`replay`]: a tabulated benchmark read back instead of training;
//! - [`surrogate`]: boosted trees fitted to a sampled table, read back for any architecture
//!   of a space too large to tabulate;
//! - [`choice`]: the executor an experiment names, set up over its inputs;
//! - [`device_memory`]: what a runner job takes on its device, and the micro-batch that fits.
//!
//! It knows the job boundary of `genas-search` (`Job`, `Output`, `Executor`), never the
//! controller, the strategies, the schedule or the archive.

pub mod choice;
pub mod device_memory;
pub mod local;
pub mod replay;
pub mod slots;
pub mod slurm;
pub mod surrogate;
pub mod torch;

pub use choice::ExecutorChoice;
pub use local::{parallel, run_job, worker_count, Local};
pub use replay::{Replay, Table};
