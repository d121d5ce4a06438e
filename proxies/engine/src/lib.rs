//! genas-engine: how a network is *computed*.
//!
//! Owns generator networks built at run time from an `Architecture` (`model`), with
//! hand-written forward and backward passes (one file per layer kind under `cpu/`, forward and
//! backward side by side) behind the `Backend` boundary, the AdamW optimizer and a training
//! loop over batches (`train`), generation and its latency (`generate`), checkpoints of the
//! weights (`checkpoint`), the memory a computation will take (`memory`) and the engine
//! benchmark (`bench`).
//!
//! It must not know data files, tokenizers, teachers, archives or searches: it is handed
//! batches of token ids (`Batch`, drawn through `TrainBatches`) and returns numbers.
//!
//! Why hand-written: on the reference 2-core machine the Rust frameworks trained a small GPT
//! 3–8× slower than PyTorch CPU, while a fused engine on the `gemm` crate beat it (see
//! docs/DESIGN.md).

pub mod backend;
pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod cpu;
pub mod generate;
pub mod memory;
pub mod model;
pub mod real;
pub mod simd;
pub mod train;

pub use backend::{Backend, Soft};
pub use batch::{Batch, TrainBatches};
pub use cpu::Cpu;
pub use generate::{latency_ms, sub_block_latency_ms, Generator, SampleConfig, SubBlockLatency};
pub use model::{Loss, Model, ParamInfo};
pub use real::Real;
pub use train::{TrainConfig, TrainError, TrainReport};
