//! genas-app: the `genas` command line and everything a user reads.
//!
//! Every command is a library function returning data plus a renderer, so all logic is
//! testable without spawning the binary; `main.rs` only parses arguments (clap, with its own
//! ranges) and prints. The commands: loading an experiment and the preflights (`commands`),
//! the search and its runs (`run`), the teacher and the calibration (`scoring`), what happens
//! to the winners (`winners`: final distillation, export, sampling), the trade-off report
//! (`report`), plots (`plot`), the tabulated benchmark (`table`) and its replay
//! (`simulate`), the input fuzzer (`fuzz`) and the GPU parity check's jobs (`runner_check`).
//!
//! Nothing depends on this crate: it is the only one that knows all the others.

pub mod commands;
pub mod format;
pub mod fuzz;
pub mod plot;
pub mod report;
pub mod run;
pub mod runner_check;
pub mod scoring;
pub mod simulate;
pub mod table;
pub mod winners;
