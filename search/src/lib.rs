//! genas-search: what to evaluate next, and the `genas` command line.
//!
//! Owns the search controller (strategies, constraints, the fidelity schedule, the Pareto
//! front), where evaluations run (`executor`: worker threads here; `slurm`: job arrays on a
//! Slurm cluster, each task a `genas worker`), what happens to the winners (final
//! distillation, export, sampling), the trade-off report of a run (`report`) and the commands
//! behind the `genas` binary. Every command is a library function returning data plus a
//! renderer, so all logic is testable without spawning the binary; `main.rs` only parses
//! arguments and prints.
//!
//! Nothing depends on this crate. It is the only one that knows all three others.

pub mod commands;
pub mod controller;
pub mod executor;
pub mod format;
pub mod fuzz;
pub mod pareto;
pub mod plot;
pub mod report;
pub mod run;
pub mod runner;
pub mod runner_check;
pub mod scoring;
pub mod simulate;
pub mod slurm;
pub mod table;
pub mod winners;
pub mod workers;
