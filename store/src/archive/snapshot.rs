//! A private copy of an archive's sled files, taken while nothing writes them.
//!
//! sled cannot open a database read-only and rewrites what it opens, so whoever must not
//! change an archive (a read-only command, or the check before a writable open) runs sled on
//! a copy. The copy is taken between two writes: every file's size and modification time are
//! read before and after copying, and the copy is retried until they did not move. Such a
//! copy is what a kill at that instant would leave on disk, which sled recovers to the last
//! flushed commit; the archive's commits flush before they return, so a copy of an archive
//! that a search is writing is at most one commit old.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Attempts before giving up on an archive that is written to without pause.
const ATTEMPTS: usize = 200;

/// Copies `dir`'s sled files (`conf`, `db`, `blobs/`, `snap.*`) and `seal.json` into a new temporary
/// directory, retrying until no file changed during the copy.
pub(super) fn take(dir: &Path) -> io::Result<tempfile::TempDir> {
    for attempt in 0..ATTEMPTS {
        let before = listing(dir)?;
        let copy = tempfile::Builder::new()
            .prefix("genas-archive-view-")
            .tempdir()?;
        let copied = before
            .iter()
            .try_for_each(|(rel, _, _)| copy_one(&dir.join(rel), &copy.path().join(rel)));
        match copied {
            Ok(()) if listing(dir)? == before => return Ok(copy),
            // A file vanished mid-copy (sled removes old snapshots): try again.
            Ok(()) | Err(_) if attempt + 1 < ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(10 + 5 * attempt as u64));
            }
            Ok(()) => break,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "its files kept changing while they were copied",
    ))
}

/// sled's files under `dir`, relative, with size and modification time, in name order.
fn listing(dir: &Path) -> io::Result<Vec<(PathBuf, u64, SystemTime)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_sled =
            name == "conf" || name == "db" || name == "seal.json" || name.starts_with("snap.");
        if name == "blobs" {
            for blob in fs::read_dir(entry.path())? {
                let blob = blob?;
                let m = blob.metadata()?;
                if m.is_file() {
                    out.push((
                        Path::new("blobs").join(blob.file_name()),
                        m.len(),
                        m.modified()?,
                    ));
                }
            }
            out.push((PathBuf::from("blobs"), 0, SystemTime::UNIX_EPOCH));
        } else if is_sled {
            let m = entry.metadata()?;
            out.push((PathBuf::from(&*name), m.len(), m.modified()?));
        }
    }
    out.sort();
    Ok(out)
}

fn copy_one(from: &Path, to: &Path) -> io::Result<()> {
    if from.is_dir() {
        return fs::create_dir_all(to);
    }
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to).map(|_| ())
}
