//! Weights as safetensors (f32, little-endian), named as `model.rs` documents, with the canonical
//! architecture JSON and any caller metadata (data fingerprint, steps) in the header.

use crate::engine::backend::Backend;
use crate::engine::model::Model;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {reason}")]
    Mismatch { path: String, reason: String },
}

/// Every parameter of `model` as a safetensors file image; `metadata` is stored beside the
/// architecture.
pub fn to_bytes<B: Backend>(
    model: &Model<B>,
    metadata: &[(&str, String)],
) -> Result<Vec<u8>, String> {
    let bytes: Vec<Vec<u8>> = (0..model.params.len())
        .map(|i| {
            model
                .weights(i)
                .iter()
                .flat_map(|&x| (x as f32).to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<(String, TensorView)> = model
        .params
        .iter()
        .zip(&bytes)
        .map(|(p, b)| {
            (
                p.name.clone(),
                TensorView::new(Dtype::F32, p.shape.clone(), b).expect("sizes agree"),
            )
        })
        .collect();
    let mut meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    meta.insert("genas.architecture".into(), model.arch.canonical_json());
    safetensors::serialize(views, Some(meta)).map_err(|e| e.to_string())
}

/// Writes every parameter of `model`; `metadata` is stored beside the architecture.
pub fn save<B: Backend>(
    model: &Model<B>,
    path: &Path,
    metadata: &[(&str, String)],
) -> Result<(), CheckpointError> {
    let err = |reason: String| CheckpointError::Write {
        path: path.display().to_string(),
        reason,
    };
    let data = to_bytes(model, metadata).map_err(err)?;
    // Write to a temporary file and rename, so a kill never leaves half a checkpoint.
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, data).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}

/// Loads weights saved for the same architecture into `model`; returns the header metadata.
pub fn load<B: Backend>(
    model: &mut Model<B>,
    path: &Path,
) -> Result<HashMap<String, String>, CheckpointError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| CheckpointError::Read {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    from_bytes(model, &bytes, &p)
}

/// Loads a safetensors image (named `what` in errors) into `model`.
pub fn from_bytes<B: Backend>(
    model: &mut Model<B>,
    bytes: &[u8],
    what: &str,
) -> Result<HashMap<String, String>, CheckpointError> {
    let bad = |reason: String| CheckpointError::Mismatch {
        path: what.to_string(),
        reason,
    };
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if let Some(saved) = meta.get("genas.architecture") {
        if *saved != model.arch.canonical_json() {
            return Err(bad("the weights belong to another architecture".into()));
        }
    }
    for i in 0..model.params.len() {
        let info = model.params[i].clone();
        let t = st
            .tensor(&info.name)
            .map_err(|_| bad(format!("missing tensor {}", info.name)))?;
        if t.dtype() != Dtype::F32 || t.shape() != info.shape.as_slice() {
            return Err(bad(format!(
                "tensor {} is {:?} {:?}, expected F32 {:?}",
                info.name,
                t.dtype(),
                t.shape(),
                info.shape
            )));
        }
        let host: Vec<f64> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect();
        model.set_weights(i, &host);
    }
    Ok(meta)
}
