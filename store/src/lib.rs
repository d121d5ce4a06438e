//! genas-store: what genas *remembers*.
//!
//! Owns the archive, one sled database in a directory ([`Archive`]): creating and opening an archive under a versioned
//! schema ([`SCHEMA_VERSION`]), refusing one that is newer, damaged, not an archive at all
//! or in use by another process (named by pid, command and start time) without changing a
//! byte of it; teachers (metadata and weights, stored in one transaction) and calibration
//! tables (with their history); for the search controller, runs (`r1`, `r2`, ..., never
//! reused) with their records, and per run the candidate records, the controller state, an
//! event log, candidate weights and final distillations (with their checkpoints while under
//! way), plus an evaluation cache shared by all runs. One
//! [`Archive::commit`] writes a step's candidates, state, events and cache entries in a
//! single sled transaction and flushes it before it returns, so a killed search resumes
//! from its last commit with everything consistent. Records are the caller's serde types,
//! stored as JSON; a stored record read as a type it does not fit is
//! [`StoreError::Unreadable`], never a panic.
//!
//! ```no_run
//! use genas_store::Archive;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct TeacherMeta {
//!     steps: u32,
//! }
//!
//! # fn main() -> Result<(), genas_store::StoreError> {
//! let archive = Archive::open(std::path::Path::new("genas-archive"))?;
//! archive.put_teacher("data-1f3c/teacher-9a0b", &TeacherMeta { steps: 600 }, &[0u8; 16])?;
//! for (key, meta) in archive.teachers::<TeacherMeta>()? {
//!     println!("{key}: {} steps", meta.steps);
//! }
//! let run = archive.create_run(&serde_json::json!({"space": "space-3f2a"}))?;
//! archive.commit(
//!     &run,
//!     &[("c-01ab".to_string(), serde_json::json!({"score": 0.93}))],
//!     &serde_json::json!({"generation": 1}),
//!     &[serde_json::json!({"evaluated": "c-01ab"})],
//!     &[("eval/c-01ab".to_string(), 0.93)],
//! )?;
//! let resumed_from: Option<serde_json::Value> = archive.state(&run)?;
//! # Ok(()) }
//! ```
//!
//! Every [`StoreError`] is one line that names the archive and says what to do. The archive
//! knows no other genas crate: it stores the records its callers define, and must not know
//! how candidates are scored or chosen.

pub mod archive;

pub use archive::{
    format_utc, parse_run_id, Archive, Holder, StoreError, MARKER_FILE, SCHEMA_VERSION,
};
