//! Teachers from Hugging Face checkpoints: a directory as transformers' `save_pretrained`
//! writes it (`config.json`, `model.safetensors` or shards listed in
//! `model.safetensors.index.json`), read into a genas [`Model`] that computes the same
//! function, so the teacher runs on the genas engine.
//!
//! Families: the Llama block (rope + RMSNorm + SwiGLU, full or grouped attention) as Llama
//! (SmolLM2, TinyLlama, Llama 3.x with its `llama3` or `linear` rope scaling, `attention_bias`),
//! Qwen2 (q/k/v biases), Qwen3 (query/key norms, a head width of its own) and Mistral (a
//! sliding window on every layer) write it; GPT-2 (DistilGPT2 and the GPT-2 sizes), GPT-Neo
//! (global and local attention) and GPTBigCode (multi-query attention): learned positions,
//! LayerNorm, biases on every projection, GELU's tanh form. Each config's norm epsilon is the
//! architecture's. Weights in f32, f16 or bf16 are converted to f32 on load. Everything the
//! engine cannot compute exactly (another `model_type`, another rope type, a partial rotary
//! factor, Qwen's partial sliding windows, a tensor the config does not account for) is refused
//! with one line naming it, before any weight is allocated: every tensor's shape and dtype is
//! checked against the config first, so the memory a checkpoint takes is bounded by its files.
//!
//! A checkpoint's key is the SHA-256 of its config and weight files (names, lengths and
//! bytes): the same files are the same teacher wherever they lie.

use crate::names::{GPT, GPT_NEO_ATTENTION, LLAMA, LLAMA_O_BIAS, LLAMA_QK_NORM};
use genas_engine::backend::Backend;
use genas_engine::model::Model;
use genas_space::arch::limits::MAX_CONTEXT;
use genas_space::SearchSpace;
use genas_space::{
    Activation, Architecture, Attention, Float, Layer, Norm, Position, RopeScaling, Sparsity,
};
use safetensors::tensor::{Dtype, SafeTensors};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Why a checkpoint cannot be a teacher. `Display` is one line naming the directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{dir}: {reason}")]
pub struct PretrainedError {
    pub dir: String,
    pub reason: String,
}

/// The families `[teacher] pretrained` reads, as `model_type` names them.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &[
    "llama",
    "qwen2",
    "qwen3",
    "mistral",
    "gpt2",
    "gpt_neo",
    "gpt_bigcode",
];

/// A checkpoint directory whose config maps onto a genas architecture; the weights are read by
/// [`Checkpoint::load`].
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub model_type: String,
    family: Family,
    /// `transformer.` before GPT-family tensor names, or nothing (GPT-2's own files).
    prefix: String,
    /// The architecture at the checkpoint's own context (`max_position_embeddings`).
    pub architecture: Architecture,
    /// Weight files, in name order, and which file holds each tensor.
    files: Vec<PathBuf>,
    tensor_file: BTreeMap<String, PathBuf>,
    /// 16 hex digits of SHA-256 over config and weight files.
    pub key: String,
    /// Bytes of the weight files.
    pub weight_bytes: u64,
}

fn err(dir: &Path, reason: impl Into<String>) -> PretrainedError {
    PretrainedError {
        dir: dir.display().to_string(),
        reason: reason.into(),
    }
}

/// Bytes `Checkpoint::load` holds beside the model while it reads `arch`'s weights: the files
/// are mapped and each tensor's pages let go once it is written, so one tensor at a time: its
/// pages (at most f32, 4 bytes a value) and its values in f64; a block's matrix once more when
/// it is transposed (GPT-2's Conv1D) or scaled (GPT-Neo's queries).
pub fn load_bytes(arch: &Architecture) -> f64 {
    let c = arch.d_model as f64;
    let widest_ffn = arch
        .layers
        .iter()
        .map(|l| l.ffn_hidden())
        .max()
        .unwrap_or(0) as f64;
    let widest_qkv = arch
        .layers
        .iter()
        .map(|l| {
            let (_, q, kvd) = genas_space::cost::attention_widths(arch.d_model, l);
            q + 2 * kvd
        })
        .max()
        .unwrap_or(0) as f64;
    let block = (widest_ffn * c).max(widest_qkv * c);
    let largest = (f64::from(arch.vocab_size) * c).max(block);
    (4.0 + 8.0) * largest + 8.0 * block
}

/// Files larger than this are not parsed as JSON (a config or an index is a few kilobytes).
const MAX_JSON_BYTES: u64 = 64 << 20;

fn read_json(dir: &Path, name: &str) -> Result<Value, PretrainedError> {
    let bytes = genas_space::files::read_bounded(&dir.join(name), MAX_JSON_BYTES)
        .map_err(|e| err(dir, format!("cannot read {name}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| err(dir, format!("{name} is not JSON: {e}")))
}

/// The most the engine computes for a count a config may hold, by its key in any family;
/// positions are not sized from (a learned table is cut to the data's context).
fn limit_of(key: &str) -> u64 {
    use genas_space::arch::limits::*;
    match key {
        "num_hidden_layers" | "n_layer" | "num_layers" => MAX_DEPTH.into(),
        "hidden_size" | "n_embd" => MAX_D_MODEL.into(),
        "num_attention_heads" | "num_key_value_heads" | "n_head" | "num_heads" => MAX_HEADS.into(),
        "intermediate_size" | "n_inner" => MAX_FFN_HIDDEN.into(),
        "vocab_size" => MAX_VOCAB.into(),
        _ => u32::MAX.into(),
    }
}

/// A config entry as a positive integer within the engine's limit for it: checked before
/// anything is sized from it.
fn count(dir: &Path, cfg: &Value, key: &str) -> Result<u32, PretrainedError> {
    let n = cfg
        .get(key)
        .and_then(Value::as_u64)
        .filter(|&n| n >= 1)
        .ok_or_else(|| err(dir, format!("config.json has no positive integer {key:?}")))?;
    let limit = limit_of(key);
    if n > limit {
        return Err(err(
            dir,
            format!("config.json's {key} = {n} is above the limit genas computes ({limit})"),
        ));
    }
    Ok(n as u32)
}

/// The vocabulary size `dir`'s config.json declares, read without opening the weights.
pub fn config_vocab_size(dir: &Path) -> Result<u32, PretrainedError> {
    if !dir.is_dir() {
        return Err(err(dir, "not a directory (a Hugging Face checkpoint is a folder with config.json and safetensors weights)"));
    }
    count(dir, &read_json(dir, "config.json")?, "vocab_size")
}

impl Checkpoint {
    /// Reads `dir`'s config and the headers of its weight files; refuses what genas cannot
    /// compute. Reads no weights beyond hashing them.
    pub fn open(dir: &Path) -> Result<Checkpoint, PretrainedError> {
        if !dir.is_dir() {
            return Err(err(dir, "not a directory (a Hugging Face checkpoint is a folder with config.json and safetensors weights)"));
        }
        let cfg = read_json(dir, "config.json")?;
        let model_type = cfg
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| err(dir, "config.json names no model_type"))?
            .to_string();
        let family = match model_type.as_str() {
            "llama" => Family::Llama,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "mistral" => Family::Mistral,
            "gpt2" => Family::Gpt2,
            "gpt_neo" => Family::GptNeo,
            "gpt_bigcode" => Family::GptBigCode,
            other => {
                return Err(err(
                    dir,
                    format!(
                        "model_type {other:?} is not supported as a teacher (supported: {})",
                        SUPPORTED_MODEL_TYPES.join(", ")
                    ),
                ))
            }
        };
        let architecture = if family.llama_block() {
            llama_architecture(dir, &cfg, family)?
        } else {
            gpt_architecture(dir, &cfg, family)?
        };
        let (files, tensor_file) = weight_files(dir)?;
        // GPT-2's own files name tensors without the `transformer.` prefix.
        let prefix = if !family.llama_block() && !tensor_file.contains_key("transformer.wte.weight")
        {
            ""
        } else {
            "transformer."
        };
        let mut ck = Checkpoint {
            dir: dir.to_path_buf(),
            model_type,
            family,
            prefix: prefix.to_string(),
            architecture,
            files,
            tensor_file,
            key: String::new(),
            weight_bytes: 0,
        };
        ck.check_tensors()?;
        ck.key = ck.hash_files()?;
        Ok(ck)
    }

    /// What a space lacks of this teacher's block for its students to leave in the teacher's
    /// family (`genas export --format hf`): the settings to add, as `[space]` keys, or `None`
    /// when the space keeps them (or the teacher is not of a Llama-block family).
    pub fn family_note(&self, space: &SearchSpace) -> Option<String> {
        if !self.family.llama_block() {
            return None;
        }
        let t = &self.architecture;
        let l = &t.layers[0];
        let mut add: Vec<String> = Vec::new();
        if !space.activation.contains(&Activation::Swiglu) {
            add.push("activation = [\"swiglu\"]".into());
        }
        if !space.norm.contains(&Norm::Rmsnorm) {
            add.push("norm = [\"rmsnorm\"]".into());
        }
        if !space.position.contains(&t.position) {
            if let Position::Rope { theta, scaling } = t.position {
                add.push(format!("position = [\"rope\"], rope_theta = {}", theta.0));
                if let Some(s) = scaling {
                    add.push(format!(
                        "rope_scaling (type \"{}\", as the teacher's)",
                        s.name()
                    ));
                }
            }
        }
        if space.norm_eps.to_bits() != t.norm_eps.0.to_bits() {
            add.push(format!("norm_eps = {:e}", t.norm_eps.0));
        }
        if l.qkv_bias && !space.qkv_bias {
            add.push("qkv_bias = true".into());
        }
        if l.qk_norm && !space.qk_norm {
            add.push("qk_norm = true".into());
        }
        (!add.is_empty()).then(|| {
            format!(
                "the teacher is a {} model; students leave as one (export --format hf) only with its block: add {} to [space]",
                self.model_type,
                add.join("; ")
            )
        })
    }

    /// The architecture run at `context` tokens, which must not exceed the checkpoint's.
    /// (A sliding window as long as the context is full attention there.)
    pub fn architecture_at(&self, context: u32) -> Result<Architecture, PretrainedError> {
        if context > self.architecture.context {
            return Err(err(
                &self.dir,
                format!(
                    "the data's sequences of {context} tokens exceed the checkpoint's context of {} (max_position_embeddings)",
                    self.architecture.context
                ),
            ));
        }
        let mut arch = Architecture {
            context,
            ..self.architecture.clone()
        };
        windows_within(&mut arch);
        Ok(arch)
    }

    /// The checkpoint as a genas model at `context` tokens.
    pub fn load<B: Backend>(&self, be: B, context: u32) -> Result<Model<B>, PretrainedError> {
        let arch = self.architecture_at(context)?;
        let mut model = Model::new(&arch, be, 0);
        let plan = self.plan();
        for file in &self.files {
            let cannot =
                |e: std::io::Error| err(&self.dir, format!("cannot read {}: {e}", file.display()));
            let f = std::fs::File::open(file).map_err(cannot)?;
            // SAFETY: the mapping is read only, and a checkpoint's files are not written while
            // genas reads them (the key, a hash of their bytes, is checked against the archive).
            let map = unsafe { memmap2::Mmap::map(&f) }.map_err(cannot)?;
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| err(&self.dir, format!("{}: {e}", file.display())))?;
            for entry in &plan {
                if self.tensor_file.get(&entry.hf) != Some(file) {
                    continue;
                }
                let view = st
                    .tensor(&entry.hf)
                    .map_err(|e| err(&self.dir, format!("{}: {e}", entry.hf)))?;
                let values = to_f64(view.dtype(), view.data()).ok_or_else(|| {
                    err(&self.dir, format!("{}: dtype {:?}", entry.hf, view.dtype()))
                })?;
                // A NaN or an infinity would poison every figure computed from the teacher.
                if let Some(at) = values.iter().position(|x| !x.is_finite()) {
                    return Err(err(
                        &self.dir,
                        format!(
                            "{} holds {} at element {at}: a teacher's weights must be finite",
                            entry.hf, values[at]
                        ),
                    ));
                }
                entry.write(&mut model, &values);
                // The tensor's pages are read: let them go from this process's memory (they
                // are the file's, read again if ever needed), so a checkpoint costs one tensor
                // at a time, not a file.
                let start = view.data().as_ptr() as usize - map.as_ptr() as usize;
                // SAFETY: nothing borrowed from this range is used after this point (`view` and
                // `values` are dropped or copied), and the mapping is read only, so
                // dropping its pages only means reading them from the file again.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        view.data().len(),
                    )
                };
            }
        }
        Ok(model)
    }

    /// Every checkpoint tensor genas reads: its name, its shape, and where it goes.
    fn plan(&self) -> Vec<Entry> {
        if self.family.llama_block() {
            self.llama_plan()
        } else {
            self.gpt_plan()
        }
    }

    fn llama_plan(&self) -> Vec<Entry> {
        let a = &self.architecture;
        let (v, c) = (a.vocab_size as usize, a.d_model as usize);
        let mut out = Vec::new();
        for (ours, theirs) in LLAMA.global {
            let shape = if *ours == "ln_f.weight" {
                vec![c]
            } else {
                vec![v, c]
            };
            if !(*ours == "lm_head.weight" && a.tie_embeddings) {
                out.push(Entry::whole(theirs, shape, ours));
            }
        }
        let [q_proj, k_proj, v_proj] = LLAMA.qkv.expect("Llama's q, k and v are separate");
        for (i, layer) in a.layers.iter().enumerate() {
            let p = format!("{}.{i}", LLAMA.layers);
            let h = layer.ffn_hidden() as usize;
            let hd = a.head_dim(layer) as usize;
            let q = a.attn_width(layer) as usize;
            let kvd = layer.attention.kv_heads() as usize * hd;
            for (ours, theirs) in LLAMA.layer {
                // (out, in) of each matrix; the norms are vectors.
                let shape = match *ours {
                    "attn.c_proj.weight" => vec![c, q],
                    "mlp.c_gate.weight" | "mlp.c_fc.weight" => vec![h, c],
                    "mlp.c_proj.weight" => vec![c, h],
                    _ => vec![c],
                };
                out.push(Entry::whole(
                    &format!("{p}.{theirs}"),
                    shape,
                    &format!("h.{i}.{ours}"),
                ));
            }
            // genas's c_attn holds q (H·hd rows), then k and v (kvd rows each); its bias the
            // same blocks.
            let blocks = [(q_proj, q, 0), (k_proj, kvd, q), (v_proj, kvd, q + kvd)];
            let qkv = format!("h.{i}.attn.c_attn.weight");
            for (name, rows, row0) in blocks {
                let mut e = Entry::whole(&format!("{p}.{name}"), vec![rows, c], &qkv);
                e.offset = row0 * c;
                out.push(e);
            }
            if layer.has_qkv_bias() {
                let bias = format!("h.{i}.attn.c_attn.bias");
                for (name, rows, row0) in blocks {
                    let name = name.replace(".weight", ".bias");
                    let mut e = Entry::whole(&format!("{p}.{name}"), vec![rows], &bias);
                    e.offset = row0;
                    out.push(e);
                }
            }
            if layer.attention_bias {
                out.push(Entry::whole(
                    &format!("{p}.{LLAMA_O_BIAS}"),
                    vec![c],
                    &format!("h.{i}.attn.c_proj.bias"),
                ));
            }
            if layer.qk_norm {
                for (theirs, ours) in LLAMA_QK_NORM {
                    out.push(Entry::whole(
                        &format!("{p}.{theirs}"),
                        vec![hd],
                        &format!("h.{i}.{ours}"),
                    ));
                }
            }
        }
        out
    }

    /// GPT-2, GPT-Neo and GPTBigCode: learned positions, LayerNorm, biases everywhere.
    fn gpt_plan(&self) -> Vec<Entry> {
        let a = &self.architecture;
        let t = &self.prefix;
        let (v, c, ctx) = (
            a.vocab_size as usize,
            a.d_model as usize,
            a.context as usize,
        );
        let mut out: Vec<Entry> = GPT
            .global
            .iter()
            .map(|(ours, theirs)| {
                let theirs = format!("{t}{theirs}");
                match *ours {
                    "wte.weight" => Entry::whole(&theirs, vec![v, c], ours),
                    // A checkpoint's positions beyond the context are left out.
                    "wpe.weight" => Entry {
                        truncate: true,
                        ..Entry::whole(&theirs, vec![ctx, c], ours)
                    },
                    _ => Entry::whole(&theirs, vec![c], ours),
                }
            })
            .collect();
        if !a.tie_embeddings {
            out.push(Entry::whole("lm_head.weight", vec![v, c], "lm_head.weight"));
        }
        for (i, layer) in a.layers.iter().enumerate() {
            let p = format!("{t}{}.{i}", GPT.layers);
            let g = |s: &str| format!("h.{i}.{s}");
            let h = layer.ffn_hidden() as usize;
            let hd = c / layer.attention.heads() as usize;
            let width = c + 2 * layer.attention.kv_heads() as usize * hd;
            for (ours, theirs) in GPT.layer {
                let len = if *ours == "mlp.c_fc.bias" { h } else { c };
                out.push(Entry::whole(&format!("{p}.{theirs}"), vec![len], &g(ours)));
            }
            match self.family {
                Family::Gpt2 | Family::GptBigCode => {
                    // GPT-2's Conv1D stores (in, out): transposed on the way in.
                    let conv = self.family == Family::Gpt2;
                    for (n, rows, cols) in [
                        ("attn.c_attn", width, c),
                        ("attn.c_proj", c, c),
                        ("mlp.c_fc", h, c),
                        ("mlp.c_proj", c, h),
                    ] {
                        let shape = if conv {
                            vec![cols, rows]
                        } else {
                            vec![rows, cols]
                        };
                        out.push(Entry {
                            transpose: conv,
                            ..Entry::whole(
                                &format!("{p}.{n}.weight"),
                                shape,
                                &g(&format!("{n}.weight")),
                            )
                        });
                    }
                    for (n, len) in [("attn.c_attn.bias", width), ("attn.c_proj.bias", c)] {
                        out.push(Entry::whole(&format!("{p}.{n}"), vec![len], &g(n)));
                    }
                }
                Family::GptNeo => {
                    // GPT-Neo does not scale scores by 1/√hd, genas does: q is scaled up.
                    let [q_proj, k_proj, v_proj, out_proj] = GPT_NEO_ATTENTION;
                    for (n, row0, scale) in [
                        (q_proj, 0, (hd as f64).sqrt()),
                        (k_proj, c, 1.0),
                        (v_proj, 2 * c, 1.0),
                    ] {
                        out.push(Entry {
                            offset: row0 * c,
                            scale,
                            ..Entry::whole(
                                &format!("{p}.{n}"),
                                vec![c, c],
                                &g("attn.c_attn.weight"),
                            )
                        });
                    }
                    for (from, shape, to) in [
                        (
                            format!("{p}.{out_proj}.weight"),
                            vec![c, c],
                            "attn.c_proj.weight",
                        ),
                        (format!("{p}.{out_proj}.bias"), vec![c], "attn.c_proj.bias"),
                        (
                            format!("{p}.mlp.c_fc.weight"),
                            vec![h, c],
                            "mlp.c_fc.weight",
                        ),
                        (
                            format!("{p}.mlp.c_proj.weight"),
                            vec![c, h],
                            "mlp.c_proj.weight",
                        ),
                    ] {
                        out.push(Entry::whole(&from, shape, &g(to)));
                    }
                }
                _ => unreachable!("llama_plan reads the Llama block's families"),
            }
        }
        out
    }

    /// Tensors a checkpoint may hold that genas recomputes rather than reads: causal-mask
    /// buffers older GPT-2 and GPT-Neo files saved, rotary tables, and a tied head.
    fn ignored(&self, name: &str) -> bool {
        (self.architecture.tie_embeddings && name == "lm_head.weight")
            || name.ends_with("rotary_emb.inv_freq")
            || (!self.family.llama_block()
                && (name.ends_with(".attn.bias")
                    || name.ends_with(".attn.masked_bias")
                    || name.ends_with(".attention.bias")
                    || name.ends_with(".attention.masked_bias")))
    }

    /// Every tensor the architecture needs is present with its shape and a supported dtype,
    /// and nothing else is (a bias the family has not would be silently dropped otherwise).
    fn check_tensors(&mut self) -> Result<(), PretrainedError> {
        let mut expected: BTreeMap<String, Vec<usize>> =
            self.plan().into_iter().map(|e| (e.hf, e.shape)).collect();
        let mut bytes = 0u64;
        for file in &self.files {
            let (shapes, len) = read_header(&self.dir, file)?;
            bytes += len;
            for (name, (dtype, shape)) in shapes {
                if self.tensor_file.get(&name).is_none_or(|f| f != file) || self.ignored(&name) {
                    continue;
                }
                let Some(want) = expected.remove(&name) else {
                    return Err(err(
                        &self.dir,
                        format!("tensor {name} has no place in a {} genas can build (biases and extra modules are not supported)", self.model_type),
                    ));
                };
                if shape != want {
                    return Err(err(
                        &self.dir,
                        format!(
                            "tensor {name} has shape {shape:?}, but config.json implies {want:?}"
                        ),
                    ));
                }
                if dtype.is_none() {
                    return Err(err(
                        &self.dir,
                        format!("tensor {name}'s dtype is not one genas reads (f32, f16, bf16)"),
                    ));
                }
            }
        }
        if let Some((name, _)) = expected.into_iter().next() {
            return Err(err(&self.dir, format!("the weights lack tensor {name}")));
        }
        self.weight_bytes = bytes;
        Ok(())
    }

    fn hash_files(&self) -> Result<String, PretrainedError> {
        let mut h = Sha256::new();
        let config = self.dir.join("config.json");
        for path in std::iter::once(&config).chain(&self.files) {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let mut file = std::fs::File::open(path)
                .map_err(|e| err(&self.dir, format!("cannot read {}: {e}", path.display())))?;
            h.update(name.unwrap_or_default().as_bytes());
            h.update([0]);
            let n = std::io::copy(&mut file, &mut h)
                .map_err(|e| err(&self.dir, format!("cannot read {}: {e}", path.display())))?;
            h.update(n.to_le_bytes());
        }
        Ok(genas_space::hex16(h))
    }
}

/// The transformers families genas reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Llama,
    Qwen2,
    Qwen3,
    Mistral,
    Gpt2,
    GptNeo,
    GptBigCode,
}

impl Family {
    /// Llama's block (rope, RMSNorm, SwiGLU) and Llama's tensor names: Llama, Qwen2, Qwen3,
    /// Mistral.
    fn llama_block(self) -> bool {
        matches!(
            self,
            Family::Llama | Family::Qwen2 | Family::Qwen3 | Family::Mistral
        )
    }
}

/// One checkpoint tensor of `shape` and where its values go: `offset` values into the genas
/// parameter `target`, transposed from (in, out) when `transpose`, times `scale`, and only as
/// many rows as the parameter has when `truncate` (position tables longer than the context).
#[derive(Clone, Debug)]
struct Entry {
    hf: String,
    shape: Vec<usize>,
    target: String,
    offset: usize,
    transpose: bool,
    scale: f64,
    truncate: bool,
}

impl Entry {
    fn whole(hf: &str, shape: Vec<usize>, target: &str) -> Entry {
        Entry {
            hf: hf.to_string(),
            shape,
            target: target.to_string(),
            offset: 0,
            transpose: false,
            scale: 1.0,
            truncate: false,
        }
    }

    fn write<B: Backend>(&self, model: &mut Model<B>, values: &[f64]) {
        let i = model
            .param_index(&self.target)
            .expect("the architecture has every parameter the checkpoint was checked against");
        let len = model.params[i].numel();
        let owned: Vec<f64>;
        let mut values = values;
        if self.transpose {
            let (rows, cols) = (self.shape[0], self.shape[1]);
            let mut t = vec![0.0; values.len()];
            genas_engine::simd::transpose_scalar(&mut t, rows, values, cols, rows, cols);
            owned = t;
            values = &owned;
        }
        let scaled: Vec<f64>;
        if self.scale != 1.0 {
            scaled = values.iter().map(|x| x * self.scale).collect();
            values = &scaled;
        }
        if self.truncate {
            values = &values[..values.len().min(len - self.offset)];
        }
        model.write_weights(i, self.offset, values);
    }
}

/// The config's norm epsilon `key` (transformers' `default` when absent), within what genas
/// builds (0, 0.1], or the one line saying it is not.
fn norm_eps(dir: &Path, cfg: &Value, key: &str, default: f64) -> Result<Float, PretrainedError> {
    let eps = match cfg.get(key) {
        None | Some(Value::Null) => default,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| err(dir, format!("config.json's {key} {v} is not a number")))?,
    };
    if !(eps.is_finite() && eps > 0.0 && eps <= 0.1) {
        return Err(err(
            dir,
            format!("{key} {eps:e} is outside what genas builds (0, 0.1]"),
        ));
    }
    Ok(Float(eps))
}

/// A Llama-block config (Llama, Qwen2, Qwen3, Mistral) as a genas architecture, or the first
/// thing genas cannot compute.
///
/// Read: the sizes, `num_key_value_heads`, `head_dim` (any even width), `hidden_act` (silu),
/// `rms_norm_eps`, `rope_theta` and `rope_scaling` (or transformers 5's `rope_parameters`:
/// default, linear, llama3), `tie_word_embeddings`; Llama's and Qwen3's `attention_bias`
/// (biases on q, k, v and o); Qwen2's q/k/v biases (always there); Qwen3's q/k norms (always
/// there); Mistral's `sliding_window` on every layer. Refused, by key and value: another
/// activation, `mlp_bias`, other rope types or a partial rotary factor, Qwen's
/// `use_sliding_window` (windows on some layers only), `layer_types` other than full attention
/// on every layer (outside Mistral's window).
fn llama_architecture(
    dir: &Path,
    cfg: &Value,
    family: Family,
) -> Result<Architecture, PretrainedError> {
    let no = |what: String| Err(err(dir, what));
    let d = count(dir, cfg, "hidden_size")?;
    let heads = count(dir, cfg, "num_attention_heads")?;
    let kv_heads = match cfg.get("num_key_value_heads") {
        None | Some(Value::Null) => heads,
        Some(_) => count(dir, cfg, "num_key_value_heads")?,
    };
    let layers = count(dir, cfg, "num_hidden_layers")?;
    let hidden = count(dir, cfg, "intermediate_size")?;
    let vocab = count(dir, cfg, "vocab_size")?;
    // Rope has no position table: a context beyond genas's limit is only an upper bound on
    // the sequences it will run at, and is capped there.
    let context = count(dir, cfg, "max_position_embeddings")?.min(MAX_CONTEXT);
    let head_dim = match cfg.get("head_dim") {
        None | Some(Value::Null) => {
            if d % heads != 0 {
                return no(format!(
                    "hidden_size {d} is not a multiple of num_attention_heads {heads} (and no head_dim is given)"
                ));
            }
            None
        }
        Some(v) => {
            let hd = v
                .as_u64()
                .filter(|&hd| hd >= 1 && hd <= u64::from(genas_space::arch::limits::MAX_D_MODEL))
                .ok_or_else(|| err(dir, format!("config.json's head_dim {v} is not a positive integer within genas's limits")))?
                as u32;
            // A head_dim that is hidden / heads is the plain layout (one architecture, one id).
            (d % heads != 0 || hd != d / heads).then_some(hd)
        }
    };
    if heads % kv_heads != 0 {
        return no(format!(
            "num_key_value_heads {kv_heads} does not divide num_attention_heads {heads}"
        ));
    }
    let act = cfg
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("silu");
    if act != "silu" {
        return no(format!(
            "hidden_act {act:?} (genas's SwiGLU gates with silu)"
        ));
    }
    let flag = |key: &str| cfg.get(key).and_then(Value::as_bool) == Some(true);
    if flag("mlp_bias") {
        return no("mlp_bias = true (genas's SwiGLU FFN has no biases)".into());
    }
    let attention_bias = flag("attention_bias");
    if attention_bias && matches!(family, Family::Qwen2 | Family::Mistral) {
        return no(format!(
            "attention_bias = true ({} has no such option in transformers)",
            family_name(family)
        ));
    }
    if flag("use_sliding_window") {
        return no(
            "use_sliding_window = true (windows on the layers past max_window_layers only; genas reads Qwen's full-attention layers)"
                .into(),
        );
    }
    let window = match family {
        Family::Mistral => match cfg.get("sliding_window") {
            None | Some(Value::Null) => None,
            Some(_) => Some(count(dir, cfg, "sliding_window")?),
        },
        _ => None,
    };
    if let Some(types) = cfg.get("layer_types").and_then(Value::as_array) {
        let want = if window.is_some() {
            "sliding_attention"
        } else {
            "full_attention"
        };
        if let Some(other) = types.iter().find(|t| t.as_str() != Some(want)) {
            return no(format!(
                "layer_types lists {other} (genas reads {want} on every layer here)"
            ));
        }
    }
    let eps = norm_eps(dir, cfg, "rms_norm_eps", 1e-6)?;
    let (theta, scaling) = rope_settings(dir, cfg)?;
    let attention = match window {
        Some(window) => Attention::Sliding {
            heads,
            window,
            kv_heads: (kv_heads != heads).then_some(kv_heads),
        },
        None if kv_heads == heads => Attention::Full { heads },
        None => Attention::Grouped { heads, kv_heads },
    };
    let layer = Layer {
        attention_bias,
        qkv_bias: family == Family::Qwen2,
        qk_norm: family == Family::Qwen3,
        head_dim,
        ..Layer::new(
            attention.clone(),
            hidden,
            Activation::Swiglu,
            None,
            Sparsity::Dense,
        )
    };
    let mut arch = Architecture {
        vocab_size: vocab,
        context,
        d_model: d,
        // Absent, transformers takes these families' class default: untied.
        tie_embeddings: cfg
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        share_layers: 1,
        layers: vec![layer; layers as usize],
        norm: Norm::Rmsnorm,
        position: Position::Rope {
            theta: Float(theta),
            scaling,
        },
        norm_eps: eps,
    };
    windows_within(&mut arch);
    arch.validate().map_err(|e| {
        err(
            dir,
            format!("config.json describes no model genas can build: {e}"),
        )
    })?;
    Ok(arch)
}

/// The `model_type` of a family.
fn family_name(family: Family) -> &'static str {
    match family {
        Family::Llama => "llama",
        Family::Qwen2 => "qwen2",
        Family::Qwen3 => "qwen3",
        Family::Mistral => "mistral",
        Family::Gpt2 => "gpt2",
        Family::GptNeo => "gpt_neo",
        Family::GptBigCode => "gpt_bigcode",
    }
}

/// The rope base and scaling a config names: transformers 5 writes `rope_parameters` (with
/// `rope_theta` inside), earlier versions `rope_theta` and `rope_scaling`. Types default,
/// linear and llama3; anything else refused with its name.
fn rope_settings(dir: &Path, cfg: &Value) -> Result<(f64, Option<RopeScaling>), PretrainedError> {
    let no = |what: String| Err(err(dir, what));
    let params = cfg.get("rope_parameters").filter(|v| !v.is_null());
    let scaling = cfg.get("rope_scaling").filter(|v| !v.is_null());
    // The scaling's own table: rope_scaling when given, else rope_parameters.
    let table = scaling.or(params);
    let rope_type = table
        .and_then(|p| p.get("rope_type").or_else(|| p.get("type")))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let number = |key: &str| -> Result<f64, PretrainedError> {
        table
            .and_then(|t| t.get(key))
            .and_then(Value::as_f64)
            .ok_or_else(|| {
                err(
                    dir,
                    format!("rope scaling {rope_type:?} names no number {key}"),
                )
            })
    };
    if let Some(f) = table
        .and_then(|p| p.get("partial_rotary_factor"))
        .and_then(Value::as_f64)
    {
        if f != 1.0 {
            return no(format!(
                "partial_rotary_factor {f} (genas rotates whole heads)"
            ));
        }
    }
    let scaling = match rope_type {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: Float(number("factor")?),
        }),
        "llama3" => {
            let original = number("original_max_position_embeddings")?;
            if !(original >= 1.0 && original <= f64::from(u32::MAX) && original.fract() == 0.0) {
                return no(format!(
                    "rope scaling llama3's original_max_position_embeddings {original} is not a positive integer"
                ));
            }
            Some(RopeScaling::Llama3 {
                factor: Float(number("factor")?),
                low_freq_factor: Float(number("low_freq_factor")?),
                high_freq_factor: Float(number("high_freq_factor")?),
                original_context: original as u32,
            })
        }
        other => {
            return no(format!(
                "rope scaling {other:?} is not supported (genas has default, linear and llama3)"
            ))
        }
    };
    if let Some(t) = table {
        // What would change the function beyond the frequencies is refused by name.
        for key in ["attention_factor", "mscale", "mscale_all_dim"] {
            if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
                if v.as_f64() != Some(1.0) {
                    return no(format!("rope scaling's {key} {v} (genas scales no scores)"));
                }
            }
        }
    }
    let theta = params
        .and_then(|p| p.get("rope_theta"))
        .or_else(|| cfg.get("rope_theta"))
        .and_then(Value::as_f64)
        .unwrap_or(genas_space::DEFAULT_ROPE_THETA);
    Ok((theta, scaling))
}

/// GPT-2, GPT-Neo or GPTBigCode config as a genas architecture (learned positions, LayerNorm,
/// biases on every projection), or the first thing genas cannot compute.
fn gpt_architecture(
    dir: &Path,
    cfg: &Value,
    family: Family,
) -> Result<Architecture, PretrainedError> {
    let no = |what: String| Err(err(dir, what));
    let key =
        |gpt2: &'static str, neo: &'static str| if family == Family::GptNeo { neo } else { gpt2 };
    let d = count(dir, cfg, key("n_embd", "hidden_size"))?;
    let depth = count(dir, cfg, key("n_layer", "num_layers"))?;
    let heads = count(dir, cfg, key("n_head", "num_heads"))?;
    let context = count(dir, cfg, key("n_positions", "max_position_embeddings"))?;
    let vocab = count(dir, cfg, "vocab_size")?;
    let inner_key = key("n_inner", "intermediate_size");
    let hidden = match cfg.get(inner_key) {
        None | Some(Value::Null) => d
            .checked_mul(4)
            .ok_or_else(|| err(dir, "hidden size too large"))?,
        Some(_) => count(dir, cfg, inner_key)?,
    };
    if d % heads != 0 {
        return no(format!(
            "the width {d} is not a multiple of the {heads} heads"
        ));
    }
    let act_name = cfg
        .get("activation_function")
        .and_then(Value::as_str)
        .unwrap_or("gelu_new");
    let activation = match act_name {
        "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
        "gelu" => Activation::Gelu,
        "relu" => Activation::Relu,
        other => {
            return no(format!(
                "activation_function {other:?} (genas has gelu, gelu_new and relu)"
            ))
        }
    };
    let eps = norm_eps(dir, cfg, "layer_norm_epsilon", 1e-5)?;
    let flag = |k: &str| cfg.get(k).and_then(Value::as_bool);
    if family != Family::GptNeo {
        if flag("scale_attn_weights") == Some(false) {
            return no("scale_attn_weights = false (genas scales scores by 1/√head_dim)".into());
        }
        if flag("scale_attn_by_inverse_layer_idx") == Some(true) {
            return no("scale_attn_by_inverse_layer_idx = true".into());
        }
    }
    let attention: Vec<Attention> = match family {
        Family::GptBigCode => {
            if flag("multi_query") == Some(false) {
                return no(
                    "multi_query = false (genas reads GPTBigCode's multi-query attention only)"
                        .into(),
                );
            }
            vec![Attention::Grouped { heads, kv_heads: 1 }; depth as usize]
        }
        Family::GptNeo => {
            // attention_types: [[["global", "local"], repeats], ...], expanded in order.
            let types = cfg.get("attention_types").and_then(Value::as_array);
            let mut kinds = Vec::new();
            for group in types.into_iter().flatten() {
                let (Some(pattern), Some(n)) = (
                    group.get(0).and_then(Value::as_array),
                    group.get(1).and_then(Value::as_u64),
                ) else {
                    return no("attention_types is not [[[kinds...], repeats], ...]".into());
                };
                for _ in 0..n.min(u64::from(depth) + 1) {
                    for k in pattern {
                        kinds.push(k.as_str().unwrap_or("?").to_string());
                    }
                }
            }
            if kinds.len() != depth as usize {
                return no(format!(
                    "attention_types lists {} layers, num_layers is {depth}",
                    kinds.len()
                ));
            }
            let window = count(dir, cfg, "window_size")?;
            let mut out = Vec::new();
            for k in kinds {
                out.push(match k.as_str() {
                    "global" => Attention::Full { heads },
                    "local" => Attention::Sliding {
                        heads,
                        window,
                        kv_heads: None,
                    },
                    other => {
                        return no(format!(
                            "attention type {other:?} (GPT-Neo has global and local)"
                        ))
                    }
                });
            }
            out
        }
        _ => vec![Attention::Full { heads }; depth as usize],
    };
    let mut arch = Architecture {
        vocab_size: vocab,
        context,
        d_model: d,
        tie_embeddings: flag("tie_word_embeddings").unwrap_or(true),
        share_layers: 1,
        layers: attention
            .into_iter()
            .map(|a| Layer {
                attention_bias: true,
                ..Layer::new(a, hidden, activation, None, Sparsity::Dense)
            })
            .collect(),
        norm: Norm::Layernorm,
        position: Position::Learned,
        norm_eps: eps,
    };
    windows_within(&mut arch);
    arch.validate().map_err(|e| {
        err(
            dir,
            format!("config.json describes no model genas can build: {e}"),
        )
    })?;
    Ok(arch)
}

/// A sliding window as long as the context sees every position: it is full attention there
/// (and an `Architecture` holds only windows shorter than its context).
fn windows_within(arch: &mut Architecture) {
    for l in &mut arch.layers {
        if let Attention::Sliding {
            heads,
            window,
            kv_heads,
        } = l.attention
        {
            if window >= arch.context {
                l.attention = match kv_heads {
                    Some(kv_heads) => Attention::Grouped { heads, kv_heads },
                    None => Attention::Full { heads },
                };
            }
        }
    }
}

/// The weight files and which holds each tensor: `model.safetensors`, or the shards that
/// `model.safetensors.index.json` maps.
fn weight_files(dir: &Path) -> Result<(Vec<PathBuf>, BTreeMap<String, PathBuf>), PretrainedError> {
    let single = dir.join("model.safetensors");
    let index = "model.safetensors.index.json";
    if dir.join(index).exists() {
        let idx = read_json(dir, index)?;
        let map = idx
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| err(dir, format!("{index} has no weight_map")))?;
        let mut files = BTreeSet::new();
        let mut tensor_file = BTreeMap::new();
        for (name, file) in map {
            let file = file
                .as_str()
                .filter(|f| !f.contains('/') && !f.contains('\\') && *f != ".." && !f.is_empty())
                .ok_or_else(|| {
                    err(
                        dir,
                        format!("{index} maps {name} to no file name in this folder"),
                    )
                })?;
            let path = dir.join(file);
            files.insert(path.clone());
            tensor_file.insert(name.clone(), path);
        }
        return Ok((files.into_iter().collect(), tensor_file));
    }
    if single.exists() {
        let (shapes, _) = read_header(dir, &single)?;
        let tensor_file = shapes.into_keys().map(|n| (n, single.clone())).collect();
        return Ok((vec![single], tensor_file));
    }
    if dir.join("pytorch_model.bin").exists() {
        return Err(err(dir, "holds pytorch_model.bin only; genas reads safetensors (transformers' save_pretrained writes it by default)"));
    }
    Err(err(
        dir,
        "has no model.safetensors nor model.safetensors.index.json",
    ))
}

type Shapes = BTreeMap<String, (Option<Dtype>, Vec<usize>)>;

/// The tensors a safetensors file declares (`None` for a dtype genas does not read), from its
/// header alone, checked to lie within the file; and the file's length.
fn read_header(dir: &Path, file: &Path) -> Result<(Shapes, u64), PretrainedError> {
    use std::io::Read;
    let name = file.display();
    let bad = |why: &str| err(dir, format!("{name} is not a safetensors file ({why})"));
    // A FIFO or a device would block or never end: only regular files are opened.
    if !std::fs::metadata(file)
        .map_err(|e| err(dir, format!("cannot read {name}: {e}")))?
        .is_file()
    {
        return Err(bad("not a regular file"));
    }
    let mut f =
        std::fs::File::open(file).map_err(|e| err(dir, format!("cannot read {name}: {e}")))?;
    let len = f
        .metadata()
        .map_err(|e| err(dir, format!("cannot read {name}: {e}")))?
        .len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| bad("too short"))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_JSON_BYTES || 8 + n > len {
        return Err(bad(&format!("a header of {n} bytes")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| err(dir, format!("cannot read {name}: {e}")))?;
    let header: BTreeMap<String, Value> =
        serde_json::from_slice(&header).map_err(|_| bad("a garbled header"))?;
    let data_len = len - 8 - n;
    let mut out = BTreeMap::new();
    for (tname, info) in header {
        if tname == "__metadata__" {
            continue;
        }
        let dtype_name = info.get("dtype").and_then(Value::as_str).unwrap_or("");
        let (dtype, size) = match dtype_name {
            "F32" => (Some(Dtype::F32), 4),
            "F16" => (Some(Dtype::F16), 2),
            "BF16" => (Some(Dtype::BF16), 2),
            _ => (None, 0),
        };
        let ints = |key: &str| -> Option<Vec<u64>> {
            info.get(key)?
                .as_array()?
                .iter()
                .map(Value::as_u64)
                .collect()
        };
        let (Some(shape), Some(offsets)) = (ints("shape"), ints("data_offsets")) else {
            return Err(bad(&format!("tensor {tname} lacks a shape or offsets")));
        };
        let [start, end] = offsets[..] else {
            return Err(bad(&format!("tensor {tname}'s offsets")));
        };
        let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let fits = start <= end && end <= data_len;
        let sized = dtype.is_none() || numel.and_then(|k| k.checked_mul(size)) == Some(end - start);
        if !fits || !sized {
            return Err(bad(&format!("tensor {tname} does not lie within the file")));
        }
        let shape = shape.iter().map(|&d| d as usize).collect();
        out.insert(tname, (dtype, shape));
    }
    Ok((out, len))
}

/// Little-endian f32, f16 or bf16 values as f64; `None` for another dtype.
pub fn to_f64(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f64>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
        _ => return None,
    })
}
