//! `genas export`: a winner written in one of the formats of `genas_interop::export`, with
//! the check batch and the logits genas computes for it, so the export can verify itself.

use super::{RunAccess, Weights};
use anyhow::{bail, Result};
use genas_engine::{Cpu, Model};
use genas_interop::export::{self, Check, Export, Format, Vocab, Written};
use genas_scoring::data::{Dataset, Split, Vocabulary};
use std::path::Path;

/// Sequences in the check batch.
const CHECK_SEQUENCES: usize = 2;
/// Characters (or bytes) of the tokenizer round-trip sample.
const TEXT_SAMPLE: usize = 400;

fn export_vocab(v: &Vocabulary) -> Result<Vocab> {
    Ok(match v {
        Vocabulary::Chars { chars } => Vocab::Chars(chars.clone()),
        Vocabulary::Bytes => Vocab::Bytes,
        Vocabulary::Pixels { levels } => Vocab::Pixels { levels: *levels },
        Vocabulary::Hf { tokenizer, .. } => Vocab::Tokenizer {
            json: tokenizer.file_bytes().to_vec(),
            sha256: tokenizer.hash.clone(),
            entries: tokenizer.size,
        },
        Vocabulary::Ids { .. } => bail!("ids that stand for nothing have no vocabulary to export"),
    })
}

/// The check batch (the first validation sequences, whole context) and the logits of `model`'s
/// weights for it, computed in f64 so that the reference is as exact as the weights are.
fn check_batch(data: &Dataset, model: &Model<Cpu<f32>>) -> Check {
    let batch = data
        .eval_batches(Split::Validation, CHECK_SEQUENCES, CHECK_SEQUENCES)
        .swap_remove(0);
    let mut exact = Model::new(&model.arch, Cpu::<f64>::new(1), 0);
    for i in 0..model.params.len() {
        exact.set_weights(i, &model.weights(i));
    }
    exact.forward(&batch.inputs, None, None, (batch.b, batch.t), false);
    Check {
        tokens: batch.inputs.chunks(batch.t).map(<[u32]>::to_vec).collect(),
        logits: exact.logits(),
        positions: None,
    }
}

/// A validation text and its tokens, when the vocabulary is text and they round-trip.
fn text_sample(data: &Dataset) -> Option<(String, Vec<u32>)> {
    let tokens: Vec<u32> = data
        .validation
        .slice(0, TEXT_SAMPLE.min(data.validation.len()));
    let text = match &data.vocab {
        Vocabulary::Chars { chars } => {
            // A validation character the training split lacks has no token of its own.
            if tokens.iter().any(|&t| t as usize >= chars.len()) {
                return None;
            }
            data.vocab.decode(&tokens)
        }
        Vocabulary::Bytes => {
            let bytes: Vec<u8> = tokens.iter().map(|&t| t as u8).collect();
            String::from_utf8(bytes).ok()?
        }
        Vocabulary::Hf { .. } => {
            // Whole tokens decode to text that encodes back to them only sometimes (a cut
            // through a multi-byte character, merges across the cut): keep the sample only
            // when it round-trips.
            let text = data.vocab.decode(&tokens);
            match &data.vocab {
                Vocabulary::Hf { tokenizer, .. }
                    if tokenizer.encode_one(&text).ok().as_ref() == Some(&tokens) =>
                {
                    text
                }
                _ => return None,
            }
        }
        Vocabulary::Pixels { .. } | Vocabulary::Ids { .. } => return None,
    };
    Some((text, tokens))
}

/// `genas export RUN CANDIDATE --format F --out DIR [--weights W] [--densify]`.
pub fn export_candidate(
    archive_dir: &Path,
    run: &str,
    name: &str,
    format: Format,
    out: &Path,
    weights: Weights,
    densify: bool,
) -> Result<Written> {
    let access = RunAccess::open(archive_dir, run)?;
    let cand = access.candidate(name)?;
    let model = access.model(cand, weights, 1)?;
    let distilled = access
        .archive
        .distilled::<serde_json::Value>(run, &cand.id)?;
    let record = serde_json::json!({
        "run": run,
        "experiment": access.record.name,
        "candidate": cand.id,
        "summary": cand.architecture.summary(),
        "weights": weights.name(),
        "bits_unit": access.loaded.data.bits_unit(),
        "cost": cand.cost,
        "proxies": cand.proxies,
        "screen_score": cand.screen_score,
        "rungs": cand.rungs,
        "latency_ms_per_token": cand.latency_ms_per_token,
        "distilled": distilled,
    });
    let teacher = access
        .loaded
        .pretrained
        .as_ref()
        .map(|c| c.model_type.as_str());
    export_model(
        &model,
        &access.loaded.data,
        record,
        (format, teacher),
        out,
        densify,
    )
}

/// Exports `model` (trained on `data`) as `format` into `out`, with `record` as
/// `candidate.json` and the check batch drawn from `data`'s validation split; `teacher`, the
/// `model_type` of the pretrained teacher it was distilled from, is the family `hf` prefers.
pub fn export_model(
    model: &Model<Cpu<f32>>,
    data: &Dataset,
    record: serde_json::Value,
    (format, teacher): (Format, Option<&str>),
    out: &Path,
    densify: bool,
) -> Result<Written> {
    let tensors = genas_interop::model_tensors(model);
    let check = check_batch(data, model);
    let vocab = export_vocab(&data.vocab)?;
    let text = text_sample(data);
    // The check's logits are the original network's: densifying must not change them.
    let (arch, tensors, notes) = if densify {
        export::densify(&model.arch, &tensors)?
    } else {
        (model.arch.clone(), tensors, Vec::new())
    };
    let e = Export {
        arch: &arch,
        tensors: &tensors,
        vocab: &vocab,
        check: &check,
        text: text.as_ref().map(|(s, t)| (s.as_str(), t.as_slice())),
        record,
        teacher_family: teacher,
    };
    let mut w = export::export(format, &e, out)?;
    w.notes.splice(0..0, notes);
    Ok(w)
}

pub fn render_export(w: &Written) -> String {
    let mut s = format!(
        "{} export written to {}{}: {}\n",
        w.format,
        w.dir.display(),
        w.hf_class.map(|c| format!(" ({c})")).unwrap_or_default(),
        w.files.join(", ")
    );
    for n in &w.notes {
        s += &format!("note: {n}\n");
    }
    if w.files.iter().any(|f| f == "genas_check.py") {
        s += &format!(
            "verify it with: python3 {}\n",
            w.dir.join("genas_check.py").display()
        );
    }
    s
}
