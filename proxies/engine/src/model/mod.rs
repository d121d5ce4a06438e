//! A generator network built at run time from an `Architecture`, with forward and backward
//! passes over any `Backend`.
//!
//! Shapes: B batch, T sequence, N = B·T rows, C d_model, V vocabulary, H heads, hd = C/H
//! (unless the layer names its `head_dim`), Q = H·hd,
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
//! | `h.{i}.attn.c_attn.weight`, `.bias` | (Q + 2·kvd, C) | rows: q (Q = H·hd), k (kvd), v (kvd); bias with `attention_bias` or `qkv_bias` |
//! | `h.{i}.attn.q_norm.weight`, `k_norm.weight` | (hd) | `qk_norm` only |
//! | `h.{i}.attn.c_proj.weight`, `.bias` | (C, Q) | bias with `attention_bias` |
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
//! The Hugging Face families' names for these, shared by import and export, are
//! `genas_interop::names`.

mod infer;
mod init;
mod pass;
mod probes;
mod shards;

pub use crate::memory::InferPlan;
pub use infer::{LayerProbe, LayerRows, LogitSink};
pub use init::sparsity_mask;
use pass::*;
pub use probes::FfnProbe;
use shards::Shard;

use crate::backend::{Backend, Soft};
use crate::cpu::attention::AttnDims;
use genas_space::{Activation, Architecture};

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
    /// The architecture's `norm_eps`.
    pub(crate) eps: f64,
}

#[derive(Clone, Debug)]
pub(crate) struct AttnParams {
    pub(crate) ln: NormP,
    pub(crate) qkv: usize,
    pub(crate) proj: usize,
    /// The q/k/v biases (`attention_bias` or `qkv_bias`) and the output's (`attention_bias`).
    pub(crate) qkv_bias: Option<usize>,
    pub(crate) proj_bias: Option<usize>,
    /// The query and key heads' RMSNorm weights (`qk_norm`), and their epsilon.
    pub(crate) qk_norm: Option<(usize, usize, f64)>,
    pub(crate) mixer: Mixer,
    /// Width of the queries and of the attention's output: H·hd (C unless `head_dim`).
    pub(crate) inner: usize,
    /// Width of a qkv row: H·hd + 2·kvd.
    pub(crate) width: usize,
    /// The rotary base and scaling when rope rotates this layer's queries and keys.
    pub(crate) rope: Option<(f64, Option<genas_space::RopeScaling>)>,
}

/// A block's FFN half and the norm before it.
#[derive(Clone, Debug)]
pub(crate) struct MlpParams {
    pub(crate) ln: NormP,
    pub(crate) fc: Lin,
    pub(crate) gate: Option<Lin>,
    pub(crate) proj: Lin,
    pub(crate) act: Activation,
    pub(crate) hidden: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct BlockParams {
    /// `None` for attention `none`.
    pub(crate) attn: Option<AttnParams>,
    /// `None` for a layer without an FFN.
    pub(crate) mlp: Option<MlpParams>,
}

/// Per-layer activations kept for backward, sized for (B, T).
/// One block's activations (or, as `BlockActs<usize>`, their lengths).
#[derive(Clone, Copy, Default)]
struct BlockActs<Buf> {
    ln1: Buf,
    ln1_mean: Buf,
    ln1_rstd: Buf,
    qkv: Buf,
    /// With `qk_norm`: the query and key heads before their norm (B·T, (H+G)·hd) and each
    /// head's rstd (B·T, H+G).
    qk_pre: Buf,
    qk_rstd: Buf,
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

impl<T> BlockActs<T> {
    fn refs(&self) -> BlockActs<&T> {
        BlockActs {
            ln1: &self.ln1,
            ln1_mean: &self.ln1_mean,
            ln1_rstd: &self.ln1_rstd,
            qkv: &self.qkv,
            qk_pre: &self.qk_pre,
            qk_rstd: &self.qk_rstd,
            mix_cache: &self.mix_cache,
            atty: &self.atty,
            x_mid: &self.x_mid,
            ln2: &self.ln2,
            ln2_mean: &self.ln2_mean,
            ln2_rstd: &self.ln2_rstd,
            fc_lr: &self.fc_lr,
            fc_pre: &self.fc_pre,
            gate_lr: &self.gate_lr,
            gate_pre: &self.gate_pre,
            act: &self.act,
            proj_lr: &self.proj_lr,
        }
    }

    fn map<U>(self, mut f: impl FnMut(T) -> U) -> BlockActs<U> {
        BlockActs {
            ln1: f(self.ln1),
            ln1_mean: f(self.ln1_mean),
            ln1_rstd: f(self.ln1_rstd),
            qkv: f(self.qkv),
            qk_pre: f(self.qk_pre),
            qk_rstd: f(self.qk_rstd),
            mix_cache: f(self.mix_cache),
            atty: f(self.atty),
            x_mid: f(self.x_mid),
            ln2: f(self.ln2),
            ln2_mean: f(self.ln2_mean),
            ln2_rstd: f(self.ln2_rstd),
            fc_lr: f(self.fc_lr),
            fc_pre: f(self.fc_pre),
            gate_lr: f(self.gate_lr),
            gate_pre: f(self.gate_pre),
            act: f(self.act),
            proj_lr: f(self.proj_lr),
        }
    }
}

impl BlockActs<usize> {
    /// Each length the larger of the two.
    fn max(self, o: &BlockActs<usize>) -> BlockActs<usize> {
        BlockActs {
            ln1: self.ln1.max(o.ln1),
            ln1_mean: self.ln1_mean.max(o.ln1_mean),
            ln1_rstd: self.ln1_rstd.max(o.ln1_rstd),
            qkv: self.qkv.max(o.qkv),
            qk_pre: self.qk_pre.max(o.qk_pre),
            qk_rstd: self.qk_rstd.max(o.qk_rstd),
            mix_cache: self.mix_cache.max(o.mix_cache),
            atty: self.atty.max(o.atty),
            x_mid: self.x_mid.max(o.x_mid),
            ln2: self.ln2.max(o.ln2),
            ln2_mean: self.ln2_mean.max(o.ln2_mean),
            ln2_rstd: self.ln2_rstd.max(o.ln2_rstd),
            fc_lr: self.fc_lr.max(o.fc_lr),
            fc_pre: self.fc_pre.max(o.fc_pre),
            gate_lr: self.gate_lr.max(o.gate_lr),
            gate_pre: self.gate_pre.max(o.gate_pre),
            act: self.act.max(o.act),
            proj_lr: self.proj_lr.max(o.proj_lr),
        }
    }

    fn total(&self) -> usize {
        let mut sum = 0;
        self.map(|k| sum += k);
        sum
    }
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

impl<B: Backend> Model<B> {
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

    /// Writes `values` into parameter `i` from element `offset` on, in place (a checkpoint's
    /// tensor into its part of a fused parameter, without a copy of the whole parameter).
    pub fn write_weights(&mut self, i: usize, offset: usize, values: &[f64]) {
        assert!(
            offset + values.len() <= self.params[i].numel(),
            "{}",
            self.params[i].name
        );
        self.be.write_at(&mut self.weights[i], offset, values);
    }

    pub fn grad(&mut self, i: usize) -> Vec<f64> {
        self.ensure_grads();
        self.grads_whole();
        self.be.download(&self.grads[i])
    }

    /// Combines the shards' gradients of the last data-parallel step into `grads`, as
    /// Σ (n_s / N)·g_s in shard order (no-op when they already are).
    /// Allocates the gradients (zero) on first need: a model that only runs forward never
    /// holds them.
    fn ensure_grads(&mut self) {
        if self.grads.len() != self.params.len() {
            let be = &self.be;
            self.grads = self.params.iter().map(|p| be.zeros(p.numel())).collect();
        }
    }

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
        if self.pending.is_none() {
            self.ensure_grads();
        }
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
        // The old buffers go before the new ones are made: never both at once.
        self.acts = None;
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
        teacher: Option<(&Soft<'_, B::Buf>, f64, f64)>,
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

    /// Gradients of the loss of the last `forward(.., with_grad = true)` into the parameter
    /// gradients (zeroed first). Masked weights get zero gradient.
    pub fn backward(&mut self, tokens: &[u32]) {
        let mut acts = self.acts.take().expect("forward first");
        self.pending = None; // overwritten whole below
        self.ensure_grads();
        let mut grads = std::mem::take(&mut self.grads);
        backward_pass(&self.net(), &self.be, &mut acts, &mut grads, tokens, None);
        self.grads = grads;
        self.acts = Some(acts);
    }

    /// The embedding and blocks `0..=upto` over `tokens` (B, T), nothing above (no logits,
    /// no loss): what `block_input`, `block_output` and, `with_grad`, `backward_block` read.
    pub fn forward_blocks(
        &mut self,
        tokens: &[u32],
        (b, t): (usize, usize),
        upto: usize,
        with_grad: bool,
    ) {
        assert!(t <= self.arch.context as usize && tokens.len() == b * t);
        assert!(upto < self.blocks.len());
        self.ensure_acts(b, t);
        let mut acts = self.acts.take().expect("allocated");
        pass::forward_blocks(
            &self.net(),
            &self.be,
            &mut acts,
            tokens,
            (b, t),
            upto,
            with_grad,
        );
        self.acts = Some(acts);
    }

    /// Block `l` alone over `x`, the residual stream at its input (B·T, C): what
    /// `block_output` and, `with_grad`, `backward_block` then read, as after a
    /// `forward_blocks` whose blocks below `l` gave `x`. Blockwise local distillation runs
    /// it on the teacher's activations cached once, instead of the blocks below each step.
    pub fn forward_block_from(
        &mut self,
        l: usize,
        x: &[f64],
        (b, t): (usize, usize),
        with_grad: bool,
    ) {
        let c = self.arch.d_model as usize;
        assert!(t <= self.arch.context as usize && x.len() == b * t * c);
        assert!(l < self.blocks.len());
        self.ensure_acts(b, t);
        let mut acts = self.acts.take().expect("allocated");
        self.be.write_at(&mut acts.resid[l], 0, x);
        pass::block_from(&self.net(), &self.be, &mut acts, l, (b, t), with_grad);
        self.acts = Some(acts);
    }

    /// The activation at block `l`'s input after the last `forward` (B·T, C): the residual
    /// stream the block reads.
    pub fn block_input(&self, l: usize) -> Vec<f64> {
        let a = self.acts.as_ref().expect("forward first");
        self.be.download(&a.resid[l])
    }

    /// Block `l`'s output after the last `forward` (B·T, C); with `attention_only`, the
    /// output of its attention half (the residual stream between attention and FFN; the
    /// block's input when it has no attention).
    pub fn block_output(&self, l: usize, attention_only: bool) -> Vec<f64> {
        let a = self.acts.as_ref().expect("forward first");
        if !attention_only {
            self.be.download(&a.resid[l + 1])
        } else if self.blocks[l].attn.is_some() {
            self.be.download(&a.blocks[l].x_mid)
        } else {
            self.be.download(&a.resid[l])
        }
    }

    /// Gradients of a function of block `l`'s output (of its attention half with
    /// `attention_only`) whose gradient there is `dy` (B·T, C), after a `forward(..,
    /// with_grad = true)`: into the parameter gradients of that block (its FFN's too unless
    /// `attention_only`), every other gradient zero. What blockwise local distillation trains
    /// a sub-block with, against the teacher's output of the same sub-block.
    pub fn backward_block(&mut self, l: usize, dy: &[f64], attention_only: bool) {
        let mut a = self.acts.take().expect("forward first");
        let (b, t, c) = (a.b, a.t, self.arch.d_model as usize);
        assert_eq!(dy.len(), b * t * c);
        self.pending = None;
        self.ensure_grads();
        let mut g = std::mem::take(&mut self.grads);
        let net = self.net();
        let be = &self.be;
        be.install(|| {
            for gi in g.iter_mut() {
                be.set_zero(gi);
            }
            be.set_zero(&mut a.dx);
            be.write_at(&mut a.dx, 0, dy);
            pass::block_backward(
                be,
                net.w,
                &mut g,
                &net.blocks[l],
                &mut a,
                l,
                (b, t, c),
                attention_only,
                None,
            );
            for (gi, m) in g.iter_mut().zip(net.masks.iter()) {
                if let Some(m) = m {
                    be.mul_assign(gi, m);
                }
            }
        });
        self.grads = g;
        self.acts = Some(a);
    }

    /// Replaces the loss gradient left by the last `forward(.., with_grad = true)` with
    /// `dlogits` (B·T, V), so `backward` differentiates another function of the logits
    /// (synflow and jacob_cov use R = Σ logits).
    pub fn set_logit_grad(&mut self, dlogits: &[f64]) {
        let a = self.acts.as_mut().expect("forward first");
        let n = a.b * a.t * self.arch.vocab_size as usize;
        assert_eq!(dlogits.len(), n);
        self.be.set_zero(&mut a.dlogits);
        self.be.write_at(&mut a.dlogits, 0, dlogits);
    }

    /// `set_logit_grad` with every entry `value`, written in place a block at a time: no
    /// (B·T, V) vector on the host.
    pub fn fill_logit_grad(&mut self, value: f64) {
        const BLOCK: usize = 1 << 16;
        let a = self.acts.as_mut().expect("forward first");
        let n = a.b * a.t * self.arch.vocab_size as usize;
        self.be.set_zero(&mut a.dlogits);
        let block = vec![value; BLOCK.min(n)];
        for start in (0..n).step_by(BLOCK) {
            let k = BLOCK.min(n - start);
            self.be.write_at(&mut a.dlogits, start, &block[..k]);
        }
    }

    /// Lets go of what training left allocated (the activations and backward buffers, the
    /// gradients, the data-parallel shards): a model that will only run without gradients
    /// (a trained teacher) holds its weights alone.
    pub fn release_buffers(&mut self) {
        self.acts = None;
        self.grads = Vec::new();
        self.shards = Vec::new();
        self.pending = None;
    }

    /// Values of the activation and backward buffers the last `forward` left allocated
    /// (what `memory::train_act_values` estimates from the architecture alone); 0 before one.
    pub fn act_values(&self) -> usize {
        let Some(a) = &self.acts else { return 0 };
        let be = &self.be;
        let len = |x: &B::Buf| be.len(x);
        let blocks: usize = a.blocks.iter().map(|k| k.refs().map(len).total()).sum();
        let resid: usize = a.resid.iter().map(len).sum();
        blocks
            + resid
            + [
                &a.lnf,
                &a.lnf_mean,
                &a.lnf_rstd,
                &a.logits,
                &a.dlogits,
                &a.dx,
                &a.dln,
                &a.dqkv,
                &a.datty,
                &a.dh1,
                &a.dh2,
                &a.dh3,
                &a.dlr,
            ]
            .into_iter()
            .map(len)
            .sum::<usize>()
    }

    /// Values of the weights, their gradients (once a backward pass made them) and the sparsity
    /// masks (what `memory::model_values` estimates).
    pub fn held_values(&self) -> usize {
        let len = |x: &B::Buf| self.be.len(x);
        self.weights.iter().map(len).sum::<usize>()
            + self.grads.iter().map(len).sum::<usize>()
            + self.masks.iter().flatten().map(len).sum::<usize>()
    }

    /// Number of blocks.
    pub fn depth(&self) -> usize {
        self.blocks.len()
    }
}
