//! A generator network built at run time from an `Architecture`, with forward and backward
//! passes over any `Backend`.
//!
//! Shapes: B batch, T sequence, N = B·T rows, C d_model, V vocabulary, H heads, hd = C/H,
//! G key/value heads, kvd = G·hd, h FFN hidden, r FFN rank.
//!
//! Parameter names (one scheme, GPT-2's, so export is a rename; matrices are stored
//! (out, in) like `torch.nn.Linear`, whereas GPT-2's `Conv1D` stores (in, out)):
//!
//! | name | shape | note |
//! |---|---|---|
//! | `wte.weight` | (V, C) | token embedding; also the LM head when tied |
//! | `wpe.weight` | (T, C) | learned positions; absent with rope |
//! | `h.{i}.ln_1.weight`, `.bias` | (C) | absent for attention `none`; RMSNorm has no bias |
//! | `h.{i}.attn.c_attn.weight` | (C + 2·kvd, C) | rows: q (C), k (kvd), v (kvd) |
//! | `h.{i}.attn.c_proj.weight` | (C, C) | |
//! | `h.{i}.ln_2.weight`, `.bias` | (C) | |
//! | `h.{i}.mlp.c_fc.weight`, `.bias` | (h, C), (h) | up projection; no bias for swiglu |
//! | `h.{i}.mlp.c_gate.weight` | (h, C) | swiglu only |
//! | `h.{i}.mlp.c_proj.weight`, `.bias` | (C, h), (C) | no bias for swiglu |
//! | `ln_f.weight`, `.bias` | (C) | |
//! | `lm_head.weight` | (V, C) | absent when tied |
//!
//! A low-rank FFN matrix `X.weight` (out, in) is stored as `X.weight_a` (r, in) and
//! `X.weight_b` (out, r): W = B·A. With cross-layer sharing only the first layer of each group
//! (`Architecture::weight_owner`) has parameters; the others use them and add their gradients
//! into them.
//!
//! Hugging Face mapping (export renames; the exporter's logit check in issue 6 verifies it):
//! - **GPT-2** (`GPT2LMHeadModel`; uniform full attention, GELU): every name above under
//!   `transformer.`, except `lm_head.weight`. GPT-2's `Conv1D` stores (in, out), so `c_attn`,
//!   `c_proj`, `c_fc` weights are transposed; its `attn.c_attn.bias` and `attn.c_proj.bias`
//!   are zeros (genas has none). The head is `lm_head.weight`, tied unless the config sets
//!   `tie_word_embeddings = false`. (HF's `gelu_new` is the tanh approximation: the config
//!   must name `activation_function = "gelu"` for the exact GELU genas trains.)
//! - **GPT-Neo** (`GPTNeoForCausalLM`; a mix of full and sliding-window layers, "global" and
//!   "local" with one `window_size`): `transformer.h.{i}.attn.attention.{q,k,v}_proj.weight`
//!   are the q, k, v row blocks of `c_attn.weight` (`nn.Linear` layout, no transpose);
//!   `attn.attention.out_proj.weight` (+ zero bias) is `c_proj`; `mlp.c_fc`, `mlp.c_proj` keep
//!   genas's (out, in) layout. GPT-Neo does not scale attention scores by 1/√hd, so the
//!   exporter folds that factor into `q_proj`. GPT-Neo's local attention window counts the
//!   token itself the same way genas does.
//! - **GPTBigCode** (`GPTBigCodeForCausalLM`, `multi_query = true`; uniform multi-query
//!   attention, i.e. grouped with one key/value head): `attn.c_attn.weight` is genas's
//!   (C + 2·hd, C) matrix as is (`nn.Linear`), plus zero biases; the rest as GPT-2 without
//!   the transposes.
//! - **GPT-NeoX** (`GPTNeoXForCausalLM`; rope + LayerNorm + gelu/relu, full attention):
//!   `gpt_neox.embed_in`, per layer `input_layernorm` / `post_attention_layernorm` (`ln_1`,
//!   `ln_2`), `attention.query_key_value` (`c_attn`'s rows regrouped head by head: q, k, v of
//!   head 0, then head 1, ...), `attention.dense` (`c_proj`), `mlp.dense_h_to_4h` /
//!   `dense_4h_to_h` (`c_fc`, `c_proj`), `gpt_neox.final_layer_norm`, `embed_out`.
//! - **Llama** (`LlamaForCausalLM`; rope + RMSNorm + swiglu, full or grouped attention):
//!   `model.embed_tokens`, per layer `input_layernorm` (`ln_1`), `self_attn.{q,k,v}_proj` (the
//!   row blocks of `c_attn`), `o_proj` (`c_proj`), `post_attention_layernorm` (`ln_2`),
//!   `mlp.gate_proj` / `up_proj` / `down_proj` (`c_gate`, `c_fc`, `c_proj`), `model.norm`. Llama
//!   rotates the same "rotate half" pairs as `cpu/rope.rs`: no permutation.
//!
//! The GPT families need learned positions and LayerNorm. Linear attention, attention `none`,
//! grouped attention with 1 < G < H outside Llama, low rank, sparsity masks beyond stored
//! zeros, swiglu outside Llama and sharing have no counterpart in these families: the `hf`
//! export then writes genas's own modeling code around `model.py`.

use crate::backend::{Act, Backend};
use crate::cpu::attention::AttnDims;
use crate::cpu::rope::RopeDims;
use genas_space::{Activation, Architecture, Attention, Float, Norm, Position, Rng, Sparsity};
use std::collections::BTreeMap;

/// One named parameter tensor.
#[derive(Clone, Debug)]
pub struct ParamInfo {
    pub name: String,
    pub shape: Vec<usize>,
    /// AdamW weight decay applies (matrices and embeddings, not biases or LayerNorms).
    pub decay: bool,
}

impl ParamInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A linear map in → out, dense or factorised, with an optional bias.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lin {
    Dense {
        w: usize,
        bias: Option<usize>,
        inp: usize,
        out: usize,
    },
    LowRank {
        a: usize,
        b: usize,
        bias: Option<usize>,
        inp: usize,
        out: usize,
        rank: usize,
    },
}

impl Lin {
    fn bias(&self) -> Option<usize> {
        match *self {
            Lin::Dense { bias, .. } | Lin::LowRank { bias, .. } => bias,
        }
    }
    /// The same layer without its bias, when `drop`.
    fn without_bias(mut self, drop: bool) -> Lin {
        if drop {
            match &mut self {
                Lin::Dense { bias, .. } | Lin::LowRank { bias, .. } => *bias = None,
            }
        }
        self
    }
    fn rank(&self) -> usize {
        match *self {
            Lin::Dense { .. } => 0,
            Lin::LowRank { rank, .. } => rank,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Mixer {
    Softmax(AttnDims),
    Linear { heads: usize, head_dim: usize },
}

/// A norm's parameters: LayerNorm has a weight and a bias, RMSNorm a weight only.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NormP {
    pub(crate) w: usize,
    pub(crate) b: Option<usize>,
}

#[derive(Clone, Debug)]
pub(crate) struct AttnParams {
    pub(crate) ln: NormP,
    pub(crate) qkv: usize,
    pub(crate) proj: usize,
    /// The q/k/v and output biases, when the layer has them (`attention_bias`).
    pub(crate) qkv_bias: Option<usize>,
    pub(crate) proj_bias: Option<usize>,
    pub(crate) mixer: Mixer,
    /// Width of a qkv row: C + 2·kvd.
    pub(crate) width: usize,
    /// The rotary base when rope rotates this layer's queries and keys.
    pub(crate) rope: Option<f64>,
}

#[derive(Clone, Debug)]
pub(crate) struct BlockParams {
    pub(crate) attn: Option<AttnParams>,
    pub(crate) ln2: NormP,
    pub(crate) fc: Lin,
    pub(crate) gate: Option<Lin>,
    pub(crate) proj: Lin,
    pub(crate) act: Activation,
    pub(crate) hidden: usize,
}

/// Per-layer activations kept for backward, sized for (B, T).
struct BlockActs<Buf> {
    ln1: Buf,
    ln1_mean: Buf,
    ln1_rstd: Buf,
    qkv: Buf,
    /// Softmax probabilities (B,H,T,T) or linear-attention normalisers (B,H,T).
    mix_cache: Buf,
    atty: Buf,
    x_mid: Buf,
    ln2: Buf,
    ln2_mean: Buf,
    ln2_rstd: Buf,
    fc_lr: Buf,
    fc_pre: Buf,
    gate_lr: Buf,
    gate_pre: Buf,
    act: Buf,
    proj_lr: Buf,
}

struct Acts<Buf> {
    b: usize,
    t: usize,
    /// resid[0] = embeddings, resid[l + 1] = output of block l.
    resid: Vec<Buf>,
    blocks: Vec<BlockActs<Buf>>,
    lnf: Buf,
    lnf_mean: Buf,
    lnf_rstd: Buf,
    logits: Buf,
    dlogits: Buf,
    // Backward scratch, sized for the widest layer.
    dx: Buf,
    dln: Buf,
    dqkv: Buf,
    datty: Buf,
    dh1: Buf,
    dh2: Buf,
    dh3: Buf,
    dlr: Buf,
}

/// Indices of the parameters outside the blocks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ids {
    wte: usize,
    wpe: Option<usize>,
    lnf: NormP,
    head: Option<usize>,
}

/// What a forward or backward pass reads: the weights, masks and layout (shared by every
/// worker of a data-parallel step).
#[derive(Clone, Copy)]
pub(crate) struct Net<'a, B: Backend> {
    w: &'a [B::Buf],
    masks: &'a [Option<B::Buf>],
    blocks: &'a [BlockParams],
    arch: &'a Architecture,
    ids: Ids,
}

/// Parameter infos, weights (mutable), gradients and the backend, borrowed together.
pub(crate) type OptimizerView<'a, B> = (
    &'a [ParamInfo],
    &'a mut [<B as Backend>::Buf],
    GradParts<'a, B>,
    &'a B,
);

/// The gradient as a weighted sum of parts: parameter i's gradient is Σ_s weights[s]·parts[s][i].
/// One part of weight 1 when it is held whole; after a data-parallel step, the shards' own
/// gradients, so that the optimizer combines them as it reads them (one pass over memory
/// instead of three).
pub(crate) struct GradParts<'a, B: Backend> {
    pub parts: Vec<&'a [B::Buf]>,
    pub weights: Vec<f64>,
}

impl<B: Backend> GradParts<'_, B> {
    /// Parameter i's parts.
    pub fn of(&self, i: usize) -> Vec<&B::Buf> {
        self.parts.iter().map(|p| &p[i]).collect()
    }
}

/// Loss figures of one forward pass (means over positions).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loss {
    /// The optimised loss (cross-entropy, or the distillation mix).
    pub loss: f64,
    /// Cross-entropy to the data, nats/token.
    pub ce: f64,
}

/// A network, its parameters and gradients on backend `B`.
pub struct Model<B: Backend> {
    pub arch: Architecture,
    pub be: B,
    pub params: Vec<ParamInfo>,
    weights: Vec<B::Buf>,
    grads: Vec<B::Buf>,
    masks: Vec<Option<B::Buf>>,
    pub(crate) blocks: Vec<BlockParams>,
    pub(crate) wte: usize,
    /// Learned positions; `None` with rope.
    pub(crate) wpe: Option<usize>,
    pub(crate) lnf: NormP,
    pub(crate) head: Option<usize>,
    acts: Option<Acts<B::Buf>>,
    /// Workers of data-parallel steps (`forward_backward`), created on first use.
    shards: Vec<Shard<B>>,
    /// Set by a data-parallel step: `grads` is stale and the gradient is Σ f_s · shard s's
    /// gradients with these fractions, until something needs it whole (`grads_whole`).
    pending: Option<Vec<f64>>,
}

/// One worker of a data-parallel step: its backend, activations and gradients.
struct Shard<B: Backend> {
    be: B,
    acts: Option<Acts<B::Buf>>,
    grads: Vec<B::Buf>,
}

struct Builder {
    params: Vec<ParamInfo>,
    init: Vec<Vec<f64>>,
    masks: Vec<Option<Vec<f64>>>,
    /// Initial values by parameter name that replace the drawn ones (of the same length).
    initial: BTreeMap<String, Vec<f64>>,
}

impl Builder {
    fn add(&mut self, name: String, shape: Vec<usize>, decay: bool, init: Vec<f64>) -> usize {
        // The draw happens either way, so the parameters after this one are drawn alike.
        let init = match self.initial.remove(&name) {
            Some(v) if v.len() == init.len() => v,
            _ => init,
        };
        self.params.push(ParamInfo { name, shape, decay });
        self.init.push(init);
        self.masks.push(None);
        self.params.len() - 1
    }

    fn normal(&mut self, name: String, shape: Vec<usize>, std: f64, rng: &mut Rng) -> usize {
        let n = shape.iter().product();
        let v = (0..n).map(|_| rng.normal() * std).collect();
        self.add(name, shape, true, v)
    }

    fn constant(&mut self, name: String, n: usize, value: f64) -> usize {
        self.add(name, vec![n], false, vec![value; n])
    }

    /// A unit norm over `c` features named `{prefix}.weight` (and a zero `{prefix}.bias` for
    /// LayerNorm).
    fn norm(&mut self, prefix: &str, c: usize, norm: Norm) -> NormP {
        let w = self.constant(format!("{prefix}.weight"), c, 1.0);
        let b = (norm == Norm::Layernorm).then(|| self.constant(format!("{prefix}.bias"), c, 0.0));
        NormP { w, b }
    }

    /// A linear map with N(0, std) weights (its product, when factorised).
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        prefix: &str,
        inp: usize,
        out: usize,
        rank: Option<u32>,
        bias: bool,
        std: f64,
        rng: &mut Rng,
    ) -> Lin {
        let lin = match rank {
            None => {
                let w = self.normal(format!("{prefix}.weight"), vec![out, inp], std, rng);
                let bias = bias.then(|| self.constant(format!("{prefix}.bias"), out, 0.0));
                Lin::Dense { w, bias, inp, out }
            }
            Some(r) => {
                let r = r as usize;
                // Var(W) = r · σ_a² · σ_b² = std² with σ_a = σ_b.
                let s = (std / (r as f64).sqrt()).sqrt();
                let a = self.normal(format!("{prefix}.weight_a"), vec![r, inp], s, rng);
                let b = self.normal(format!("{prefix}.weight_b"), vec![out, r], s, rng);
                let bias = bias.then(|| self.constant(format!("{prefix}.bias"), out, 0.0));
                Lin::LowRank {
                    a,
                    b,
                    bias,
                    inp,
                    out,
                    rank: r,
                }
            }
        };
        lin
    }

    /// Masks every matrix of `lin` and applies the mask to its initial weights.
    fn sparsify(&mut self, lin: Lin, sparsity: Sparsity) {
        match lin {
            Lin::Dense { w, .. } => self.sparsify_rows(w, sparsity, &[self.params[w].shape[0]]),
            Lin::LowRank { a, b, .. } => {
                self.sparsify_rows(a, sparsity, &[self.params[a].shape[0]]);
                self.sparsify_rows(b, sparsity, &[self.params[b].shape[0]]);
            }
        }
    }

    /// Masks parameter `p` (rows × cols), treating each consecutive block of `blocks[i]` rows
    /// as its own matrix (q, k, v of a fused projection).
    fn sparsify_rows(&mut self, p: usize, sparsity: Sparsity, blocks: &[usize]) {
        if sparsity == Sparsity::Dense {
            return;
        }
        let cols = self.params[p].shape[1];
        let w = &self.init[p];
        let mut mask = vec![1.0; w.len()];
        let mut row0 = 0;
        for &rows in blocks {
            let range = row0 * cols..(row0 + rows) * cols;
            let m = sparsity_mask(&w[range.clone()], cols, sparsity);
            mask[range].copy_from_slice(&m);
            row0 += rows;
        }
        for (x, m) in self.init[p].iter_mut().zip(&mask) {
            *x *= m;
        }
        self.masks[p] = Some(mask);
    }
}

/// 0/1 mask for a (rows × cols) matrix: unstructured keeps all but the ⌊f·numel⌋ smallest
/// magnitudes; 2:4 keeps the two largest of every 4 consecutive weights in a row. Ties go to
/// the lower index, so masks are deterministic.
pub fn sparsity_mask(w: &[f64], cols: usize, sparsity: Sparsity) -> Vec<f64> {
    let mut mask = vec![1.0; w.len()];
    match sparsity {
        Sparsity::Dense => {}
        Sparsity::Unstructured(f) => {
            let zeroed = (w.len() as f64 * f.0).floor() as usize;
            let mut order: Vec<usize> = (0..w.len()).collect();
            order.sort_by(|&i, &j| w[i].abs().total_cmp(&w[j].abs()).then(i.cmp(&j)));
            for &i in &order[..zeroed] {
                mask[i] = 0.0;
            }
        }
        Sparsity::TwoFour => {
            for row in 0..w.len() / cols {
                for g in (0..cols).step_by(4) {
                    let base = row * cols + g;
                    let mut idx = [base, base + 1, base + 2, base + 3];
                    idx.sort_by(|&i, &j| w[i].abs().total_cmp(&w[j].abs()).then(i.cmp(&j)));
                    mask[idx[0]] = 0.0;
                    mask[idx[1]] = 0.0;
                }
            }
        }
    }
    mask
}

impl<B: Backend> Model<B> {
    /// Builds the network with GPT-2 initialisation: N(0, 0.02) weights, residual projections
    /// scaled by 1/√(2·depth), zero biases, unit norms; sparsity masks are taken from the
    /// initial magnitudes and applied. The architecture must be valid.
    pub fn new(arch: &Architecture, be: B, seed: u64) -> Model<B> {
        Model::with_initial(arch, be, seed, BTreeMap::new())
    }

    /// `new`, with the initial values of the parameters named in `initial` (of their exact
    /// size) taken from it instead of drawn; sparsity masks are then taken from those values.
    /// The others are drawn as `new` draws them.
    pub fn with_initial(
        arch: &Architecture,
        be: B,
        seed: u64,
        initial: BTreeMap<String, Vec<f64>>,
    ) -> Model<B> {
        arch.validate()
            .expect("Model::new needs a valid architecture");
        let mut rng = Rng::seed_from_u64(seed);
        let (v, t, c) = (
            arch.vocab_size as usize,
            arch.context as usize,
            arch.d_model as usize,
        );
        let std = 0.02;
        let resid_std = std / (2.0 * arch.depth() as f64).sqrt();
        let mut bld = Builder {
            params: vec![],
            init: vec![],
            masks: vec![],
            initial,
        };
        let wte = bld.normal("wte.weight".into(), vec![v, c], std, &mut rng);
        let wpe = match arch.position {
            Position::Learned => Some(bld.normal("wpe.weight".into(), vec![t, c], std, &mut rng)),
            Position::Rope { .. } => None,
        };
        let theta = match arch.position {
            Position::Rope {
                theta: Float(theta),
            } => Some(theta),
            Position::Learned => None,
        };
        let mut blocks: Vec<BlockParams> = Vec::with_capacity(arch.depth());
        for (i, layer) in arch.layers.iter().enumerate() {
            let owner = arch.weight_owner(i);
            if owner != i {
                let shared = blocks[owner].clone();
                blocks.push(shared);
                continue;
            }
            let attn = match layer.attention {
                Attention::None => None,
                ref a => {
                    let heads = a.heads() as usize;
                    let hd = c / heads;
                    let kv = a.kv_heads() as usize;
                    let width = c + 2 * kv * hd;
                    let ln = bld.norm(&format!("h.{i}.ln_1"), c, arch.norm);
                    let qkv = bld.normal(
                        format!("h.{i}.attn.c_attn.weight"),
                        vec![width, c],
                        std,
                        &mut rng,
                    );
                    bld.sparsify_rows(qkv, layer.sparsity, &[c, kv * hd, kv * hd]);
                    let qkv_bias = layer
                        .attention_bias
                        .then(|| bld.constant(format!("h.{i}.attn.c_attn.bias"), width, 0.0));
                    let proj = bld.normal(
                        format!("h.{i}.attn.c_proj.weight"),
                        vec![c, c],
                        resid_std,
                        &mut rng,
                    );
                    bld.sparsify_rows(proj, layer.sparsity, &[c]);
                    let proj_bias = layer
                        .attention_bias
                        .then(|| bld.constant(format!("h.{i}.attn.c_proj.bias"), c, 0.0));
                    let mixer = match *a {
                        Attention::Linear { .. } => Mixer::Linear {
                            heads,
                            head_dim: hd,
                        },
                        Attention::Sliding { window, .. } => Mixer::Softmax(AttnDims {
                            b: 0,
                            t: 0,
                            heads,
                            kv_heads: kv,
                            head_dim: hd,
                            window: window as usize,
                        }),
                        _ => Mixer::Softmax(AttnDims {
                            b: 0,
                            t: 0,
                            heads,
                            kv_heads: kv,
                            head_dim: hd,
                            window: usize::MAX,
                        }),
                    };
                    Some(AttnParams {
                        ln,
                        qkv,
                        proj,
                        qkv_bias,
                        proj_bias,
                        mixer,
                        width,
                        rope: theta.filter(|_| arch.rotates(layer)),
                    })
                }
            };
            let ln2 = bld.norm(&format!("h.{i}.ln_2"), c, arch.norm);
            let h = layer.ffn.hidden as usize;
            let swiglu = layer.ffn.activation == Activation::Swiglu;
            let rank = layer.ffn.rank;
            let fc = bld.linear(
                &format!("h.{i}.mlp.c_fc"),
                c,
                h,
                rank,
                !swiglu,
                std,
                &mut rng,
            );
            bld.sparsify(fc, layer.sparsity);
            let gate = swiglu.then(|| {
                bld.linear(
                    &format!("h.{i}.mlp.c_gate"),
                    c,
                    h,
                    rank,
                    false,
                    std,
                    &mut rng,
                )
            });
            if let Some(g) = gate {
                bld.sparsify(g, layer.sparsity);
            }
            let proj = bld.linear(
                &format!("h.{i}.mlp.c_proj"),
                h,
                c,
                rank,
                !swiglu,
                resid_std,
                &mut rng,
            );
            bld.sparsify(proj, layer.sparsity);
            blocks.push(BlockParams {
                attn,
                ln2,
                fc,
                gate,
                proj,
                act: layer.ffn.activation,
                hidden: h,
            });
        }
        let lnf = bld.norm("ln_f", c, arch.norm);
        let head = (!arch.tie_embeddings)
            .then(|| bld.normal("lm_head.weight".into(), vec![v, c], std, &mut rng));
        let weights = bld.init.iter().map(|w| be.upload(w)).collect();
        let grads = bld.params.iter().map(|p| be.zeros(p.numel())).collect();
        let masks = bld
            .masks
            .iter()
            .map(|m| m.as_ref().map(|m| be.upload(m)))
            .collect();
        Model {
            arch: arch.clone(),
            be,
            params: bld.params,
            weights,
            grads,
            masks,
            blocks,
            wte,
            wpe,
            lnf,
            head,
            acts: None,
            pending: None,
            shards: Vec::new(),
        }
    }

    /// Number of parameters (shared weights once).
    pub fn num_params(&self) -> usize {
        self.params.iter().map(ParamInfo::numel).sum()
    }

    /// Parameters that can be non-zero (masked weights excluded).
    pub fn num_nonzero_params(&self) -> usize {
        self.params
            .iter()
            .zip(&self.masks)
            .map(|(p, m)| match m {
                Some(m) => self.be.download(m).iter().filter(|&&x| x != 0.0).count(),
                None => p.numel(),
            })
            .sum()
    }

    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p.name == name)
    }

    pub fn weights(&self, i: usize) -> Vec<f64> {
        self.be.download(&self.weights[i])
    }

    pub fn set_weights(&mut self, i: usize, host: &[f64]) {
        assert_eq!(
            host.len(),
            self.params[i].numel(),
            "{}",
            self.params[i].name
        );
        self.weights[i] = self.be.upload(host);
    }

    pub fn grad(&mut self, i: usize) -> Vec<f64> {
        self.grads_whole();
        self.be.download(&self.grads[i])
    }

    /// Combines the shards' gradients of the last data-parallel step into `grads`, as
    /// Σ (n_s / N)·g_s in shard order (no-op when they already are).
    fn grads_whole(&mut self) {
        let Some(fractions) = self.pending.take() else {
            return;
        };
        let (be, grads, shards) = (&self.be, &mut self.grads, &self.shards);
        be.install(|| {
            for (i, g) in grads.iter_mut().enumerate() {
                be.set_zero(g);
                for (sh, &f) in shards.iter().zip(&fractions) {
                    be.axpy(g, f, &sh.grads[i]);
                }
            }
        });
    }

    /// Takes every sparsity mask from the weights' zeros: what masked training leaves, since
    /// a masked weight starts at zero and never moves. Weights read back from a file hold
    /// their masks this way, whatever initialisation the model was built with.
    pub fn masks_from_zeros(&mut self) {
        for i in 0..self.params.len() {
            if self.masks[i].is_some() {
                let m: Vec<f64> = self
                    .weights(i)
                    .iter()
                    .map(|&w| if w == 0.0 { 0.0 } else { 1.0 })
                    .collect();
                self.masks[i] = Some(self.be.upload(&m));
            }
        }
    }

    pub fn mask(&self, i: usize) -> Option<Vec<f64>> {
        self.masks[i].as_ref().map(|m| self.be.download(m))
    }

    /// The logits of the last forward pass, (B, T, V).
    pub fn logits(&self) -> Vec<f64> {
        let a = self.acts.as_ref().expect("forward first");
        let n = a.b * a.t * self.arch.vocab_size as usize;
        let mut l = self.be.download(&a.logits);
        l.truncate(n);
        l
    }

    /// What the optimizer needs at once: (info, weights, gradients, backend).
    pub(crate) fn parts(&mut self) -> OptimizerView<'_, B> {
        let grads = match &self.pending {
            Some(fractions) => GradParts {
                parts: self.shards.iter().map(|sh| &sh.grads[..]).collect(),
                weights: fractions.clone(),
            },
            None => GradParts {
                parts: vec![&self.grads[..]],
                weights: vec![1.0],
            },
        };
        (&self.params, &mut self.weights, grads, &self.be)
    }

    fn ensure_acts(&mut self, b: usize, t: usize) {
        if self.acts.as_ref().is_some_and(|a| a.b == b && a.t == t) {
            return;
        }
        self.acts = Some(alloc_acts(&self.be, &self.blocks, &self.arch, b, t));
    }

    fn net(&self) -> Net<'_, B> {
        Net {
            w: &self.weights,
            masks: &self.masks,
            blocks: &self.blocks,
            arch: &self.arch,
            ids: Ids {
                wte: self.wte,
                wpe: self.wpe,
                lnf: self.lnf,
                head: self.head,
            },
        }
    }

    /// Forward pass over `tokens` (B, T). With `targets` it returns the loss (and, when
    /// `with_grad`, leaves dlogits ready for `backward`); `teacher` adds the distillation term:
    /// (probabilities (B·T, V) at temperature, temperature, alpha).
    pub fn forward(
        &mut self,
        tokens: &[u32],
        targets: Option<&[u32]>,
        teacher: Option<(&B::Buf, f64, f64)>,
        (b, t): (usize, usize),
        with_grad: bool,
    ) -> Option<Loss> {
        assert!(t <= self.arch.context as usize && tokens.len() == b * t);
        self.ensure_acts(b, t);
        let mut acts = self.acts.take().expect("allocated");
        let loss = forward_pass(
            &self.net(),
            &self.be,
            &mut acts,
            tokens,
            targets,
            teacher,
            (b, t),
            with_grad,
        );
        self.acts = Some(acts);
        loss
    }

    /// One training step's forward and backward with the data loss (cross-entropy), leaving
    /// the gradients ready for the optimizer. Where the backend has workers (CPU, 2+ threads)
    /// the batch is split across them in fixed contiguous shares, each trains on its share with
    /// single-threaded kernels, and the gradient is Σ (n_s / N)·g_s in shard order: the
    /// full-batch gradient, deterministic for a given thread count. It stays in the shards
    /// until read (`grad`), or is combined by the optimizer as it updates.
    pub fn forward_backward(
        &mut self,
        tokens: &[u32],
        targets: &[u32],
        (b, t): (usize, usize),
    ) -> Loss {
        assert!(t <= self.arch.context as usize && tokens.len() == b * t && targets.len() == b * t);
        if self.shards.is_empty() {
            let workers = self.be.workers();
            self.shards = workers
                .into_iter()
                .map(|be| {
                    let grads = self.params.iter().map(|p| be.zeros(p.numel())).collect();
                    Shard {
                        be,
                        acts: None,
                        grads,
                    }
                })
                .collect();
        }
        let s = self.shards.len();
        if s < 2 || b < s {
            let loss = self
                .forward(tokens, Some(targets), None, (b, t), true)
                .expect("targets given");
            self.backward(tokens);
            return loss;
        }
        let net = Net {
            w: &self.weights,
            masks: &self.masks,
            blocks: &self.blocks,
            arch: &self.arch,
            ids: Ids {
                wte: self.wte,
                wpe: self.wpe,
                lnf: self.lnf,
                head: self.head,
            },
        };
        let bounds: Vec<usize> = (0..=s).map(|k| k * b / s).collect();
        let losses: Vec<Loss> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .shards
                .iter_mut()
                .enumerate()
                .map(|(k, sh)| {
                    let (r0, r1) = (bounds[k], bounds[k + 1]);
                    let (tok, tgt) = (&tokens[r0 * t..r1 * t], &targets[r0 * t..r1 * t]);
                    let net = &net;
                    scope.spawn(move || {
                        let bs = r1 - r0;
                        if !sh.acts.as_ref().is_some_and(|a| a.b == bs && a.t == t) {
                            sh.acts = Some(alloc_acts(&sh.be, net.blocks, net.arch, bs, t));
                        }
                        let a = sh.acts.as_mut().expect("allocated");
                        let loss =
                            forward_pass(net, &sh.be, a, tok, Some(tgt), None, (bs, t), true)
                                .expect("targets given");
                        backward_pass(net, &sh.be, a, &mut sh.grads, tok, None);
                        loss
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a training worker panicked"))
                .collect()
        });
        let fractions: Vec<f64> = (0..s)
            .map(|k| (bounds[k + 1] - bounds[k]) as f64 / b as f64)
            .collect();
        let loss = Loss {
            loss: losses.iter().zip(&fractions).map(|(l, f)| l.loss * f).sum(),
            ce: losses.iter().zip(&fractions).map(|(l, f)| l.ce * f).sum(),
        };
        self.pending = Some(fractions);
        loss
    }

    /// Gradients of the loss of the last `forward(.., with_grad = true)` into the parameter
    /// gradients (zeroed first). Masked weights get zero gradient.
    pub fn backward(&mut self, tokens: &[u32]) {
        let mut acts = self.acts.take().expect("forward first");
        self.pending = None; // overwritten whole below
        let mut grads = std::mem::take(&mut self.grads);
        backward_pass(&self.net(), &self.be, &mut acts, &mut grads, tokens, None);
        self.grads = grads;
        self.acts = Some(acts);
    }

    /// Like `backward`, calling `probe(layer, hidden, act, dact)` as each block's FFN
    /// activation output `act` (N, hidden) and its gradient `dact` get known (both buffers may
    /// be wider than N·hidden). The zero-cost proxies read activations through this.
    pub fn backward_probed(&mut self, tokens: &[u32], probe: &mut FfnProbe<'_, B>) {
        let mut acts = self.acts.take().expect("forward first");
        self.pending = None; // overwritten whole below
        let mut grads = std::mem::take(&mut self.grads);
        backward_pass(
            &self.net(),
            &self.be,
            &mut acts,
            &mut grads,
            tokens,
            Some(probe),
        );
        self.grads = grads;
        self.acts = Some(acts);
    }

    /// Replaces the loss gradient left by the last `forward(.., with_grad = true)` with
    /// `dlogits` (B·T, V), so `backward` differentiates another function of the logits
    /// (synflow and jacob_cov use R = Σ logits).
    pub fn set_logit_grad(&mut self, dlogits: &[f64]) {
        let a = self.acts.as_mut().expect("forward first");
        let n = a.b * a.t * self.arch.vocab_size as usize;
        assert_eq!(dlogits.len(), n);
        let mut full = dlogits.to_vec();
        full.resize(self.be.download(&a.dlogits).len(), 0.0);
        a.dlogits = self.be.upload(&full);
    }

    /// ∂loss/∂(input embeddings) (B, T, C) after `backward`: the gradient that reached the
    /// token + position embedding sum.
    pub fn input_grad(&self) -> Vec<f64> {
        let a = self.acts.as_ref().expect("backward first");
        let mut d = self.be.download(&a.dx);
        d.truncate(a.b * a.t * self.arch.d_model as usize);
        d
    }

    /// The residual stream after the last forward: entry 0 is the embedding sum, entry l + 1
    /// the output of block l, each (B, T, C).
    pub fn residual(&self, l: usize) -> Vec<f64> {
        let a = self.acts.as_ref().expect("forward first");
        let mut d = self.be.download(&a.resid[l]);
        d.truncate(a.b * a.t * self.arch.d_model as usize);
        d
    }

    /// Block `l`'s attention output after the last forward, before its output projection:
    /// (B·T, d_model), heads side by side. Empty for a block without attention.
    pub fn attention_output(&self, l: usize) -> Vec<f64> {
        let a = self.acts.as_ref().expect("forward first");
        if self.blocks[l].attn.is_none() {
            return Vec::new();
        }
        let mut d = self.be.download(&a.blocks[l].atty);
        d.truncate(a.b * a.t * self.arch.d_model as usize);
        d
    }

    /// Block `l`'s FFN pre-activation after the last forward, (B·T, hidden): the input of the
    /// nonlinearity (for swiglu, the gate's input, whose sign sets the gate open or shut).
    pub fn ffn_preactivation(&self, l: usize) -> Vec<f64> {
        let a = self.acts.as_ref().expect("forward first");
        let (ba, bp) = (&a.blocks[l], &self.blocks[l]);
        let h = bp.hidden;
        let buf = if bp.gate.is_some() {
            &ba.gate_pre
        } else {
            &ba.fc_pre
        };
        let mut d = self.be.download(buf);
        d.truncate(a.b * a.t * h);
        // Without a gate, fc's bias is added in the activation's pass, not stored in fc_pre.
        if let Some(bi) = bp.fc.bias().filter(|_| bp.gate.is_none()) {
            let bias = self.be.download(&self.weights[bi]);
            for row in d.chunks_exact_mut(h) {
                for (x, b) in row.iter_mut().zip(&bias) {
                    *x += b;
                }
            }
        }
        d
    }

    /// Number of blocks.
    pub fn depth(&self) -> usize {
        self.blocks.len()
    }
}

/// Called by `Model::backward_probed` with (layer, hidden width, activation, its gradient).
pub type FfnProbe<'a, B> =
    dyn FnMut(usize, usize, &<B as Backend>::Buf, &<B as Backend>::Buf) + Send + 'a;

/// Activations and backward scratch for a (b, t) batch.
fn alloc_acts<B: Backend>(
    be: &B,
    blocks_p: &[BlockParams],
    arch: &Architecture,
    b: usize,
    t: usize,
) -> Acts<B::Buf> {
    let (n, c, v) = (b * t, arch.d_model as usize, arch.vocab_size as usize);
    let z = |k: usize| be.zeros(k);
    let mut max_width = 0;
    let mut max_h = 0;
    let mut max_r = 0;
    // Widest gated FFN: only swiglu's backward needs dh2 and dh3 (an ungated activation's
    // backward works in place in dh1).
    let mut max_gated_h = 0;
    let mut blocks = Vec::with_capacity(blocks_p.len());
    for bp in blocks_p {
        let (width, cache) = match &bp.attn {
            None => (0, 0),
            Some(a) => match a.mixer {
                Mixer::Softmax(d) => (a.width, b * d.heads * t * t),
                Mixer::Linear { heads, .. } => (a.width, b * heads * t),
            },
        };
        let h = bp.hidden;
        let r = bp.fc.rank().max(bp.proj.rank());
        max_width = max_width.max(width);
        max_h = max_h.max(h);
        max_r = max_r.max(r);
        let has_attn = bp.attn.is_some();
        let gated = bp.gate.is_some();
        if gated {
            max_gated_h = max_gated_h.max(h);
        }
        blocks.push(BlockActs {
            ln1: z(if has_attn { n * c } else { 0 }),
            ln1_mean: z(if has_attn { n } else { 0 }),
            ln1_rstd: z(if has_attn { n } else { 0 }),
            qkv: z(n * width),
            mix_cache: z(cache),
            atty: z(if has_attn { n * c } else { 0 }),
            x_mid: z(if has_attn { n * c } else { 0 }),
            ln2: z(n * c),
            ln2_mean: z(n),
            ln2_rstd: z(n),
            fc_lr: z(n * bp.fc.rank()),
            fc_pre: z(n * h),
            gate_lr: z(if gated { n * bp.fc.rank() } else { 0 }),
            gate_pre: z(if gated { n * h } else { 0 }),
            act: z(n * h),
            proj_lr: z(n * bp.proj.rank()),
        });
    }
    Acts {
        b,
        t,
        resid: (0..=blocks_p.len()).map(|_| z(n * c)).collect(),
        blocks,
        lnf: z(n * c),
        lnf_mean: z(n),
        lnf_rstd: z(n),
        logits: z(n * v),
        dlogits: z(n * v),
        dx: z(n * c),
        dln: z(n * c),
        dqkv: z(n * max_width),
        datty: z(n * c),
        dh1: z(n * max_h),
        dh2: z(n * max_gated_h),
        dh3: z(n * max_gated_h),
        dlr: z(n * max_r),
    }
}

/// Forward pass over `tokens` (B, T). With `targets` it returns the loss (and, when
/// `with_grad`, leaves dlogits ready for `backward`); `teacher` adds the distillation term:
/// (probabilities (B·T, V) at temperature, temperature, alpha).
#[allow(clippy::too_many_arguments)]
fn forward_pass<B: Backend>(
    net: &Net<'_, B>,
    be: &B,
    a: &mut Acts<B::Buf>,
    tokens: &[u32],
    targets: Option<&[u32]>,
    teacher: Option<(&B::Buf, f64, f64)>,
    (b, t): (usize, usize),
    with_grad: bool,
) -> Option<Loss> {
    let Net {
        w,
        blocks,
        arch,
        ids: Ids {
            wte,
            wpe,
            lnf,
            head,
        },
        ..
    } = *net;
    let (n, c, v) = (b * t, arch.d_model as usize, arch.vocab_size as usize);
    be.install(|| {
        be.embedding_forward(
            &mut a.resid[0],
            tokens,
            &w[wte],
            wpe.map(|p| &w[p]),
            (b, t, c),
        );
        for (l, bp) in blocks.iter().enumerate() {
            let (before, after) = a.resid.split_at_mut(l + 1);
            let (x_in, x_out) = (&before[l], &mut after[0]);
            let ba = &mut a.blocks[l];
            if let Some(at) = &bp.attn {
                norm_forward(
                    be,
                    w,
                    at.ln,
                    &mut ba.ln1,
                    &mut ba.ln1_mean,
                    &mut ba.ln1_rstd,
                    x_in,
                    (n, c),
                );
                be.matmul_forward(
                    &mut ba.qkv,
                    false,
                    &ba.ln1,
                    &w[at.qkv],
                    at.qkv_bias.map(|i| &w[i]),
                    (n, c, at.width),
                );
                if let Some(d) = rope_dims(at, n, t) {
                    be.rope(&mut ba.qkv, d, false);
                }
                match at.mixer {
                    Mixer::Softmax(d) => {
                        let d = AttnDims {
                            b,
                            t,
                            window: d.window.min(t),
                            ..d
                        };
                        be.attention_forward(&mut ba.atty, &mut ba.mix_cache, &ba.qkv, d);
                    }
                    Mixer::Linear { heads, head_dim } => {
                        be.linear_attention_forward(
                            &mut ba.atty,
                            &mut ba.mix_cache,
                            &ba.qkv,
                            (b, t, heads, head_dim),
                        );
                    }
                }
                be.copy(&mut ba.x_mid, x_in, n * c);
                be.matmul_forward(
                    &mut ba.x_mid,
                    true,
                    &ba.atty,
                    &w[at.proj],
                    at.proj_bias.map(|i| &w[i]),
                    (n, c, c),
                );
            }
            let h_in = if bp.attn.is_some() { &ba.x_mid } else { x_in };
            norm_forward(
                be,
                w,
                bp.ln2,
                &mut ba.ln2,
                &mut ba.ln2_mean,
                &mut ba.ln2_rstd,
                h_in,
                (n, c),
            );
            // Without a gate, fc's bias goes in with the activation (one pass over the
            // pre-activations instead of bias rows laid under the product and read back).
            let fc_bias = if bp.gate.is_none() {
                bp.fc.bias()
            } else {
                None
            };
            lin_forward(
                be,
                w,
                bp.fc.without_bias(fc_bias.is_some()),
                &mut ba.fc_pre,
                false,
                &mut ba.fc_lr,
                &ba.ln2,
                n,
            );
            let nh = n * bp.hidden;
            match bp.gate {
                Some(g) => {
                    lin_forward(
                        be,
                        w,
                        g,
                        &mut ba.gate_pre,
                        false,
                        &mut ba.gate_lr,
                        &ba.ln2,
                        n,
                    );
                    be.swiglu_forward(&mut ba.act, &ba.gate_pre, &ba.fc_pre, nh);
                }
                None => match fc_bias {
                    Some(bi) => be.bias_act_forward(
                        act_of(bp.act),
                        &mut ba.act,
                        &ba.fc_pre,
                        &w[bi],
                        (n, bp.hidden),
                    ),
                    None => be.act_forward(act_of(bp.act), &mut ba.act, &ba.fc_pre, nh),
                },
            }
            be.copy(x_out, h_in, n * c);
            lin_forward(be, w, bp.proj, x_out, true, &mut ba.proj_lr, &ba.act, n);
        }
        let last = &a.resid[blocks.len()];
        norm_forward(
            be,
            w,
            lnf,
            &mut a.lnf,
            &mut a.lnf_mean,
            &mut a.lnf_rstd,
            last,
            (n, c),
        );
        let head = &w[head.unwrap_or(wte)];
        be.matmul_forward(&mut a.logits, false, &a.lnf, head, None, (n, c, v));
        targets.map(|y| {
            let d = if with_grad {
                Some(&mut a.dlogits)
            } else {
                None
            };
            let (loss, ce) = be.loss(d, &a.logits, y, teacher, (n, v));
            Loss { loss, ce }
        })
    })
}

/// Gradients of the loss of the last `forward(.., with_grad = true)` into the parameter
/// gradients (zeroed first). Masked weights get zero gradient.
fn backward_pass<B: Backend>(
    net: &Net<'_, B>,
    be: &B,
    a: &mut Acts<B::Buf>,
    g: &mut [B::Buf],
    tokens: &[u32],
    mut probe: Option<&mut FfnProbe<'_, B>>,
) {
    let Net {
        w,
        masks,
        blocks,
        arch,
        ids: Ids {
            wte,
            wpe,
            lnf,
            head,
        },
    } = *net;
    let (b, t) = (a.b, a.t);
    let (n, c, v) = (b * t, arch.d_model as usize, arch.vocab_size as usize);
    be.install(|| {
        for gi in g.iter_mut() {
            be.set_zero(gi);
        }
        let head = head.unwrap_or(wte);
        be.matmul_backward(
            Some(&mut a.dln),
            false,
            &mut g[head],
            None,
            &a.dlogits,
            &a.lnf,
            &w[head],
            (n, c, v),
        );
        be.set_zero(&mut a.dx);
        let last = &a.resid[blocks.len()];
        norm_backward(
            be,
            w,
            g,
            lnf,
            &mut a.dx,
            &a.dln,
            last,
            &a.lnf_mean,
            &a.lnf_rstd,
            (n, c),
        );
        for (l, bp) in blocks.iter().enumerate().rev() {
            let x_in = &a.resid[l];
            let ba = &a.blocks[l];
            let h_in = if bp.attn.is_some() { &ba.x_mid } else { x_in };
            let nh = n * bp.hidden;
            // FFN: x_out = h_in + proj(act(fc(LN2(h_in)))).
            lin_backward(
                be,
                w,
                g,
                bp.proj,
                &mut a.dh1,
                false,
                &mut a.dlr,
                &a.dx,
                &ba.act,
                &ba.proj_lr,
                n,
            );
            if let Some(p) = probe.as_mut() {
                p(l, bp.hidden, &ba.act, &a.dh1);
            }
            match bp.gate {
                Some(gate) => {
                    be.swiglu_backward(
                        &mut a.dh3,
                        &mut a.dh2,
                        &ba.gate_pre,
                        &ba.fc_pre,
                        &a.dh1,
                        nh,
                    );
                    lin_backward(
                        be, w, g, bp.fc, &mut a.dln, false, &mut a.dlr, &a.dh2, &ba.ln2, &ba.fc_lr,
                        n,
                    );
                    lin_backward(
                        be,
                        w,
                        g,
                        gate,
                        &mut a.dln,
                        true,
                        &mut a.dlr,
                        &a.dh3,
                        &ba.ln2,
                        &ba.gate_lr,
                        n,
                    );
                }
                None => {
                    // fc's bias went in with the activation (see forward), and its gradient
                    // comes out of the activation's backward pass.
                    let fc_bias = bp.fc.bias();
                    match fc_bias {
                        Some(bi) => be.bias_act_backward(
                            act_of(bp.act),
                            &mut a.dh1,
                            &mut g[bi],
                            &ba.fc_pre,
                            &ba.act,
                            &w[bi],
                            (n, bp.hidden),
                        ),
                        None => {
                            be.act_backward(act_of(bp.act), &mut a.dh1, &ba.fc_pre, &ba.act, nh)
                        }
                    }
                    let fc = bp.fc.without_bias(fc_bias.is_some());
                    lin_backward(
                        be, w, g, fc, &mut a.dln, false, &mut a.dlr, &a.dh1, &ba.ln2, &ba.fc_lr, n,
                    );
                }
            }
            norm_backward(
                be,
                w,
                g,
                bp.ln2,
                &mut a.dx,
                &a.dln,
                h_in,
                &ba.ln2_mean,
                &ba.ln2_rstd,
                (n, c),
            );
            if let Some(at) = &bp.attn {
                // x_mid = x_in + proj(mix(qkv(LN1(x_in)))).
                let (dw, db) = weight_and_bias_grads(g, at.proj, at.proj_bias);
                be.matmul_backward(
                    Some(&mut a.datty),
                    false,
                    dw,
                    db,
                    &a.dx,
                    &ba.atty,
                    &w[at.proj],
                    (n, c, c),
                );
                match at.mixer {
                    Mixer::Softmax(d) => {
                        let d = AttnDims {
                            b,
                            t,
                            window: d.window.min(t),
                            ..d
                        };
                        be.attention_backward(&mut a.dqkv, &a.datty, &ba.qkv, &ba.mix_cache, d);
                        // The gradient reached the rotated q, k; turn it back.
                        if let Some(d) = rope_dims(at, n, t) {
                            be.rope(&mut a.dqkv, d, true);
                        }
                    }
                    Mixer::Linear { heads, head_dim } => {
                        be.linear_attention_backward(
                            &mut a.dqkv,
                            &a.datty,
                            &ba.qkv,
                            &ba.atty,
                            &ba.mix_cache,
                            (b, t, heads, head_dim),
                        );
                    }
                }
                let (dw, db) = weight_and_bias_grads(g, at.qkv, at.qkv_bias);
                be.matmul_backward(
                    Some(&mut a.dln),
                    false,
                    dw,
                    db,
                    &a.dqkv,
                    &ba.ln1,
                    &w[at.qkv],
                    (n, c, at.width),
                );
                norm_backward(
                    be,
                    w,
                    g,
                    at.ln,
                    &mut a.dx,
                    &a.dln,
                    x_in,
                    &ba.ln1_mean,
                    &ba.ln1_rstd,
                    (n, c),
                );
            }
        }
        match wpe {
            Some(wpe) => {
                let [dwte, dwpe] = g.get_disjoint_mut([wte, wpe]).expect("distinct");
                be.embedding_backward(dwte, Some(dwpe), &a.dx, tokens, (b, t, c));
            }
            None => be.embedding_backward(&mut g[wte], None, &a.dx, tokens, (b, t, c)),
        }
        for (gi, m) in g.iter_mut().zip(masks.iter()) {
            if let Some(m) = m {
                be.mul_assign(gi, m);
            }
        }
    });
}
/// The rope layout of a softmax layer's qkv buffer of `n` rows, sequences of `t`; `None` when
/// the layer is not rotated.
fn rope_dims(at: &AttnParams, n: usize, t: usize) -> Option<RopeDims> {
    match (at.rope, at.mixer) {
        (Some(theta), Mixer::Softmax(d)) => Some(RopeDims {
            n,
            t,
            offset: 0,
            heads: d.heads,
            kv_heads: d.kv_heads,
            head_dim: d.head_dim,
            width: at.width,
            theta,
        }),
        _ => None,
    }
}

/// LayerNorm or RMSNorm forward, as `p` says (RMSNorm leaves `mean` alone).
#[allow(clippy::too_many_arguments)]
fn norm_forward<B: Backend>(
    be: &B,
    w: &[B::Buf],
    p: NormP,
    out: &mut B::Buf,
    mean: &mut B::Buf,
    rstd: &mut B::Buf,
    inp: &B::Buf,
    nc: (usize, usize),
) {
    match p.b {
        Some(b) => be.layernorm_forward(out, mean, rstd, inp, &w[p.w], &w[b], nc),
        None => be.rmsnorm_forward(out, rstd, inp, &w[p.w], nc),
    }
}

/// LayerNorm or RMSNorm backward: dinp += ; the norm's parameter gradients in `g` +=.
#[allow(clippy::too_many_arguments)]
fn norm_backward<B: Backend>(
    be: &B,
    w: &[B::Buf],
    g: &mut [B::Buf],
    p: NormP,
    dinp: &mut B::Buf,
    dout: &B::Buf,
    inp: &B::Buf,
    mean: &B::Buf,
    rstd: &B::Buf,
    nc: (usize, usize),
) {
    match p.b {
        Some(b) => {
            let [dw, db] = g.get_disjoint_mut([p.w, b]).expect("distinct");
            be.layernorm_backward(dinp, dw, db, dout, inp, &w[p.w], mean, rstd, nc);
        }
        None => be.rmsnorm_backward(dinp, &mut g[p.w], dout, inp, &w[p.w], rstd, nc),
    }
}

fn act_of(a: Activation) -> Act {
    match a {
        Activation::Relu => Act::Relu,
        Activation::GeluTanh => Act::GeluTanh,
        Activation::Gelu | Activation::Swiglu => Act::Gelu,
    }
}

/// The gradient buffers of a weight and, when there is one, its bias.
fn weight_and_bias_grads<T>(
    g: &mut [T],
    w: usize,
    bias: Option<usize>,
) -> (&mut T, Option<&mut T>) {
    match bias {
        Some(b) => {
            let [dw, db] = g.get_disjoint_mut([w, b]).expect("distinct");
            (dw, Some(db))
        }
        None => (&mut g[w], None),
    }
}

/// out (N, out) = [out +] lin(x (N, in)); `lr` receives the low-rank intermediate (N, r).
#[allow(clippy::too_many_arguments)]
fn lin_forward<B: Backend>(
    be: &B,
    w: &[B::Buf],
    lin: Lin,
    out: &mut B::Buf,
    accumulate: bool,
    lr: &mut B::Buf,
    x: &B::Buf,
    n: usize,
) {
    match lin {
        Lin::Dense {
            w: wi,
            bias,
            inp,
            out: o,
        } => {
            be.matmul_forward(out, accumulate, x, &w[wi], bias.map(|b| &w[b]), (n, inp, o));
        }
        Lin::LowRank {
            a,
            b,
            bias,
            inp,
            out: o,
            rank,
        } => {
            be.matmul_forward(lr, false, x, &w[a], None, (n, inp, rank));
            be.matmul_forward(
                out,
                accumulate,
                lr,
                &w[b],
                bias.map(|bb| &w[bb]),
                (n, rank, o),
            );
        }
    }
}

/// Backward of `lin_forward`: parameter gradients accumulate; dx = [dx +] dout · W.
#[allow(clippy::too_many_arguments)]
fn lin_backward<B: Backend>(
    be: &B,
    w: &[B::Buf],
    g: &mut [B::Buf],
    lin: Lin,
    dx: &mut B::Buf,
    acc: bool,
    dlr: &mut B::Buf,
    dout: &B::Buf,
    x: &B::Buf,
    lr: &B::Buf,
    n: usize,
) {
    match lin {
        Lin::Dense {
            w: wi,
            bias,
            inp,
            out,
        } => match bias {
            Some(bi) => {
                let [dw, db] = g.get_disjoint_mut([wi, bi]).expect("distinct");
                be.matmul_backward(Some(dx), acc, dw, Some(db), dout, x, &w[wi], (n, inp, out));
            }
            None => be.matmul_backward(
                Some(dx),
                acc,
                &mut g[wi],
                None,
                dout,
                x,
                &w[wi],
                (n, inp, out),
            ),
        },
        Lin::LowRank {
            a,
            b,
            bias,
            inp,
            out,
            rank,
        } => {
            match bias {
                Some(bi) => {
                    let [db_w, db] = g.get_disjoint_mut([b, bi]).expect("distinct");
                    be.matmul_backward(
                        Some(dlr),
                        false,
                        db_w,
                        Some(db),
                        dout,
                        lr,
                        &w[b],
                        (n, rank, out),
                    );
                }
                None => be.matmul_backward(
                    Some(dlr),
                    false,
                    &mut g[b],
                    None,
                    dout,
                    lr,
                    &w[b],
                    (n, rank, out),
                ),
            }
            be.matmul_backward(
                Some(dx),
                acc,
                &mut g[a],
                None,
                dlr,
                x,
                &w[a],
                (n, inp, rank),
            );
        }
    }
}
