//! genas-store: what genas *remembers*.
//!
//! Owns the archive, one sled database in a directory ([`Archive`]), and, later, the formats a
//! winner leaves in. Implemented so far: creating and opening an archive under a versioned
//! schema ([`SCHEMA_VERSION`]), refusing one that is newer, damaged, not an archive at all
//! or in use by another process (named by pid, command and start time) without changing a
//! byte of it; teachers (metadata and weights, stored in one transaction) and calibration
//! tables (with their history). The runs, candidates by content id, scores and the
//! controller state committed atomically with each result land with the search controller
//! (issue 5); the exports (JSON spec, Hugging Face config + safetensors, a standalone PyTorch
//! module) with issue 6.
//!
//! ```no_run
//! use genas_store::Archive;
//! # fn main() -> Result<(), genas_store::StoreError> {
//! let archive = Archive::open(std::path::Path::new("genas-archive"))?;
//! archive.put_teacher("data-1f3c/teacher-9a0b", &serde_json::json!({"steps": 600}), &[0u8; 16])?;
//! for (key, meta) in archive.teachers()? {
//!     println!("{key}: {meta}");
//! }
//! # Ok(()) }
//! ```
//!
//! Every [`StoreError`] is one line that names the archive and says what to do. The archive
//! knows `genas-space` types (what it stores) but must not know how candidates are scored or
//! chosen.

pub mod archive;

pub use archive::{Archive, Holder, StoreError, SCHEMA_VERSION};
