//! genas-scoring: how a candidate's quality is *estimated*, cheaply.
//!
//! Owns the data sets as token streams (`data`: text corpora and IDX images, the deterministic
//! train/validation split, the data fingerprint), corpora read as streams of documents from
//! text, JSON Lines and Parquet files (`corpus`), token streams in memory or in mapped token
//! files and their views (`tokens`), Hugging Face tokenizers and their token cache
//! (`tokenize`), the teacher genas trains (`teacher`; a pretrained one is read by
//! `genas-interop`), brief and full knowledge distillation (`distill`) and its benchmark at a
//! real vocabulary (`distill_bench`), students initialised from the teacher's pruned weights
//! (`inherit`), blockwise local distillation of one sub-block against the teacher's (`local`),
//! the teacher's soft targets as a content-addressed file that workers read (`inputs`), the
//! zero-cost proxies (`zero_cost`), and the statistics that calibrate proxies against
//! distillation (`calibrate`, `stats`, `linalg`).
//!
//! It trains and runs networks through `genas-engine`. It must not decide what to evaluate
//! next (`genas-search`), where an evaluation runs (`genas-exec`) nor how results are stored
//! (`genas-store`).

pub mod calibrate;
pub mod corpus;
pub mod data;
pub mod distill;
pub mod distill_bench;
pub mod footprint;
pub mod inherit;
pub mod inputs;
pub mod linalg;
pub mod local;
pub mod stats;
pub mod teacher;
pub mod tokenize;
pub mod tokens;
pub mod zero_cost;

pub use data::{Batch, DataError, DataSummary, Dataset, Split, Vocabulary};
