//! `genas export`: a winner written in one of the formats of `genas_interop::export`, with
//! the check batch and the logits genas computes for it, so the export can verify itself.

use super::{RunAccess, Weights};
use anyhow::{bail, Context, Result};
use genas_engine::{Cpu, Model};
use genas_interop::export::{self, Check, Export, FixedZeros, Format, Vocab, Written};
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
    Ok(export_of(&access, cand, format, out, (weights, densify), false)?.0)
}

/// [`export_candidate`] of `cand`, a candidate of the run `access` opened; with `training`,
/// also the zeros further training must keep ([`export::fixed_zeros`]).
fn export_of(
    access: &RunAccess,
    cand: &genas_search::controller::CandidateRecord,
    format: Format,
    out: &Path,
    (weights, densify): (Weights, bool),
    training: bool,
) -> Result<(Written, FixedZeros)> {
    let run = access.record.id.as_str();
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
    export_model_with(
        &model,
        &access.loaded.data,
        record,
        (format, teacher),
        out,
        (densify, training),
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
    Ok(export_model_with(
        model,
        data,
        record,
        (format, teacher),
        out,
        (densify, false),
    )?
    .0)
}

/// [`export_model`], and with `training` the zeros further training must keep.
fn export_model_with(
    model: &Model<Cpu<f32>>,
    data: &Dataset,
    record: serde_json::Value,
    (format, teacher): (Format, Option<&str>),
    out: &Path,
    (densify, training): (bool, bool),
) -> Result<(Written, FixedZeros)> {
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
    let fixed = if training && format == Format::Hf {
        export::fixed_zeros(&e)?
    } else {
        FixedZeros::default()
    };
    Ok((w, fixed))
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

/// The files `--with-training` adds beside the model.
pub const TRAIN_FILES: [&str; 3] = ["train.py", "train.toml", "genas_batches.safetensors"];

/// `genas export ... --with-training`: the model as [`export_candidate`] writes it, then
/// beside it `train.py` (genas's final distillation in plain PyTorch), `train.toml` (the exact
/// recipe of the candidate's final distillation: the steps `genas distill` ran it for, else
/// `final_steps`; where the teacher and the corpus are) and `genas_batches.safetensors`
/// (genas's draw of training sequences for those steps, which `train.toml` names, so the first
/// steps are genas's). A teacher genas trained is exported beside the student, in the same
/// format, under `teacher/`; a pretrained one is named by its folder.
pub fn export_with_training(
    archive_dir: &Path,
    run: &str,
    name: &str,
    format: Format,
    out: &Path,
    weights: Weights,
    densify: bool,
) -> Result<Written> {
    if format == Format::Json {
        bail!("--with-training writes train.py for --format pytorch or hf (PyTorch loads those)");
    }
    // Everything that can refuse is checked before a file is written.
    let access = RunAccess::open(archive_dir, run)?;
    let cand = access.candidate(name)?.clone();
    let l = &access.loaded;
    let exp = &l.experiment;
    let distilled = access
        .archive
        .distilled::<crate::winners::distill::DistilledRecord>(run, &cand.id)?;
    let steps = distilled
        .as_ref()
        .map_or(exp.fidelity.final_steps, |d| d.requested_steps.max(1));
    let cfg = crate::winners::distill::final_config(l, steps);
    let data = &l.data;
    let d = &cfg.distill;
    let tc = genas_engine::TrainConfig::new(d.steps, d.batch_size, d.learning_rate, d.seed);
    let absolute = |p: &Path| {
        std::fs::canonicalize(p).with_context(|| format!("{}: cannot be read", p.display()))
    };
    let data_path = absolute(&exp.data_path())?;
    let validation_path = exp.validation_path().as_deref().map(absolute).transpose()?;
    let (tokenizer, eos) = match &data.vocab {
        Vocabulary::Chars { .. } => (Some("char"), None),
        Vocabulary::Bytes => (Some("byte"), None),
        Vocabulary::Hf { tokenizer, .. } => (
            Some("hf"),
            genas_scoring::data::eos_token(exp, tokenizer).map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        Vocabulary::Pixels { .. } => (None, None),
        Vocabulary::Ids { .. } => bail!("ids that stand for nothing have no corpus to train on"),
    };
    let teacher_dir = exp.teacher_dir().as_deref().map(absolute).transpose()?;
    let teacher_model = match teacher_dir {
        Some(_) => None,
        None => Some(
            crate::teacher::obtain_teacher(&access.archive, l, false, &mut |_| {}, &mut |_, _| {})?
                .0,
        ),
    };

    let (mut w, fixed) = export_of(&access, &cand, format, out, (weights, densify), true)?;
    if let Some(t) = &teacher_model {
        let record = serde_json::json!({
            "run": run,
            "experiment": exp.name,
            "role": "the teacher of the run, as genas trained it",
            "summary": t.arch.summary(),
        });
        export_model(t, data, record, (format, None), &out.join("teacher"), false)?;
        w.files.push("teacher/".into());
    }
    let indices = le_bytes(&data.train_indices(d.batch_size, d.steps, d.seed));
    let bytes = safetensors::serialize(
        [(
            "index",
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::U32,
                vec![d.steps as usize, d.batch_size],
                &indices,
            )
            .map_err(|e| anyhow::anyhow!("the batch order: {e}"))?,
        )],
        None,
    )
    .map_err(|e| anyhow::anyhow!("the batch order: {e}"))?;
    let write = |file: &str, bytes: &[u8]| {
        std::fs::write(out.join(file), bytes)
            .with_context(|| format!("cannot write {}", out.join(file).display()))
    };
    write("genas_batches.safetensors", &bytes)?;
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let f = |x: f64| toml::Value::Float(x).to_string();
    let mut text =
        format!(
        "# The recipe of genas's final distillation of {id} (run {run} of {name}), exactly, and\n\
         # where its teacher and corpus are; read by train.py beside it. Edit freely: `python\n\
         # train.py --steps N` recomputes warm-up, evaluations and checkpoints for N steps.\n\n\
         [model]\n\
         format = {format}\n\
         dir = \".\"                       # the student, as exported ({weights} weights)\n",
        id = cand.id,
        name = exp.name,
        format = q(if format == Format::Hf { "hf" } else { "pytorch" }),
        weights = weights.name(),
    );
    // A native transformers family's tensors that stand for nothing in genas's network, and
    // its sparse matrices: train.py keeps their zeros, as genas's network has them.
    let list = |names: &[String]| names.iter().map(|n| q(n)).collect::<Vec<_>>().join(", ");
    if !fixed.absent.is_empty() {
        text += &format!(
            "frozen = [{}]   # zeros the family needs, absent from genas's network\n",
            list(&fixed.absent)
        );
    }
    if !fixed.masked.is_empty() {
        text += &format!(
            "masked = [{}]   # sparse: their zeros stay zero\n",
            list(&fixed.masked)
        );
    }
    text += "\n[teacher]\n";
    match &teacher_dir {
        Some(dir) => {
            text += "kind = \"pretrained\"               # a transformers checkpoint folder\n";
            text += &format!("dir = {}\n\n", q(&dir.display().to_string()));
        }
        None => {
            text += "kind = \"genas\"                    # the teacher genas trained, exported beside\n";
            text += "dir = \"teacher\"\n\n";
        }
    }
    text += "[data]\n";
    text += &format!(
        "kind = {}\n",
        q(if tokenizer.is_some() { "text" } else { "image" })
    );
    text += &format!("path = {}\n", q(&data_path.display().to_string()));
    if let Some(v) = &validation_path {
        text += &format!("validation_path = {}\n", q(&v.display().to_string()));
    }
    match tokenizer {
        Some(t) => {
            text += &format!("tokenizer = {}\n", q(t));
            match t {
                "char" => {
                    text +=
                        "vocab = \"genas_vocab.json\"       # genas's characters, in token order\n"
                }
                "hf" => text += "tokenizer_file = \"tokenizer.json\"\n",
                _ => {}
            }
            if let Some(e) = eos {
                text +=
                    &format!("eos = {e}                        # the token after every document\n");
            }
            if let Some(field) = &exp.data.text_field {
                text += &format!("text_field = {}\n", q(field));
            }
            text += &format!("seq_len = {}\n", data.context);
        }
        None => {
            let (size, levels) = (
                exp.data.image_size.unwrap_or(14),
                exp.data.gray_levels.unwrap_or(16),
            );
            text += &format!("image_size = {size}\ngray_levels = {levels}\n");
            if let Some(m) = exp.data.max_images {
                text += &format!("max_images = {m}\n");
            }
        }
    }
    text += &format!(
        "validation_fraction = {}\nval_sequences = {}             # the validation set: evenly spaced whole sequences\n\n",
        f(exp.data.validation_fraction),
        d.val_sequences
    );
    text += &format!(
        "[train]\n\
         steps = {steps}\n\
         batch_size = {batch}                  # sequences a step, over all processes\n\
         learning_rate = {lr}\n\
         min_lr_ratio = {floor}                # cosine to learning_rate × this\n\
         warmup_steps = {warm}\n\
         weight_decay = {wd}                # AdamW, on matrices and embeddings\n\
         beta1 = {b1}\n\
         beta2 = {b2}\n\
         eps = {eps}\n\
         grad_clip = {clip}                  # global L2 norm\n\
         temperature = {temp}                # soft targets softmax(z / T)\n\
         alpha = {alpha}                      # alpha × CE + (1 − alpha) × T² × KL\n\
         top_k = {top_k}                        # soft targets above 1,024 tokens keep their top k\n\
         eval_every = {every}\n\
         checkpoint_every = {every}\n\
         patience = {patience}                       # evaluations without a new best before stopping\n\
         seed = {seed}                           # sequences drawn after batch_order's steps\n\
         batch_order = \"genas_batches.safetensors\"   # genas's draw for its {steps} steps\n\n\
         [genas]\n\
         run = {run_q}\n\
         candidate = {cand_q}\n\
         val_ce = {val}\n",
        batch = d.batch_size,
        lr = f(d.learning_rate),
        floor = f(tc.min_lr_ratio),
        warm = tc.warmup_steps,
        wd = f(tc.weight_decay),
        b1 = f(tc.beta1),
        b2 = f(tc.beta2),
        eps = f(tc.eps),
        clip = f(tc.grad_clip),
        temp = f(d.temperature),
        alpha = f(d.alpha),
        top_k = d.top_k,
        every = cfg.eval_every,
        patience = cfg.patience,
        seed = d.seed,
        run_q = q(run),
        cand_q = q(&cand.id),
        val = distilled.as_ref().map_or("nan".into(), |r| f(r.val_ce)),
    );
    write("train.toml", text.as_bytes())?;
    write("train.py", genas_interop::export::TRAIN_PY.as_bytes())?;
    w.files.extend(TRAIN_FILES.iter().map(|s| s.to_string()));
    w.notes.push(format!(
        "continue its distillation with: python3 {} (torchrun --nproc-per-node N for several GPUs)",
        out.join("train.py").display()
    ));
    Ok(w)
}

/// Little-endian bytes of `v`.
fn le_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
