//! genas-app: the `genas` command line and everything a user reads.
//!
//! Every command is a library function returning data plus a renderer, so all logic is
//! testable without spawning the binary; `main.rs` only parses arguments (clap, with its own
//! ranges) and prints. The modules, by what a user does:
//!
//! - `experiment`: an experiment loaded (data read, space built) and the preflights;
//! - `inspect`: `space check`, `space sample`, `data inspect`;
//! - `train`: `train` one architecture, and the engine benchmarks' renderers;
//! - `teacher`, `calibration`: the teacher (trained or imported) and the proxies' calibration;
//! - `search`: `search`, `resume`, `front`; `blockwise`: the search by sub-blocks; `runs`: a
//!   run's records and report (`runs`, `show`);
//! - `winners`: `distill`, `export`, `sample` of a run's winners;
//! - `report`: the trade-off study of a run (HTML and Markdown);
//! - `plot`: every picture, and `format`: every number a user reads;
//! - `tabulate` (`bench table`), `simulate` (`bench search` on a table), `fuzz` (`bench fuzz`)
//!   and `gpu_check` (`bench runner`: the GPU check's jobs).
//!
//! Nothing depends on this crate: it is the only one that knows all the others.

pub mod blockwise;
pub mod calibration;
pub mod experiment;
pub mod format;
pub mod fuzz;
pub mod gpu_check;
pub mod inspect;
pub mod memory;
pub mod plot;
pub mod report;
pub mod runs;
pub mod search;
pub mod shipped;
pub mod simulate;
pub mod surrogate_bench;
pub mod tabulate;
pub mod teacher;
pub mod train;
pub mod winners;
