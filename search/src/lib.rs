//! genas-search: what to evaluate next.
//!
//! Owns the search controller (`controller`: proposing through a strategy, one file each,
//! filtering by the cost-model constraints, the zero-cost screen, successive halving with
//! promotion by Pareto rank, the run's front and hypervolume, exact resume from the archive),
//! the Pareto front and hypervolume themselves (`pareto`), and the job boundary (`job`: `Job`,
//! `Output`, the `Executor` trait, `init_seed`), which is all an executor knows of a search,
//! and blockwise search's exact choice of one variant per sub-block under additive cost
//! limits (`blockwise`).
//!
//! The controller is the only writer of a run's records in the archive. It must not know
//! where or how a job runs (`genas-exec`), nor files, commands or reports (the `genas` app).

pub mod blockwise;
pub mod controller;
pub mod error;
pub mod job;
pub mod pareto;

pub use error::SearchError;
pub use job::{init_seed, ExecError, Executor, Job, Output};
