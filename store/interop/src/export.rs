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
//! - **Llama** (`LlamaForCausalLM`): rope, RMSNorm and swiglu, every layer full or grouped
//!   attention with one head count and one key/value head count (any that divides the heads),
//!   one FFN width, full rank, no sharing. genas's attention and swiglu FFN have no biases, as
//!   Llama's (`attention_bias`, `mlp_bias` false). Llama pairs rotary dimensions as genas does
//!   ("rotate half"), so q and k need no permutation.
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
//! This module knows the parameter names the engine documents (`proxies/engine/src/model.rs`)
//! but not the engine: the caller hands over the tensors, the check batch and its logits.

use genas_space::{Activation, Architecture, Attention, Norm, Position, Sparsity};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The largest difference `genas_check.py` accepts between genas's logits and the export's.
pub const CHECK_TOLERANCE: f64 = 1e-4;

pub const MODEL_PY: &str = include_str!("export/model.py");
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

    pub fn parse(text: &str) -> Result<Format, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == text)
            .ok_or_else(|| format!("unknown export format \"{text}\" (json, hf or pytorch)"))
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

/// The check batch: `tokens` (B rows of T) and genas's logits for it, (B, T, V) row-major.
#[derive(Clone, Debug)]
pub struct Check {
    pub tokens: Vec<Vec<u32>>,
    pub logits: Vec<f64>,
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

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("no transformers family expresses {0}")]
    Unsupported(String),
    #[error("cannot write {}: {reason}", .path.display())]
    Io { path: PathBuf, reason: String },
    #[error("export: {0}")]
    Inconsistent(String),
}

/// A `transformers` family an architecture maps onto.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HfFamily {
    Gpt2,
    /// Per layer: local (sliding window) or global.
    GptNeo {
        window: u32,
        local: Vec<bool>,
    },
    GptBigCode,
    /// Rope, RMSNorm, swiglu, full or grouped attention with `kv_heads` key/value heads.
    Llama {
        kv_heads: u32,
    },
    /// Rope, LayerNorm, gelu or relu, full attention (sequential residuals).
    GptNeoX,
}

impl HfFamily {
    pub fn class(&self) -> &'static str {
        match self {
            HfFamily::Gpt2 => "GPT2LMHeadModel",
            HfFamily::GptNeo { .. } => "GPTNeoForCausalLM",
            HfFamily::GptBigCode => "GPTBigCodeForCausalLM",
            HfFamily::Llama { .. } => "LlamaForCausalLM",
            HfFamily::GptNeoX => "GPTNeoXForCausalLM",
        }
    }
}

/// The `transformers` family `arch` maps onto, or the first choice that has none.
pub fn hf_family(arch: &Architecture) -> Result<HfFamily, ExportError> {
    let no = |what: String| Err(ExportError::Unsupported(what));
    // Rope, RMSNorm and swiglu exist only in GPT-NeoX (rope alone) and Llama (all three).
    let swiglu = arch
        .layers
        .iter()
        .any(|l| l.ffn.activation == Activation::Swiglu);
    let rmsnorm = arch.norm == Norm::Rmsnorm;
    if arch.position.is_rope() && !rmsnorm && !swiglu {
        return neox_family(arch).map_err(ExportError::Unsupported);
    }
    if arch.position.is_rope() || rmsnorm || swiglu {
        return llama_family(arch).map_err(ExportError::Unsupported);
    }
    for (i, l) in arch.layers.iter().enumerate() {
        match l.attention {
            Attention::Linear { .. } => return no(format!("layer {i}'s linear attention")),
            Attention::None => return no(format!("layer {i}'s attention \"none\"")),
            Attention::Grouped { kv_heads, .. } if kv_heads > 1 => {
                return no(format!(
                    "layer {i}'s grouped attention with {kv_heads} key/value heads (only multi-query, 1, maps to GPTBigCode)"
                ))
            }
            _ => {}
        }
        if l.ffn.activation == Activation::Swiglu {
            return no(format!("layer {i}'s swiglu FFN"));
        }
    }
    uniform_dense(arch).map_err(ExportError::Unsupported)?;
    let kinds: Vec<&Attention> = arch.layers.iter().map(|l| &l.attention).collect();
    if kinds.iter().all(|a| matches!(a, Attention::Full { .. })) {
        return Ok(HfFamily::Gpt2);
    }
    if kinds.iter().all(|a| matches!(a, Attention::Grouped { .. })) {
        return Ok(HfFamily::GptBigCode);
    }
    let mut window = None;
    let mut local = Vec::new();
    for (i, a) in kinds.iter().enumerate() {
        match **a {
            Attention::Full { .. } => local.push(false),
            Attention::Sliding { window: w, .. } => {
                match window {
                    Some(w0) if w0 != w => {
                        return no(format!(
                            "per-layer sliding windows (layer windows {w0} and {w} at layer {i})"
                        ))
                    }
                    _ => window = Some(w),
                }
                local.push(true);
            }
            _ => {
                return no(format!(
                    "a mix of {} and {} attention (layer {i})",
                    kinds[0].kind_name(),
                    a.kind_name()
                ))
            }
        }
    }
    if let Some(i) = arch.layers.iter().position(|l| l.attention_bias) {
        return no(format!(
            "layer {i}'s q/k/v biases with sliding attention (GPT-Neo has none)"
        ));
    }
    Ok(HfFamily::GptNeo {
        window: window.expect("some layer is sliding"),
        local,
    })
}

/// GPT-NeoX, or the first choice of `arch` (rope, LayerNorm, gelu or relu) that keeps it out.
fn neox_family(arch: &Architecture) -> Result<HfFamily, String> {
    no_attention_bias(arch)?;
    for (i, l) in arch.layers.iter().enumerate() {
        if !matches!(l.attention, Attention::Full { .. }) {
            return Err(format!(
                "layer {i}'s {} attention with rope and LayerNorm (GPT-NeoX has full attention only; Llama needs rmsnorm and swiglu)",
                l.attention.kind_name()
            ));
        }
    }
    uniform_dense(arch)?;
    Ok(HfFamily::GptNeoX)
}

/// The Llama family, or the first choice of `arch` that keeps it out (rope, RMSNorm or swiglu
/// brought it here: only Llama has them).
fn llama_family(arch: &Architecture) -> Result<HfFamily, String> {
    no_attention_bias(arch)?;
    let needs = "the Llama family needs rope, rmsnorm and swiglu together";
    if !arch.position.is_rope() {
        return Err(format!(
            "learned positions with rmsnorm or swiglu ({needs})"
        ));
    }
    if arch.norm != Norm::Rmsnorm {
        return Err(format!("LayerNorm with rope or swiglu ({needs})"));
    }
    for (i, l) in arch.layers.iter().enumerate() {
        match l.attention {
            Attention::Full { .. } | Attention::Grouped { .. } => {}
            ref other => {
                return Err(format!(
                    "layer {i}'s {} attention (Llama has full and grouped attention only)",
                    other.kind_name()
                ))
            }
        }
        if l.ffn.activation != Activation::Swiglu {
            return Err(format!(
                "layer {i}'s {} FFN with rope and rmsnorm ({needs})",
                l.ffn.activation.name()
            ));
        }
    }
    uniform_dense(arch)?;
    let first = &arch.layers[0];
    if let Some((i, l)) = arch
        .layers
        .iter()
        .enumerate()
        .find(|(_, l)| l.attention.kv_heads() != first.attention.kv_heads())
    {
        return Err(format!(
            "per-layer key/value head counts (layer 0 has {}, layer {i} {})",
            first.attention.kv_heads(),
            l.attention.kv_heads()
        ));
    }
    Ok(HfFamily::Llama {
        kv_heads: first.attention.kv_heads(),
    })
}

/// What every native family needs beyond its own block: no cross-layer sharing, and in every
/// layer a full-rank FFN of layer 0's width and activation, and layer 0's number of heads.
fn uniform_dense(arch: &Architecture) -> Result<(), String> {
    if arch.share_layers > 1 {
        return Err(format!(
            "cross-layer sharing (share_layers = {})",
            arch.share_layers
        ));
    }
    let first = &arch.layers[0];
    for (i, l) in arch.layers.iter().enumerate() {
        if let Some(r) = l.ffn.rank {
            return Err(format!("layer {i}'s low-rank FFN (rank {r})"));
        }
        if l.ffn.hidden != first.ffn.hidden {
            return Err(format!(
                "per-layer FFN widths (layer 0 has {}, layer {i} {})",
                first.ffn.hidden, l.ffn.hidden
            ));
        }
        if l.ffn.activation != first.ffn.activation {
            return Err(format!(
                "per-layer activations (layer 0 {}, layer {i} {})",
                first.ffn.activation.name(),
                l.ffn.activation.name()
            ));
        }
        if l.attention.heads() != first.attention.heads() {
            return Err(format!(
                "per-layer head counts (layer 0 has {}, layer {i} {})",
                first.attention.heads(),
                l.attention.heads()
            ));
        }
    }
    Ok(())
}

/// The rope families (GPT-NeoX, Llama) are written without attention biases.
fn no_attention_bias(arch: &Architecture) -> Result<(), String> {
    match arch.layers.iter().position(|l| l.attention_bias) {
        Some(i) => Err(format!("layer {i}'s attention biases with rope")),
        None => Ok(()),
    }
}

/// The same network without low-rank factors or sharing: every FFN matrix stored as
/// `weight_a` (r, in) and `weight_b` (out, r) becomes `weight` = B·A (computed in f64, rounded
/// once), and every layer of a sharing group gets its own copy of the group's weights. The
/// function is unchanged; the parameter count grows. A low-rank layer's sparsity gene becomes
/// dense (the product of sparse factors is dense) and the zeros of its attention matrices are
/// kept as stored values, without masks. Returns the architecture, the tensors and what changed.
pub fn densify(
    arch: &Architecture,
    tensors: &[Tensor],
) -> Result<(Architecture, Vec<Tensor>, Vec<String>), ExportError> {
    let by_name = ByName::new(tensors);
    let mut dense = arch.clone();
    dense.share_layers = 1;
    let mut notes = Vec::new();
    for (i, l) in dense.layers.iter_mut().enumerate() {
        if l.ffn.rank.take().is_some() && l.sparsity != Sparsity::Dense {
            notes.push(format!(
                "layer {i}: the product of its {} sparse low-rank factors is dense; its attention matrices keep their zeros, without masks",
                l.sparsity
            ));
            l.sparsity = Sparsity::Dense;
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
        let keep_masks = dense.layers[i].sparsity != Sparsity::Dense;
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
                    mask: if keep_masks { t.mask.clone() } else { None },
                });
            }
        }
    }
    let count = |ts: &[Tensor]| ts.iter().map(|t| t.data.len()).sum::<usize>();
    let (before, after) = (count(tensors), count(&out));
    let mut what = Vec::new();
    if arch.layers.iter().any(|l| l.ffn.rank.is_some()) {
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
    let n: usize = check.tokens.iter().map(Vec::len).sum();
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
            seq.iter()
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
        Format::Hf => match hf_family(e.arch) {
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
            if l.sparsity != Sparsity::Dense && custom.is_none() {
                w.notes.push(format!(
                    "layer {i} is {} sparse: its zeros are stored, but transformers does not keep them at zero if you train further (the pytorch export does)",
                    l.sparsity
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

/// (rows, cols) row-major → (cols, rows).
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Renames (and for GPT-2 transposes) genas's tensors into the family's.
fn hf_tensors(f: &HfFamily, e: &Export) -> Result<Vec<Named>, ExportError> {
    let by_name = ByName::new(e.tensors);
    match *f {
        HfFamily::Llama { kv_heads } => return llama_tensors(e, kv_heads, &by_name),
        HfFamily::GptNeoX => return neox_tensors(e, &by_name),
        _ => {}
    }
    let c = e.arch.d_model as usize;
    let mut out = Vec::new();
    for name in ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"] {
        out.push(by_name.renamed(name, format!("transformer.{name}"))?);
    }
    if !e.arch.tie_embeddings {
        out.push(by_name.renamed("lm_head.weight", "lm_head.weight".into())?);
    }
    for (i, layer) in e.arch.layers.iter().enumerate() {
        let g = |s: &str| by_name.get(&format!("h.{i}.{s}"));
        let p = format!("transformer.h.{i}");
        let norms = [
            ("ln_1.weight", "ln_1.weight"),
            ("ln_1.bias", "ln_1.bias"),
            ("ln_2.weight", "ln_2.weight"),
            ("ln_2.bias", "ln_2.bias"),
        ];
        by_name.layer(&mut out, i, &p, &norms)?;
        let qkv = g("attn.c_attn.weight")?;
        let proj = g("attn.c_proj.weight")?;
        let (fc, fc_b) = (g("mlp.c_fc.weight")?, g("mlp.c_fc.bias")?);
        let (mp, mp_b) = (g("mlp.c_proj.weight")?, g("mlp.c_proj.bias")?);
        let h = layer.ffn.hidden as usize;
        let width = qkv.shape[0];
        match f {
            HfFamily::Gpt2 | HfFamily::GptBigCode => {
                // GPT-2's Conv1D stores (in, out); GPTBigCode's nn.Linear (out, in) as genas.
                let conv1d = *f == HfFamily::Gpt2;
                for (name, t, rows, cols) in [
                    ("attn.c_attn", qkv, width, c),
                    ("attn.c_proj", proj, c, c),
                    ("mlp.c_fc", fc, h, c),
                    ("mlp.c_proj", mp, c, h),
                ] {
                    let name = format!("{p}.{name}.weight");
                    out.push(if conv1d {
                        (name, vec![cols, rows], transpose(&t.data, rows, cols))
                    } else {
                        (name, vec![rows, cols], t.data.clone())
                    });
                }
                // The attention biases, or zeros for a layer without them.
                let bias = |name: &str, n: usize| -> Result<Named, ExportError> {
                    let data = if layer.attention_bias {
                        g(&format!("attn.{name}.bias"))?.data.clone()
                    } else {
                        vec![0.0; n]
                    };
                    Ok((format!("{p}.attn.{name}.bias"), vec![n], data))
                };
                out.push(bias("c_attn", width)?);
                out.push(bias("c_proj", c)?);
            }
            HfFamily::Llama { .. } | HfFamily::GptNeoX => {
                unreachable!("llama_tensors and neox_tensors name their own tensors")
            }
            HfFamily::GptNeo { .. } => {
                // GPT-Neo does not scale scores by 1/√hd: the factor goes into q_proj.
                let hd = c / layer.attention.heads() as usize;
                let scale = 1.0 / (hd as f32).sqrt();
                let rows = |r0: usize| qkv.data[r0 * c..(r0 + c) * c].to_vec();
                let q: Vec<f32> = rows(0).iter().map(|x| x * scale).collect();
                let a = format!("{p}.attn.attention");
                out.push((format!("{a}.q_proj.weight"), vec![c, c], q));
                out.push((format!("{a}.k_proj.weight"), vec![c, c], rows(c)));
                out.push((format!("{a}.v_proj.weight"), vec![c, c], rows(2 * c)));
                out.push((
                    format!("{a}.out_proj.weight"),
                    vec![c, c],
                    proj.data.clone(),
                ));
                let out_bias = if layer.attention_bias {
                    g("attn.c_proj.bias")?.data.clone()
                } else {
                    vec![0.0; c]
                };
                out.push((format!("{a}.out_proj.bias"), vec![c], out_bias));
                out.push((format!("{p}.mlp.c_fc.weight"), vec![h, c], fc.data.clone()));
                out.push((
                    format!("{p}.mlp.c_proj.weight"),
                    vec![c, h],
                    mp.data.clone(),
                ));
            }
        }
        out.push((format!("{p}.mlp.c_fc.bias"), vec![h], fc_b.data.clone()));
        out.push((format!("{p}.mlp.c_proj.bias"), vec![c], mp_b.data.clone()));
    }
    Ok(out)
}

/// Llama's names: the embedding, then per layer the two norms, q/k/v/o and gate/up/down, then
/// the final norm and the head (untied only).
fn llama_tensors(e: &Export, kv_heads: u32, by_name: &ByName) -> Result<Vec<Named>, ExportError> {
    let c = e.arch.d_model as usize;
    let mut out = vec![
        by_name.renamed("wte.weight", "model.embed_tokens.weight".into())?,
        by_name.renamed("ln_f.weight", "model.norm.weight".into())?,
    ];
    if !e.arch.tie_embeddings {
        out.push(by_name.renamed("lm_head.weight", "lm_head.weight".into())?);
    }
    for (i, layer) in e.arch.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let pairs = [
            ("ln_1.weight", "input_layernorm.weight"),
            ("ln_2.weight", "post_attention_layernorm.weight"),
            ("attn.c_proj.weight", "self_attn.o_proj.weight"),
            ("mlp.c_gate.weight", "mlp.gate_proj.weight"),
            ("mlp.c_fc.weight", "mlp.up_proj.weight"),
            ("mlp.c_proj.weight", "mlp.down_proj.weight"),
        ];
        by_name.layer(&mut out, i, &p, &pairs)?;
        // c_attn's rows: q (C), k (kvd), v (kvd).
        let qkv = by_name.get(&format!("h.{i}.attn.c_attn.weight"))?;
        let kvd = kv_heads as usize * (c / layer.attention.heads() as usize);
        let mut row0 = 0;
        for (name, rows) in [("q_proj", c), ("k_proj", kvd), ("v_proj", kvd)] {
            let data = qkv.data[row0 * c..(row0 + rows) * c].to_vec();
            out.push((format!("{p}.self_attn.{name}.weight"), vec![rows, c], data));
            row0 += rows;
        }
    }
    Ok(out)
}

/// GPT-NeoX's names. Its fused query_key_value holds, head after head, that head's q, k and v
/// rows; genas's c_attn holds all q rows, then all k, then all v.
fn neox_tensors(e: &Export, by_name: &ByName) -> Result<Vec<Named>, ExportError> {
    let c = e.arch.d_model as usize;
    // transformers 5 reads the head as lm_head, renaming embed_out on load; 4 reads embed_out.
    let head = if e.arch.tie_embeddings {
        "wte.weight"
    } else {
        "lm_head.weight"
    };
    let mut out = vec![
        by_name.renamed("wte.weight", "gpt_neox.embed_in.weight".into())?,
        by_name.renamed("ln_f.weight", "gpt_neox.final_layer_norm.weight".into())?,
        by_name.renamed("ln_f.bias", "gpt_neox.final_layer_norm.bias".into())?,
        by_name.renamed(head, "embed_out.weight".into())?,
    ];
    for (i, layer) in e.arch.layers.iter().enumerate() {
        let p = format!("gpt_neox.layers.{i}");
        let pairs = [
            ("ln_1.weight", "input_layernorm.weight"),
            ("ln_1.bias", "input_layernorm.bias"),
            ("ln_2.weight", "post_attention_layernorm.weight"),
            ("ln_2.bias", "post_attention_layernorm.bias"),
            ("attn.c_proj.weight", "attention.dense.weight"),
            ("mlp.c_fc.weight", "mlp.dense_h_to_4h.weight"),
            ("mlp.c_fc.bias", "mlp.dense_h_to_4h.bias"),
            ("mlp.c_proj.weight", "mlp.dense_4h_to_h.weight"),
            ("mlp.c_proj.bias", "mlp.dense_4h_to_h.bias"),
        ];
        by_name.layer(&mut out, i, &p, &pairs)?;
        let qkv = by_name.get(&format!("h.{i}.attn.c_attn.weight"))?;
        let hd = c / layer.attention.heads() as usize;
        let mut fused = Vec::with_capacity(3 * c * c);
        for h in 0..layer.attention.heads() as usize {
            for part in 0..3 {
                let row0 = part * c + h * hd;
                fused.extend_from_slice(&qkv.data[row0 * c..(row0 + hd) * c]);
            }
        }
        out.push((
            format!("{p}.attention.query_key_value.weight"),
            vec![3 * c, c],
            fused,
        ));
    }
    Ok(out)
}

/// `config.json` of an export with genas's own modeling code.
fn genas_hf_config(e: &Export, arch_json: &Value) -> Value {
    let mut cfg = json!({
        "model_type": "genas",
        "architectures": [GENAS_HF_CLASS],
        "auto_map": {
            "AutoConfig": "configuration_genas.GenasConfig",
            "AutoModelForCausalLM": "modeling_genas.GenasForCausalLM",
        },
        "genas_architecture": arch_json,
        "vocab_size": e.arch.vocab_size,
        "max_position_embeddings": e.arch.context,
        "use_cache": false,
    });
    common_hf_keys(&mut cfg, e);
    // Tied or not, the modeling code holds the head itself (see configuration_genas.py).
    cfg["tie_word_embeddings"] = false.into();
    cfg
}

/// What every `config.json` genas writes carries.
fn common_hf_keys(cfg: &mut Value, e: &Export) {
    let a = e.arch;
    // Token ids beyond the vocabulary (the library defaults) would break generation.
    let bos = match e.vocab {
        Vocab::Pixels { levels } => Value::from(*levels),
        _ => Value::Null,
    };
    let o = cfg.as_object_mut().expect("an object");
    o.insert("tie_word_embeddings".into(), a.tie_embeddings.into());
    o.insert("dtype".into(), "float32".into());
    o.insert("torch_dtype".into(), "float32".into());
    o.entry("use_cache").or_insert(true.into());
    o.insert("bos_token_id".into(), bos.clone());
    o.insert("eos_token_id".into(), bos);
    o.insert("pad_token_id".into(), Value::Null);
    o.insert(
        "genas".into(),
        json!({"architecture_id": a.id(), "architecture": a.summary()}),
    );
}

fn hf_config(f: &HfFamily, e: &Export) -> Value {
    let a = e.arch;
    let l0 = &a.layers[0];
    // transformers' names: "gelu" is the exact one, "gelu_new" GPT-2's tanh approximation.
    let act = match l0.ffn.activation {
        Activation::GeluTanh => "gelu_new",
        other => other.name(),
    };
    let heads = l0.attention.heads();
    let gpt2_keys = |model_type: &str, class: &str| {
        json!({
            "model_type": model_type,
            "architectures": [class],
            "vocab_size": a.vocab_size,
            "n_positions": a.context,
            "n_embd": a.d_model,
            "n_layer": a.depth(),
            "n_head": heads,
            "n_inner": l0.ffn.hidden,
            "activation_function": act,
            "layer_norm_epsilon": 1e-5,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "scale_attn_weights": true,
        })
    };
    // What GPT-NeoX and Llama share: rope, no attention biases, the usual size names.
    let rope_theta = match a.position {
        Position::Rope { theta } => theta.0,
        Position::Learned => 0.0,
    };
    let rope_keys = |model_type: &str| {
        json!({
            "model_type": model_type,
            "architectures": [f.class()],
            "vocab_size": a.vocab_size,
            "max_position_embeddings": a.context,
            "hidden_size": a.d_model,
            "intermediate_size": l0.ffn.hidden,
            "num_hidden_layers": a.depth(),
            "num_attention_heads": heads,
            "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
            "rope_scaling": null,
            "attention_bias": false,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
        })
    };
    let mut cfg = match f {
        HfFamily::Gpt2 => {
            let mut c = gpt2_keys("gpt2", f.class());
            c["scale_attn_by_inverse_layer_idx"] = false.into();
            c["reorder_and_upcast_attn"] = false.into();
            c
        }
        HfFamily::GptBigCode => {
            let mut c = gpt2_keys("gpt_bigcode", f.class());
            c["multi_query"] = true.into();
            c["attention_softmax_in_fp32"] = true.into();
            c["scale_attention_softmax_in_fp32"] = false.into();
            c
        }
        HfFamily::GptNeo { window, local } => {
            // Runs of equal layer kinds, as GPT-Neo's attention_types lists them.
            let mut types: Vec<Value> = Vec::new();
            let mut i = 0;
            while i < local.len() {
                let j = (i..local.len())
                    .find(|&j| local[j] != local[i])
                    .unwrap_or(local.len());
                let kind = if local[i] { "local" } else { "global" };
                types.push(json!([[kind], j - i]));
                i = j;
            }
            json!({
                "model_type": "gpt_neo",
                "architectures": ["GPTNeoForCausalLM"],
                "vocab_size": a.vocab_size,
                "max_position_embeddings": a.context,
                "hidden_size": a.d_model,
                "num_layers": a.depth(),
                "num_heads": heads,
                "attention_types": types,
                "window_size": window,
                "intermediate_size": l0.ffn.hidden,
                "activation_function": act,
                "layer_norm_epsilon": 1e-5,
                "embed_dropout": 0.0,
                "attention_dropout": 0.0,
                "resid_dropout": 0.0,
            })
        }
        HfFamily::GptNeoX => {
            let mut c = rope_keys("gpt_neox");
            let o = c.as_object_mut().expect("an object");
            o.insert("hidden_act".into(), act.into());
            o.insert("layer_norm_eps".into(), genas_space::NORM_EPS.into());
            o.insert("use_parallel_residual".into(), false.into());
            o.insert("hidden_dropout".into(), 0.0.into());
            // transformers 5 reads rope_parameters; earlier versions these two.
            o.insert("rotary_emb_base".into(), rope_theta.into());
            o.insert("rotary_pct".into(), 1.0.into());
            c["rope_parameters"]["partial_rotary_factor"] = 1.0.into();
            c
        }
        HfFamily::Llama { kv_heads } => {
            let mut c = rope_keys("llama");
            let o = c.as_object_mut().expect("an object");
            o.insert("num_key_value_heads".into(), (*kv_heads).into());
            o.insert("head_dim".into(), (a.d_model / heads).into());
            o.insert("hidden_act".into(), "silu".into());
            o.insert("rms_norm_eps".into(), genas_space::NORM_EPS.into());
            // transformers 5 reads rope_parameters; earlier versions rope_theta.
            o.insert("rope_theta".into(), rope_theta.into());
            o.insert("mlp_bias".into(), false.into());
            o.insert("pretraining_tp".into(), 1.into());
            c
        }
    };
    common_hf_keys(&mut cfg, e);
    cfg
}

fn vocab_json(v: &Vocab) -> Value {
    match v {
        Vocab::Chars(chars) => json!({
            "kind": "chars",
            "tokens": chars.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        }),
        Vocab::Bytes => json!({"kind": "bytes", "tokens": 256}),
        Vocab::Tokenizer {
            sha256, entries, ..
        } => json!({
            "kind": "tokenizer",
            "file": "tokenizer.json",
            "sha256": sha256,
            "entries": entries,
        }),
        Vocab::Pixels { levels } => json!({
            "kind": "pixels",
            "levels": levels,
            "begin_of_image": levels,
            "meaning": "token k < levels is gray level k (0 black, levels - 1 white); token `levels` begins an image, whose pixels follow row by row",
        }),
    }
}

/// GPT-2's reversible map from bytes to printable characters (`bytes_to_unicode`): printable
/// Latin-1 bytes stand for themselves, the others for U+0100 onwards in byte order.
fn byte_level_char(b: u8) -> char {
    let printable = |x: u8| (b'!'..=b'~').contains(&x) || (0xA1..=0xAC).contains(&x) || x >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).expect("a valid code point")
}

/// A `tokenizers` tokenizer that maps text to genas's tokens: a BPE model without merges
/// over single characters (or GPT-2 byte-level characters), so every character (byte) is
/// one token.
fn tokenizer_json(v: &Vocab) -> Option<Value> {
    let (vocab, pre, decoder): (serde_json::Map<String, Value>, Value, Value) = match v {
        Vocab::Chars(chars) => (
            chars
                .iter()
                .enumerate()
                .map(|(i, c)| (c.to_string(), Value::from(i)))
                .collect(),
            Value::Null,
            json!({"type": "Fuse"}),
        ),
        Vocab::Bytes => (
            (0..=255u8)
                .map(|b| (byte_level_char(b).to_string(), Value::from(b)))
                .collect(),
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}),
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}),
        ),
        Vocab::Pixels { .. } | Vocab::Tokenizer { .. } => return None,
    };
    Some(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": null,
        "decoder": decoder,
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": [],
        },
    }))
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
    use genas_space::Layer;

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
        }
    }

    /// `layers` with rope, RMSNorm and swiglu, as Llama has them.
    fn llama_like(layers: Vec<Layer>) -> Architecture {
        let mut a = arch(
            layers
                .into_iter()
                .map(|mut l| {
                    l.ffn.activation = Activation::Swiglu;
                    l
                })
                .collect(),
        );
        a.norm = Norm::Rmsnorm;
        a.position = Position::Rope {
            theta: genas_space::Float(1e4),
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
        };
        assert!(refused(&a).contains("layer 1's sliding attention"));
        let mut a = llama_like(vec![layer(full.clone(), 16); 2]);
        a.layers[1].ffn.rank = Some(4);
        assert!(refused(&a).contains("layer 1's low-rank FFN (rank 4)"));
    }

    #[test]
    fn families_follow_the_attention_kinds() {
        let full = Attention::Full { heads: 2 };
        let local = Attention::Sliding {
            heads: 2,
            window: 4,
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
