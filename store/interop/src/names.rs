//! One table of tensor names per Hugging Face family, read by the import of a pretrained
//! teacher (`pretrained`) and by the export of a winner (`export`) alike, so the two cannot
//! disagree.
//!
//! genas names its parameters GPT-2's way (`proxies/engine/src/model/mod.rs` lists them):
//! `wte.weight`, `wpe.weight`, per layer `h.{i}.ln_1`, `h.{i}.attn.c_attn` (the rows of q, then
//! k, then v), `h.{i}.attn.c_proj`, `h.{i}.ln_2`, `h.{i}.mlp.c_fc`, `h.{i}.mlp.c_gate`
//! (swiglu), `h.{i}.mlp.c_proj`, then `ln_f` and `lm_head.weight` (absent when tied). A family
//! maps most of them whole, under its own names; what it stores otherwise is the caller's:
//!
//! - **GPT-2** (`GPT2LMHeadModel`): the same names under `transformer.`; its `Conv1D` stores
//!   (in, out), so the attention and MLP matrices are transposed.
//! - **GPTBigCode** (`GPTBigCodeForCausalLM`, multi-query): as GPT-2, in genas's (out, in)
//!   layout.
//! - **GPT-Neo** (`GPTNeoForCausalLM`): q, k and v as `attn.attention.{q,k,v}_proj` (the row
//!   blocks of `c_attn`), `attn.attention.out_proj` for `c_proj`; GPT-Neo does not scale
//!   scores by 1/√hd, so q carries that factor.
//! - **GPT-NeoX** (`GPTNeoXForCausalLM`): `attention.query_key_value` holds each head's q, k
//!   and v rows together, so `c_attn`'s rows are regrouped head by head.
//! - **Llama** (`LlamaForCausalLM`): `self_attn.{q,k,v}_proj` are the row blocks of `c_attn`
//!   (their biases, where a layer has them, the blocks of `c_attn.bias`); Llama rotates the
//!   same "rotate half" pairs as genas, so q and k need no permutation. **Qwen2**, **Qwen3** and
//!   **Mistral** name their tensors as Llama does; Qwen3 adds `self_attn.{q,k}_norm`.

/// A family's names for the tensors it stores whole.
pub struct Names {
    /// Outside the layers: (genas's name, the family's).
    pub global: &'static [(&'static str, &'static str)],
    /// Layer `i`'s tensors live under `{layers}.{i}.`.
    pub layers: &'static str,
    /// Per layer: (genas's name under `h.{i}.`, the family's under its layer prefix).
    pub layer: &'static [(&'static str, &'static str)],
    /// The family's separate q, k and v projections: the row blocks of genas's
    /// `attn.c_attn.weight`, in that order. `None` where the family keeps them fused.
    pub qkv: Option<[&'static str; 3]>,
}

/// Llama (and the Llama-style checkpoints: SmolLM2, TinyLlama). No biases.
pub const LLAMA: Names = Names {
    global: &[
        ("wte.weight", "model.embed_tokens.weight"),
        ("ln_f.weight", "model.norm.weight"),
        ("lm_head.weight", "lm_head.weight"),
    ],
    layers: "model.layers",
    layer: &[
        ("ln_1.weight", "input_layernorm.weight"),
        ("ln_2.weight", "post_attention_layernorm.weight"),
        ("attn.c_proj.weight", "self_attn.o_proj.weight"),
        ("mlp.c_gate.weight", "mlp.gate_proj.weight"),
        ("mlp.c_fc.weight", "mlp.up_proj.weight"),
        ("mlp.c_proj.weight", "mlp.down_proj.weight"),
    ],
    qkv: Some([
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
    ]),
};

/// The output projection's bias of a Llama-block layer with `attention_bias` (Llama's and
/// Qwen3's option; Qwen2 has q/k/v biases only).
pub const LLAMA_O_BIAS: &str = "self_attn.o_proj.bias";

/// Qwen3's per-head query and key norms: (the family's name, genas's under `h.{i}.`).
pub const LLAMA_QK_NORM: [(&str, &str); 2] = [
    ("self_attn.q_norm.weight", "attn.q_norm.weight"),
    ("self_attn.k_norm.weight", "attn.k_norm.weight"),
];

/// GPT-NeoX. Its head is `embed_out` (the embedding itself when tied), and its fused
/// `attention.query_key_value` is regrouped head by head by the exporter.
pub const GPT_NEOX: Names = Names {
    global: &[
        ("wte.weight", "gpt_neox.embed_in.weight"),
        ("ln_f.weight", "gpt_neox.final_layer_norm.weight"),
        ("ln_f.bias", "gpt_neox.final_layer_norm.bias"),
        ("lm_head.weight", "embed_out.weight"),
    ],
    layers: "gpt_neox.layers",
    layer: &[
        ("ln_1.weight", "input_layernorm.weight"),
        ("ln_1.bias", "input_layernorm.bias"),
        ("ln_2.weight", "post_attention_layernorm.weight"),
        ("ln_2.bias", "post_attention_layernorm.bias"),
        ("attn.c_proj.weight", "attention.dense.weight"),
        ("mlp.c_fc.weight", "mlp.dense_h_to_4h.weight"),
        ("mlp.c_fc.bias", "mlp.dense_h_to_4h.bias"),
        ("mlp.c_proj.weight", "mlp.dense_4h_to_h.weight"),
        ("mlp.c_proj.bias", "mlp.dense_4h_to_h.bias"),
    ],
    qkv: None,
};

/// The prefix of GPT-2, GPT-Neo and GPTBigCode tensors in `transformers`' files (GPT-2's own
/// early files leave it out).
pub const GPT_PREFIX: &str = "transformer.";

/// What GPT-2, GPT-Neo and GPTBigCode share, under [`GPT_PREFIX`]: the embeddings, the final
/// norm, and per layer the norms and the MLP biases, all under genas's own names. Their
/// attention and MLP matrices differ by family (see the module doc); the head is
/// `lm_head.weight`, outside the prefix, when untied.
pub const GPT: Names = Names {
    global: &[
        ("wte.weight", "wte.weight"),
        ("wpe.weight", "wpe.weight"),
        ("ln_f.weight", "ln_f.weight"),
        ("ln_f.bias", "ln_f.bias"),
    ],
    layers: "h",
    layer: &[
        ("ln_1.weight", "ln_1.weight"),
        ("ln_1.bias", "ln_1.bias"),
        ("ln_2.weight", "ln_2.weight"),
        ("ln_2.bias", "ln_2.bias"),
        ("mlp.c_fc.bias", "mlp.c_fc.bias"),
        ("mlp.c_proj.bias", "mlp.c_proj.bias"),
    ],
    qkv: None,
};

/// GPT-Neo's separate projections under a layer: q, k, v (the row blocks of `c_attn`) and
/// the output projection (`c_proj`).
pub const GPT_NEO_ATTENTION: [&str; 4] = [
    "attn.attention.q_proj.weight",
    "attn.attention.k_proj.weight",
    "attn.attention.v_proj.weight",
    "attn.attention.out_proj",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_maps_each_genas_name_once_and_to_distinct_names() {
        for names in [&LLAMA, &GPT_NEOX, &GPT] {
            let all: Vec<(&str, &str)> = names
                .global
                .iter()
                .copied()
                .chain(names.layer.iter().copied())
                .collect();
            let ours: std::collections::BTreeSet<&str> = all.iter().map(|p| p.0).collect();
            let theirs: std::collections::BTreeSet<&str> = all.iter().map(|p| p.1).collect();
            assert_eq!(ours.len(), all.len(), "{}", names.layers);
            assert_eq!(theirs.len(), all.len(), "{}", names.layers);
        }
    }
}
