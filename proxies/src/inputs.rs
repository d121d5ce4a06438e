//! What evaluation jobs read, as files that another process or another machine can read, each
//! a safetensors file named by the SHA-256 of its bytes and written once per run:
//! - the teacher's side of every brief distillation (`TeacherTargets`): the batch schedule,
//!   its soft targets, the validation batches and the teacher's validation distribution;
//! - for final distillations, the teacher's weights (a genas checkpoint, its architecture in
//!   the header) and the data set's token streams.
//!
//! A job refers to a file by its name, so a worker reads exactly what the coordinator wrote,
//! and a file that changed underneath is refused rather than trained on.
//!
//! It knows nothing of jobs, executors or where the directory is.

use crate::data::{Batch, Dataset};
use crate::distill::{Held, SoftTargets, Step, StepSink, Steps, TeacherTargets};
use crate::tokens::release;
use genas_engine::{checkpoint, Backend, Model};
use genas_space::{Architecture, DataKind};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Metadata key of the scalars and shapes.
const META: &str = "genas.targets";

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta<P> {
    temperature: f64,
    vocab: usize,
    teacher_val_ce: f64,
    seconds: f64,
    /// (b, t) of each schedule batch, then of each validation batch.
    schedule: Vec<(usize, usize)>,
    val: Vec<(usize, usize)>,
    /// k of each top-k target (0: dense), schedule then validation.
    soft_k: Vec<usize>,
    val_k: Vec<usize>,
    /// The shards holding the schedule's steps, in order.
    #[serde(default)]
    shards: Vec<ShardRef>,
    /// The pruned teacher students start from (`init = "teacher"`); its weights are the
    /// `parent.NAME` tensors.
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<P>,
}

/// A shard of the schedule: steps `first..first + steps` in the file named `name` (the
/// content name of its bytes) beside the targets file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardRef {
    pub name: String,
    pub first: usize,
    pub steps: usize,
}

/// Metadata key of a shard.
const SHARD_META: &str = "genas.shard";

#[derive(serde::Serialize, serde::Deserialize)]
struct ShardMeta {
    first: usize,
    vocab: usize,
    /// (b, t) and k of each of its steps.
    schedule: Vec<(usize, usize)>,
    soft_k: Vec<usize>,
}

/// Bytes of batches and soft targets a shard holds, at most (and at least one step).
pub const SHARD_BYTES: usize = 32 << 20;

fn u32_bytes(x: &[u32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn k_of(s: &SoftTargets) -> usize {
    match s {
        SoftTargets::Dense(_) => 0,
        SoftTargets::TopK { k, .. } => *k,
    }
}

/// A content-addressed input that cannot be written, read or decoded: one line naming the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputsError(pub String);

impl From<String> for InputsError {
    fn from(why: String) -> InputsError {
        InputsError(why)
    }
}

impl From<&str> for InputsError {
    fn from(why: &str) -> InputsError {
        InputsError(why.to_string())
    }
}

impl From<crate::inherit::InheritError> for InputsError {
    fn from(e: crate::inherit::InheritError) -> InputsError {
        InputsError(e.0)
    }
}

impl From<InputsError> for String {
    fn from(e: InputsError) -> String {
        e.0
    }
}

type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// The tensors of batch `prefix.i`: its inputs, targets and soft targets.
fn step_tensors(prefix: &str, i: usize, b: &Batch, s: &SoftTargets, out: &mut Vec<Tensor>) {
    let n = b.b * b.t;
    out.push((
        format!("{prefix}.{i}.inputs"),
        Dtype::U32,
        vec![n],
        u32_bytes(&b.inputs),
    ));
    out.push((
        format!("{prefix}.{i}.targets"),
        Dtype::U32,
        vec![n],
        u32_bytes(&b.targets),
    ));
    match s {
        SoftTargets::Dense(p) => out.push((
            format!("{prefix}.{i}.probs"),
            Dtype::F32,
            vec![p.len()],
            f32_bytes(p),
        )),
        SoftTargets::TopK { index, prob, .. } => {
            out.push((
                format!("{prefix}.{i}.index"),
                Dtype::U32,
                vec![index.len()],
                u32_bytes(index),
            ));
            out.push((
                format!("{prefix}.{i}.probs"),
                Dtype::F32,
                vec![prob.len()],
                f32_bytes(prob),
            ));
        }
    }
}

fn serialize(tensors: &[Tensor], key: &str, meta: String) -> Result<Vec<u8>, InputsError> {
    let views = tensors
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| format!("{n}: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    safetensors::serialize(views, Some(HashMap::from([(key.to_string(), meta)])))
        .map_err(|e| InputsError(e.to_string()))
}

/// The targets file of `t` whose schedule is in `shards`: the scalars, the shards' names
/// (so its own content name covers theirs), the validation set and the parent.
fn encode_manifest(t: &TeacherTargets, shards: &[ShardRef]) -> Result<Vec<u8>, InputsError> {
    // Shapes only: no step is read.
    let shapes: Vec<(usize, usize, usize)> =
        (0..t.schedule.len()).map(|i| t.schedule.shape(i)).collect();
    let meta = Meta {
        temperature: t.temperature,
        vocab: t.vocab,
        teacher_val_ce: t.teacher_val_ce,
        seconds: t.seconds,
        schedule: shapes.iter().map(|&(b, t, _)| (b, t)).collect(),
        val: t.val.iter().map(|b| (b.b, b.t)).collect(),
        soft_k: shapes.iter().map(|&(_, _, k)| k).collect(),
        val_k: t.val_probs.iter().map(k_of).collect(),
        shards: shards.to_vec(),
        parent: t.parent.as_ref(),
    };
    let mut tensors: Vec<Tensor> = Vec::new();
    for (i, (b, s)) in t.val.iter().zip(&t.val_probs).enumerate() {
        step_tensors("val", i, b, s, &mut tensors);
    }
    if let Some(p) = &t.parent {
        for (name, w) in p.weights() {
            tensors.push((
                format!("parent.{name}"),
                Dtype::F32,
                vec![w.len()],
                f32_bytes(w),
            ));
        }
    }
    let meta = serde_json::to_string(&meta).map_err(|e| e.to_string())?;
    serialize(&tensors, META, meta)
}

/// Writes the schedule's steps as shards into a directory as they are computed
/// (`TeacherTargets::compute_into`): a shard of whole steps is written (content-addressed,
/// atomically) once it holds [`SHARD_BYTES`], and let go.
pub struct ShardWriter {
    dir: PathBuf,
    vocab: usize,
    pending: Held,
    bytes: usize,
    first: usize,
    shards: Vec<ShardRef>,
}

impl ShardWriter {
    pub fn new(dir: &Path, vocab: usize) -> ShardWriter {
        ShardWriter {
            dir: dir.to_path_buf(),
            vocab,
            pending: Held::default(),
            bytes: 0,
            first: 0,
            shards: Vec::new(),
        }
    }

    fn flush(&mut self) -> Result<(), InputsError> {
        let n = self.pending.batches.len();
        if n == 0 {
            return Ok(());
        }
        let meta = ShardMeta {
            first: self.first,
            vocab: self.vocab,
            schedule: self.pending.batches.iter().map(|b| (b.b, b.t)).collect(),
            soft_k: self.pending.soft.iter().map(k_of).collect(),
        };
        let mut tensors = Vec::new();
        for (j, (b, s)) in self
            .pending
            .batches
            .iter()
            .zip(&self.pending.soft)
            .enumerate()
        {
            step_tensors("schedule", self.first + j, b, s, &mut tensors);
        }
        self.pending = Held::default();
        let meta = serde_json::to_string(&meta).map_err(|e| e.to_string())?;
        let bytes = serialize(&tensors, SHARD_META, meta)?;
        drop(tensors);
        let name = store_bytes(&self.dir, &bytes)?;
        self.shards.push(ShardRef {
            name,
            first: self.first,
            steps: n,
        });
        self.first += n;
        self.bytes = 0;
        Ok(())
    }
}

impl StepSink for ShardWriter {
    fn put(&mut self, batch: Batch, soft: SoftTargets) -> Result<(), String> {
        self.bytes += soft.bytes() + 8 * batch.inputs.len();
        self.pending.batches.push(batch);
        self.pending.soft.push(soft);
        if self.bytes >= SHARD_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<Box<dyn Steps>, String> {
        self.flush()?;
        let shards = Shards::open(&self.dir, &self.shards, self.vocab, 0)?;
        Ok(Box::new(shards))
    }
}

/// Where one step's tensors are in its shard's mapping: byte ranges.
#[derive(Clone, Debug)]
struct StepAt {
    shard: usize,
    b: usize,
    t: usize,
    k: usize,
    inputs: std::ops::Range<usize>,
    targets: std::ops::Range<usize>,
    probs: std::ops::Range<usize>,
    index: Option<std::ops::Range<usize>>,
}

/// The schedule's steps read from mapped shard files, a step at a time: every shard's
/// header is checked when they are opened, and its bytes against its name before any of its
/// steps is read (for the shards of the steps a job trains), so a changed shard is refused.
pub struct Shards {
    dir: PathBuf,
    refs: Vec<ShardRef>,
    maps: Vec<memmap2::Mmap>,
    steps: Vec<StepAt>,
}

impl Shards {
    /// The shards `refs` of `dir`; those holding the first `verify` steps are hashed
    /// against their names now (the rest were hashed as they were written here, or are never
    /// read: `len` counts only checked steps when `verify` is below the schedule).
    pub fn open(
        dir: &Path,
        refs: &[ShardRef],
        vocab: usize,
        verify: usize,
    ) -> Result<Shards, InputsError> {
        let mut maps = Vec::with_capacity(refs.len());
        let mut steps = Vec::new();
        for (si, r) in refs.iter().enumerate() {
            let path = path_in(dir, &r.name);
            let what = path.display().to_string();
            if r.first != steps.len() {
                return Err(format!("{what}: its steps do not follow the shard before").into());
            }
            let file = std::fs::File::open(&path).map_err(|e| format!("{what}: {e}"))?;
            // SAFETY: shards are written once through a temporary file and a rename, and never
            // changed in place; a changed one is refused by its hash below.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("{what}: {e}"))?;
            if r.first < verify {
                let found = hash_released(&map);
                if found != r.name {
                    return Err(format!(
                        "{what}: its content changed (hash {found}); it is not the shard the job refers to"
                    )
                    .into());
                }
            }
            let st =
                SafeTensors::deserialize(&map).map_err(|e| format!("{what}: not a shard ({e})"))?;
            let (_, header) =
                SafeTensors::read_metadata(&map).map_err(|e| format!("{what}: {e}"))?;
            let meta: ShardMeta = header
                .metadata()
                .as_ref()
                .and_then(|m| m.get(SHARD_META))
                .and_then(|s| serde_json::from_str(s).ok())
                .ok_or_else(|| format!("{what}: not a shard (no genas.shard metadata)"))?;
            if meta.first != r.first
                || meta.schedule.len() != r.steps
                || meta.soft_k.len() != r.steps
                || meta.vocab != vocab
            {
                return Err(
                    format!("{what}: its steps are not those the targets file names").into(),
                );
            }
            let base = map.as_ptr() as usize;
            let range =
                |name: &str, dtype: Dtype, len: usize| -> Result<std::ops::Range<usize>, String> {
                    let t = st
                        .tensor(name)
                        .map_err(|_| format!("{what}: missing {name}"))?;
                    if t.dtype() != dtype || t.shape() != [len] {
                        return Err(format!("{what}: {name} has the wrong type or length"));
                    }
                    let start = t.data().as_ptr() as usize - base;
                    Ok(start..start + t.data().len())
                };
            for (j, (&(b, t), &k)) in meta.schedule.iter().zip(&meta.soft_k).enumerate() {
                let i = r.first + j;
                let n = b
                    .checked_mul(t)
                    .ok_or_else(|| format!("{what}: step {i}'s shape overflows"))?;
                let per_row = if k == 0 { vocab } else { k };
                let len = n
                    .checked_mul(per_row)
                    .ok_or_else(|| format!("{what}: step {i}'s targets overflow"))?;
                let p = format!("schedule.{i}");
                steps.push(StepAt {
                    shard: si,
                    b,
                    t,
                    k,
                    inputs: range(&format!("{p}.inputs"), Dtype::U32, n)?,
                    targets: range(&format!("{p}.targets"), Dtype::U32, n)?,
                    probs: range(&format!("{p}.probs"), Dtype::F32, len)?,
                    index: if k == 0 {
                        None
                    } else {
                        Some(range(&format!("{p}.index"), Dtype::U32, len)?)
                    },
                });
            }
            maps.push(map);
        }
        // Only checked steps are offered when the check stopped short of the schedule.
        if verify > 0 {
            let checked = refs
                .iter()
                .filter(|r| r.first < verify)
                .map(|r| r.first + r.steps)
                .max()
                .unwrap_or(0);
            steps.truncate(checked);
        }
        Ok(Shards {
            dir: dir.to_path_buf(),
            refs: refs.to_vec(),
            maps,
            steps,
        })
    }

    /// The shards and the directory they are in.
    pub fn refs(&self) -> (&Path, &[ShardRef]) {
        (&self.dir, &self.refs)
    }
}

/// 32 hex digits of the SHA-256 of a mapping, its pages let go as they are read.
fn hash_released(map: &memmap2::Mmap) -> String {
    let mut h = Sha256::new();
    let block = 16 << 20;
    let mut at = 0;
    while at < map.len() {
        let end = (at + block).min(map.len());
        h.update(&map[at..end]);
        release(map, at..end);
        at = end;
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn le_u32(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl Steps for Shards {
    fn len(&self) -> usize {
        self.steps.len()
    }

    fn step(&self, i: usize) -> Step<'_> {
        let batch = self.batch(i);
        let at = &self.steps[i];
        let map = &self.maps[at.shard];
        let prob = le_f32(&map[at.probs.clone()]);
        let soft = match &at.index {
            None => SoftTargets::Dense(prob),
            Some(ix) => SoftTargets::TopK {
                k: at.k,
                index: le_u32(&map[ix.clone()]),
                prob,
            },
        };
        for r in std::iter::once(&at.probs).chain(at.index.as_ref()) {
            release(map, r.clone());
        }
        Step {
            batch,
            soft: std::borrow::Cow::Owned(soft),
        }
    }

    fn batch(&self, i: usize) -> std::borrow::Cow<'_, Batch> {
        let at = &self.steps[i];
        let map = &self.maps[at.shard];
        let batch = Batch {
            b: at.b,
            t: at.t,
            inputs: le_u32(&map[at.inputs.clone()]),
            targets: le_u32(&map[at.targets.clone()]),
        };
        for r in [&at.inputs, &at.targets] {
            release(map, r.clone());
        }
        std::borrow::Cow::Owned(batch)
    }

    fn shape(&self, i: usize) -> (usize, usize, usize) {
        let at = &self.steps[i];
        (at.b, at.t, at.k)
    }

    fn held_bytes(&self) -> usize {
        0
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Reads a targets file's bytes: the scalars, the validation set and parent, and the
/// schedule's shards from `dir`, those of the first `verify` steps checked against their
/// names (all of them: `usize::MAX`).
pub fn decode(bytes: &[u8], dir: &Path, verify: usize) -> Result<TeacherTargets, InputsError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a targets file ({e})"))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let meta: Meta<crate::inherit::Parent> = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META))
        .ok_or("not a targets file (no genas.targets metadata)")
        .and_then(|s| serde_json::from_str(s).map_err(|_| "unreadable targets metadata"))?;
    let u32s = |name: &str, len: usize| -> Result<Vec<u32>, String> {
        let t = st.tensor(name).map_err(|_| format!("missing {name}"))?;
        if t.dtype() != Dtype::U32 || t.shape() != [len] {
            return Err(format!("{name} has the wrong type or length"));
        }
        Ok(le_u32(t.data()))
    };
    let f32s = |name: &str, len: usize| -> Result<Vec<f32>, String> {
        let t = st.tensor(name).map_err(|_| format!("missing {name}"))?;
        if t.dtype() != Dtype::F32 || t.shape() != [len] {
            return Err(format!("{name} has the wrong type or length"));
        }
        Ok(le_f32(t.data()))
    };
    let v = meta.vocab;
    if meta.val.len() != meta.val_k.len()
        || meta.schedule.len() != meta.soft_k.len()
        || meta.shards.iter().map(|s| s.steps).sum::<usize>() != meta.schedule.len()
    {
        return Err("targets metadata disagrees with itself".into());
    }
    let mut val = Vec::with_capacity(meta.val.len());
    let mut val_probs = Vec::with_capacity(meta.val.len());
    for (i, (&(b, t), &k)) in meta.val.iter().zip(&meta.val_k).enumerate() {
        let n = b
            .checked_mul(t)
            .ok_or_else(|| format!("val.{i}: batch shape overflows"))?;
        val.push(Batch {
            b,
            t,
            inputs: u32s(&format!("val.{i}.inputs"), n)?,
            targets: u32s(&format!("val.{i}.targets"), n)?,
        });
        let per_row = if k == 0 { v } else { k };
        let len = n
            .checked_mul(per_row)
            .ok_or_else(|| format!("val.{i}: target shape overflows"))?;
        let probs = f32s(&format!("val.{i}.probs"), len)?;
        val_probs.push(if k == 0 {
            SoftTargets::Dense(probs)
        } else {
            SoftTargets::TopK {
                k,
                index: u32s(&format!("val.{i}.index"), len)?,
                prob: probs,
            }
        });
    }
    let schedule = Shards::open(dir, &meta.shards, v, verify)?;
    let parent = match meta.parent {
        None => None,
        Some(p) => {
            let mut weights = std::collections::BTreeMap::new();
            for (name, _) in st.tensors() {
                if let Some(param) = name.strip_prefix("parent.") {
                    let len = st
                        .tensor(&name)
                        .map_err(|e| e.to_string())?
                        .shape()
                        .iter()
                        .product();
                    weights.insert(param.to_string(), f32s(&name, len)?);
                }
            }
            Some(p.with_weights(weights)?)
        }
    };
    Ok(TeacherTargets {
        temperature: meta.temperature,
        vocab: v,
        schedule: Box::new(schedule),
        val,
        val_probs,
        teacher_val_ce: meta.teacher_val_ce,
        seconds: meta.seconds,
        parent,
    })
}

/// The safetensors bytes of a batch schedule alone (`schedule.I.inputs`, `schedule.I.targets`,
/// U32; the shapes under the `genas.batches` metadata key): what the PyTorch runner trains a
/// teacher on.
pub fn encode_batches(batches: &[Batch]) -> Result<Vec<u8>, InputsError> {
    let shapes: Vec<(usize, usize)> = batches.iter().map(|b| (b.b, b.t)).collect();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        let n = b.b * b.t;
        tensors.push((
            format!("schedule.{i}.inputs"),
            vec![n],
            u32_bytes(&b.inputs),
        ));
        tensors.push((
            format!("schedule.{i}.targets"),
            vec![n],
            u32_bytes(&b.targets),
        ));
    }
    let views = tensors
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(Dtype::U32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| format!("{n}: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let meta = serde_json::json!({ "schedule": shapes }).to_string();
    safetensors::serialize(
        views,
        Some(HashMap::from([("genas.batches".to_string(), meta)])),
    )
    .map_err(|e| InputsError(e.to_string()))
}

/// The name a targets file is kept under: 32 hex digits of the SHA-256 of its bytes.
pub fn content_name(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The file of `name` in `dir`.
pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.safetensors"))
}

/// Writes `bytes` into `dir` under their content name (unless a file of that name is there
/// already) and returns the name. The file appears whole or not at all (temporary file, then
/// rename). A file of that name whose bytes no longer match it (damaged) is replaced.
pub fn store_bytes(dir: &Path, bytes: &[u8]) -> Result<String, InputsError> {
    let name = content_name(bytes);
    let path = path_in(dir, &name);
    if holds(&path, &name) {
        return Ok(name);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: {e}", path.display())
        })?;
    Ok(name)
}

/// Whether the file at `path` is there with the bytes `name` names (hashed as it streams).
fn holds(path: &Path, name: &str) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return false,
        }
    }
    let found: String = h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    found == name
}

/// The bytes of file `name` in `dir`, refused when they no longer match their name.
pub fn load_bytes(dir: &Path, name: &str) -> Result<Vec<u8>, InputsError> {
    let path = path_in(dir, name);
    // Inputs are genas's own files, as large as a teacher's targets: only the kind is checked.
    let bytes = genas_space::files::read_bounded(&path, u64::MAX >> 1)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let found = content_name(&bytes);
    if found != name {
        return Err(format!(
            "{}: its content changed (hash {found}); it is not the file the job refers to",
            path.display()
        )
        .into());
    }
    Ok(bytes)
}

/// Writes `t` into `dir` under its content name, its schedule as shards beside it (shards
/// already in `dir` are not read again; those of another directory are linked or copied;
/// held steps are written out a shard at a time); returns the name.
pub fn store(dir: &Path, t: &TeacherTargets) -> Result<String, InputsError> {
    let shards = match t.schedule.as_any().downcast_ref::<Shards>() {
        Some(s) => {
            let (from, refs) = s.refs();
            if from != dir {
                for r in refs {
                    copy_in(&path_in(from, &r.name), dir, &r.name)?;
                }
            }
            refs.to_vec()
        }
        None => {
            let mut w = ShardWriter::new(dir, t.vocab);
            for i in 0..t.schedule.len() {
                let step = t.schedule.step(i);
                w.put(step.batch.into_owned(), step.soft.into_owned())?;
            }
            w.flush()?;
            w.shards
        }
    };
    store_bytes(dir, &encode_manifest(t, &shards)?)
}

/// Puts the file `from` into `dir` as `name` (a hard link where the file system allows,
/// else a copy through a temporary file), unless it is there whole.
fn copy_in(from: &Path, dir: &Path, name: &str) -> Result<(), InputsError> {
    let path = path_in(dir, name);
    if holds(&path, name) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !path.exists() && std::fs::hard_link(from, &path).is_ok() {
        return Ok(());
    }
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: {e}", path.display())
        })?;
    Ok(())
}

/// Reads the targets file `name` from `dir`, every shard of its schedule checked.
pub fn load(dir: &Path, name: &str) -> Result<TeacherTargets, InputsError> {
    load_steps(dir, name, usize::MAX)
}

/// Reads the targets file `name` from `dir` for a job of `steps` steps: only the shards of
/// those steps are checked, and only those steps offered.
pub fn load_steps(dir: &Path, name: &str, steps: usize) -> Result<TeacherTargets, InputsError> {
    let bytes = load_bytes(dir, name)?;
    decode(&bytes, dir, steps)
        .map_err(|e| InputsError(format!("{}: {e}", path_in(dir, name).display())))
}

/// Writes a teacher's weights (with its architecture) into `dir`; returns the name.
pub fn store_teacher<B: Backend>(dir: &Path, teacher: &Model<B>) -> Result<String, InputsError> {
    store_bytes(dir, &checkpoint::to_bytes(teacher, &[])?)
}

/// The teacher `name` of `dir`, on `be`.
pub fn load_teacher<B: Backend>(dir: &Path, name: &str, be: B) -> Result<Model<B>, InputsError> {
    let bytes = load_bytes(dir, name)?;
    let what = path_in(dir, name).display().to_string();
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| format!("{what}: {e}"))?;
    let arch = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("genas.architecture"))
        .ok_or_else(|| format!("{what}: no architecture in its header"))?;
    let arch = Architecture::from_json(arch).map_err(|e| format!("{what}: {e}"))?;
    let mut m = Model::new(&arch, be, 0);
    checkpoint::from_bytes(&mut m, &bytes, &what).map_err(|e| e.to_string())?;
    Ok(m)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct DataMeta {
    kind: DataKind,
    vocab_size: u32,
    context: u32,
}

/// Writes a data set's token streams into `dir`; returns the name.
pub fn store_data(dir: &Path, d: &Dataset) -> Result<String, InputsError> {
    let meta = DataMeta {
        kind: d.kind,
        vocab_size: d.vocab_size(),
        context: d.context,
    };
    let (train, val) = (
        u32_bytes(&d.train.to_vec()),
        u32_bytes(&d.validation.to_vec()),
    );
    let views = vec![
        (
            "train".to_string(),
            TensorView::new(Dtype::U32, vec![d.train.len()], &train).map_err(|e| e.to_string())?,
        ),
        (
            "validation".to_string(),
            TensorView::new(Dtype::U32, vec![d.validation.len()], &val)
                .map_err(|e| e.to_string())?,
        ),
    ];
    let meta = serde_json::to_string(&meta).map_err(|e| e.to_string())?;
    let bytes = safetensors::serialize(views, Some(HashMap::from([(META.to_string(), meta)])))
        .map_err(|e| e.to_string())?;
    store_bytes(dir, &bytes)
}

/// The data set `name` of `dir` (`Dataset::from_tokens`).
pub fn load_data(dir: &Path, name: &str) -> Result<Dataset, InputsError> {
    let bytes = load_bytes(dir, name)?;
    let what = path_in(dir, name).display().to_string();
    let bad = |e: String| format!("{what}: {e}");
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta: DataMeta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META))
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| bad("not a data file".into()))?;
    let stream = |n: &str| -> Result<Vec<u32>, String> {
        let t = st.tensor(n).map_err(|_| bad(format!("missing {n}")))?;
        if t.dtype() != Dtype::U32 {
            return Err(bad(format!("{n} is not u32")));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    Ok(Dataset::from_tokens(
        meta.kind,
        stream("train")?,
        stream("validation")?,
        meta.vocab_size,
        meta.context,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(top_k: bool) -> TeacherTargets {
        let batch = |seed: u32, b: usize, t: usize| Batch {
            b,
            t,
            inputs: (0..(b * t) as u32).map(|i| (i * 7 + seed) % 11).collect(),
            targets: (0..(b * t) as u32).map(|i| (i * 5 + seed) % 11).collect(),
        };
        let soft = |n: usize, salt: f32| {
            if top_k {
                SoftTargets::TopK {
                    k: 3,
                    index: (0..n * 3).map(|i| (i % 11) as u32).collect(),
                    prob: (0..n * 3).map(|i| i as f32 * 0.01 + salt).collect(),
                }
            } else {
                SoftTargets::Dense((0..n * 11).map(|i| i as f32 * 1e-3 + salt).collect())
            }
        };
        TeacherTargets {
            temperature: 2.0,
            vocab: 11,
            schedule: Box::new(Held {
                batches: vec![batch(1, 2, 4), batch(2, 2, 4)],
                soft: vec![soft(8, 0.5), soft(8, 0.25)],
            }),
            // A short last validation batch, as `eval_batches` gives.
            val: vec![batch(3, 2, 4), batch(4, 1, 4)],
            val_probs: vec![soft(8, 0.125), soft(4, 0.0625)],
            teacher_val_ce: 1.234,
            seconds: 0.5,
            parent: None,
        }
    }

    fn same(a: &TeacherTargets, b: &TeacherTargets) {
        assert_eq!(a.temperature, b.temperature);
        assert_eq!(a.vocab, b.vocab);
        assert_eq!(a.teacher_val_ce, b.teacher_val_ce);
        assert_eq!(a.schedule.len(), b.schedule.len());
        for i in 0..a.schedule.len() {
            let (x, y) = (a.schedule.step(i), b.schedule.step(i));
            assert_eq!(x.batch, y.batch);
            assert_eq!(x.soft, y.soft);
        }
        assert_eq!(a.val, b.val);
        assert_eq!(a.val_probs, b.val_probs);
    }

    /// `t` stored in a fresh folder and read back.
    fn round_trip(t: &TeacherTargets) -> TeacherTargets {
        let dir = tempfile::tempdir().unwrap();
        let name = store(dir.path(), t).unwrap();
        load(dir.path(), &name).unwrap()
    }

    #[test]
    fn dense_and_top_k_targets_come_back_bit_for_bit() {
        for top_k in [false, true] {
            let t = targets(top_k);
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let name = store(a.path(), &t).unwrap();
            let back = load(a.path(), &name).unwrap();
            same(&t, &back);
            // Read back from shards, and stored into another folder from them (the shards
            // linked or copied, not read): the same file.
            assert!(back.schedule.as_any().downcast_ref::<Shards>().is_some());
            assert_eq!(store(b.path(), &back).unwrap(), name);
            same(&t, &load(b.path(), &name).unwrap());
        }
    }

    #[test]
    fn the_pruned_teacher_comes_back_whole_and_a_partial_one_is_refused() {
        use genas_space::{Activation, Attention, Layer, Sparsity};
        let arch = Architecture {
            vocab_size: 11,
            context: 4,
            d_model: 8,
            tie_embeddings: false,
            share_layers: 1,
            layers: vec![
                Layer::new(
                    Attention::Full { heads: 2 },
                    16,
                    Activation::Gelu,
                    None,
                    Sparsity::Dense
                );
                2
            ],
            norm: Default::default(),
            position: Default::default(),
            norm_eps: genas_space::Float(genas_space::NORM_EPS),
        };
        let mut teacher = Model::new(&arch, genas_engine::Cpu::<f32>::new(1), 3);
        let mut t = targets(false);
        let b = t.schedule.step(0).batch.into_owned();
        let parent = crate::inherit::Parent::measure(&mut teacher, &b.inputs, (b.b, b.t));
        t.parent = Some(parent.clone());
        let back = round_trip(&t);
        same(&t, &back);
        assert_eq!(back.parent.as_ref(), Some(&parent), "rankings and weights");
        assert_eq!(parent.weights().len(), teacher.params.len());
        let mut partial = parent.weights().clone();
        partial.remove("h.1.mlp.c_fc.weight");
        let err = parent.clone().with_weights(partial).unwrap_err().0;
        assert!(err.contains("h.1.mlp.c_fc.weight is missing"), "{err}");
    }

    #[test]
    fn a_stored_file_is_named_by_its_content_and_a_changed_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = targets(false);
        let name = store(dir.path(), &t).unwrap();
        assert_eq!(name.len(), 32);
        // Storing the same targets again names the same file and rewrites nothing.
        assert_eq!(store(dir.path(), &t).unwrap(), name);
        same(&t, &load(dir.path(), &name).unwrap());
        let other = store(dir.path(), &targets(true)).unwrap();
        assert_ne!(other, name);

        let path = path_in(dir.path(), &name);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = load(dir.path(), &name).err().unwrap().0;
        assert!(e.contains("its content changed"), "{e}");
        assert!(load(dir.path(), "0123").err().unwrap().0.contains("0123"));
    }

    /// Targets of `steps` steps of one 64 × 64 batch with top-8 targets (~200 KB a step).
    fn many(steps: usize) -> TeacherTargets {
        let mut t = targets(true);
        let n = 64 * 64;
        let mut held = Held::default();
        for i in 0..steps {
            held.batches.push(Batch {
                b: 64,
                t: 64,
                inputs: (0..n as u32).map(|j| (j + i as u32) % 11).collect(),
                targets: (0..n as u32).map(|j| (j * 3 + i as u32) % 11).collect(),
            });
            held.soft.push(SoftTargets::TopK {
                k: 8,
                index: (0..n * 8).map(|j| ((j + i) % 11) as u32).collect(),
                prob: (0..n * 8)
                    .map(|j| (j % 7) as f32 * 0.01 + i as f32)
                    .collect(),
            });
        }
        t.schedule = Box::new(held);
        t
    }

    #[test]
    fn a_long_schedule_is_written_in_shards_read_a_step_at_a_time_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        // 300 steps of ~200 KB: two shards of SHARD_BYTES (32 MiB).
        let t = many(300);
        let name = store(dir.path(), &t).unwrap();
        let back = load(dir.path(), &name).unwrap();
        let (_, refs) = back
            .schedule
            .as_any()
            .downcast_ref::<Shards>()
            .unwrap()
            .refs();
        assert!(refs.len() >= 2, "{refs:?}");
        assert_eq!(refs.iter().map(|r| r.steps).sum::<usize>(), 300);
        same(&t, &back);
        // The batch alone is the step's batch, for held steps and shards alike.
        for i in [0, 150, 299] {
            assert_eq!(*back.schedule.batch(i), *t.schedule.step(i).batch, "{i}");
            assert_eq!(*t.schedule.batch(i), *t.schedule.step(i).batch, "{i}");
        }
        assert_eq!(
            back.schedule.held_bytes(),
            0,
            "nothing of the schedule is held"
        );
        // Computing into a shard writer gives the same shards as storing held steps.
        let mut w = Box::new(ShardWriter::new(dir.path(), t.vocab));
        for i in 0..300 {
            let s = t.schedule.step(i);
            w.put(s.batch.into_owned(), s.soft.into_owned()).unwrap();
        }
        let written = w.finish().unwrap();
        assert_eq!(
            written.as_any().downcast_ref::<Shards>().unwrap().refs().1,
            refs
        );
        // A changed last shard: a job of the first steps does not read it and trains; the
        // whole schedule is refused, naming the shard.
        let last = path_in(dir.path(), &refs[refs.len() - 1].name);
        let mut bytes = std::fs::read(&last).unwrap();
        let at = bytes.len() - 5;
        bytes[at] ^= 1;
        std::fs::write(&last, &bytes).unwrap();
        let first = load_steps(dir.path(), &name, 10).unwrap();
        assert_eq!(first.schedule.len(), refs[0].steps);
        assert_eq!(first.schedule.step(9).soft, t.schedule.step(9).soft);
        let e = load(dir.path(), &name).err().unwrap().0;
        assert!(
            e.contains("its content changed") && e.contains(&refs[refs.len() - 1].name),
            "{e}"
        );
        // A missing shard is one line naming it.
        std::fs::remove_file(&last).unwrap();
        let e = load(dir.path(), &name).err().unwrap().0;
        assert!(
            e.contains(&refs[refs.len() - 1].name) && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn a_file_that_is_not_targets_is_refused_in_one_line() {
        let e = decode(b"not safetensors", Path::new("."), usize::MAX)
            .err()
            .unwrap()
            .0;
        assert!(e.starts_with("not a targets file"), "{e}");
        assert!(!e.contains('\n'));
    }
}
