//! The training engine: generator networks built at run time from an `Architecture`, with
//! hand-written forward and backward passes (one file per layer kind under `cpu/`, forward and
//! backward side by side), behind the `Backend` boundary.
//!
//! Why hand-written: on the reference 2-core machine the Rust frameworks trained a small GPT
//! 3–8× slower than PyTorch CPU, while a fused engine on the `gemm` crate beat it (see
//! docs/DESIGN.md).

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod cpu;
pub mod generate;
pub mod memory;
pub mod model;
pub mod real;
pub mod simd;
pub mod train;

pub use backend::Backend;
pub use cpu::Cpu;
pub use generate::{Generator, SampleConfig};
pub use model::{Loss, Model, ParamInfo};
pub use real::Real;
pub use train::{TrainConfig, TrainError, TrainReport};
