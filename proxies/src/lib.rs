//! genas-proxies: how a candidate is *scored*.
//!
//! Owns the data sets as token streams (`data`: text corpora and IDX images, the deterministic
//! train/validation split, the data fingerprint), the training engine that builds generator
//! networks from an `Architecture` (`engine`), the zero-cost proxies (`zero_cost`), the teacher
//! (`teacher`, or a Hugging Face checkpoint read by `pretrained`), Hugging Face tokenizers and
//! their token cache (`tokenize`), brief and full knowledge distillation (`distill`), students
//! initialised from the teacher's pruned weights (`inherit`), the
//! teacher's soft targets as a content-addressed file that workers read (`inputs`), and the
//! statistics that calibrate proxies against distillation (`calibrate`, `stats`, `linalg`).
//!
//! It must not decide what to evaluate next (that is `genas-search`) nor know how results are
//! stored (`genas-store`).

pub mod calibrate;
pub mod data;
pub mod distill;
pub mod engine;
pub mod inherit;
pub mod inputs;
pub mod linalg;
pub mod pretrained;
pub mod stats;
pub mod teacher;
pub mod tokenize;
pub mod zero_cost;

/// The first 16 hex digits of a SHA-256: the form of every key and fingerprint genas keeps.
pub fn hex16(h: sha2::Sha256) -> String {
    use sha2::Digest;
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub use data::{Batch, DataError, DataSummary, Dataset, Split, Vocabulary};
