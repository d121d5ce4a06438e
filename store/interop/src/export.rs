//! The formats a winner leaves genas in, each a directory:
//!
//! | format | files | loads with |
//! |---|---|---|
//! | `json` | `architecture.json`, `candidate.json`, `model.safetensors`, `genas_vocab.json`, `genas_check.json` | `genas train architecture.json`, any safetensors reader |
//! | `pytorch` | the same plus `model.py`, `genas_check.py` | `GenasLM.from_pretrained(DIR)` from `model.py` (PyTorch only) |
//! | `hf` | `config.json`, `model.safetensors` (Hugging Face names), `tokenizer.json` + `tokenizer_config.json` (text), `architecture.json`, `candidate.json`, `genas_vocab.json`, `genas_check.json`, `genas_check.py`; without a native family also `configuration_genas.py`, `modeling_genas.py`, `model.py` | `transformers.AutoModelForCausalLM.from_pretrained(DIR)` (`trust_remote_code=True` for genas's own code) |
//!
//! `architecture.json` is the canonical architecture (the one `genas train` reads);
//! `candidate.json` its cost figures and scores as the caller gives them. Every export carries
//! `genas_check.json`: a fixed token batch and the logits genas computed for it with the
//! exported weights; `python3 DIR/genas_check.py` loads the export the way a user would and
//! compares (max absolute difference within [`CHECK_TOLERANCE`]).
//!
//! Which architectures map onto a `transformers` family ([`hf_family`]):
//! - **GPT-2** (`GPT2LMHeadModel`): every layer full attention with one head count;
//! - **GPT-Neo** (`GPTNeoForCausalLM`): full ("global") and sliding-window ("local") layers,
//!   at least one sliding, one head count and one window;
//! - **GPTBigCode** (`GPTBigCodeForCausalLM`, `multi_query`): every layer grouped attention
//!   with one key/value head (multi-query);
//!
//! and in all three learned positions, LayerNorm, one FFN width and one activation (gelu or
//! relu) across layers, full-rank FFNs and no cross-layer sharing;
//! - **GPT-NeoX** (`GPTNeoXForCausalLM`, sequential residuals): rope, LayerNorm and gelu or
//!   relu, every layer full attention with one head count, one FFN width, full rank, no
//!   sharing; its fused `query_key_value` holds each head's q, k, v rows together, so genas's
//!   rows are regrouped per head; attention biases are off (`attention_bias` false);
//! - **Llama** (`LlamaForCausalLM`): rope (with its scaling), RMSNorm and swiglu, every layer
//!   full or grouped attention with one head count, one key/value head count (any that divides
//!   the heads) and one head width, one FFN width, full rank, no sharing; no attention biases
//!   (`attention_bias`, `mlp_bias` false). Llama pairs rotary dimensions as genas does ("rotate
//!   half"), so q and k need no permutation. The same block with query/key norms is
//!   **Qwen3** (`Qwen3ForCausalLM`), with q/k/v biases **Qwen2** (`Qwen2ForCausalLM`), with one
//!   sliding window on every layer **Mistral** (`MistralForCausalLM`); a plain block takes the
//!   family of the teacher it was distilled from where that is Qwen2 or Mistral
//!   ([`hf_family_for`]).
//!
//! Linear attention, attention `none`, grouped attention with more than one key/value head
//! outside Llama, a mix of families, swiglu outside Llama, rope or RMSNorm outside Llama,
//! low-rank FFNs, per-layer FFN widths and shared layers have no counterpart in a family: `hf`
//! then writes `GenasForCausalLM`, genas's own modeling code (`modeling_genas.py` and
//! `configuration_genas.py` around `model.py`, `auto_map` in `config.json`, weights under
//! `transformer.` with their masks), and its note names the first choice no family has.
//! [`densify`] removes low rank and sharing first, when asked. Sparse layers export to a native
//! family with their zeros stored, and the export says that `transformers` does not keep them
//! at zero in further training (the modeling code and `pytorch` do, with their masks).
//!
//! This module knows the parameter names the engine documents (`proxies/engine/src/model/mod.rs`)
//! but not the engine: the caller hands over the tensors, the check batch and its logits.

mod densify;
mod families;
mod vocab;

pub use densify::densify;
use families::*;
pub use families::{hf_family, hf_family_for, HfFamily};
use vocab::*;

use genas_space::Architecture;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The largest difference `genas_check.py` accepts between genas's logits and the export's.
pub const CHECK_TOLERANCE: f64 = 1e-4;

const MODEL_PY: &str = include_str!("export/model.py");
/// `train.py` of `genas export --with-training`: genas's final distillation in plain PyTorch,
/// reading the corpus itself, for one process or several under `torchrun`.
pub const TRAIN_PY: &str = include_str!("export/train.py");
const CHECK_PY: &str = include_str!("export/genas_check.py");
const CONFIGURATION_PY: &str = include_str!("export/configuration_genas.py");
const MODELING_PY: &str = include_str!("export/modeling_genas.py");

/// The class of an `hf` export that no family fits: `modeling_genas.py`'s.
pub const GENAS_HF_CLASS: &str = "GenasForCausalLM";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Hf,
    Pytorch,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Json, Format::Hf, Format::Pytorch];

    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Hf => "hf",
            Format::Pytorch => "pytorch",
        }
    }
}

/// One parameter under its genas name, (out, in) for matrices, with its 0/1 sparsity mask.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub mask: Option<Vec<f32>>,
}

/// What the tokens stand for.
#[derive(Clone, Debug)]
pub enum Vocab {
    /// Token i is the i-th character.
    Chars(Vec<char>),
    /// Token i is byte i.
    Bytes,
    /// Tokens 0..levels are gray levels (0 black); token `levels` begins an image.
    Pixels { levels: u32 },
    /// A Hugging Face tokenizer: its `tokenizer.json` as read, handed over as is.
    Tokenizer {
        json: Vec<u8>,
        sha256: String,
        entries: u32,
    },
}

/// The check batch: `tokens` (B rows of T) and genas's logits for it, (B, T, V) row-major, or
/// with `positions` (B, P, V) at those positions of every row only (an imported checkpoint at
/// a long context: its check holds a few positions' logits, not T × V per sequence).
#[derive(Clone, Debug)]
pub struct Check {
    pub tokens: Vec<Vec<u32>>,
    pub logits: Vec<f64>,
    pub positions: Option<Vec<usize>>,
}

/// Everything an export writes from.
pub struct Export<'a> {
    pub arch: &'a Architecture,
    pub tensors: &'a [Tensor],
    pub vocab: &'a Vocab,
    pub check: &'a Check,
    /// A text and its tokens, checked to round-trip through the exported tokenizer.
    pub text: Option<(&'a str, &'a [u32])>,
    /// `candidate.json`: cost figures, scores and provenance.
    pub record: Value,
    /// The `model_type` of the pretrained teacher the model was distilled from: `hf` writes
    /// the teacher's family where the model fits it (`hf_family_for`).
    pub teacher_family: Option<&'a str>,
}

/// What an export wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Written {
    pub format: &'static str,
    pub dir: PathBuf,
    pub files: Vec<String>,
    /// The `transformers` class, for `hf`.
    pub hf_class: Option<&'static str>,
    /// What the user should know about the export (one line each).
    pub notes: Vec<String>,
}

/// The tensors of a native `hf` export whose zeros further training must keep (`train.py` of
/// `genas export --with-training` reads them from `train.toml`): `absent`, tensors the family
/// needs that genas's network does not have (all zeros: the attention biases of a student
/// without them); `masked`, the sparse matrices (their zeros are the mask). genas's own
/// modeling code and `pytorch` keep their masks as buffers and have neither.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FixedZeros {
    pub absent: Vec<String>,
    pub masked: Vec<String>,
}

/// [`FixedZeros`] of `e` as `hf` writes it: none for genas's own modeling code; for a native
/// family, that family's tensors of a probe whose every weight is 1 and every masked-out weight
/// 0, so the family's own renaming, transposes, splits and regroupings carry the mask (and a
/// tensor it makes up is all zeros). The probe holds two more copies of the weights while it
/// runs, so only `--with-training` asks for it.
pub fn fixed_zeros(e: &Export) -> Result<FixedZeros, ExportError> {
    let family = match hf_family_for(e.arch, e.teacher_family) {
        Ok(f) => f,
        Err(ExportError::Unsupported(_)) => return Ok(FixedZeros::default()),
        Err(other) => return Err(other),
    };
    let probe: Vec<Tensor> = e
        .tensors
        .iter()
        .map(|t| Tensor {
            data: t.mask.clone().unwrap_or_else(|| vec![1.0; t.data.len()]),
            ..t.clone()
        })
        .collect();
    let mut out = FixedZeros::default();
    let probe = Export {
        arch: e.arch,
        tensors: &probe,
        vocab: e.vocab,
        check: e.check,
        text: e.text,
        record: Value::Null,
        teacher_family: e.teacher_family,
    };
    for (name, _, data) in hf_tensors(&family, &probe)? {
        let zeros = data.iter().filter(|&&x| x == 0.0).count();
        if zeros == data.len() && !data.is_empty() {
            out.absent.push(name);
        } else if zeros > 0 {
            out.masked.push(name);
        }
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("no transformers family expresses {0}")]
    Unsupported(String),
    #[error("cannot write {}: {reason}", .path.display())]
    Io { path: PathBuf, reason: String },
    #[error("export: {0}")]
    Inconsistent(String),
}

/// Writes into `dir` the check of a Hugging Face checkpoint genas did not write (a pretrained
/// teacher in `model_dir`): `genas_check.json` with `check`'s sequences and genas's logits
/// (and `text` with its tokens, for the tokenizer's round trip) and `genas_check.py`, which
/// loads `model_dir` with transformers and compares.
pub fn write_checkpoint_check(
    dir: &Path,
    model_dir: &Path,
    vocab: usize,
    check: &Check,
    text: Option<(&str, &[u32])>,
) -> Result<Written, ExportError> {
    let n: usize = match &check.positions {
        Some(p) => p.len() * check.tokens.len(),
        None => check.tokens.iter().map(Vec::len).sum(),
    };
    if check.logits.len() != n * vocab {
        return Err(ExportError::Inconsistent(format!(
            "{} logits for {n} tokens of a vocabulary of {vocab}",
            check.logits.len()
        )));
    }
    fs::create_dir_all(dir).map_err(|err| io(dir, &err))?;
    let mut w = Written {
        format: Format::Hf.name(),
        dir: dir.to_path_buf(),
        files: Vec::new(),
        hf_class: None,
        notes: Vec::new(),
    };
    let mut rows = check.logits.chunks_exact(vocab);
    let logits: Vec<Vec<Vec<f64>>> = check
        .tokens
        .iter()
        .map(|seq| {
            let per_row = check.positions.as_ref().map_or(seq.len(), Vec::len);
            (0..per_row)
                .filter_map(|_| rows.next().map(<[f64]>::to_vec))
                .collect()
        })
        .collect();
    let mut json = json!({
        "format": "hf",
        "model_dir": model_dir,
        "tolerance": CHECK_TOLERANCE,
        "tokens": check.tokens,
        "logits": logits,
    });
    if let Some(p) = &check.positions {
        json["positions"] = json!(p);
    }
    if let Some((text, tokens)) = text {
        json["text"] = text.into();
        json["text_tokens"] = json!(tokens);
    }
    let text =
        serde_json::to_string(&json).map_err(|e| ExportError::Inconsistent(e.to_string()))?;
    put(dir, "genas_check.json", text.as_bytes(), &mut w)?;
    put(dir, "genas_check.py", CHECK_PY.as_bytes(), &mut w)?;
    Ok(w)
}

/// Writes `e` as `format` into `dir` (created if needed; files of the same names replaced).
/// The bare PyTorch module of a network: `model.py`, `architecture.json` and
/// `model.safetensors` (masks included), without the vocabulary, record or check an export
/// carries. What the PyTorch runner trains.
pub fn write_module(
    dir: &Path,
    arch: &Architecture,
    tensors: &[Tensor],
) -> Result<(), ExportError> {
    fs::create_dir_all(dir).map_err(|err| io(dir, &err))?;
    let mut w = Written {
        format: Format::Pytorch.name(),
        dir: dir.to_path_buf(),
        files: Vec::new(),
        hf_class: None,
        notes: Vec::new(),
    };
    let arch_json: Value =
        serde_json::from_str(&arch.canonical_json()).expect("canonical JSON parses");
    let text = serde_json::to_string_pretty(&arch_json).expect("JSON values serialise") + "\n";
    put(dir, "architecture.json", text.as_bytes(), &mut w)?;
    put(dir, "model.py", MODEL_PY.as_bytes(), &mut w)?;
    let bytes = safetensors_bytes(&genas_tensors(tensors))?;
    put(dir, "model.safetensors", &bytes, &mut w)
}

pub fn export(format: Format, e: &Export, dir: &Path) -> Result<Written, ExportError> {
    check_inputs(e)?;
    // hf: the native family when one fits, else genas's own modeling code.
    let (family, custom) = match format {
        Format::Hf => match hf_family_for(e.arch, e.teacher_family) {
            Ok(f) => (Some(f), None),
            Err(ExportError::Unsupported(why)) => (None, Some(why)),
            Err(other) => return Err(other),
        },
        _ => (None, None),
    };
    fs::create_dir_all(dir).map_err(|err| io(dir, &err))?;
    let mut w = Written {
        format: format.name(),
        dir: dir.to_path_buf(),
        files: Vec::new(),
        hf_class: family
            .as_ref()
            .map(HfFamily::class)
            .or(custom.as_ref().map(|_| GENAS_HF_CLASS)),
        notes: Vec::new(),
    };
    if let Some(why) = &custom {
        w.notes.push(format!(
            "no transformers family expresses {why}: written as {GENAS_HF_CLASS} with its own modeling code (modeling_genas.py); load it with AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)"
        ));
    }
    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("JSON values serialise") + "\n";
    let arch_json: Value =
        serde_json::from_str(&e.arch.canonical_json()).expect("canonical JSON parses");
    put(
        dir,
        "architecture.json",
        pretty(&arch_json).as_bytes(),
        &mut w,
    )?;
    put(dir, "candidate.json", pretty(&e.record).as_bytes(), &mut w)?;
    put(
        dir,
        "genas_vocab.json",
        pretty(&vocab_json(e.vocab)).as_bytes(),
        &mut w,
    )?;
    if let Vocab::Tokenizer { json, .. } = e.vocab {
        put(dir, "tokenizer.json", json, &mut w)?;
    }
    // genas's names (with masks) for json and pytorch and under `transformer.` for the
    // modeling code, the family's for a native hf family.
    let tensors = match (&family, &custom) {
        (Some(f), _) => hf_tensors(f, e)?,
        (None, Some(_)) => genas_tensors(e.tensors)
            .into_iter()
            .map(|(name, shape, data)| (format!("transformer.{name}"), shape, data))
            .collect(),
        (None, None) => genas_tensors(e.tensors),
    };
    put(
        dir,
        "model.safetensors",
        &safetensors_bytes(&tensors)?,
        &mut w,
    )?;
    if format == Format::Pytorch || custom.is_some() {
        put(dir, "model.py", MODEL_PY.as_bytes(), &mut w)?;
    }
    if format == Format::Hf {
        let config = match &family {
            Some(f) => hf_config(f, e),
            None => genas_hf_config(e, &arch_json),
        };
        put(dir, "config.json", pretty(&config).as_bytes(), &mut w)?;
        if custom.is_some() {
            put(
                dir,
                "configuration_genas.py",
                CONFIGURATION_PY.as_bytes(),
                &mut w,
            )?;
            put(dir, "modeling_genas.py", MODELING_PY.as_bytes(), &mut w)?;
        }
        let own = tokenizer_json(e.vocab);
        if let Some(tok) = &own {
            put(dir, "tokenizer.json", pretty(tok).as_bytes(), &mut w)?;
        }
        if own.is_some() || matches!(e.vocab, Vocab::Tokenizer { .. }) {
            let cfg = json!({
                "tokenizer_class": "PreTrainedTokenizerFast",
                "clean_up_tokenization_spaces": false,
                "model_max_length": e.arch.context,
            });
            put(
                dir,
                "tokenizer_config.json",
                pretty(&cfg).as_bytes(),
                &mut w,
            )?;
        }
        for (i, l) in e.arch.layers.iter().enumerate() {
            if l.is_sparse() && custom.is_none() {
                let what = match l.ffn.as_ref().and_then(|f| f.sparsity) {
                    Some(f) => format!("{} sparse (its FFN {f})", l.sparsity),
                    None => format!("{} sparse", l.sparsity),
                };
                w.notes.push(format!(
                    "layer {i} is {what}: its zeros are stored, but transformers does not keep them at zero if you train further (the pytorch export and the train.py of --with-training do)"
                ));
            }
        }
    }
    let check = check_json(format, e);
    put(dir, "genas_check.json", pretty(&check).as_bytes(), &mut w)?;
    if format != Format::Json {
        put(dir, "genas_check.py", CHECK_PY.as_bytes(), &mut w)?;
    }
    Ok(w)
}

fn io(path: &Path, err: &std::io::Error) -> ExportError {
    ExportError::Io {
        path: path.to_path_buf(),
        reason: err.to_string(),
    }
}

fn put(dir: &Path, name: &str, bytes: &[u8], w: &mut Written) -> Result<(), ExportError> {
    let path = dir.join(name);
    fs::write(&path, bytes).map_err(|err| io(&path, &err))?;
    w.files.push(name.to_string());
    Ok(())
}

fn check_inputs(e: &Export) -> Result<(), ExportError> {
    let bad = |m: String| Err(ExportError::Inconsistent(m));
    for t in e.tensors {
        if t.shape.iter().product::<usize>() != t.data.len() {
            return bad(format!(
                "{} holds {} values for shape {:?}",
                t.name,
                t.data.len(),
                t.shape
            ));
        }
        if t.mask.as_ref().is_some_and(|m| m.len() != t.data.len()) {
            return bad(format!("{}'s mask has the wrong size", t.name));
        }
    }
    let v = e.arch.vocab_size as usize;
    let n: usize = e.check.tokens.iter().map(Vec::len).sum();
    if e.check.logits.len() != n * v || e.check.tokens.is_empty() {
        return bad(format!(
            "{} check logits for {n} tokens of a {v}-token vocabulary",
            e.check.logits.len()
        ));
    }
    Ok(())
}

/// A tensor to write: name, shape, values.
type Named = (String, Vec<usize>, Vec<f32>);

/// The tensors handed over, by their genas names.
struct ByName<'a>(BTreeMap<&'a str, &'a Tensor>);

impl<'a> ByName<'a> {
    fn new(tensors: &'a [Tensor]) -> ByName<'a> {
        ByName(tensors.iter().map(|t| (t.name.as_str(), t)).collect())
    }

    fn get(&self, name: &str) -> Result<&'a Tensor, ExportError> {
        self.0
            .get(name)
            .copied()
            .ok_or_else(|| ExportError::Inconsistent(format!("no tensor {name}")))
    }

    /// Tensor `from` as is, under the name `to`.
    fn renamed(&self, from: &str, to: String) -> Result<Named, ExportError> {
        let t = self.get(from)?;
        Ok((to, t.shape.clone(), t.data.clone()))
    }

    /// Layer `i`'s tensors `h.{i}.{from}` as `{prefix}.{to}`, for each (from, to).
    fn layer(
        &self,
        out: &mut Vec<Named>,
        i: usize,
        prefix: &str,
        pairs: &[(&str, &str)],
    ) -> Result<(), ExportError> {
        for (from, to) in pairs {
            out.push(self.renamed(&format!("h.{i}.{from}"), format!("{prefix}.{to}"))?);
        }
        Ok(())
    }
}

/// genas names, and a `P_mask` beside every masked `P`.
fn genas_tensors(tensors: &[Tensor]) -> Vec<Named> {
    let mut out = Vec::new();
    for t in tensors {
        out.push((t.name.clone(), t.shape.clone(), t.data.clone()));
        if let Some(m) = &t.mask {
            out.push((format!("{}_mask", t.name), t.shape.clone(), m.clone()));
        }
    }
    out
}

fn safetensors_bytes(tensors: &[Named]) -> Result<Vec<u8>, ExportError> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), b) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, shape.clone(), b)
            .map_err(|err| ExportError::Inconsistent(format!("{name}: {err}")))?;
        views.push((name.clone(), view));
    }
    // One entry only: safetensors writes its metadata map in hash order, and an export of the
    // same weights should be the same bytes. (The architecture is in architecture.json.)
    let meta: std::collections::HashMap<String, String> =
        [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize(views, Some(meta))
        .map_err(|err| ExportError::Inconsistent(format!("safetensors: {err}")))
}

fn check_json(format: Format, e: &Export) -> Value {
    let v = e.arch.vocab_size as usize;
    let mut rows = e.check.logits.chunks_exact(v);
    let logits: Vec<Vec<Vec<f64>>> = e
        .check
        .tokens
        .iter()
        .map(|seq| {
            seq.iter()
                .map(|_| rows.next().expect("sizes checked").to_vec())
                .collect()
        })
        .collect();
    let mut check = json!({
        "format": format.name(),
        "architecture_id": e.arch.id(),
        "tolerance": CHECK_TOLERANCE,
        "tokens": e.check.tokens,
        "logits": logits,
    });
    if let (Some((text, tokens)), true) = (e.text, format == Format::Hf) {
        check["text"] = text.into();
        check["text_tokens"] = json!(tokens);
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use genas_space::{Activation, Attention, Layer, Norm, Position, Sparsity};

    fn layer(attention: Attention, hidden: u32) -> Layer {
        Layer::new(attention, hidden, Activation::Gelu, None, Sparsity::Dense)
    }

    fn arch(layers: Vec<Layer>) -> Architecture {
        Architecture {
            vocab_size: 10,
            context: 8,
            d_model: 8,
            tie_embeddings: true,
            share_layers: 1,
            layers,
            norm: Default::default(),
            position: Default::default(),
            norm_eps: genas_space::Float(genas_space::NORM_EPS),
        }
    }

    /// `layers` with rope, RMSNorm and swiglu, as Llama has them.
    fn llama_like(layers: Vec<Layer>) -> Architecture {
        let mut a = arch(
            layers
                .into_iter()
                .map(|mut l| {
                    if let Some(f) = l.ffn.as_mut() {
                        f.activation = Activation::Swiglu;
                    }
                    l
                })
                .collect(),
        );
        a.norm = Norm::Rmsnorm;
        a.position = Position::Rope {
            theta: genas_space::Float(1e4),
            scaling: None,
        };
        a
    }

    #[test]
    fn rope_rmsnorm_and_swiglu_go_to_llama_and_nowhere_else() {
        let gqa = Attention::Grouped {
            heads: 4,
            kv_heads: 2,
        };
        let full = Attention::Full { heads: 2 };
        assert_eq!(
            hf_family(&llama_like(vec![layer(gqa.clone(), 16); 2])).unwrap(),
            HfFamily::Llama { kv_heads: 2 }
        );
        assert_eq!(
            hf_family(&llama_like(vec![layer(full.clone(), 16); 2])).unwrap(),
            HfFamily::Llama { kv_heads: 2 }
        );
        let refused = |a: &Architecture| match hf_family(a) {
            Err(ExportError::Unsupported(why)) => why,
            other => panic!("{other:?}"),
        };
        // Rope with LayerNorm and gelu over full attention is GPT-NeoX; with any other
        // attention kind, nothing.
        let mut a = arch(vec![layer(full.clone(), 16); 2]);
        a.position = Position::Rope {
            theta: genas_space::Float(1e4),
            scaling: None,
        };
        assert_eq!(hf_family(&a).unwrap(), HfFamily::GptNeoX);
        let mut b = a.clone();
        b.layers[1].attention = gqa.clone();
        assert!(refused(&b).contains("layer 1's grouped attention with rope and LayerNorm"));
        // One Llama ingredient without the others fits no family (GPT-2 has neither).
        a.norm = Norm::Rmsnorm;
        assert!(refused(&a).contains("layer 0's gelu FFN with rope and rmsnorm"));
        let mut a = llama_like(vec![layer(full.clone(), 16); 2]);
        a.norm = Norm::Layernorm;
        assert!(refused(&a).starts_with("LayerNorm with rope or swiglu"));
        let mut a = llama_like(vec![layer(full.clone(), 16); 2]);
        a.position = Position::Learned;
        assert!(refused(&a).starts_with("learned positions with rmsnorm or swiglu"));
        let mut a = llama_like(vec![layer(full.clone(), 16), layer(gqa.clone(), 16)]);
        assert!(refused(&a).contains("per-layer head counts"));
        a.layers[1] = a.layers[0].clone();
        a.layers[1].attention = Attention::Sliding {
            heads: 2,
            window: 4,
            kv_heads: None,
        };
        assert!(refused(&a).contains("layer 1's sliding attention"));
        let mut a = llama_like(vec![layer(full.clone(), 16); 2]);
        a.layers[1].ffn.as_mut().unwrap().rank = Some(4);
        assert!(refused(&a).contains("layer 1's low-rank FFN (rank 4)"));
        // A layer without an FFN (blockwise search's no-op) has no family, in either path.
        let mut a = llama_like(vec![layer(full.clone(), 16); 2]);
        a.layers[1].ffn = None;
        assert!(
            refused(&a).contains("layer 1 without an FFN"),
            "{}",
            refused(&a)
        );
        let mut a = arch(vec![layer(full.clone(), 16); 2]);
        a.layers[0].ffn = None;
        assert!(
            refused(&a).contains("layer 0 without an FFN"),
            "{}",
            refused(&a)
        );
    }

    /// A GPT-2 export of layers without attention biases (the family has them: zeros it must
    /// keep) whose second layer is 2:4 sparse (its matrices keep their zeros), and a Llama one
    /// with neither; genas's own code has neither list.
    #[test]
    fn a_native_family_names_the_zeros_further_training_must_keep() {
        let full = Attention::Full { heads: 2 };
        let mut a = arch(vec![layer(full.clone(), 16); 2]);
        a.layers[1].sparsity = Sparsity::TwoFour;
        let model = genas_engine::Model::new(&a, genas_engine::Cpu::<f32>::new(1), 7);
        let tensors = crate::model_tensors(&model);
        let vocab = Vocab::Chars("abcdefghij".chars().collect());
        let check = Check {
            tokens: vec![vec![0; 8]],
            logits: vec![0.0; 80],
            positions: None,
        };
        let e = |arch| Export {
            arch,
            tensors: &tensors,
            vocab: &vocab,
            check: &check,
            text: None,
            record: Value::Null,
            teacher_family: None,
        };
        let f = fixed_zeros(&e(&a)).unwrap();
        let mut absent = f.absent.clone();
        absent.sort();
        assert_eq!(
            absent,
            [0, 1]
                .iter()
                .flat_map(
                    |i| ["c_attn", "c_proj"].map(|m| format!("transformer.h.{i}.attn.{m}.bias"))
                )
                .collect::<Vec<_>>()
        );
        assert!(!f.masked.is_empty());
        for name in &f.masked {
            assert!(
                name.starts_with("transformer.h.1.") && name.ends_with(".weight"),
                "{name}"
            );
        }
        // Every matrix the engine masks is listed, under the family's name.
        let engine_masked = tensors.iter().filter(|t| t.mask.is_some()).count();
        assert_eq!(f.masked.len(), engine_masked);
        // genas's own modeling code keeps its masks as buffers: nothing to list.
        let mut own = a.clone();
        own.layers[0].attention = Attention::Linear { heads: 2 };
        assert_eq!(fixed_zeros(&e(&own)).unwrap(), FixedZeros::default());
        // Dense, biasless Llama blocks: nothing to keep.
        let dense = llama_like(vec![layer(full, 16); 2]);
        let model = genas_engine::Model::new(&dense, genas_engine::Cpu::<f32>::new(1), 7);
        let tensors = crate::model_tensors(&model);
        let e = Export {
            tensors: &tensors,
            ..e(&dense)
        };
        assert_eq!(fixed_zeros(&e).unwrap(), FixedZeros::default());
    }

    #[test]
    fn families_follow_the_attention_kinds() {
        let full = Attention::Full { heads: 2 };
        let local = Attention::Sliding {
            heads: 2,
            window: 4,
            kv_heads: None,
        };
        let mq = Attention::Grouped {
            heads: 2,
            kv_heads: 1,
        };
        assert_eq!(
            hf_family(&arch(vec![layer(full.clone(), 16); 2])).unwrap(),
            HfFamily::Gpt2
        );
        assert_eq!(
            hf_family(&arch(vec![layer(mq.clone(), 16); 2])).unwrap(),
            HfFamily::GptBigCode
        );
        assert_eq!(
            hf_family(&arch(vec![
                layer(full.clone(), 16),
                layer(local.clone(), 16),
                layer(local.clone(), 16)
            ]))
            .unwrap(),
            HfFamily::GptNeo {
                window: 4,
                local: vec![false, true, true]
            }
        );
    }

    #[test]
    fn what_has_no_family_is_named() {
        let full = Attention::Full { heads: 2 };
        let cases: Vec<(Architecture, &str)> = vec![
            (
                arch(vec![
                    layer(full.clone(), 16),
                    layer(Attention::Linear { heads: 2 }, 16),
                ]),
                "layer 1's linear attention",
            ),
            (
                arch(vec![layer(Attention::None, 16)]),
                "layer 0's attention \"none\"",
            ),
            (
                arch(vec![layer(full.clone(), 16), layer(full.clone(), 24)]),
                "per-layer FFN widths",
            ),
            (
                arch(vec![
                    layer(full.clone(), 16),
                    layer(
                        Attention::Grouped {
                            heads: 2,
                            kv_heads: 1,
                        },
                        16,
                    ),
                ]),
                "a mix of full and grouped attention",
            ),
            (
                arch(vec![Layer::new(
                    full.clone(),
                    16,
                    Activation::Swiglu,
                    None,
                    Sparsity::Dense,
                )]),
                "swiglu",
            ),
            (
                arch(vec![Layer::new(
                    full.clone(),
                    16,
                    Activation::Gelu,
                    Some(2),
                    Sparsity::Dense,
                )]),
                "low-rank FFN (rank 2)",
            ),
            (
                Architecture {
                    share_layers: 2,
                    ..arch(vec![layer(full.clone(), 16); 2])
                },
                "cross-layer sharing",
            ),
        ];
        for (a, needle) in cases {
            let err = hf_family(&a).unwrap_err().to_string();
            assert!(
                err.starts_with("no transformers family expresses") && err.contains(needle),
                "{err}"
            );
        }
    }

    #[test]
    fn byte_level_characters_are_gpt2s() {
        // Known values of GPT-2's bytes_to_unicode: space → Ġ, newline → Ċ, 'a' → 'a'.
        assert_eq!(byte_level_char(b' '), 'Ġ');
        assert_eq!(byte_level_char(b'\n'), 'Ċ');
        assert_eq!(byte_level_char(b'a'), 'a');
        assert_eq!(byte_level_char(0), 'Ā');
        let all: std::collections::BTreeSet<char> = (0..=255u8).map(byte_level_char).collect();
        assert_eq!(all.len(), 256);
    }

    #[test]
    fn gpt2_matrices_are_transposed() {
        let m: Vec<f32> = (0..6).map(|x| x as f32).collect();
        // (2, 3) → (3, 2)
        assert_eq!(transpose(&m, 2, 3), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }
}
