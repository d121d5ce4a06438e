//! The teacher: the experiment's `[teacher]` section as an architecture (uniform full
//! attention, GELU FFN, dense, untied), trained with cross-entropy on the experiment's data,
//! and the record that lets a later run recognise it: a key over everything that determines
//! its weights (data fingerprint, architecture, training budget, seed).

use crate::data::{Dataset, Split};
use genas_engine::backend::Backend;
use genas_engine::model::Model;
use genas_engine::train::{evaluate, train, StepStats, TrainConfig, TrainError};
use genas_space::{Activation, Architecture, Attention, Layer, Sparsity, TeacherConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Validation sequences a teacher is scored on.
pub const TEACHER_VAL_SEQUENCES: usize = 256;

pub fn teacher_architecture(cfg: &TeacherConfig, vocab: u32, context: u32) -> Architecture {
    let hidden = (cfg.d_model as f64 * cfg.ffn_ratio).round().max(1.0) as u32;
    Architecture {
        vocab_size: vocab,
        context,
        d_model: cfg.d_model,
        tie_embeddings: false,
        share_layers: 1,
        layers: (0..cfg.depth)
            .map(|_| {
                Layer::new(
                    Attention::Full { heads: cfg.heads },
                    hidden,
                    Activation::Gelu,
                    None,
                    Sparsity::Dense,
                )
            })
            .collect(),
        norm: Default::default(),
        position: Default::default(),
        norm_eps: genas_space::Float(genas_space::NORM_EPS),
    }
}

/// What a stored teacher is: enough to decide whether it can be reused, and its quality.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherRecord {
    pub key: String,
    pub architecture: Architecture,
    pub data_fingerprint: String,
    pub config: TeacherConfig,
    pub seed: u64,
    pub params: u64,
    /// Validation cross-entropy, nats/token, and the same in the data's bits unit.
    pub val_ce: f64,
    pub val_bits: f64,
    pub bits_unit: String,
    pub train_seconds: f64,
}

/// 16 hex digits of SHA-256 over the data fingerprint, the canonical architecture, the
/// training budget and the seed: equal keys mean equal teachers.
pub fn teacher_key(
    arch: &Architecture,
    cfg: &TeacherConfig,
    data_fingerprint: &str,
    seed: u64,
) -> String {
    let mut h = Sha256::new();
    h.update(data_fingerprint.as_bytes());
    h.update(arch.canonical_json().as_bytes());
    h.update(
        format!(
            "steps={} batch={} lr={:e} seed={seed}",
            cfg.steps, cfg.batch_size, cfg.learning_rate
        )
        .as_bytes(),
    );
    genas_space::hex16(h)
}

/// Trains the teacher of `cfg` on `data` and scores it on the validation split.
pub fn train_teacher<B: Backend>(
    cfg: &TeacherConfig,
    data: &Dataset,
    seed: u64,
    be: B,
    on_step: impl FnMut(&StepStats),
) -> Result<(Model<B>, TeacherRecord), TrainError> {
    let arch = teacher_architecture(cfg, data.vocab_size(), data.context);
    let mut model = Model::new(&arch, be, seed);
    let report = train(&mut model, data, &teacher_train_config(cfg, seed), on_step)?;
    let record = teacher_record(&mut model, cfg, data, seed, report.seconds);
    Ok((model, record))
}

/// The recipe the teacher of `cfg` trains with; its batches are `data.train_batch(batch_size)`
/// drawn in turn from `Rng::seed_from_u64(seed)`.
pub fn teacher_train_config(cfg: &TeacherConfig, seed: u64) -> TrainConfig {
    TrainConfig::new(cfg.steps, cfg.batch_size as usize, cfg.learning_rate, seed)
}

/// The record of a trained teacher `model` of `cfg`: its key, and its quality measured on
/// the validation split.
pub fn teacher_record<B: Backend>(
    model: &mut Model<B>,
    cfg: &TeacherConfig,
    data: &Dataset,
    seed: u64,
    train_seconds: f64,
) -> TeacherRecord {
    let arch = model.arch.clone();
    let val = data.eval_batches(
        Split::Validation,
        cfg.batch_size as usize,
        TEACHER_VAL_SEQUENCES,
    );
    let val_ce = evaluate(model, &val);
    TeacherRecord {
        key: teacher_key(&arch, cfg, &data.fingerprint, seed),
        params: model.num_params() as u64,
        architecture: arch,
        data_fingerprint: data.fingerprint.clone(),
        config: cfg.clone(),
        seed,
        val_ce,
        val_bits: data.bits(val_ce),
        bits_unit: data.bits_unit().to_string(),
        train_seconds,
    }
}
