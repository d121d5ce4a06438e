//! `--densify`: low-rank FFN factors multiplied out and shared layers unrolled, so that the
//! same function fits a native family (more parameters, the same logits).

use super::*;
use genas_space::{Architecture, Sparsity};

/// The same network without low-rank factors or sharing: every FFN matrix stored as
/// `weight_a` (r, in) and `weight_b` (out, r) becomes `weight` = B·A (computed in f64, rounded
/// once), and every layer of a sharing group gets its own copy of the group's weights. The
/// function is unchanged; the parameter count grows. A sparse low-rank FFN becomes a dense one
/// (the product of sparse factors is dense); its layer's attention keeps its sparsity and
/// masks. Returns the architecture, the tensors and what changed.
pub fn densify(
    arch: &Architecture,
    tensors: &[Tensor],
) -> Result<(Architecture, Vec<Tensor>, Vec<String>), ExportError> {
    let by_name = ByName::new(tensors);
    let mut dense = arch.clone();
    dense.share_layers = 1;
    let mut notes = Vec::new();
    for (i, l) in dense.layers.iter_mut().enumerate() {
        let ffn = l.ffn_sparsity();
        if l.ffn.as_mut().and_then(|f| f.rank.take()).is_some() && ffn != Sparsity::Dense {
            notes.push(format!(
                "layer {i}: the product of its FFN's {ffn} sparse low-rank factors is dense, without masks"
            ));
            *l = l
                .clone()
                .with_sparsities(l.attention_sparsity(), Sparsity::Dense);
        }
    }
    dense
        .validate()
        .map_err(|e| ExportError::Inconsistent(e.to_string()))?;
    let mut out: Vec<Tensor> = Vec::new();
    for t in tensors {
        if !t.name.starts_with("h.") {
            out.push(t.clone());
        }
    }
    for i in 0..arch.depth() {
        let owner = arch.weight_owner(i);
        let layer = &dense.layers[i];
        let keep_masks = |rest: &str| {
            let s = if rest.starts_with("mlp.") {
                layer.ffn_sparsity()
            } else {
                layer.attention_sparsity()
            };
            s != Sparsity::Dense
        };
        let prefix = format!("h.{owner}.");
        for t in tensors.iter().filter(|t| t.name.starts_with(&prefix)) {
            let rest = &t.name[prefix.len()..];
            let name = format!("h.{i}.{rest}");
            if let Some(base) = rest.strip_suffix(".weight_a") {
                let b_name = format!("{prefix}{base}.weight_b");
                let b = by_name.get(&b_name)?;
                let (r, inp) = (t.shape[0], t.shape[1]);
                let o = b.shape[0];
                if b.shape[1] != r {
                    return Err(ExportError::Inconsistent(format!(
                        "{b_name} has shape {:?} for rank {r}",
                        b.shape
                    )));
                }
                let mut w = vec![0f32; o * inp];
                for (row, wr) in w.chunks_exact_mut(inp).enumerate() {
                    for (col, x) in wr.iter_mut().enumerate() {
                        let sum: f64 = (0..r)
                            .map(|k| b.data[row * r + k] as f64 * t.data[k * inp + col] as f64)
                            .sum();
                        *x = sum as f32;
                    }
                }
                out.push(Tensor {
                    name: format!("h.{i}.{base}.weight"),
                    shape: vec![o, inp],
                    data: w,
                    mask: None,
                });
            } else if rest.ends_with(".weight_b") {
                // Multiplied into its weight_a's product above.
            } else {
                out.push(Tensor {
                    name,
                    shape: t.shape.clone(),
                    data: t.data.clone(),
                    mask: if keep_masks(rest) {
                        t.mask.clone()
                    } else {
                        None
                    },
                });
            }
        }
    }
    let count = |ts: &[Tensor]| ts.iter().map(|t| t.data.len()).sum::<usize>();
    let (before, after) = (count(tensors), count(&out));
    let mut what = Vec::new();
    if arch.layers.iter().any(|l| l.ffn_rank().is_some()) {
        what.push("low-rank FFNs multiplied out");
    }
    if arch.share_layers > 1 {
        what.push("shared layers unrolled");
    }
    notes.insert(
        0,
        format!(
            "densified ({}): {before} → {after} parameters, the same logits; architecture.json is the dense network",
            if what.is_empty() { "nothing to do".to_string() } else { what.join(", ") }
        ),
    );
    Ok((dense, out, notes))
}
