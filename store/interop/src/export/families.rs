//! The Hugging Face families a winner can leave in natively: which family an architecture maps
//! onto ([`hf_family`], or why none does), its tensors under the family's names (from
//! `crate::names`) and its `config.json`; and genas's own modeling code's config where none fits.

use super::*;
use crate::names::{self, GPT_NEOX, GPT_PREFIX, LLAMA, LLAMA_QK_NORM};
use genas_space::{Activation, Architecture, Attention, Norm, Position, RopeScaling};
use serde_json::{json, Value};

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
    /// Rope, RMSNorm, swiglu, full or grouped attention with `kv_heads` key/value heads (and
    /// the architecture's rope scaling, head width and norm epsilon, as the three below).
    Llama {
        kv_heads: u32,
    },
    /// Llama's block with biases on q, k and v (zeros where the student has none).
    Qwen2 {
        kv_heads: u32,
    },
    /// Llama's block with RMSNorm over every query and key head.
    Qwen3 {
        kv_heads: u32,
    },
    /// Llama's block, with a sliding window on every layer when `window`.
    Mistral {
        kv_heads: u32,
        window: Option<u32>,
    },
    /// Rope, LayerNorm, gelu or relu, full attention (sequential residuals).
    GptNeoX,
}

impl HfFamily {
    /// The key/value heads of a Llama-block family.
    fn kv_heads(&self) -> Option<u32> {
        match *self {
            HfFamily::Llama { kv_heads }
            | HfFamily::Qwen2 { kv_heads }
            | HfFamily::Qwen3 { kv_heads }
            | HfFamily::Mistral { kv_heads, .. } => Some(kv_heads),
            _ => None,
        }
    }

    pub fn class(&self) -> &'static str {
        match self {
            HfFamily::Gpt2 => "GPT2LMHeadModel",
            HfFamily::GptNeo { .. } => "GPTNeoForCausalLM",
            HfFamily::GptBigCode => "GPTBigCodeForCausalLM",
            HfFamily::Llama { .. } => "LlamaForCausalLM",
            HfFamily::Qwen2 { .. } => "Qwen2ForCausalLM",
            HfFamily::Qwen3 { .. } => "Qwen3ForCausalLM",
            HfFamily::Mistral { .. } => "MistralForCausalLM",
            HfFamily::GptNeoX => "GPTNeoXForCausalLM",
        }
    }
}

/// The `transformers` family `arch` maps onto, or the first choice that has none.
pub fn hf_family(arch: &Architecture) -> Result<HfFamily, ExportError> {
    hf_family_for(arch, None)
}

/// The family `arch` maps onto, preferring the family of the teacher it was distilled from
/// (`teacher`: its `model_type`) where the architecture fits both: a plain Llama block leaves
/// as a Qwen2 or Mistral model when its teacher was one.
pub fn hf_family_for(arch: &Architecture, teacher: Option<&str>) -> Result<HfFamily, ExportError> {
    let no = |what: String| Err(ExportError::Unsupported(what));
    // Rope, RMSNorm and swiglu exist only in GPT-NeoX (rope alone) and Llama (all three).
    let swiglu = arch.layers.iter().any(|l| l.swiglu());
    let rmsnorm = arch.norm == Norm::Rmsnorm;
    if arch.position.is_rope() && !rmsnorm && !swiglu {
        return neox_family(arch).map_err(ExportError::Unsupported);
    }
    if arch.position.is_rope() || rmsnorm || swiglu {
        return llama_family(arch, teacher).map_err(ExportError::Unsupported);
    }
    llama_block_only(arch).map_err(ExportError::Unsupported)?;
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
        if l.swiglu() {
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

/// What only the Llama-block families express (q/k/v biases alone, q/k norms, a head width
/// other than d_model / heads, grouped sliding attention, rope scaling): refused elsewhere.
fn llama_block_only(arch: &Architecture) -> Result<(), String> {
    for (i, l) in arch.layers.iter().enumerate() {
        let what = if l.qkv_bias {
            "q/k/v biases without an output bias"
        } else if l.qk_norm {
            "query/key norms"
        } else if l.head_dim.is_some() {
            "head_dim other than d_model / heads"
        } else if matches!(
            l.attention,
            Attention::Sliding {
                kv_heads: Some(_),
                ..
            }
        ) {
            "grouped sliding attention"
        } else {
            continue;
        };
        return Err(format!(
            "layer {i}'s {what} (only the Llama-block families have them, with rope, rmsnorm and swiglu)"
        ));
    }
    if let Position::Rope {
        scaling: Some(s), ..
    } = arch.position
    {
        return Err(format!(
            "rope scaling {} outside the Llama-block families (rmsnorm and swiglu)",
            s.name()
        ));
    }
    Ok(())
}

/// GPT-NeoX, or the first choice of `arch` (rope, LayerNorm, gelu or relu) that keeps it out.
pub(super) fn neox_family(arch: &Architecture) -> Result<HfFamily, String> {
    no_attention_bias(arch)?;
    llama_block_only(arch)?;
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

/// A Llama-block family (Llama, Qwen2, Qwen3, Mistral), or the first choice of `arch` that
/// keeps it out (rope, RMSNorm or swiglu brought it here: only these have them). q/k norms
/// make it Qwen3, q/k/v biases Qwen2, sliding windows Mistral; a plain block is the teacher's
/// family where that is Qwen2 or Mistral, else Llama.
pub(super) fn llama_family(arch: &Architecture, teacher: Option<&str>) -> Result<HfFamily, String> {
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
    let mut window = None;
    for (i, l) in arch.layers.iter().enumerate() {
        match l.attention {
            Attention::Full { .. } | Attention::Grouped { .. } if i == 0 || window.is_none() => {}
            Attention::Sliding { window: w, .. } if i == 0 || window == Some(w) => {
                window = Some(w)
            }
            ref other => {
                return Err(format!(
                    "layer {i}'s {} attention (the Llama-block families have full or grouped attention, or one sliding window on every layer)",
                    other.kind_name()
                ))
            }
        }
        match &l.ffn {
            None => return Err(no_ffn(i)),
            Some(f) if f.activation != Activation::Swiglu => {
                return Err(format!(
                    "layer {i}'s {} FFN with rope and rmsnorm ({needs})",
                    f.activation.name()
                ));
            }
            Some(_) => {}
        }
    }
    uniform_dense(arch)?;
    let first = &arch.layers[0];
    for (i, l) in arch.layers.iter().enumerate() {
        let differs = if l.attention.kv_heads() != first.attention.kv_heads() {
            "key/value head counts"
        } else if arch.head_dim(l) != arch.head_dim(first) {
            "head widths"
        } else if l.qkv_bias != first.qkv_bias {
            "q/k/v biases"
        } else if l.qk_norm != first.qk_norm {
            "query/key norms"
        } else {
            continue;
        };
        return Err(format!(
            "per-layer {differs} (layer 0 and layer {i} differ)"
        ));
    }
    let kv_heads = first.attention.kv_heads();
    match (first.qk_norm, first.qkv_bias, window) {
        (true, true, _) => Err(
            "q/k/v biases with query/key norms (Qwen3 has norms without biases, Qwen2 biases without norms)".into(),
        ),
        (true, false, Some(_)) | (false, true, Some(_)) => Err(
            "sliding windows with Qwen's q/k/v biases or query/key norms (Mistral has neither)".into(),
        ),
        (true, false, None) => Ok(HfFamily::Qwen3 { kv_heads }),
        (false, true, None) => Ok(HfFamily::Qwen2 { kv_heads }),
        (false, false, Some(w)) => Ok(HfFamily::Mistral {
            kv_heads,
            window: Some(w),
        }),
        (false, false, None) => Ok(match teacher {
            Some("qwen2") => HfFamily::Qwen2 { kv_heads },
            Some("mistral") => HfFamily::Mistral {
                kv_heads,
                window: None,
            },
            _ => HfFamily::Llama { kv_heads },
        }),
    }
}

/// Why a layer without an FFN has no native family.
fn no_ffn(i: usize) -> String {
    format!("layer {i} without an FFN (every transformers family has one in each layer)")
}

/// What every native family needs beyond its own block: no cross-layer sharing, and in every
/// layer a full-rank FFN of layer 0's width and activation, and layer 0's number of heads.
pub(super) fn uniform_dense(arch: &Architecture) -> Result<(), String> {
    if arch.share_layers > 1 {
        return Err(format!(
            "cross-layer sharing (share_layers = {})",
            arch.share_layers
        ));
    }
    let first = &arch.layers[0];
    let first_ffn = first.ffn.as_ref().ok_or_else(|| no_ffn(0))?;
    for (i, l) in arch.layers.iter().enumerate() {
        let ffn = l.ffn.as_ref().ok_or_else(|| no_ffn(i))?;
        if let Some(r) = ffn.rank {
            return Err(format!("layer {i}'s low-rank FFN (rank {r})"));
        }
        if ffn.hidden != first_ffn.hidden {
            return Err(format!(
                "per-layer FFN widths (layer 0 has {}, layer {i} {})",
                first_ffn.hidden, ffn.hidden
            ));
        }
        if ffn.activation != first_ffn.activation {
            return Err(format!(
                "per-layer activations (layer 0 {}, layer {i} {})",
                first_ffn.activation.name(),
                ffn.activation.name()
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
pub(super) fn no_attention_bias(arch: &Architecture) -> Result<(), String> {
    match arch.layers.iter().position(|l| l.attention_bias) {
        Some(i) => Err(format!("layer {i}'s attention biases with rope")),
        None => Ok(()),
    }
}

/// (rows, cols) row-major → (cols, rows).
pub(super) fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Renames (and for GPT-2 transposes) genas's tensors into the family's.
pub(super) fn hf_tensors(f: &HfFamily, e: &Export) -> Result<Vec<Named>, ExportError> {
    let by_name = ByName::new(e.tensors);
    if f.kv_heads().is_some() {
        return llama_tensors(e, f, &by_name);
    }
    if *f == HfFamily::GptNeoX {
        return neox_tensors(e, &by_name);
    }
    let c = e.arch.d_model as usize;
    let mut out = Vec::new();
    for (ours, theirs) in names::GPT.global {
        out.push(by_name.renamed(ours, format!("{GPT_PREFIX}{theirs}"))?);
    }
    if !e.arch.tie_embeddings {
        out.push(by_name.renamed("lm_head.weight", "lm_head.weight".into())?);
    }
    for (i, layer) in e.arch.layers.iter().enumerate() {
        let g = |s: &str| by_name.get(&format!("h.{i}.{s}"));
        let p = format!("{GPT_PREFIX}{}.{i}", names::GPT.layers);
        type Pairs = Vec<(&'static str, &'static str)>;
        let (norms, biases): (Pairs, Pairs) = names::GPT
            .layer
            .iter()
            .copied()
            .partition(|(ours, _)| ours.starts_with("ln_"));
        by_name.layer(&mut out, i, &p, &norms)?;
        let qkv = g("attn.c_attn.weight")?;
        let proj = g("attn.c_proj.weight")?;
        let (fc, fc_b) = (g("mlp.c_fc.weight")?, g("mlp.c_fc.bias")?);
        let (mp, mp_b) = (g("mlp.c_proj.weight")?, g("mlp.c_proj.bias")?);
        let h = layer.ffn_hidden() as usize;
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
            HfFamily::GptNeo { .. } => {
                // GPT-Neo does not scale scores by 1/√hd: the factor goes into q_proj.
                let hd = c / layer.attention.heads() as usize;
                let scale = 1.0 / (hd as f32).sqrt();
                let rows = |r0: usize| qkv.data[r0 * c..(r0 + c) * c].to_vec();
                let q: Vec<f32> = rows(0).iter().map(|x| x * scale).collect();
                let [q_proj, k_proj, v_proj, out_proj] = names::GPT_NEO_ATTENTION;
                out.push((format!("{p}.{q_proj}"), vec![c, c], q));
                out.push((format!("{p}.{k_proj}"), vec![c, c], rows(c)));
                out.push((format!("{p}.{v_proj}"), vec![c, c], rows(2 * c)));
                out.push((
                    format!("{p}.{out_proj}.weight"),
                    vec![c, c],
                    proj.data.clone(),
                ));
                let out_bias = if layer.attention_bias {
                    g("attn.c_proj.bias")?.data.clone()
                } else {
                    vec![0.0; c]
                };
                out.push((format!("{p}.{out_proj}.bias"), vec![c], out_bias));
                out.push((format!("{p}.mlp.c_fc.weight"), vec![h, c], fc.data.clone()));
                out.push((
                    format!("{p}.mlp.c_proj.weight"),
                    vec![c, h],
                    mp.data.clone(),
                ));
            }
            _ => unreachable!("llama_tensors and neox_tensors name their own tensors"),
        }
        for (ours, theirs) in biases {
            let t = if ours == "mlp.c_fc.bias" { fc_b } else { mp_b };
            out.push((format!("{p}.{theirs}"), vec![t.data.len()], t.data.clone()));
        }
    }
    Ok(out)
}

/// Llama's names (Qwen2's, Qwen3's and Mistral's are the same): the embedding, then per layer
/// the two norms, q/k/v/o and gate/up/down, then the final norm and the head (untied only);
/// Qwen2's q/k/v biases (zeros for a student without them) and Qwen3's q/k norms.
pub(super) fn llama_tensors(
    e: &Export,
    f: &HfFamily,
    by_name: &ByName,
) -> Result<Vec<Named>, ExportError> {
    let c = e.arch.d_model as usize;
    let mut out = Vec::new();
    for (ours, theirs) in LLAMA.global {
        if !(*ours == "lm_head.weight" && e.arch.tie_embeddings) {
            out.push(by_name.renamed(ours, theirs.to_string())?);
        }
    }
    let [q_proj, k_proj, v_proj] = LLAMA.qkv.expect("Llama's q, k and v are separate");
    for (i, layer) in e.arch.layers.iter().enumerate() {
        let p = format!("{}.{i}", LLAMA.layers);
        by_name.layer(&mut out, i, &p, LLAMA.layer)?;
        // c_attn's rows: q (H·hd), k (kvd), v (kvd).
        let qkv = by_name.get(&format!("h.{i}.attn.c_attn.weight"))?;
        let q = e.arch.attn_width(layer) as usize;
        let kvd = layer.attention.kv_heads() as usize * e.arch.head_dim(layer) as usize;
        let blocks = [(q_proj, q), (k_proj, kvd), (v_proj, kvd)];
        let mut row0 = 0;
        for (name, rows) in blocks {
            let data = qkv.data[row0 * c..(row0 + rows) * c].to_vec();
            out.push((format!("{p}.{name}"), vec![rows, c], data));
            row0 += rows;
        }
        if matches!(f, HfFamily::Qwen2 { .. }) {
            let bias = if layer.qkv_bias {
                Some(by_name.get(&format!("h.{i}.attn.c_attn.bias"))?)
            } else {
                None
            };
            let mut row0 = 0;
            for (name, rows) in blocks {
                let data =
                    bias.map_or_else(|| vec![0.0; rows], |b| b.data[row0..row0 + rows].to_vec());
                out.push((
                    format!("{p}.{}", name.replace(".weight", ".bias")),
                    vec![rows],
                    data,
                ));
                row0 += rows;
            }
        }
        if layer.qk_norm {
            for (theirs, ours) in LLAMA_QK_NORM {
                out.push(by_name.renamed(&format!("h.{i}.{ours}"), format!("{p}.{theirs}"))?);
            }
        }
    }
    Ok(out)
}

/// GPT-NeoX's names. Its fused query_key_value holds, head after head, that head's q, k and v
/// rows; genas's c_attn holds all q rows, then all k, then all v.
pub(super) fn neox_tensors(e: &Export, by_name: &ByName) -> Result<Vec<Named>, ExportError> {
    let c = e.arch.d_model as usize;
    // transformers 5 reads the head as lm_head, renaming embed_out on load; 4 reads embed_out.
    let head = if e.arch.tie_embeddings {
        "wte.weight"
    } else {
        "lm_head.weight"
    };
    let mut out = Vec::new();
    for (ours, theirs) in GPT_NEOX.global {
        let ours = if *ours == "lm_head.weight" {
            head
        } else {
            ours
        };
        out.push(by_name.renamed(ours, theirs.to_string())?);
    }
    for (i, layer) in e.arch.layers.iter().enumerate() {
        let p = format!("{}.{i}", GPT_NEOX.layers);
        by_name.layer(&mut out, i, &p, GPT_NEOX.layer)?;
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
pub(super) fn genas_hf_config(e: &Export, arch_json: &Value) -> Value {
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
pub(super) fn common_hf_keys(cfg: &mut Value, e: &Export) {
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

pub(super) fn hf_config(f: &HfFamily, e: &Export) -> Value {
    let a = e.arch;
    let l0 = &a.layers[0];
    // transformers' names: "gelu" is the exact one, "gelu_new" GPT-2's tanh approximation.
    // Every layer has an FFN here (`uniform_dense` refused the rest).
    let act = match l0.ffn.as_ref().map(|f| f.activation) {
        Some(Activation::GeluTanh) => "gelu_new",
        Some(other) => other.name(),
        None => "none",
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
            "n_inner": l0.ffn_hidden(),
            "activation_function": act,
            "layer_norm_epsilon": a.norm_eps.0,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "scale_attn_weights": true,
        })
    };
    // What GPT-NeoX and Llama share: rope, no attention biases, the usual size names.
    let (rope_theta, scaling) = match a.position {
        Position::Rope { theta, scaling } => (theta.0, scaling),
        Position::Learned => (0.0, None),
    };
    // transformers 5's rope_parameters: the type, the base and the scaling's own numbers.
    let mut rope_parameters = json!({"rope_type": "default", "rope_theta": rope_theta});
    match scaling {
        None => {}
        Some(RopeScaling::Linear { factor }) => {
            rope_parameters["rope_type"] = "linear".into();
            rope_parameters["factor"] = factor.0.into();
        }
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        }) => {
            rope_parameters["rope_type"] = "llama3".into();
            rope_parameters["factor"] = factor.0.into();
            rope_parameters["low_freq_factor"] = low_freq_factor.0.into();
            rope_parameters["high_freq_factor"] = high_freq_factor.0.into();
            rope_parameters["original_max_position_embeddings"] = original_context.into();
        }
    }
    let rope_keys = |model_type: &str| {
        json!({
            "model_type": model_type,
            "architectures": [f.class()],
            "vocab_size": a.vocab_size,
            "max_position_embeddings": a.context,
            "hidden_size": a.d_model,
            "intermediate_size": l0.ffn_hidden(),
            "num_hidden_layers": a.depth(),
            "num_attention_heads": heads,
            "rope_parameters": rope_parameters,
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
                "intermediate_size": l0.ffn_hidden(),
                "activation_function": act,
                "layer_norm_epsilon": a.norm_eps.0,
                "embed_dropout": 0.0,
                "attention_dropout": 0.0,
                "resid_dropout": 0.0,
            })
        }
        HfFamily::GptNeoX => {
            let mut c = rope_keys("gpt_neox");
            let o = c.as_object_mut().expect("an object");
            o.insert("hidden_act".into(), act.into());
            o.insert("layer_norm_eps".into(), a.norm_eps.0.into());
            o.insert("use_parallel_residual".into(), false.into());
            o.insert("hidden_dropout".into(), 0.0.into());
            // transformers 5 reads rope_parameters; earlier versions these two.
            o.insert("rotary_emb_base".into(), rope_theta.into());
            o.insert("rotary_pct".into(), 1.0.into());
            c["rope_parameters"]["partial_rotary_factor"] = 1.0.into();
            c
        }
        HfFamily::Llama { kv_heads }
        | HfFamily::Qwen2 { kv_heads }
        | HfFamily::Qwen3 { kv_heads }
        | HfFamily::Mistral { kv_heads, .. } => {
            let model_type = match f {
                HfFamily::Qwen2 { .. } => "qwen2",
                HfFamily::Qwen3 { .. } => "qwen3",
                HfFamily::Mistral { .. } => "mistral",
                _ => "llama",
            };
            let mut c = rope_keys(model_type);
            let o = c.as_object_mut().expect("an object");
            o.insert("num_key_value_heads".into(), (*kv_heads).into());
            o.insert("head_dim".into(), a.head_dim(l0).into());
            o.insert("hidden_act".into(), "silu".into());
            o.insert("rms_norm_eps".into(), a.norm_eps.0.into());
            // transformers 5 reads rope_parameters; earlier versions rope_theta.
            o.insert("rope_theta".into(), rope_theta.into());
            match f {
                HfFamily::Llama { .. } => {
                    o.insert("mlp_bias".into(), false.into());
                    o.insert("pretraining_tp".into(), 1.into());
                }
                HfFamily::Qwen2 { .. } | HfFamily::Qwen3 { .. } => {
                    // Full attention on every layer.
                    o.insert("use_sliding_window".into(), false.into());
                    o.insert("sliding_window".into(), Value::Null);
                    o.insert("max_window_layers".into(), a.depth().into());
                    o.insert(
                        "layer_types".into(),
                        vec!["full_attention"; a.depth()].into(),
                    );
                    if matches!(f, HfFamily::Qwen2 { .. }) {
                        o.remove("attention_bias");
                    }
                }
                HfFamily::Mistral { window, .. } => {
                    o.insert("sliding_window".into(), (*window).into());
                    o.remove("attention_bias");
                }
                _ => {}
            }
            c
        }
    };
    common_hf_keys(&mut cfg, e);
    cfg
}
