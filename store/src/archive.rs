//! The archive: one directory holding everything genas remembers between runs, in sled.
//!
//! ```no_run
//! use genas_store::Archive;
//! # fn main() -> Result<(), genas_store::StoreError> {
//! let archive = Archive::open(std::path::Path::new("genas-archive"))?; // created if absent
//! archive.put_calibration("space-3f2a", &serde_json::json!({"ms_per_token": 0.41}))?;
//! let table: Option<serde_json::Value> = archive.calibration("space-3f2a")?;
//! # Ok(()) }
//! ```
//!
//! Files in the directory:
//! - `genas-archive.json`: `{"format": "genas-archive", "schema_version": 1, "created_by":
//!   "genas 0.1.0"}`, written last when an archive is created. It is read *before* sled is
//!   started, because starting sled rewrites files (it grows its log and writes a snapshot,
//!   and turns a log it cannot read into an empty database): an archive of a newer schema, a
//!   damaged one, or a directory that is no archive is refused with nothing changed. Whoever
//!   changes the schema version changes it here and in the `meta` tree.
//! - `holder.json`: the process that has the archive open (pid, host, command line, since
//!   when), so that a second process can name it. sled's exclusive lock on `db` is the truth;
//!   this file only describes the lock's holder, and a stale one is overwritten.
//! - `seal.json`: `{"flushes": N}`, rewritten (atomically) after every flush with the count
//!   the `meta` record `flushes` reached. A database that recovers to fewer flushes than its
//!   seal lost the end of its log (a truncated or rolled-back `db`) and is refused as damaged.
//! - sled's own: `conf`, `db` (the log), `blobs/` (large values), `snap.*` (snapshots).
//!
//! sled trees and their records:
//! - `meta`: `schema_version` (JSON number), `created_by` (JSON string, `genas 0.1.0`),
//!   `created_at` (JSON string, UTC).
//! - `teacher_meta` / `teacher_weights`: teacher key → metadata JSON / weight bytes; the two
//!   are written in one transaction and read in one.
//! - `calibration`: key ++ `0x00` ++ id (u64 big-endian, from sled's monotonic id
//!   generator) → table JSON. The newest entry for a key is its table; older ones are its
//!   history. Keys hold no control characters, so one key's entries never run into another's.
//! - `meta` also holds `last_run` (JSON number): the number of the last run created, so run
//!   ids are never reused. Absent until the first run.
//! - `runs`: run number (u64 big-endian) → run record JSON. A run's id is `r` and its number
//!   in decimal (`r1`, `r2`, ...); keying by number lists `r2` before `r10`.
//! - `run_states`: run id → the controller state JSON (replaced by every commit).
//! - `run_candidates`: run id ++ `0x00` ++ candidate id → candidate record JSON.
//! - `run_events`: run id ++ `0x00` ++ sequence number (u64 big-endian, from 0) → event JSON.
//! - `run_event_counts`: run id → the number of events the run has (u64 big-endian), the next
//!   sequence number; read and written in the transaction that appends events.
//! - `run_weights`: run id ++ `0x00` ++ candidate id → weight bytes (safetensors).
//! - `eval_cache`: cache key → value JSON, shared by all runs.
//! - `run_checkpoints`: run id ++ `0x00` ++ candidate id → the last checkpoint (safetensors) of
//!   the candidate's final distillation while it is under way, in archives written before
//!   checkpoints became files: `checkpoints/SHA256(key).safetensors` in the archive's folder,
//!   written whole and renamed into place (a checkpoint holds a student's weights, best weights
//!   and optimizer moments in f64: sled would keep every replaced one in memory until it
//!   reclaims it). Removed when the distillation finishes.
//! - `run_distilled`: run id ++ `0x00` ++ candidate id → the record JSON of its finished final
//!   distillation, written in one transaction with its weights (`run_weights`) and the
//!   removal of its checkpoint.
//! - `run_ablations`: run id ++ `0x00` ++ ablation key (`CANDIDATE/ARM/STEPS`) → the record
//!   JSON of a finished training run `genas report --ablate-kd` compares against the final
//!   distillation, written in one transaction with the removal of its checkpoint (kept in
//!   `run_checkpoints` under the same key while it runs).
//! - `run_blocks`: run id ++ `0x00` ++ block key → the record JSON of a finished blockwise
//!   local distillation (one sub-block variant of one layer trained against the teacher). Its
//!   weights are a file, `blocks/SHA256(key).safetensors` in the archive's folder, written
//!   whole and renamed into place before the record (sled would hold every one of them in
//!   memory for the rest of the process: a blockwise run writes hundreds).
//!
//! The run trees above are created when an archive is opened, so an archive written before
//! they existed gains them (empty) on its first writable open; the schema stays 1. One
//! [`Archive::commit`] writes `runs` (read only), `run_states`, `run_candidates`, `run_events`,
//! `run_event_counts` and `eval_cache` in one sled transaction and then flushes.

mod holder;
mod sled_files;
mod snapshot;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::IVec;

pub use holder::{format_utc, Holder};
use holder::{one_line, write_atomically};

/// Version of the archive layout this genas writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The file that marks a directory as a genas archive.
pub const MARKER_FILE: &str = "genas-archive.json";
const MARKER_FORMAT: &str = "genas-archive";
/// Entries sled keeps in an archive directory; one of them without the marker means an
/// archive whose creation never finished or whose marker was lost.
const SLED_ENTRIES: [&str; 3] = ["conf", "db", "blobs"];

const META_TREE: &str = "meta";
const TEACHER_META_TREE: &str = "teacher_meta";
const TEACHER_WEIGHTS_TREE: &str = "teacher_weights";
const CALIBRATION_TREE: &str = "calibration";
const RUNS_TREE: &str = "runs";
const RUN_STATES_TREE: &str = "run_states";
const RUN_CANDIDATES_TREE: &str = "run_candidates";
const RUN_EVENTS_TREE: &str = "run_events";
const RUN_EVENT_COUNTS_TREE: &str = "run_event_counts";
const RUN_WEIGHTS_TREE: &str = "run_weights";
const EVAL_CACHE_TREE: &str = "eval_cache";
const RUN_CHECKPOINTS_TREE: &str = "run_checkpoints";
const RUN_DISTILLED_TREE: &str = "run_distilled";
const RUN_ABLATIONS_TREE: &str = "run_ablations";
const RUN_BLOCKS_TREE: &str = "run_blocks";
/// The `meta` record holding the number of the last run created.
const LAST_RUN: &str = "last_run";
/// The `meta` record counting flushes (u64 big-endian), and the file recording the count
/// after each flush.
const FLUSHES: &str = "flushes";
const SEAL_FILE: &str = "seal.json";

/// What a transaction's closure returns: an abort carries the error to report.
type Tx<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Everything that can go wrong with an archive. Every message is one line, names the
/// archive's directory, and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// `open_existing` found no archive.
    #[error("no genas archive at {} ({reason}): check the path", shown(.path))]
    NotFound { path: PathBuf, reason: String },
    /// The path holds something else; it was left alone.
    #[error(
        "{} is not a genas archive ({reason}): name an archive directory, or an empty or new \
         directory to start one",
        shown(.path)
    )]
    NotAnArchive { path: PathBuf, reason: String },
    /// The archive's files are damaged; they were left as they were.
    #[error(
        "archive {} is damaged ({detail}): restore it from a backup, or move it aside and \
         start a new archive",
        shown(.path)
    )]
    Damaged { path: PathBuf, detail: String },
    /// The archive was written by a newer genas; it was left as it was.
    #[error(
        "archive {} was written by a newer genas (schema {found}; this genas reads up to \
         {SCHEMA_VERSION}): upgrade genas",
        shown(.path)
    )]
    NewerSchema { path: PathBuf, found: u64 },
    /// Another process (or another `Archive` in this one) has the archive open.
    #[error(
        "archive {} is in use by {}: wait for it to finish or stop it, then retry",
        shown(.path),
        holder_text(.holder)
    )]
    InUse {
        path: PathBuf,
        holder: Option<Holder>,
    },
    /// Another process is creating an archive here and has not finished.
    #[error(
        "no genas archive at {} yet: {} is creating it; retry in a moment",
        shown(.path),
        holder_text(.holder)
    )]
    BeingCreated {
        path: PathBuf,
        holder: Option<Holder>,
    },
    /// The file system refused.
    #[error(
        "archive {}: cannot {action}: {reason}; check that the directory is readable and \
         writable and the disk has room",
        shown(.path)
    )]
    Io {
        path: PathBuf,
        action: String,
        reason: String,
    },
    /// sled failed in a way that is neither I/O nor damage.
    #[error(
        "archive {}: the database failed to {action}: {detail}; retry, and report it as a \
         genas bug if it happens again",
        shown(.path)
    )]
    Database {
        path: PathBuf,
        action: String,
        detail: String,
    },
    /// A caller passed a key the archive cannot store.
    #[error(
        "archive {}: invalid {kind} key {key:?}: keys must be non-empty and hold no control \
         characters (a bug in the caller; please report it)",
        shown(.path)
    )]
    InvalidKey {
        path: PathBuf,
        kind: &'static str,
        key: String,
    },
    /// A caller named a run the archive does not hold.
    #[error(
        "archive {} holds no run {run:?}: check the run id (runs are named r1, r2, ...)",
        shown(.path)
    )]
    UnknownRun { path: PathBuf, run: String },
    /// A stored record is JSON but not the record the caller reads (written by another
    /// version of genas, or a caller's bug); it was left as it was.
    #[error(
        "archive {}: {what} is not a record this genas reads ({reason}); use the genas that \
         wrote it, or start a new archive",
        shown(.path)
    )]
    Unreadable {
        path: PathBuf,
        what: String,
        reason: String,
    },
    /// A caller's record holds a number that is not finite (NaN or an infinity), which JSON
    /// cannot hold (serde_json would write `null`, and reading it back would fail): nothing
    /// was written.
    #[error(
        "archive {}: refusing to store {what}: {at} is {value}, not a finite number; nothing \
         was written",
        shown(.path)
    )]
    NonFinite {
        path: PathBuf,
        what: String,
        /// Where in the record, as `field.field[index]`.
        at: String,
        value: String,
    },
    /// A stored record holds `null` where a number belongs: a NaN or an infinity an
    /// earlier genas wrote (serde_json writes them as `null`). The archive opens; this
    /// record cannot be used.
    #[error(
        "archive {}: {what} holds null at {at} where a number belongs (a NaN or infinity \
         stored by a genas that did not refuse them): this record cannot be used; write it \
         again (a teacher: genas teacher train --retrain)",
        shown(.path)
    )]
    NullFigure {
        path: PathBuf,
        what: String,
        at: String,
    },
    /// A caller's record cannot be written as JSON (a map with keys that are not strings).
    #[error("archive {}: cannot store {what}: {reason} (a bug in the caller; please report it)", shown(.path))]
    Unstorable {
        path: PathBuf,
        what: String,
        reason: String,
    },
}

fn shown(path: &Path) -> String {
    one_line(&path.display().to_string())
}

fn holder_text(holder: &Option<Holder>) -> String {
    match holder {
        Some(holder) => holder.to_string(),
        None => "another process (it has not recorded who it is)".to_string(),
    }
}

/// The marker file's content.
#[derive(Serialize, Deserialize)]
struct Marker {
    format: String,
    schema_version: u64,
    created_by: String,
}

/// Bytes of pages sled keeps cached in memory (its default is 1 GiB, which it fills as it
/// reads an archive's records and weights, all counted in the process's memory). Records are
/// small and read a few at a time; the archive's reads need no more.
pub const CACHE_BYTES: u64 = 16 << 20;

/// The folder of an archive that holds final distillations' checkpoints under way.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// The folder (in the archive's) of blockwise runs' trained blocks.
pub const BLOCK_DIR: &str = "blocks";

/// An open archive. sled holds an exclusive lock on it until this is dropped.
pub struct Archive {
    db: sled::Db,
    meta: sled::Tree,
    teacher_meta: sled::Tree,
    teacher_weights: sled::Tree,
    calibration: sled::Tree,
    runs: sled::Tree,
    run_states: sled::Tree,
    run_candidates: sled::Tree,
    run_events: sled::Tree,
    run_event_counts: sled::Tree,
    run_weights: sled::Tree,
    eval_cache: sled::Tree,
    run_checkpoints: sled::Tree,
    run_distilled: sled::Tree,
    run_ablations: sled::Tree,
    run_blocks: sled::Tree,
    path: PathBuf,
    schema_version: u32,
    holder: Holder,
    /// For a read-only open: the private copy sled runs on (removed on drop), and the process
    /// that held the archive when the copy was taken, if any.
    snapshot: Option<(tempfile::TempDir, Option<Holder>)>,
    /// Held while a flush counts, flushes and seals: threads that store side by side (the
    /// blockwise jobs' results) flush one at a time, so their seals never share a temporary.
    flushing: std::sync::Mutex<()>,
}

impl fmt::Debug for Archive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Archive")
            .field("path", &self.path)
            .field("schema_version", &self.schema_version)
            .finish_non_exhaustive()
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        // Runs before the fields drop, i.e. while sled still holds the lock, so the record
        // removed can only be this process's own. A read-only open wrote none.
        if self.snapshot.is_none() {
            self.holder.remove_if_mine(&self.path);
        }
    }
}

impl Archive {
    /// Opens the archive in `dir`, creating it (and the directory) if `dir` does not exist
    /// or is an empty directory.
    pub fn open(dir: &Path) -> Result<Archive, StoreError> {
        Archive::open_or_create(dir, true)
    }

    /// Opens an existing archive only: an error if `dir` holds none.
    pub fn open_existing(dir: &Path) -> Result<Archive, StoreError> {
        Archive::open_or_create(dir, false)
    }

    /// Opens an existing archive to read it, without changing a byte of it and without
    /// taking its lock: sled runs on a private copy taken while no commit was being
    /// written (the copy is what a kill at that instant would leave, which sled recovers
    /// to the last commit). So it works while a search holds the archive, and then
    /// [`Archive::live`] names the holder. Anything written through it is lost.
    pub fn open_read_only(dir: &Path) -> Result<Archive, StoreError> {
        let (marker, locked) = Archive::preflight(dir)?;
        let holder = if locked {
            Some(
                Holder::read(dir)
                    .filter(Holder::may_be_alive)
                    .unwrap_or_else(|| Holder {
                        pid: 0,
                        host: None,
                        command: "another process".into(),
                        since_unix_s: 0,
                    }),
            )
        } else {
            None
        };
        let copy = snapshot::take(dir).map_err(|e| io_error(dir, "copy it to read it", &e))?;
        let db = Archive::start_checked(copy.path(), dir, &marker, true)?;
        let mut archive = Archive::finish_opening(dir, db, marker.schema_version as u32, false)?;
        archive.snapshot = Some((copy, holder));
        Ok(archive)
    }

    /// For a read-only open of an archive another process holds: that process, as it
    /// described itself (pid 0 when it did not).
    pub fn live(&self) -> Option<&Holder> {
        self.snapshot.as_ref().and_then(|(_, h)| h.as_ref())
    }

    /// The archive's directory, as it was given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version the archive was written with.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// Stores a teacher under `key` (the caller's hash of the data fingerprint and teacher
    /// configuration), replacing any earlier one; metadata and weights land in one
    /// transaction, so a reader never sees one without the other.
    pub fn put_teacher<M: Serialize + ?Sized>(
        &self,
        key: &str,
        meta: &M,
        weights: &[u8],
    ) -> Result<(), StoreError> {
        self.check_key("teacher", key)?;
        let meta = self.encode("a teacher's metadata", meta)?;
        let weights = sled::IVec::from(weights);
        let stored = (&self.teacher_meta, &self.teacher_weights).transaction(
            |(metas, weight_sets)| -> Tx<()> {
                metas.insert(key.as_bytes(), meta.clone())?;
                weight_sets.insert(key.as_bytes(), weights.clone())?;
                Ok(())
            },
        );
        stored.map_err(|e| self.transaction_error("store a teacher", e))
    }

    /// The teacher stored under `key`: its metadata and weight bytes.
    pub fn teacher<M: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(M, Vec<u8>)>, StoreError> {
        self.check_key("teacher", key)?;
        let read = (&self.teacher_meta, &self.teacher_weights).transaction(
            |(metas, weight_sets)| -> Tx<_> {
                Ok((metas.get(key.as_bytes())?, weight_sets.get(key.as_bytes())?))
            },
        );
        match read.map_err(|e| self.transaction_error("read a teacher", e))? {
            (Some(meta), Some(weights)) => {
                let meta = self.decode(&meta, || format!("teacher {key:?}'s metadata"))?;
                Ok(Some((meta, weights.to_vec())))
            }
            (None, None) => Ok(None),
            (Some(_), None) => Err(self.damaged(format!("teacher {key:?} has no weights"))),
            (None, Some(_)) => Err(self.damaged(format!("teacher {key:?} has no metadata"))),
        }
    }

    /// Every stored teacher's key and metadata (not its weights), in key order.
    pub fn teachers<M: DeserializeOwned>(&self) -> Result<Vec<(String, M)>, StoreError> {
        let mut teachers = Vec::new();
        for entry in self.teacher_meta.iter() {
            let (key, meta) = entry.map_err(|e| self.sled_error("list teachers", e))?;
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| self.damaged("a teacher key is not UTF-8".into()))?;
            let meta = self.decode(&meta, || format!("teacher {key:?}'s metadata"))?;
            teachers.push((key, meta));
        }
        Ok(teachers)
    }

    /// Stores `table` as the calibration table for `key` (a space key). It replaces the
    /// previous table for that key; the previous ones stay in the history.
    pub fn put_calibration<T: Serialize + ?Sized>(
        &self,
        key: &str,
        table: &T,
    ) -> Result<(), StoreError> {
        self.check_key("calibration", key)?;
        let id = self
            .db
            .generate_id()
            .map_err(|e| self.sled_error("number a calibration table", e))?;
        let mut entry_key = calibration_prefix(key);
        entry_key.extend_from_slice(&id.to_be_bytes());
        self.calibration
            .insert(entry_key, self.encode("a calibration table", table)?)
            .map_err(|e| self.sled_error("store a calibration table", e))?;
        Ok(())
    }

    /// The latest calibration table stored for `key`.
    pub fn calibration<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.check_key("calibration", key)?;
        match self
            .calibration
            .scan_prefix(calibration_prefix(key))
            .next_back()
        {
            None => Ok(None),
            Some(entry) => {
                let (_, table) = entry.map_err(|e| self.sled_error("read a calibration", e))?;
                self.decode(&table, || format!("calibration table {key:?}"))
                    .map(Some)
            }
        }
    }

    /// Every calibration table stored for `key`, oldest first; the last is the current one.
    pub fn calibration_history<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Vec<T>, StoreError> {
        self.check_key("calibration", key)?;
        let mut tables = Vec::new();
        for entry in self.calibration.scan_prefix(calibration_prefix(key)) {
            let (_, table) = entry.map_err(|e| self.sled_error("read a calibration", e))?;
            tables.push(self.decode(&table, || format!("calibration table {key:?}"))?);
        }
        Ok(tables)
    }

    /// Creates a run: allocates the next id (`r1`, `r2`, ...; monotonic, never reused) and
    /// stores `record` under it, flushed to disk. Returns the id.
    pub fn create_run<R: Serialize + ?Sized>(&self, record: &R) -> Result<String, StoreError> {
        let record = self.encode("a run's record", record)?;
        let created = (&self.meta, &self.runs).transaction(|(meta, runs)| -> Tx<u64> {
            let last = match meta.get(LAST_RUN)? {
                None => 0,
                Some(bytes) => serde_json::from_slice::<u64>(&bytes).map_err(|_| {
                    ConflictableTransactionError::Abort(
                        self.damaged("its last run number is garbled".into()),
                    )
                })?,
            };
            let number = last + 1;
            meta.insert(LAST_RUN, number.to_string().into_bytes())?;
            runs.insert(&number.to_be_bytes(), record.clone())?;
            Ok(number)
        });
        let number = created.map_err(|e| self.transaction_error("create a run", e))?;
        // Flushed, so that an id once handed out is never handed out again after a crash.
        self.flush()?;
        Ok(run_id(number))
    }

    /// The record of run `id`, or `None` if there is no such run.
    pub fn run<R: DeserializeOwned>(&self, id: &str) -> Result<Option<R>, StoreError> {
        self.check_key("run", id)?;
        let Some(number) = parse_run_id(id) else {
            return Ok(None);
        };
        match self
            .runs
            .get(number.to_be_bytes())
            .map_err(|e| self.sled_error("read a run", e))?
        {
            None => Ok(None),
            Some(record) => self
                .decode(&record, || format!("run {id}'s record"))
                .map(Some),
        }
    }

    /// Every run's id and record, in creation order (`r2` before `r10`).
    pub fn runs<R: DeserializeOwned>(&self) -> Result<Vec<(String, R)>, StoreError> {
        let mut runs = Vec::new();
        for entry in self.runs.iter() {
            let (key, record) = entry.map_err(|e| self.sled_error("list runs", e))?;
            let id = decode_u64(&key)
                .map(run_id)
                .ok_or_else(|| self.damaged("a run key is not a run number".into()))?;
            let record = self.decode(&record, || format!("run {id}'s record"))?;
            runs.push((id, record));
        }
        Ok(runs)
    }

    /// Replaces the record of run `id` and flushes it to disk; `UnknownRun` if there is no
    /// such run.
    pub fn update_run<R: Serialize + ?Sized>(
        &self,
        id: &str,
        record: &R,
    ) -> Result<(), StoreError> {
        let number = self.run_number(id)?;
        let record = self.encode("a run's record", record)?;
        let updated = self.runs.transaction(|runs| -> Tx<()> {
            if runs.get(number.to_be_bytes())?.is_none() {
                return Err(ConflictableTransactionError::Abort(self.unknown_run(id)));
            }
            runs.insert(&number.to_be_bytes(), record.clone())?;
            Ok(())
        });
        updated.map_err(|e| self.transaction_error("update a run", e))?;
        self.flush()
    }

    /// Commits one step of run `run` in a single sled transaction, then flushes it to disk:
    /// upserts `candidates` (candidate id → record), replaces the run's controller state with
    /// `state`, appends `events` to the run's event log and upserts `cache` entries of the
    /// evaluation cache shared by all runs. Afterwards either all of it is visible or none:
    /// an unknown run or an invalid candidate or cache key aborts the whole commit.
    pub fn commit<C: Serialize, S: Serialize + ?Sized, E: Serialize, V: Serialize>(
        &self,
        run: &str,
        candidates: &[(String, C)],
        state: &S,
        events: &[E],
        cache: &[(String, V)],
    ) -> Result<(), StoreError> {
        let number = self.run_number(run)?;
        let state = self.encode("a run's state", state)?;
        let candidates: Vec<(&str, IVec)> = candidates
            .iter()
            .map(|(id, v)| Ok((id.as_str(), self.encode("a candidate's record", v)?)))
            .collect::<Result<_, StoreError>>()?;
        let events: Vec<IVec> = events
            .iter()
            .map(|e| self.encode("an event", e))
            .collect::<Result<_, StoreError>>()?;
        let cache: Vec<(&str, IVec)> = cache
            .iter()
            .map(|(k, v)| Ok((k.as_str(), self.encode("an evaluation cache entry", v)?)))
            .collect::<Result<_, StoreError>>()?;
        let abort = ConflictableTransactionError::Abort;
        let trees = (
            &self.runs,
            &self.run_states,
            &self.run_candidates,
            &self.run_events,
            &self.run_event_counts,
            &self.eval_cache,
        );
        let committed = trees.transaction(
            |(runs, states, records, event_log, event_counts, cache_tree)| -> Tx<()> {
                if runs.get(number.to_be_bytes())?.is_none() {
                    return Err(abort(self.unknown_run(run)));
                }
                states.insert(run.as_bytes(), state.clone())?;
                if !events.is_empty() {
                    let mut next = match event_counts.get(run.as_bytes())? {
                        None => 0,
                        Some(bytes) => decode_u64(&bytes).ok_or_else(|| {
                            abort(self.damaged(format!("run {run}'s event count is garbled")))
                        })?,
                    };
                    for event in &events {
                        event_log.insert(run_entry_key(run, &next.to_be_bytes()), event.clone())?;
                        next += 1;
                    }
                    event_counts.insert(run.as_bytes(), &next.to_be_bytes())?;
                }
                // Keys are checked as they are written: an invalid one aborts the
                // transaction, and sled discards everything it wrote so far.
                for (key, value) in &cache {
                    self.check_key("cache", key).map_err(abort)?;
                    cache_tree.insert(key.as_bytes(), value.clone())?;
                }
                for (id, record) in &candidates {
                    self.check_key("candidate", id).map_err(abort)?;
                    records.insert(run_entry_key(run, id.as_bytes()), record.clone())?;
                }
                Ok(())
            },
        );
        committed.map_err(|e| self.transaction_error("commit a step of a run", e))?;
        self.flush()
    }

    /// The controller state last committed for run `run`; `None` if none was (or there is no
    /// such run).
    pub fn state<S: DeserializeOwned>(&self, run: &str) -> Result<Option<S>, StoreError> {
        self.check_key("run", run)?;
        match self
            .run_states
            .get(run.as_bytes())
            .map_err(|e| self.sled_error("read a run's state", e))?
        {
            None => Ok(None),
            Some(state) => self
                .decode(&state, || format!("run {run}'s state"))
                .map(Some),
        }
    }

    /// The record of candidate `id` in run `run`.
    pub fn candidate<C: DeserializeOwned>(
        &self,
        run: &str,
        id: &str,
    ) -> Result<Option<C>, StoreError> {
        self.check_key("run", run)?;
        self.check_key("candidate", id)?;
        match self
            .run_candidates
            .get(run_entry_key(run, id.as_bytes()))
            .map_err(|e| self.sled_error("read a candidate", e))?
        {
            None => Ok(None),
            Some(record) => self
                .decode(&record, || format!("run {run}'s candidate {id:?}"))
                .map(Some),
        }
    }

    /// Every candidate of run `run` (none if there is no such run), in key order.
    pub fn candidates<C: DeserializeOwned>(
        &self,
        run: &str,
    ) -> Result<Vec<(String, C)>, StoreError> {
        self.check_key("run", run)?;
        let mut candidates = Vec::new();
        for (id, record) in self.scan_run(&self.run_candidates, run, "list candidates")? {
            let id = String::from_utf8(id)
                .map_err(|_| self.damaged(format!("a candidate id of run {run} is not UTF-8")))?;
            let record = self.decode(&record, || format!("run {run}'s candidate {id:?}"))?;
            candidates.push((id, record));
        }
        Ok(candidates)
    }

    /// The events of run `run` (none if there is no such run), in the order they were
    /// committed.
    pub fn events<E: DeserializeOwned>(&self, run: &str) -> Result<Vec<E>, StoreError> {
        self.check_key("run", run)?;
        let mut events = Vec::new();
        for (seq, event) in self.scan_run(&self.run_events, run, "read a run's events")? {
            let seq = decode_u64(&seq)
                .ok_or_else(|| self.damaged(format!("an event key of run {run} is garbled")))?;
            events.push(self.decode(&event, || format!("run {run}'s event {seq}"))?);
        }
        Ok(events)
    }

    /// The evaluation cache's entry for `key`.
    pub fn cached<V: DeserializeOwned>(&self, key: &str) -> Result<Option<V>, StoreError> {
        self.check_key("cache", key)?;
        match self
            .eval_cache
            .get(key.as_bytes())
            .map_err(|e| self.sled_error("read the evaluation cache", e))?
        {
            None => Ok(None),
            Some(value) => self
                .decode(&value, || format!("evaluation cache entry {key:?}"))
                .map(Some),
        }
    }

    /// Stores the weights (safetensors bytes) of candidate `candidate` of run `run`,
    /// replacing earlier ones, and flushes them to disk. `UnknownRun` if there is no such
    /// run; the candidate's record need not exist.
    pub fn put_weights(&self, run: &str, candidate: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.require_run(run)?;
        self.check_key("candidate", candidate)?;
        self.run_weights
            .insert(run_entry_key(run, candidate.as_bytes()), bytes)
            .map_err(|e| self.sled_error("store a candidate's weights", e))?;
        self.flush()
    }

    /// The weights stored for candidate `candidate` of run `run`.
    pub fn weights(&self, run: &str, candidate: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_key("run", run)?;
        self.check_key("candidate", candidate)?;
        self.run_weights
            .get(run_entry_key(run, candidate.as_bytes()))
            .map(|bytes| bytes.map(|bytes| bytes.to_vec()))
            .map_err(|e| self.sled_error("read a candidate's weights", e))
    }

    /// Replaces the checkpoint of candidate `candidate`'s final distillation in run `run`, on
    /// disk before it returns (a file in `CHECKPOINT_DIR`, written whole and renamed into
    /// place), so a killed distillation resumes from it.
    pub fn put_checkpoint(
        &self,
        run: &str,
        candidate: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.require_run(run)?;
        self.check_key("candidate", candidate)?;
        self.put_entry_file(CHECKPOINT_DIR, run, candidate, bytes)
            .map_err(|e| io_error(&self.path, "store a distillation checkpoint", &e))?;
        // An archive written before checkpoints were files may hold one in sled.
        self.remove_sled_checkpoint(run, candidate)
    }

    /// The checkpoint of candidate `candidate`'s final distillation in run `run`, while one
    /// is under way.
    pub fn checkpoint(&self, run: &str, candidate: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_key("run", run)?;
        self.check_key("candidate", candidate)?;
        match fs::read(self.checkpoint_path(run, candidate)) {
            Ok(bytes) => return Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&self.path, "read a distillation checkpoint", &e)),
        }
        self.run_checkpoints
            .get(run_entry_key(run, candidate.as_bytes()))
            .map(|bytes| bytes.map(|bytes| bytes.to_vec()))
            .map_err(|e| self.sled_error("read a distillation checkpoint", e))
    }

    /// Drops the checkpoint of candidate `candidate`'s final distillation in run `run` (one for
    /// other settings, when a new distillation replaces it) and flushes.
    pub fn remove_checkpoint(&self, run: &str, candidate: &str) -> Result<(), StoreError> {
        self.check_key("run", run)?;
        self.check_key("candidate", candidate)?;
        self.remove_checkpoint_file(run, candidate)?;
        self.remove_sled_checkpoint(run, candidate)
    }

    /// Where the checkpoint of `candidate` in `run` is kept.
    fn checkpoint_path(&self, run: &str, candidate: &str) -> PathBuf {
        self.entry_file(CHECKPOINT_DIR, run, candidate)
    }

    /// Writes `entry_file(dir, run, key)` whole and renames it into place, on disk (the
    /// rename too) before it returns.
    fn put_entry_file(&self, dir: &str, run: &str, key: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.entry_file(dir, run, key);
        let dir = self.path.join(dir);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        fs::create_dir_all(&dir)?;
        write_atomically(&dir, name, bytes)?;
        // The rename itself on disk.
        fs::File::open(&dir)?.sync_all()
    }

    /// The file of entry `key` of run `run` in the archive's folder `dir`: named by the
    /// SHA-256 of the pair, so any run id and key make a plain file name.
    fn entry_file(&self, dir: &str, run: &str, key: &str) -> PathBuf {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(run_entry_key(run, key.as_bytes()));
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.path.join(dir).join(format!("{name}.safetensors"))
    }

    fn remove_checkpoint_file(&self, run: &str, candidate: &str) -> Result<(), StoreError> {
        match fs::remove_file(self.checkpoint_path(run, candidate)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_error(&self.path, "remove a distillation checkpoint", &e))
            }
            _ => Ok(()),
        }
    }

    fn remove_sled_checkpoint(&self, run: &str, candidate: &str) -> Result<(), StoreError> {
        let key = run_entry_key(run, candidate.as_bytes());
        let had = self
            .run_checkpoints
            .remove(key)
            .map_err(|e| self.sled_error("remove a distillation checkpoint", e))?;
        if had.is_some() {
            self.flush()?;
        }
        Ok(())
    }

    /// Records the finished final distillation of candidate `candidate` in run `run`: its
    /// record and its weights, and removes its checkpoint, in one transaction, then flushes.
    pub fn put_distilled<D: Serialize + ?Sized>(
        &self,
        run: &str,
        candidate: &str,
        record: &D,
        weights: &[u8],
    ) -> Result<(), StoreError> {
        self.require_run(run)?;
        self.check_key("candidate", candidate)?;
        let key = IVec::from(run_entry_key(run, candidate.as_bytes()));
        let record = self.encode("a distillation record", record)?;
        let weights = IVec::from(weights);
        let trees = (
            &self.run_distilled,
            &self.run_weights,
            &self.run_checkpoints,
        );
        trees
            .transaction(|(distilled, weight_tree, checkpoints)| -> Tx<()> {
                distilled.insert(key.clone(), record.clone())?;
                weight_tree.insert(key.clone(), weights.clone())?;
                checkpoints.remove(key.clone())?;
                Ok(())
            })
            .map_err(|e| self.transaction_error("store a finished distillation", e))?;
        self.flush()?;
        // After the record: a kill in between leaves a checkpoint the record makes unused.
        self.remove_checkpoint_file(run, candidate)
    }

    /// The record of candidate `candidate`'s finished final distillation in run `run`.
    pub fn distilled<D: DeserializeOwned>(
        &self,
        run: &str,
        candidate: &str,
    ) -> Result<Option<D>, StoreError> {
        self.check_key("run", run)?;
        self.check_key("candidate", candidate)?;
        match self
            .run_distilled
            .get(run_entry_key(run, candidate.as_bytes()))
            .map_err(|e| self.sled_error("read a distillation record", e))?
        {
            None => Ok(None),
            Some(value) => self
                .decode(&value, || {
                    format!("distillation record of {candidate} in run {run}")
                })
                .map(Some),
        }
    }

    /// Records a finished ablation training `key` of run `run` (see `run_ablations`) and
    /// removes the checkpoint kept under the same key, in one transaction, then flushes.
    pub fn put_ablation<A: Serialize + ?Sized>(
        &self,
        run: &str,
        key: &str,
        record: &A,
    ) -> Result<(), StoreError> {
        self.require_run(run)?;
        self.check_key("ablation", key)?;
        let k = IVec::from(run_entry_key(run, key.as_bytes()));
        let record = self.encode("an ablation record", record)?;
        (&self.run_ablations, &self.run_checkpoints)
            .transaction(|(ablations, checkpoints)| -> Tx<()> {
                ablations.insert(k.clone(), record.clone())?;
                checkpoints.remove(k.clone())?;
                Ok(())
            })
            .map_err(|e| self.transaction_error("store a finished ablation", e))?;
        self.flush()?;
        self.remove_checkpoint_file(run, key)
    }

    /// The record of the finished ablation training `key` of run `run`.
    pub fn ablation<A: DeserializeOwned>(
        &self,
        run: &str,
        key: &str,
    ) -> Result<Option<A>, StoreError> {
        self.check_key("run", run)?;
        self.check_key("ablation", key)?;
        match self
            .run_ablations
            .get(run_entry_key(run, key.as_bytes()))
            .map_err(|e| self.sled_error("read an ablation record", e))?
        {
            None => Ok(None),
            Some(value) => self
                .decode(&value, || format!("ablation record {key} of run {run}"))
                .map(Some),
        }
    }

    /// Records a finished blockwise local distillation `key` of run `run` and its trained
    /// weights (safetensors bytes, read back by [`Archive::block_weights`]): the weights'
    /// file first, whole and renamed into place, then the record, flushed. A kill between
    /// leaves a file no record names, which the block's next training replaces.
    pub fn put_block<B: Serialize + ?Sized>(
        &self,
        run: &str,
        key: &str,
        record: &B,
        weights: &[u8],
    ) -> Result<(), StoreError> {
        self.require_run(run)?;
        self.check_key("block", key)?;
        let record = self.encode("a block record", record)?;
        self.put_entry_file(BLOCK_DIR, run, key, weights)
            .map_err(|e| io_error(&self.path, "store a trained block's weights", &e))?;
        self.run_blocks
            .insert(run_entry_key(run, key.as_bytes()), record)
            .map_err(|e| self.sled_error("store a trained block", e))?;
        self.flush()
    }

    /// The weights of the finished block `key` of run `run`; `None` if it has no record.
    pub fn block_weights(&self, run: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_key("run", run)?;
        self.check_key("block", key)?;
        let recorded = self
            .run_blocks
            .contains_key(run_entry_key(run, key.as_bytes()))
            .map_err(|e| self.sled_error("read a trained block", e))?;
        if !recorded {
            return Ok(None);
        }
        match fs::read(self.entry_file(BLOCK_DIR, run, key)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.damaged(format!(
                "run {run}'s block {key} has a record but its weights' file is missing"
            ))),
            Err(e) => Err(io_error(&self.path, "read a trained block's weights", &e)),
        }
    }

    /// Every finished blockwise local distillation of run `run`, by key.
    pub fn blocks<B: DeserializeOwned>(&self, run: &str) -> Result<Vec<(String, B)>, StoreError> {
        self.check_key("run", run)?;
        let mut out = Vec::new();
        for (key, record) in self.scan_run(&self.run_blocks, run, "list trained blocks")? {
            let key = String::from_utf8(key)
                .map_err(|_| self.damaged(format!("a block key of run {run} is not UTF-8")))?;
            let record = self.decode(&record, || format!("run {run}'s block {key:?}"))?;
            out.push((key, record));
        }
        Ok(out)
    }

    /// Writes everything stored so far to disk, then records in `seal.json` how many
    /// flushes the database has seen, so a log that later loses its tail is recognised as
    /// damaged instead of opening as an older archive. A read-only open has nothing to
    /// flush and writes no seal.
    pub fn flush(&self) -> Result<(), StoreError> {
        if self.snapshot.is_some() {
            return Ok(());
        }
        // A thread that panicked holding it left nothing half done that this flush relies on.
        let _one_at_a_time = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let flushes = self
            .meta
            .update_and_fetch(FLUSHES, |old| {
                let n = old.and_then(decode_u64).unwrap_or(0);
                Some((n + 1).to_be_bytes().to_vec())
            })
            .map_err(|e| self.sled_error("count a flush", e))?
            .as_deref()
            .and_then(decode_u64)
            .unwrap_or(0);
        self.db
            .flush()
            .map_err(|e| self.sled_error("flush to disk", e))?;
        let seal = serde_json::json!({ "flushes": flushes }).to_string();
        write_atomically(&self.path, SEAL_FILE, seal.as_bytes())
            .map_err(|e| io_error(&self.path, &format!("write {SEAL_FILE}"), &e))
    }

    fn open_or_create(dir: &Path, create: bool) -> Result<Archive, StoreError> {
        let (marker, locked) = match Archive::preflight(dir) {
            Err(StoreError::NotFound { .. }) if create => return Archive::create(dir),
            other => other?,
        };
        if locked {
            return Err(in_use(dir));
        }
        // sled rewrites what it opens, and "repairs" damage it does not report; so it first
        // runs on a copy, which must open and read through, before it touches the archive.
        {
            let copy = snapshot::take(dir).map_err(|e| io_error(dir, "copy it to check it", &e))?;
            Archive::start_checked(copy.path(), dir, &marker, true)?;
        }
        // The same bytes read through a moment ago: no second full read.
        let db = Archive::start_checked(dir, dir, &marker, false)?;
        Archive::finish_opening(dir, db, marker.schema_version as u32, true)
    }

    /// Everything about `dir` that can be checked without starting sled: an archive is
    /// there (`NotFound` for a missing or empty directory), its marker and sled's files are
    /// sound, and whether another process holds it (the second value). Reads only.
    fn preflight(dir: &Path) -> Result<(Marker, bool), StoreError> {
        match fs::metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    path: dir.to_path_buf(),
                    reason: "the directory does not exist".into(),
                });
            }
            Err(e) => return Err(io_error(dir, "read the directory", &e)),
            Ok(metadata) if !metadata.is_dir() => {
                return Err(StoreError::NotAnArchive {
                    path: dir.to_path_buf(),
                    reason: "it is not a directory".into(),
                })
            }
            Ok(_) => {}
        }
        let mut entries = entry_names(dir)?;
        // A creation killed before sled started leaves only its holder record.
        if entries == [holder::HOLDER_FILE] && live_other_holder(dir).is_none() {
            entries.clear();
        }
        if entries.is_empty() {
            return Err(StoreError::NotFound {
                path: dir.to_path_buf(),
                reason: "the directory is empty".into(),
            });
        }
        let has = |name: &str| entries.iter().any(|entry| entry == name);
        // In use first: a directory another process is creating an archive in has its
        // holder record, then sled's files, and no marker until the end; it must not be
        // reported as damaged.
        let locked = has("db") && is_locked(dir);
        let marker = read_marker(dir)?;
        let creator = marker.is_none().then(|| live_other_holder(dir)).flatten();
        let marker = match marker {
            Some(marker) => marker,
            None if locked || creator.is_some() => {
                return Err(StoreError::BeingCreated {
                    path: dir.to_path_buf(),
                    holder: creator,
                })
            }
            None if SLED_ENTRIES.iter().any(|name| has(name)) => {
                return Err(damaged(dir, format!("{MARKER_FILE} is missing")))
            }
            None => {
                return Err(StoreError::NotAnArchive {
                    path: dir.to_path_buf(),
                    reason: format!("it holds other files and no {MARKER_FILE}"),
                })
            }
        };
        if marker.schema_version > u64::from(SCHEMA_VERSION) {
            return Err(StoreError::NewerSchema {
                path: dir.to_path_buf(),
                found: marker.schema_version,
            });
        }
        sled_files::check(dir).map_err(|problem| match problem {
            sled_files::Problem::Damaged(detail) => damaged(dir, detail),
            sled_files::Problem::Unreadable { file, error } => {
                io_error(dir, &format!("read sled's {file} file"), &error)
            }
        })?;
        Ok((marker, locked))
    }

    /// Starts sled on `files` (the archive `dir` itself, or a copy of it), checks its schema
    /// and seal against `marker`, and with `read_through` reads every record of every tree, so
    /// damage sled finds anywhere is reported now; errors name `dir`.
    fn start_checked(
        files: &Path,
        dir: &Path,
        marker: &Marker,
        read_through: bool,
    ) -> Result<sled::Db, StoreError> {
        let db = sled::Config::new()
            .path(files)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| sled_error(dir, "open", e))?;
        if !db
            .tree_names()
            .iter()
            .any(|name| name.as_ref() == META_TREE.as_bytes())
        {
            return Err(damaged(dir, "its meta tree is missing".into()));
        }
        let meta = open_tree(&db, dir, META_TREE)?;
        let stored = meta
            .get("schema_version")
            .map_err(|e| sled_error(dir, "read the schema version", e))?
            .and_then(|bytes| serde_json::from_slice::<u64>(&bytes).ok())
            .ok_or_else(|| damaged(dir, "its schema version is missing or garbled".into()))?;
        if stored > u64::from(SCHEMA_VERSION) {
            return Err(StoreError::NewerSchema {
                path: dir.to_path_buf(),
                found: stored,
            });
        }
        if stored != marker.schema_version || stored == 0 {
            return Err(damaged(
                dir,
                format!(
                    "{MARKER_FILE} says schema {} but the database says {stored}",
                    marker.schema_version
                ),
            ));
        }
        // `stored` is at most SCHEMA_VERSION here. When a schema 2 exists, older archives
        // are migrated at this point.
        if let Some(sealed) = read_seal(files, dir)? {
            let flushes = meta
                .get(FLUSHES)
                .map_err(|e| sled_error(dir, "read the flush count", e))?
                .as_deref()
                .and_then(decode_u64)
                .unwrap_or(0);
            if flushes < sealed {
                return Err(damaged(
                    dir,
                    format!(
                        "its database holds {flushes} of the {sealed} flushes {SEAL_FILE} records: the log lost its end"
                    ),
                ));
            }
        }
        if read_through {
            for name in db.tree_names() {
                let tree = db
                    .open_tree(&name)
                    .map_err(|e| sled_error(dir, "open a tree", e))?;
                for entry in tree.iter() {
                    entry.map_err(|e| sled_error(dir, "read its records", e))?;
                }
            }
        }
        Ok(db)
    }

    /// Creates an archive in `dir`, which does not exist or is empty.
    fn create(dir: &Path) -> Result<Archive, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, "create the directory", &e))?;
        // First: from here on, a reader sees a directory being created, not a damaged one.
        Holder::current()
            .write(dir)
            .map_err(|e| io_error(dir, &format!("write {}", holder::HOLDER_FILE), &e))?;
        let db = start_sled(dir)?;
        let meta = open_tree(&db, dir, META_TREE)?;
        let created_by = format!("genas {}", env!("CARGO_PKG_VERSION"));
        let created_at = format_utc(Holder::current().since_unix_s);
        let records = [
            ("schema_version", serde_json::json!(SCHEMA_VERSION)),
            ("created_by", serde_json::json!(created_by)),
            ("created_at", serde_json::json!(created_at)),
        ];
        let mut batch = sled::Batch::default();
        for (name, value) in &records {
            batch.insert(*name, value.to_string().into_bytes());
        }
        meta.apply_batch(batch)
            .map_err(|e| sled_error(dir, "write the schema version", e))?;
        db.flush()
            .map_err(|e| sled_error(dir, "flush the new archive", e))?;
        let archive = Archive::finish_opening(dir, db, SCHEMA_VERSION, true)?;
        // Last: until the marker exists, the directory is not yet an archive.
        let marker = Marker {
            format: MARKER_FORMAT.into(),
            schema_version: u64::from(SCHEMA_VERSION),
            created_by,
        };
        let text = serde_json::to_vec_pretty(&marker)
            .map_err(|e| io_error(dir, &format!("encode {MARKER_FILE}"), &io::Error::other(e)))?;
        write_atomically(dir, MARKER_FILE, &text)
            .map_err(|e| io_error(dir, &format!("write {MARKER_FILE}"), &e))?;
        Ok(archive)
    }

    fn finish_opening(
        dir: &Path,
        db: sled::Db,
        schema_version: u32,
        write_holder: bool,
    ) -> Result<Archive, StoreError> {
        let holder = Holder::current();
        if write_holder {
            holder
                .write(dir)
                .map_err(|e| io_error(dir, &format!("write {}", holder::HOLDER_FILE), &e))?;
        }
        Ok(Archive {
            meta: open_tree(&db, dir, META_TREE)?,
            teacher_meta: open_tree(&db, dir, TEACHER_META_TREE)?,
            teacher_weights: open_tree(&db, dir, TEACHER_WEIGHTS_TREE)?,
            calibration: open_tree(&db, dir, CALIBRATION_TREE)?,
            // Created here if the archive predates them.
            runs: open_tree(&db, dir, RUNS_TREE)?,
            run_states: open_tree(&db, dir, RUN_STATES_TREE)?,
            run_candidates: open_tree(&db, dir, RUN_CANDIDATES_TREE)?,
            run_events: open_tree(&db, dir, RUN_EVENTS_TREE)?,
            run_event_counts: open_tree(&db, dir, RUN_EVENT_COUNTS_TREE)?,
            run_weights: open_tree(&db, dir, RUN_WEIGHTS_TREE)?,
            eval_cache: open_tree(&db, dir, EVAL_CACHE_TREE)?,
            run_checkpoints: open_tree(&db, dir, RUN_CHECKPOINTS_TREE)?,
            run_distilled: open_tree(&db, dir, RUN_DISTILLED_TREE)?,
            run_ablations: open_tree(&db, dir, RUN_ABLATIONS_TREE)?,
            run_blocks: open_tree(&db, dir, RUN_BLOCKS_TREE)?,
            db,
            path: dir.to_path_buf(),
            schema_version,
            holder,
            snapshot: None,
            flushing: std::sync::Mutex::new(()),
        })
    }

    fn check_key(&self, kind: &'static str, key: &str) -> Result<(), StoreError> {
        if key.is_empty() || key.chars().any(char::is_control) {
            return Err(StoreError::InvalidKey {
                path: self.path.clone(),
                kind,
                key: key.to_string(),
            });
        }
        Ok(())
    }

    /// A record as the archive stores it: its JSON text, written from its `serde_json::Value`
    /// (maps in key order), so a record stores the same bytes however the caller built it.
    fn encode<T: Serialize + ?Sized>(&self, what: &str, record: &T) -> Result<IVec, StoreError> {
        // serde_json writes NaN and the infinities as `null`: they are refused first.
        let unstorable = |e: String| StoreError::Unstorable {
            path: self.path.clone(),
            what: what.to_string(),
            reason: e,
        };
        let tree = serde_value::to_value(record).map_err(|e| unstorable(e.to_string()))?;
        if let Some((at, value)) = non_finite(&tree, "") {
            return Err(StoreError::NonFinite {
                path: self.path.clone(),
                what: what.to_string(),
                at,
                value,
            });
        }
        let value = serde_json::to_value(record).map_err(|e| StoreError::Unstorable {
            path: self.path.clone(),
            what: what.to_string(),
            reason: e.to_string(),
        })?;
        Ok(IVec::from(value.to_string().into_bytes()))
    }

    /// A stored record read as `T`: damaged if it is not JSON, unreadable if it is JSON of
    /// another shape.
    fn decode<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
        what: impl Fn() -> String,
    ) -> Result<T, StoreError> {
        let value = self.decode_json(bytes, &what)?;
        // The field that did not read is named, and a `null` where a number belongs is said
        // to be what it is: a non-finite figure an earlier genas wrote as JSON `null`.
        serde_path_to_error::deserialize(value).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner().to_string();
            if inner.starts_with("invalid type: null, expected f") {
                StoreError::NullFigure {
                    path: self.path.clone(),
                    what: what(),
                    at,
                }
            } else {
                StoreError::Unreadable {
                    path: self.path.clone(),
                    what: what(),
                    reason: format!("{at}: {inner}"),
                }
            }
        })
    }

    fn decode_json(
        &self,
        bytes: &[u8],
        what: impl Fn() -> String,
    ) -> Result<serde_json::Value, StoreError> {
        serde_json::from_slice(bytes).map_err(|_| self.damaged(format!("{} is not JSON", what())))
    }

    fn damaged(&self, detail: String) -> StoreError {
        damaged(&self.path, detail)
    }

    fn sled_error(&self, action: &str, error: sled::Error) -> StoreError {
        sled_error(&self.path, action, error)
    }

    fn transaction_error(&self, action: &str, error: TransactionError<StoreError>) -> StoreError {
        match error {
            TransactionError::Storage(error) => self.sled_error(action, error),
            TransactionError::Abort(error) => error,
        }
    }

    /// The number of run `id`, which must be a valid key; `UnknownRun` if `id` is not of the
    /// form the archive gives runs (which no stored run can have).
    fn run_number(&self, id: &str) -> Result<u64, StoreError> {
        self.check_key("run", id)?;
        parse_run_id(id).ok_or_else(|| self.unknown_run(id))
    }

    fn unknown_run(&self, id: &str) -> StoreError {
        StoreError::UnknownRun {
            path: self.path.clone(),
            run: id.to_string(),
        }
    }

    /// Fails with `UnknownRun` unless run `id` exists.
    fn require_run(&self, id: &str) -> Result<(), StoreError> {
        let number = self.run_number(id)?;
        match self.runs.get(number.to_be_bytes()) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(self.unknown_run(id)),
            Err(e) => Err(self.sled_error("read a run", e)),
        }
    }

    /// Everything stored under `run`'s prefix in `tree`, with the rest of each key.
    fn scan_run(
        &self,
        tree: &sled::Tree,
        run: &str,
        action: &str,
    ) -> Result<Vec<(Vec<u8>, IVec)>, StoreError> {
        let prefix = run_prefix(run);
        let mut entries = Vec::new();
        for entry in tree.scan_prefix(&prefix) {
            let (key, value) = entry.map_err(|e| self.sled_error(action, e))?;
            entries.push((key[prefix.len()..].to_vec(), value));
        }
        Ok(entries)
    }
}

fn calibration_prefix(key: &str) -> Vec<u8> {
    let mut prefix = key.as_bytes().to_vec();
    prefix.push(0);
    prefix
}

/// The prefix of run `run`'s entries in the per-run trees. Run ids hold no control
/// characters, so one run's entries never run into another's (`r1` and `r10`).
fn run_prefix(run: &str) -> Vec<u8> {
    let mut prefix = run.as_bytes().to_vec();
    prefix.push(0);
    prefix
}

fn run_entry_key(run: &str, rest: &[u8]) -> Vec<u8> {
    let mut key = run_prefix(run);
    key.extend_from_slice(rest);
    key
}

fn run_id(number: u64) -> String {
    format!("r{number}")
}

/// The first number in `v` that is not finite: where (from `at`, as `a.b[2]`) and what it is.
fn non_finite(v: &serde_value::Value, at: &str) -> Option<(String, String)> {
    use serde_value::Value as V;
    let here = || {
        if at.is_empty() {
            "the record".to_string()
        } else {
            at.to_string()
        }
    };
    let bad = |x: f64| (!x.is_finite()).then(|| (here(), format!("{x}")));
    match v {
        V::F32(x) => bad(f64::from(*x)),
        V::F64(x) => bad(*x),
        V::Option(Some(x)) | V::Newtype(x) => non_finite(x, at),
        V::Seq(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| non_finite(x, &format!("{at}[{i}]"))),
        V::Map(entries) => entries.iter().find_map(|(k, x)| {
            let key = match k {
                V::String(k) => k.clone(),
                other => format!("{other:?}"),
            };
            let field = if at.is_empty() {
                key
            } else {
                format!("{at}.{key}")
            };
            non_finite(k, &format!("{field} (its key)")).or_else(|| non_finite(x, &field))
        }),
        _ => None,
    }
}

/// The number of a run id of the form `run_id` writes (`r` and a decimal number without
/// leading zeros, at least 1); `None` for anything else.
/// The number of run id `id` (`r1` → 1), or `None` for what is not a run id.
pub fn parse_run_id(id: &str) -> Option<u64> {
    let digits = id.strip_prefix('r')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}

/// The names in `dir`, less the temporaries of [`write_atomically`] (`.NAME.PID.tmp`): a
/// directory holding only one of those is one whose first file is being written.
fn entry_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let listing = fs::read_dir(dir).map_err(|e| io_error(dir, "list the directory", &e))?;
    let mut names = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| io_error(dir, "list the directory", &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with('.') && name.ends_with(".tmp")) {
            names.push(name);
        }
    }
    Ok(names)
}

/// The holder recorded in `dir` when it is another process that may still be running.
fn live_other_holder(dir: &Path) -> Option<Holder> {
    Holder::read(dir)
        .filter(Holder::may_be_alive)
        .filter(|h| h.pid != std::process::id())
}

/// The flush count `seal.json` in `files` records; `None` when there is none (an archive
/// never flushed, or written before seals existed). Errors name `dir`.
fn read_seal(files: &Path, dir: &Path) -> Result<Option<u64>, StoreError> {
    let text = match fs::read(files.join(SEAL_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(dir, &format!("read {SEAL_FILE}"), &e)),
    };
    serde_json::from_slice::<Value>(&text)
        .ok()
        .and_then(|v| v["flushes"].as_u64())
        .map(Some)
        .ok_or_else(|| damaged(dir, format!("{SEAL_FILE} is garbled")))
}

fn read_marker(dir: &Path) -> Result<Option<Marker>, StoreError> {
    let text = match fs::read(dir.join(MARKER_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(dir, &format!("read {MARKER_FILE}"), &e)),
    };
    let marker: Marker = serde_json::from_slice(&text)
        .map_err(|e| damaged(dir, format!("{MARKER_FILE} is garbled: {e}")))?;
    if marker.format != MARKER_FORMAT {
        return Err(damaged(
            dir,
            format!("{MARKER_FILE} names format {:?}", marker.format),
        ));
    }
    Ok(Some(marker))
}

/// How long an open waits for a lock that no live process claims (see `refuse_if_locked`).
const UNCLAIMED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether some process (this one included) holds sled's lock on `db`, found without
/// starting sled. A lock whose holder record is absent, stale or this process's own is
/// waited for a moment first: sled releases it from a background thread after the last
/// handle drops, so an archive closed and reopened in one process can find it still held.
fn is_locked(dir: &Path) -> bool {
    let Ok(file) = fs::File::open(dir.join("db")) else {
        // Unreadable: the checks after this one say why.
        return false;
    };
    let start = std::time::Instant::now();
    loop {
        match file.try_lock() {
            // Dropping `file` releases the probe's lock.
            Ok(()) => return false,
            Err(fs::TryLockError::WouldBlock) => {
                let claimed = Holder::read(dir)
                    .filter(Holder::may_be_alive)
                    .is_some_and(|h| h.pid != std::process::id());
                if claimed || start.elapsed() > UNCLAIMED_LOCK_WAIT {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            // Locks unsupported here: sled's own attempt decides.
            Err(fs::TryLockError::Error(_)) => return false,
        }
    }
}

fn in_use(dir: &Path) -> StoreError {
    StoreError::InUse {
        path: dir.to_path_buf(),
        holder: Holder::read(dir).filter(Holder::may_be_alive),
    }
}

fn start_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    sled::Config::new()
        .path(dir)
        .open()
        .map_err(|e| sled_error(dir, "open", e))
}

fn open_tree(db: &sled::Db, dir: &Path, name: &str) -> Result<sled::Tree, StoreError> {
    db.open_tree(name)
        .map_err(|e| sled_error(dir, &format!("open its {name} tree"), e))
}

fn damaged(dir: &Path, detail: String) -> StoreError {
    StoreError::Damaged {
        path: dir.to_path_buf(),
        detail: one_line(&detail),
    }
}

fn io_error(dir: &Path, action: &str, error: &io::Error) -> StoreError {
    StoreError::Io {
        path: dir.to_path_buf(),
        action: one_line(action),
        reason: one_line(&error.to_string()),
    }
}

fn sled_error(dir: &Path, action: &str, error: sled::Error) -> StoreError {
    match error {
        // sled 0.34 reports its lock as an `Other` I/O error with this text.
        sled::Error::Io(e) if e.to_string().starts_with("could not acquire lock") => in_use(dir),
        sled::Error::Io(e) => io_error(dir, action, &e),
        sled::Error::Corruption { at, .. } => damaged(
            dir,
            match at {
                Some(at) => format!("sled found corrupt data at {at:?}"),
                None => "sled found corrupt data".into(),
            },
        ),
        sled::Error::Unsupported(why) => damaged(dir, format!("sled cannot read it: {why}")),
        other => StoreError::Database {
            path: dir.to_path_buf(),
            action: one_line(action),
            detail: one_line(&other.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback for a lock taken between the probe and sled's own attempt relies on
    /// sled's wording; this pins it.
    #[test]
    fn sled_lock_failure_reads_as_in_use() {
        let root = tempfile::tempdir().expect("temporary directory");
        let _held = sled::open(root.path()).expect("sled opens");
        let error = start_sled(root.path()).expect_err("locked");
        assert!(matches!(error, StoreError::InUse { .. }), "{error}");
    }
}
