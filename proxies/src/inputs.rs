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
use crate::distill::{SoftTargets, TeacherTargets};
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
    /// The pruned teacher students start from (`init = "teacher"`); its weights are the
    /// `parent.NAME` tensors.
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<P>,
}

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

/// The safetensors bytes of `t`.
pub fn encode(t: &TeacherTargets) -> Result<Vec<u8>, InputsError> {
    let meta = Meta {
        temperature: t.temperature,
        vocab: t.vocab,
        teacher_val_ce: t.teacher_val_ce,
        seconds: t.seconds,
        schedule: t.schedule.iter().map(|b| (b.b, b.t)).collect(),
        val: t.val.iter().map(|b| (b.b, b.t)).collect(),
        soft_k: t.soft.iter().map(k_of).collect(),
        val_k: t.val_probs.iter().map(k_of).collect(),
        parent: t.parent.as_ref(),
    };
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut put = |prefix: &str, batches: &[Batch], soft: &[SoftTargets]| {
        for (i, (b, s)) in batches.iter().zip(soft).enumerate() {
            let n = b.b * b.t;
            tensors.push((
                format!("{prefix}.{i}.inputs"),
                Dtype::U32,
                vec![n],
                u32_bytes(&b.inputs),
            ));
            tensors.push((
                format!("{prefix}.{i}.targets"),
                Dtype::U32,
                vec![n],
                u32_bytes(&b.targets),
            ));
            match s {
                SoftTargets::Dense(p) => tensors.push((
                    format!("{prefix}.{i}.probs"),
                    Dtype::F32,
                    vec![p.len()],
                    f32_bytes(p),
                )),
                SoftTargets::TopK { index, prob, .. } => {
                    tensors.push((
                        format!("{prefix}.{i}.index"),
                        Dtype::U32,
                        vec![index.len()],
                        u32_bytes(index),
                    ));
                    tensors.push((
                        format!("{prefix}.{i}.probs"),
                        Dtype::F32,
                        vec![prob.len()],
                        f32_bytes(prob),
                    ));
                }
            }
        }
    };
    put("schedule", &t.schedule, &t.soft);
    put("val", &t.val, &t.val_probs);
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
    let views = tensors
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| format!("{n}: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let meta = serde_json::to_string(&meta).map_err(|e| e.to_string())?;
    safetensors::serialize(views, Some(HashMap::from([(META.to_string(), meta)])))
        .map_err(|e| InputsError(e.to_string()))
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

/// Reads what `encode` wrote.
pub fn decode(bytes: &[u8]) -> Result<TeacherTargets, InputsError> {
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
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    let f32s = |name: &str, len: usize| -> Result<Vec<f32>, String> {
        let t = st.tensor(name).map_err(|_| format!("missing {name}"))?;
        if t.dtype() != Dtype::F32 || t.shape() != [len] {
            return Err(format!("{name} has the wrong type or length"));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    let v = meta.vocab;
    let get = |prefix: &str,
               shapes: &[(usize, usize)],
               ks: &[usize]|
     -> Result<(Vec<Batch>, Vec<SoftTargets>), String> {
        if shapes.len() != ks.len() {
            return Err("targets metadata disagrees with itself".into());
        }
        let mut batches = Vec::with_capacity(shapes.len());
        let mut soft = Vec::with_capacity(shapes.len());
        for (i, (&(b, t), &k)) in shapes.iter().zip(ks).enumerate() {
            let n = b
                .checked_mul(t)
                .ok_or_else(|| format!("{prefix}.{i}: batch shape overflows"))?;
            batches.push(Batch {
                b,
                t,
                inputs: u32s(&format!("{prefix}.{i}.inputs"), n)?,
                targets: u32s(&format!("{prefix}.{i}.targets"), n)?,
            });
            let per_row = if k == 0 { v } else { k };
            let len = n
                .checked_mul(per_row)
                .ok_or_else(|| format!("{prefix}.{i}: target shape overflows"))?;
            let probs = f32s(&format!("{prefix}.{i}.probs"), len)?;
            soft.push(if k == 0 {
                SoftTargets::Dense(probs)
            } else {
                SoftTargets::TopK {
                    k,
                    index: u32s(&format!("{prefix}.{i}.index"), len)?,
                    prob: probs,
                }
            });
        }
        Ok((batches, soft))
    };
    let (schedule, soft) = get("schedule", &meta.schedule, &meta.soft_k)?;
    let (val, val_probs) = get("val", &meta.val, &meta.val_k)?;
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
        schedule,
        soft,
        val,
        val_probs,
        teacher_val_ce: meta.teacher_val_ce,
        seconds: meta.seconds,
        parent,
    })
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
/// rename).
pub fn store_bytes(dir: &Path, bytes: &[u8]) -> Result<String, InputsError> {
    let name = content_name(bytes);
    let path = path_in(dir, &name);
    if path.is_file() {
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

/// Writes `t` into `dir` under its content name; returns the name.
pub fn store(dir: &Path, t: &TeacherTargets) -> Result<String, InputsError> {
    store_bytes(dir, &encode(t)?)
}

/// Reads the targets file `name` from `dir`.
pub fn load(dir: &Path, name: &str) -> Result<TeacherTargets, InputsError> {
    let bytes = load_bytes(dir, name)?;
    decode(&bytes).map_err(|e| InputsError(format!("{}: {e}", path_in(dir, name).display())))
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
            schedule: vec![batch(1, 2, 4), batch(2, 2, 4)],
            soft: vec![soft(8, 0.5), soft(8, 0.25)],
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
        assert_eq!(a.schedule, b.schedule);
        assert_eq!(a.val, b.val);
        assert_eq!(a.soft, b.soft);
        assert_eq!(a.val_probs, b.val_probs);
    }

    #[test]
    fn dense_and_top_k_targets_come_back_bit_for_bit() {
        for top_k in [false, true] {
            let t = targets(top_k);
            same(&t, &decode(&encode(&t).unwrap()).unwrap());
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
        };
        let mut teacher = Model::new(&arch, genas_engine::Cpu::<f32>::new(1), 3);
        let mut t = targets(false);
        let b = t.schedule[0].clone();
        let parent = crate::inherit::Parent::measure(&mut teacher, &b.inputs, (b.b, b.t));
        t.parent = Some(parent.clone());
        let back = decode(&encode(&t).unwrap()).unwrap();
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

    #[test]
    fn a_file_that_is_not_targets_is_refused_in_one_line() {
        let e = decode(b"not safetensors").err().unwrap().0;
        assert!(e.starts_with("not a targets file"), "{e}");
        assert!(!e.contains('\n'));
    }
}
