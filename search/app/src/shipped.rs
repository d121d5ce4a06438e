//! Teachers genas trained, written to a file to travel with an experiment (`[teacher]
//! checkpoint`, `genas teacher export`): the weights as the archive stores them, with the
//! teacher's record in the header. A file is taken only for the teacher it was trained as:
//! the same key (data fingerprint, architecture, training budget and seed), the same
//! architecture, finite figures, and every weight of the architecture's shape.
//!
//! It knows the checkpoint format and the teacher's record; it does not know archives or how
//! an experiment is loaded.

use anyhow::{bail, Context, Result};
use genas_engine::{checkpoint, Cpu, Model};
use genas_scoring::teacher::TeacherRecord;
use genas_space::Architecture;
use std::path::{Path, PathBuf};

/// The header entry holding the teacher's record (JSON).
const RECORD: &str = "genas.teacher_record";
/// The header entry holding the teacher's key, as the archive's stored weights have it.
const KEY: &str = "genas.teacher_key";

/// A checked teacher file: where it is and the record it holds.
#[derive(Clone, Debug)]
pub struct ShippedTeacher {
    pub path: PathBuf,
    pub record: TeacherRecord,
}

/// The bytes a file of `arch`'s teacher may hold: its float32 weights and a header.
fn most_bytes(arch: &Architecture) -> u64 {
    4 * genas_space::Cost::of(arch).params + (1 << 20)
}

/// Reads the teacher file at `path` (at most its architecture's weights and a header) and
/// checks it is the teacher `arch` trained as `key`: its record and weights, or why not in
/// one line.
pub fn read(path: &Path, arch: &Architecture, key: &str) -> Result<(ShippedTeacher, Vec<u8>)> {
    let bytes = genas_space::files::read_bounded(path, most_bytes(arch))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let meta = checkpoint::metadata(&bytes, &path.display().to_string())
        .map_err(|e| anyhow::anyhow!("{e}: not a teacher file"))?;
    let (Some(held), Some(record)) = (meta.get(KEY), meta.get(RECORD)) else {
        bail!(
            "{}: not a teacher file of genas (no {KEY} or {RECORD} in its header; genas teacher export writes one)",
            path.display()
        );
    };
    if held != key {
        bail!(
            "{} holds teacher {held}, trained for another [teacher] config, seed or corpus than this experiment's ({key}): remove [teacher] checkpoint to train this one, or write it again with genas teacher export",
            path.display()
        );
    }
    let record: TeacherRecord = serde_json::from_str(record)
        .with_context(|| format!("{}: its teacher record is unreadable", path.display()))?;
    if record.key != key || record.architecture != *arch {
        bail!(
            "{}: its record is of another teacher than its key says",
            path.display()
        );
    }
    if !(record.val_ce.is_finite() && record.val_bits.is_finite()) {
        bail!(
            "{}: its validation loss is not a finite number",
            path.display()
        );
    }
    let mut model = Model::new(arch, Cpu::<f32>::new(1), record.seed);
    checkpoint::from_bytes(&mut model, &bytes, &path.display().to_string())?;
    let stored = checkpoint::to_bytes(&model, &[(KEY, key.to_string())])
        .map_err(|e| anyhow::anyhow!("teacher {key}: {e}"))?;
    Ok((
        ShippedTeacher {
            path: path.to_path_buf(),
            record,
        },
        stored,
    ))
}

/// The teacher file of `model` (trained as `record` says): its weights with `record` in the
/// header, written whole or not at all.
pub fn write(model: &Model<Cpu<f32>>, record: &TeacherRecord, path: &Path) -> Result<()> {
    let bytes = checkpoint::to_bytes(
        model,
        &[
            (KEY, record.key.clone()),
            (RECORD, serde_json::to_string(record)?),
        ],
    )
    .map_err(|e| anyhow::anyhow!("teacher {}: {e}", record.key))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write {}: {e}", path.display())
    })
}
