//! An engine model's parameters as the export formats and the PyTorch runner take them.

use crate::export::Tensor;
use genas_engine::{Cpu, Model};

/// Every parameter of `model` (f32, with its mask), under the engine's names.
pub fn model_tensors(model: &Model<Cpu<f32>>) -> Vec<Tensor> {
    model
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| Tensor {
            name: p.name.clone(),
            shape: p.shape.clone(),
            data: model.weights(i).iter().map(|&x| x as f32).collect(),
            mask: model.mask(i).map(|m| m.iter().map(|&x| x as f32).collect()),
        })
        .collect()
}
