//! The analytic cost model: what an architecture costs before it is built.
//!
//! Notation: V vocabulary, T context, d d_model, h FFN hidden width, r FFN rank, H heads,
//! hd head width (d/H unless the layer names its `head_dim`), dq = H·hd the queries' width (d
//! unless `head_dim`), G key/value heads, kvd = G·hd, W sliding window. All figures are fp32.
//!
//! Parameters (biases and norms are counted; shared layers once). A norm is 2d for LayerNorm
//! (weight and bias), d for RMSNorm (weight):
//! - token embedding V·d, learned positions T·d (none with rope), final norm, LM head V·d unless
//!   tied;
//! - a block: a norm before attention (absent for `none`), q d·dq, k d·kvd, v d·kvd, o dq·d
//!   (biases dq + 2·kvd on q/k/v with `qkv_bias` or `attention_bias`, and d on o with the
//!   latter; `qk_norm` 2·hd), a norm before the FFN, FFN gelu/relu W_in d·h + b h, W_out h·d + b d;
//!   swiglu W_gate d·h, W_in d·h, W_out h·d (no biases); neither the norm nor the FFN for a
//!   layer without one. Low rank replaces every FFN matrix in·out by in·r + r·out.
//! - `non_embedding_params` = params − token embedding − positions − untied head (Kaplan et
//!   al. 2020; the LiteTransformerSearch proxy).
//! - `nonzero_params`: sparsity keeps `Sparsity::kept(numel)` of every attention and FFN matrix
//!   (the attention's at the layer's sparsity, the FFN's at its own where it names one).
//!
//! FLOPs per token (forward, averaged over the T positions of a full context; a multiply-add
//! is 2 FLOPs; sparse weights are counted dense, as the engine computes them):
//! - 2 × the weights of every matrix a token passes through (every layer, shared or not) and
//!   2·V·d for the LM head;
//! - softmax attention mixing 4·dq·k̄, where k̄ is the mean number of keys a query sees:
//!   (T+1)/2 causal, (W(W+1)/2 + (T−W)·W)/T with a window;
//! - linear attention per head: state update and read-out 4·hd², normaliser 2·hd, i.e.
//!   4·d·hd + 2·d per layer;
//! - rope: 3 FLOPs (two multiplies, an add) per rotated query and key element, 3·(dq + kvd) per
//!   softmax attention layer;
//! - norms, softmax, activations and the feature map are not counted.
//! - per training token: 3 × forward (backward ≈ 2 × forward).
//!
//! Inference state at full context (bytes): softmax attention keeps K and V, 2·kvd floats per
//! cached token (T tokens; W with a window); linear attention keeps H·(hd² + hd) floats
//! whatever the length. `kv_cache_bytes_per_token` is that total / T. `memory_bytes` is the
//! weights (4 bytes each) plus that state.
//!
//! Activation memory per training token (floats the backward pass reads, as the engine caches
//! them): embeddings d; per attention sublayer norm out d + its statistics n (LayerNorm mean and
//! rstd 2, RMSNorm rstd 1), q k v dq + 2·kvd (rotated in place with rope; with `qk_norm` the
//! queries and keys before it, dq + kvd, and a statistic per head, H + G), softmax
//! probabilities H·k̄ (linear: φ(q), φ(k) dq + kvd), mixed output dq, residual d; per FFN norm out d + n, pre-
//! and post-activation 2h (swiglu: gate, up, product 3h), r per low-rank factor pair (none of
//! these without an FFN); the block's output d; final norm d + n, logits and probabilities 2V.

use crate::arch::{Activation, Architecture, Attention, Layer, Norm, Position, Sparsity};
use serde::{Deserialize, Serialize};

pub const BYTES_PER_FLOAT: u64 = 4;

/// The cost figures of one architecture. Units are in the field names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub params: u64,
    pub embedding_params: u64,
    pub non_embedding_params: u64,
    pub nonzero_params: u64,
    pub flops_per_token: f64,
    pub train_flops_per_token: f64,
    pub kv_cache_bytes_per_token: f64,
    pub inference_state_bytes: u64,
    pub memory_bytes: u64,
    pub activation_bytes_per_token: f64,
}

/// What one block adds (params once per sharing group; the rest per layer).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerCost {
    pub params: u64,
    pub nonzero_params: u64,
    pub flops_per_token: f64,
    pub state_bytes: u64,
    pub activation_floats: f64,
}

/// Mean number of keys a query attends to over the T positions of a full context.
pub fn mean_keys(context: u32, window: Option<u32>) -> f64 {
    let t = context as f64;
    match window {
        Some(w) if w < context => {
            let w = w as f64;
            (w * (w + 1.0) / 2.0 + (t - w) * w) / t
        }
        _ => (t + 1.0) / 2.0,
    }
}

/// A layer's attention widths (hd, dq, kvd) at d_model `d`; zeros without attention.
pub fn attention_widths(d: u32, layer: &Layer) -> (u64, u64, u64) {
    match layer.attention.heads() {
        0 => (0, 0, 0),
        heads => {
            let hd = u64::from(layer.head_dim.unwrap_or(d / heads));
            (
                hd,
                u64::from(heads) * hd,
                u64::from(layer.attention.kv_heads()) * hd,
            )
        }
    }
}

/// The (in, out) shapes of a block's sparsifiable matrices, each with its sparsity: attention
/// projections then FFN.
pub fn block_matrices(d: u32, layer: &Layer) -> Vec<(u64, u64, Sparsity)> {
    let (_, dq, kvd) = attention_widths(d, layer);
    let d = d as u64;
    let mut m = Vec::new();
    if layer.attention != Attention::None {
        let s = layer.attention_sparsity();
        m.extend([(d, dq, s), (d, kvd, s), (d, kvd, s), (dq, d, s)]);
    }
    let s = layer.ffn_sparsity();
    let Some(ffn) = &layer.ffn else {
        return m;
    };
    let h = ffn.hidden as u64;
    let full: Vec<(u64, u64)> = match ffn.activation {
        Activation::Swiglu => vec![(d, h), (d, h), (h, d)],
        Activation::Gelu | Activation::GeluTanh | Activation::Relu => vec![(d, h), (h, d)],
    };
    for (i, o) in full {
        match ffn.rank {
            Some(r) => m.extend([(i, r as u64, s), (r as u64, o, s)]),
            None => m.push((i, o, s)),
        }
    }
    m
}

/// Parameters of one norm over `d` features, and the floats it caches per row for backward.
fn norm_size(norm: Norm, d: u64) -> (u64, f64) {
    match norm {
        Norm::Layernorm => (2 * d, 2.0),
        Norm::Rmsnorm => (d, 1.0),
    }
}

/// What one block costs in an architecture with `norm` and `position`.
pub fn layer_cost(
    d_model: u32,
    context: u32,
    layer: &Layer,
    norm: Norm,
    position: Position,
) -> LayerCost {
    let d = d_model as u64;
    let df = d_model as f64;
    let h = layer.ffn_hidden() as u64;
    let has_ffn = layer.ffn.is_some();
    let matrices = block_matrices(d_model, layer);
    let weights: u64 = matrices.iter().map(|(i, o, _)| i * o).sum();
    let nonzero_weights: u64 = matrices.iter().map(|(i, o, s)| s.kept(i * o)).sum();
    let swiglu = layer.swiglu();
    let ffn_bias = if swiglu || !has_ffn { 0 } else { h + d };
    let has_attn = layer.attention != Attention::None;
    let (norm_params, norm_stats) = norm_size(norm, d);
    let norms = norm_params * (u64::from(has_attn) + u64::from(has_ffn));
    // q, k, v and output biases (GPT-2's blocks; q, k, v only for Qwen2's) and the query and
    // key norms: like the FFN's biases, counted as parameters only.
    let (hd_u, dq_u, kvd_u) = attention_widths(d_model, layer);
    let qkv_bias = if layer.has_qkv_bias() {
        dq_u + 2 * kvd_u
    } else {
        0
    };
    let proj_bias = if layer.attention_bias { d } else { 0 };
    let qk_norm = if layer.qk_norm { 2 * hd_u } else { 0 };
    let dense_extra = ffn_bias + norms + qkv_bias + proj_bias + qk_norm;

    let heads = layer.attention.heads() as f64;
    let (hd, dq, kvd) = (hd_u as f64, dq_u as f64, kvd_u as f64);
    let t = context as u64;
    let (mixing, state_floats, attn_cache) = match layer.attention {
        Attention::Full { .. } | Attention::Grouped { .. } => {
            let k = mean_keys(context, None);
            (4.0 * dq * k, 2 * kvd_u * t, heads * k)
        }
        Attention::Sliding { window, .. } => {
            let k = mean_keys(context, Some(window));
            (4.0 * dq * k, 2 * kvd_u * (window as u64).min(t), heads * k)
        }
        Attention::Linear { .. } => (
            4.0 * dq * hd + 2.0 * dq,
            (heads * (hd * hd + hd)) as u64,
            // φ(q), φ(k) are cached in place of probabilities.
            dq + kvd,
        ),
        Attention::None => (0.0, 0, 0.0),
    };
    let rotates = position.is_rope() && layer.attention.is_softmax();
    let rope = if rotates { 3.0 * (dq + kvd) } else { 0.0 };
    let mut act = 0.0;
    if has_attn {
        let qkv = if matches!(layer.attention, Attention::Linear { .. }) {
            0.0
        } else {
            dq + 2.0 * kvd
        };
        let normed = if layer.qk_norm {
            dq + kvd + heads + layer.attention.kv_heads() as f64
        } else {
            0.0
        };
        act += (df + norm_stats) + qkv + normed + attn_cache + dq + df;
    }
    let hf = h as f64;
    let rank_floats = match layer.ffn_rank() {
        Some(r) => r as f64 * if swiglu { 3.0 } else { 2.0 },
        None => 0.0,
    };
    if has_ffn {
        act += (df + norm_stats) + if swiglu { 3.0 * hf } else { 2.0 * hf } + rank_floats;
    }
    // The block's output (the next block's residual stream).
    act += df;
    LayerCost {
        params: weights + dense_extra,
        nonzero_params: nonzero_weights + dense_extra,
        flops_per_token: 2.0 * weights as f64 + mixing + rope,
        state_bytes: state_floats * BYTES_PER_FLOAT,
        activation_floats: act,
    }
}

/// Parameters, embedding parameters, FLOPs and activation floats outside the blocks:
/// embeddings, final norm, LM head.
pub fn outer_cost(
    vocab: u32,
    context: u32,
    d_model: u32,
    tied: bool,
    norm: Norm,
    position: Position,
) -> (u64, u64, f64, f64) {
    let (v, t, d) = (vocab as u64, context as u64, d_model as u64);
    let head = if tied { 0 } else { v * d };
    let positions = if position.is_rope() { 0 } else { t * d };
    let embedding = v * d + positions + head;
    let (norm_params, norm_stats) = norm_size(norm, d);
    let params = embedding + norm_params;
    let flops = 2.0 * (v * d) as f64;
    let act = d as f64 + (d as f64 + norm_stats) + 2.0 * v as f64;
    (params, embedding, flops, act)
}

impl Cost {
    pub fn of(arch: &Architecture) -> Cost {
        let (outer_params, embedding, outer_flops, outer_act) = outer_cost(
            arch.vocab_size,
            arch.context,
            arch.d_model,
            arch.tie_embeddings,
            arch.norm,
            arch.position,
        );
        let mut params = outer_params;
        let mut nonzero = outer_params;
        let mut flops = outer_flops;
        let mut state = 0u64;
        let mut act = outer_act;
        for (i, layer) in arch.layers.iter().enumerate() {
            let c = layer_cost(arch.d_model, arch.context, layer, arch.norm, arch.position);
            if arch.weight_owner(i) == i {
                params += c.params;
                nonzero += c.nonzero_params;
            }
            flops += c.flops_per_token;
            state += c.state_bytes;
            act += c.activation_floats;
        }
        Cost {
            params,
            embedding_params: embedding,
            non_embedding_params: params - embedding,
            nonzero_params: nonzero,
            flops_per_token: flops,
            train_flops_per_token: 3.0 * flops,
            kv_cache_bytes_per_token: state as f64 / arch.context as f64,
            inference_state_bytes: state,
            memory_bytes: BYTES_PER_FLOAT * params + state,
            activation_bytes_per_token: act * BYTES_PER_FLOAT as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{Ffn, Float, Fraction, Sparsity};

    fn layer(attention: Attention, hidden: u32) -> Layer {
        Layer {
            attention,
            ffn: Some(Ffn {
                hidden,
                activation: Activation::Gelu,
                rank: None,
                sparsity: None,
            }),
            sparsity: Sparsity::Dense,
            attention_bias: false,
            head_dim: None,
            qk_norm: false,
            qkv_bias: false,
        }
    }

    fn arch(layers: Vec<Layer>) -> Architecture {
        Architecture {
            vocab_size: 10,
            context: 4,
            d_model: 8,
            tie_embeddings: false,
            share_layers: 1,
            layers,
            norm: Norm::Layernorm,
            position: Position::Learned,
            norm_eps: crate::Float(crate::NORM_EPS),
        }
    }

    #[test]
    fn benchmark_gpt_has_the_published_parameter_count() {
        // The engine benchmark model of issue 3: V65 d128 L4 H4 T64, 4× gelu MLP: 816,128 params.
        let l = layer(Attention::Full { heads: 4 }, 512);
        let a = Architecture {
            vocab_size: 65,
            context: 64,
            d_model: 128,
            tie_embeddings: false,
            share_layers: 1,
            layers: vec![l; 4],
            norm: Norm::Layernorm,
            position: Position::Learned,
            norm_eps: crate::Float(crate::NORM_EPS),
        };
        assert_eq!(Cost::of(&a).params, 816_128);
    }

    #[test]
    fn one_full_attention_layer_by_hand() {
        // V10 T4 d8, one layer: full attention H2, gelu FFN h16, untied.
        let a = arch(vec![layer(Attention::Full { heads: 2 }, 16)]);
        let c = Cost::of(&a);
        // wte 80 + wpe 32 + ln1 16 + qkvo 4·64=256 + ln2 16 + ffn (128+16)+(128+8)=280
        // + ln_f 16 + head 80 = 776.
        assert_eq!(c.params, 776);
        assert_eq!(c.embedding_params, 80 + 32 + 80);
        assert_eq!(c.non_embedding_params, 584);
        assert_eq!(c.nonzero_params, 776);
        // 2·(256 + 256) matmuls + mixing 4·8·(5/2)=80 + head 2·10·8=160 = 1264.
        assert_eq!(c.flops_per_token, 1264.0);
        assert_eq!(c.train_flops_per_token, 3792.0);
        // K,V: 2·8 floats × 4 tokens × 4 bytes = 256 bytes, 64 per token.
        assert_eq!(c.inference_state_bytes, 256);
        assert_eq!(c.kv_cache_bytes_per_token, 64.0);
        assert_eq!(c.memory_bytes, 776 * 4 + 256);
        // emb 8; attn: ln 10, qkv 24, probs 2·2.5=5, out 8, resid 8; ffn: ln 10, 2h=32,
        // resid 8; ln_f 10; logits+probs 20 → 143 floats.
        assert_eq!(c.activation_bytes_per_token, 143.0 * 4.0);
    }

    #[test]
    fn rope_and_rmsnorm_by_hand() {
        // The one-layer model above (776 params, 1264 FLOPs/token, 143 activation floats).
        let mut a = arch(vec![layer(Attention::Full { heads: 2 }, 16)]);
        a.position = Position::Rope {
            theta: Float(1e4),
            scaling: None,
        };
        let c = Cost::of(&a);
        // No wpe (32 params); q and k rotated: 3·(8 + 8) = 48 FLOPs.
        assert_eq!(c.params, 776 - 32);
        assert_eq!(c.embedding_params, 80 + 80);
        assert_eq!(c.flops_per_token, 1264.0 + 48.0);
        assert_eq!(c.activation_bytes_per_token, 143.0 * 4.0);
        a.norm = Norm::Rmsnorm;
        let c = Cost::of(&a);
        // Three norms lose their bias (3·8) and one cached statistic per row each.
        assert_eq!(c.params, 776 - 32 - 24);
        assert_eq!(c.activation_bytes_per_token, 140.0 * 4.0);
        // Grouped H4 kv1 (hd 2, kvd 2): 3·(8 + 2) = 30; linear and none are not rotated.
        let mut g = arch(vec![layer(
            Attention::Grouped {
                heads: 4,
                kv_heads: 1,
            },
            16,
        )]);
        let learned = Cost::of(&g).flops_per_token;
        g.position = Position::Rope {
            theta: Float(1e4),
            scaling: None,
        };
        assert_eq!(Cost::of(&g).flops_per_token - learned, 30.0);
        for attention in [Attention::Linear { heads: 2 }, Attention::None] {
            let mut l = arch(vec![layer(attention, 16)]);
            let before = Cost::of(&l);
            l.position = Position::Rope {
                theta: Float(1e4),
                scaling: None,
            };
            let after = Cost::of(&l);
            assert_eq!(after.flops_per_token, before.flops_per_token);
            assert_eq!(after.params, before.params - 32);
        }
    }

    #[test]
    fn grouped_query_attention_shrinks_k_v_and_cache() {
        // H4 → hd 2; kv_heads 1 → kvd 2: k, v are 8·2 = 16 each instead of 64.
        let full = Cost::of(&arch(vec![layer(Attention::Full { heads: 4 }, 16)]));
        let mqa = Cost::of(&arch(vec![layer(
            Attention::Grouped {
                heads: 4,
                kv_heads: 1,
            },
            16,
        )]));
        assert_eq!(full.params - mqa.params, 2 * (64 - 16));
        assert_eq!(full.flops_per_token - mqa.flops_per_token, 2.0 * 2.0 * 48.0);
        // cache 2·kvd·T·4 = 2·2·4·4 = 64 bytes.
        assert_eq!(mqa.inference_state_bytes, 64);
        // activations: qkv 8 + 2·2 = 12 instead of 24.
        assert_eq!(
            full.activation_bytes_per_token - mqa.activation_bytes_per_token,
            12.0 * 4.0
        );
    }

    #[test]
    fn sliding_window_mean_keys_and_cache() {
        // T4, W2: keys per position 1, 2, 2, 2 → mean 7/4.
        assert_eq!(mean_keys(4, Some(2)), 1.75);
        assert_eq!(mean_keys(4, None), 2.5);
        let c = Cost::of(&arch(vec![layer(
            Attention::Sliding {
                heads: 2,
                window: 2,
                kv_heads: None,
            },
            16,
        )]));
        // mixing 4·8·1.75 = 56 instead of 80.
        assert_eq!(c.flops_per_token, 1264.0 - 80.0 + 56.0);
        // K,V for 2 tokens: 2·8·2·4 = 128 bytes.
        assert_eq!(c.inference_state_bytes, 128);
    }

    #[test]
    fn linear_attention_has_constant_state() {
        // H2, hd 4: state 2·(16 + 4) = 40 floats = 160 bytes whatever T is.
        let c = Cost::of(&arch(vec![layer(Attention::Linear { heads: 2 }, 16)]));
        assert_eq!(c.inference_state_bytes, 160);
        // mixing 4·d·hd + 2d = 128 + 16 = 144.
        assert_eq!(c.flops_per_token, 1024.0 + 144.0 + 160.0);
        assert_eq!(c.params, 776);
        let mut long = arch(vec![layer(Attention::Linear { heads: 2 }, 16)]);
        long.context = 400;
        assert_eq!(Cost::of(&long).inference_state_bytes, 160);
    }

    #[test]
    fn no_attention_layer_is_ln_and_ffn_only() {
        let c = Cost::of(&arch(vec![layer(Attention::None, 16)]));
        // 776 − ln1 16 − qkvo 256 = 504.
        assert_eq!(c.params, 504);
        assert_eq!(c.inference_state_bytes, 0);
        assert_eq!(c.flops_per_token, 2.0 * 256.0 + 160.0);
    }

    #[test]
    fn low_rank_swiglu_and_sparsity() {
        let mut l = layer(Attention::Full { heads: 2 }, 16);
        l.ffn = Some(Ffn {
            hidden: 16,
            activation: Activation::Swiglu,
            rank: Some(4),
            sparsity: None,
        });
        l.sparsity = Sparsity::Unstructured(Fraction(0.5));
        let c = Cost::of(&arch(vec![l.clone()]));
        // FFN: gate, in (8→16) and out (16→8) at rank 4: 3 matrices → (8·4+4·16)·2 + (16·4+4·8)
        // = 96·2 + 96 = 288 weights, no biases. Attention 256. LN 32. Outer 80+32+16+80 = 208.
        assert_eq!(c.params, 208 + 32 + 256 + 288);
        // Half of every attention/FFN matrix is zero: 256/2 + 288/2.
        assert_eq!(c.nonzero_params, c.params - 128 - 144);
        // flops: 2·(256 + 288) + mixing 80 + head 160.
        assert_eq!(c.flops_per_token, 1088.0 + 80.0 + 160.0);
        // ffn activations: ln 10 + 3h 48 + 3 ranks 12 + resid 8.
        let dense = Cost::of(&arch(vec![layer(Attention::Full { heads: 2 }, 16)]));
        assert_eq!(
            c.activation_bytes_per_token - dense.activation_bytes_per_token,
            (48.0 + 12.0 - 32.0) * 4.0
        );
        l.sparsity = Sparsity::TwoFour;
        assert_eq!(
            Cost::of(&arch(vec![l.clone()])).nonzero_params,
            c.nonzero_params
        );
        // Each half at its own sparsity: a dense attention over the half-sparse FFN keeps
        // every attention weight and half the FFN's (288 / 2); the other way round, the
        // reverse. Parameters stay as they are.
        let halves =
            |attention, ffn| Cost::of(&arch(vec![l.clone().with_sparsities(attention, ffn)]));
        let half = Sparsity::Unstructured(Fraction(0.5));
        let ffn_sparse = halves(Sparsity::Dense, half);
        assert_eq!(ffn_sparse.params, c.params);
        assert_eq!(ffn_sparse.nonzero_params, c.params - 144);
        assert_eq!(halves(half, Sparsity::Dense).nonzero_params, c.params - 128);
    }

    #[test]
    fn without_an_ffn_a_layer_counts_neither_its_ffn_nor_its_norm() {
        let mut l = layer(Attention::Full { heads: 2 }, 16);
        let with = Cost::of(&arch(vec![l.clone()]));
        l.ffn = None;
        let without = Cost::of(&arch(vec![l]));
        // ffn 16 at d_model 8: c_fc 8·16 + 16 and c_proj 16·8 + 8 (280), ln_2 16.
        assert_eq!(with.params - without.params, 280 + 16);
        assert_eq!(with.flops_per_token - without.flops_per_token, 2.0 * 256.0);
    }

    #[test]
    fn sharing_counts_weights_once_but_compute_per_layer() {
        let l = layer(Attention::Full { heads: 2 }, 16);
        let mut a = arch(vec![l.clone(), l.clone(), l]);
        let unshared = Cost::of(&a);
        a.share_layers = 2; // groups {0,1}, {2}
        let shared = Cost::of(&a);
        let block = 16 + 256 + 16 + 280;
        assert_eq!(unshared.params - shared.params, block);
        assert_eq!(shared.flops_per_token, unshared.flops_per_token);
        assert_eq!(shared.inference_state_bytes, unshared.inference_state_bytes);
        a.tie_embeddings = true;
        assert_eq!(shared.params - Cost::of(&a).params, 80);
    }
}
