//! Weights as safetensors (f32, little-endian), named as `model/mod.rs` documents, with the canonical
//! architecture JSON and any caller metadata (data fingerprint, steps) in the header.

use crate::backend::Backend;
use crate::model::Model;
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
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
/// architecture. The same weights and metadata always give the same bytes: the header is
/// written in sorted order (the safetensors crate writes its metadata map in hash order, which
/// changes from one process to the next).
pub fn to_bytes<B: Backend>(
    model: &Model<B>,
    metadata: &[(&str, String)],
) -> Result<Vec<u8>, String> {
    to_bytes_of(model, &|_| true, metadata)
}

/// `to_bytes` of the parameters whose names `keep` accepts (a trained sub-block of a network
/// whose other weights are stored elsewhere), read back with [`tensors`].
pub fn to_bytes_of<B: Backend>(
    model: &Model<B>,
    keep: &dyn Fn(&str) -> bool,
    metadata: &[(&str, String)],
) -> Result<Vec<u8>, String> {
    let mut meta: BTreeMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    meta.insert("genas.architecture".into(), model.arch.canonical_json());
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(&meta).map_err(|e| e.to_string())?,
    );
    // Tensors in name order, the data laid out in the same order.
    let mut order: Vec<usize> = (0..model.params.len())
        .filter(|&i| keep(&model.params[i].name))
        .collect();
    order.sort_by(|&a, &b| model.params[a].name.cmp(&model.params[b].name));
    let mut data: Vec<u8> = Vec::new();
    for &i in &order {
        let p = &model.params[i];
        let begin = data.len();
        data.extend(
            model
                .weights(i)
                .iter()
                .flat_map(|&x| (x as f32).to_le_bytes()),
        );
        header.insert(
            p.name.clone(),
            serde_json::json!({"dtype": "F32", "shape": p.shape, "data_offsets": [begin, data.len()]}),
        );
    }
    // serde_json's map keeps keys sorted, so the header text is fixed.
    let mut text = serde_json::to_string(&header)
        .map_err(|e| e.to_string())?
        .into_bytes();
    // The format pads the header with spaces to a multiple of 8 bytes.
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + text.len() + data.len());
    out.extend((text.len() as u64).to_le_bytes());
    out.extend(text);
    out.extend(data);
    Ok(out)
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
    // Weights of any size, from a regular file only.
    let bytes = genas_space::files::read_bounded(path, u64::MAX >> 1).map_err(|e| {
        CheckpointError::Read {
            path: p.clone(),
            reason: e.to_string(),
        }
    })?;
    from_bytes(model, &bytes, &p)
}

/// The metadata in the header of a safetensors image (named `what` in errors), without reading
/// its tensors.
pub fn metadata(bytes: &[u8], what: &str) -> Result<HashMap<String, String>, CheckpointError> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| CheckpointError::Mismatch {
        path: what.to_string(),
        reason: format!("not a safetensors file ({e})"),
    })?;
    Ok(header.metadata().clone().unwrap_or_default())
}

/// Every F32 tensor of a safetensors image (named `what` in errors) by name, widened to f64.
pub fn tensors(bytes: &[u8], what: &str) -> Result<BTreeMap<String, Vec<f64>>, CheckpointError> {
    let bad = |reason: String| CheckpointError::Mismatch {
        path: what.to_string(),
        reason,
    };
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            if t.dtype() != Dtype::F32 {
                return Err(bad(format!("tensor {name} is {:?}, not F32", t.dtype())));
            }
            let host = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect();
            Ok((name, host))
        })
        .collect()
}

/// A network of `arch` on `be` with every weight (and so every mask) from the safetensors
/// image `bytes` (named `what` in errors): nothing drawn survives, so no seed is asked for.
pub fn model_from_bytes<B: Backend>(
    arch: &genas_space::Architecture,
    be: B,
    bytes: &[u8],
    what: &str,
) -> Result<Model<B>, CheckpointError> {
    let mut model = Model::new(arch, be, 0);
    from_bytes(&mut model, bytes, what)?;
    Ok(model)
}

/// Loads a safetensors image (named `what` in errors) into `model`; its sparsity masks are
/// then the loaded weights' zeros (`Model::masks_from_zeros`).
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
    model.masks_from_zeros();
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;
    use genas_space::{Activation, Architecture, Attention, Layer, Sparsity};

    fn model(seed: u64) -> Model<Cpu<f32>> {
        let arch = Architecture {
            vocab_size: 11,
            context: 8,
            d_model: 8,
            tie_embeddings: false,
            share_layers: 1,
            layers: vec![Layer::new(
                Attention::Full { heads: 2 },
                16,
                Activation::Gelu,
                None,
                Sparsity::Dense,
            )],
            norm: Default::default(),
            position: Default::default(),
            norm_eps: genas_space::Float(genas_space::NORM_EPS),
        };
        Model::new(&arch, Cpu::new(1), seed)
    }

    #[test]
    fn weights_round_trip_through_bytes_that_do_not_depend_on_hash_order() {
        let a = model(1);
        let meta = [
            ("genas.run", "r1".to_string()),
            ("genas.candidate", "c".to_string()),
        ];
        let bytes = to_bytes(&a, &meta).unwrap();
        // Fresh hash maps are seeded differently each time; the bytes must not care.
        for _ in 0..8 {
            assert!(to_bytes(&a, &meta).unwrap() == bytes);
        }
        // The safetensors crate reads it, with the header padded to 8 bytes.
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), a.params.len());
        let mut b = model(2);
        let got = from_bytes(&mut b, &bytes, "test").unwrap();
        assert_eq!(got["genas.run"], "r1");
        assert_eq!(got["genas.architecture"], a.arch.canonical_json());
        for i in 0..a.params.len() {
            let (wa, wb) = (a.weights(i), b.weights(i));
            assert!(wa.iter().zip(&wb).all(|(x, y)| (*x as f32) == (*y as f32)));
        }
        assert_ne!(
            a.weights(0),
            model(2).weights(0),
            "seeds give different weights"
        );
    }
}
