//! The forward pass without gradients, in bounded memory: what a teacher runs to give soft
//! targets, its validation loss and its importance, and what an imported checkpoint is checked
//! with. It keeps one block's activations (reused layer after layer, never one set per layer),
//! computes softmax attention a query tile at a time with no (B, H, T, T) probabilities
//! (`attention_infer`), runs the batch in chunks of whole sequences, and hands the logits to
//! the caller a block of rows at a time, as the backend holds them (no f64 copy).
//!
//! The chunks and logit blocks are as large as `memory::INFER_BYTES` and `LOGIT_BYTES` allow: below
//! them (every batch of the shipped experiments) the whole batch is one chunk and one block,
//! the products have the shapes `forward` gives them, and every value equals `forward`'s to the
//! bit. Above them the same values are computed on fewer rows at a time, equal to float
//! rounding.

use super::pass::{block_forward, block_sizes, norm_forward};
use super::*;
use crate::memory::InferPlan;
use crate::real::Host;

/// What a layer probe is shown after block `layer` ran on rows `first..first + rows` of the
/// batch (whole sequences), each (rows, width) row-major, widened to f64.
pub struct LayerRows {
    pub layer: usize,
    pub first: usize,
    pub rows: usize,
    /// The block's input (the residual stream before it), (rows, C).
    pub input: Vec<f64>,
    /// The block's output, (rows, C).
    pub output: Vec<f64>,
    /// The attention output before its projection, heads side by side, (rows, H·hd) (C unless
    /// the layer names its `head_dim`); empty for a block without attention.
    pub attention: Vec<f64>,
    /// The FFN's pre-activation (for swiglu the gate's input), bias included, (rows, hidden).
    pub ffn_pre: Vec<f64>,
}

/// Called by `Model::infer` after every block of every chunk.
pub type LayerProbe<'a> = dyn FnMut(&LayerRows) + 'a;
/// Called by `Model::infer` with (first row, rows, logits (rows, V)), rows in order.
pub type LogitSink<'a> = dyn FnMut(usize, usize, Host<'_>) + 'a;

impl<B: Backend> Model<B> {
    /// Values per row of the buffers `infer` allocates at sequence length `t` (what
    /// `memory::infer_row_values` estimates from the architecture alone).
    pub fn infer_buffer_values(&self, t: usize) -> usize {
        let c = self.arch.d_model as usize;
        let widest = self
            .blocks
            .iter()
            .map(|bp| block_sizes(bp, (1, t, c), false))
            .fold(BlockActs::default(), |a, b| a.max(&b))
            .total();
        widest.div_ceil(t) + 3 * c + 2
    }

    /// How a (b, t) batch is cut, with `elem`-byte values (`memory::infer_plan`).
    pub fn infer_plan(&self, bt: (usize, usize), elem: usize) -> InferPlan {
        crate::memory::infer_plan(&self.arch, bt, elem)
    }

    /// Runs `tokens` (B, T) forward without gradients: `probe` sees every block's rows,
    /// `logits` every row's logits, a block of rows at a time in order (chunks sized with the
    /// probe's rows counted, `memory::probed_plan`). Keeps nothing of the
    /// pass (`logits()` and the probes of `forward` still read the last `forward`).
    pub fn infer(
        &mut self,
        tokens: &[u32],
        (b, t): (usize, usize),
        probe: Option<&mut LayerProbe<'_>>,
        logits: Option<&mut LogitSink<'_>>,
    ) {
        let elem = self.be.value_bytes();
        let plan = if probe.is_some() {
            crate::memory::probed_plan(&self.arch, (b, t), elem)
        } else {
            self.infer_plan((b, t), elem)
        };
        self.infer_as(tokens, (b, t), plan, probe, logits);
    }

    /// `infer` cut as `plan` says (`plan.bytes` is not read).
    pub fn infer_as(
        &mut self,
        tokens: &[u32],
        (b, t): (usize, usize),
        plan: InferPlan,
        mut probe: Option<&mut LayerProbe<'_>>,
        mut logits: Option<&mut LogitSink<'_>>,
    ) {
        assert!(t <= self.arch.context as usize && tokens.len() == b * t);
        assert!(plan.sequences > 0 && plan.logit_rows > 0);
        let (c, v) = (self.arch.d_model as usize, self.arch.vocab_size as usize);
        let be = &self.be;
        let rows_max = plan.sequences * t;
        let sizes = self
            .blocks
            .iter()
            .map(|bp| block_sizes(bp, (plan.sequences, t, c), false))
            .fold(BlockActs::default(), |a, b| a.max(&b));
        let z = |k: usize| be.zeros(k);
        let mut ba = sizes.map(z);
        let mut x = z(rows_max * c);
        let mut y = z(rows_max * c);
        let (mut lnf, mut lnf_mean, mut lnf_rstd) = (z(rows_max * c), z(rows_max), z(rows_max));
        // Rows of the final norm copied out only when a chunk's logits take several blocks.
        let mut lnf_rows = z(if plan.logit_rows < rows_max {
            plan.logit_rows * c
        } else {
            0
        });
        let mut out = z(plan.logit_rows * v);
        let net = self.net();
        for s0 in (0..b).step_by(plan.sequences) {
            let nb = plan.sequences.min(b - s0);
            let (first, n) = (s0 * t, nb * t);
            be.install(|| {
                be.embedding_forward(
                    &mut x,
                    &tokens[first..first + n],
                    &net.w[net.ids.wte],
                    net.ids.wpe.map(|p| &net.w[p]),
                    (nb, t, c),
                )
            });
            for (l, bp) in net.blocks.iter().enumerate() {
                be.install(|| {
                    block_forward(be, net.w, bp, &mut ba, (&x, &mut y), (nb, t, c), false)
                });
                if let Some(p) = probe.as_deref_mut() {
                    p(&self.layer_rows(l, first, n, (&x, &y), &ba));
                }
                std::mem::swap(&mut x, &mut y);
            }
            let Some(sink) = logits.as_deref_mut() else {
                continue;
            };
            be.install(|| {
                norm_forward(
                    be,
                    net.w,
                    net.ids.lnf,
                    &mut lnf,
                    &mut lnf_mean,
                    &mut lnf_rstd,
                    &x,
                    (n, c),
                )
            });
            let head = &net.w[net.ids.head.unwrap_or(net.ids.wte)];
            for r0 in (0..n).step_by(plan.logit_rows) {
                let rows = plan.logit_rows.min(n - r0);
                be.install(|| {
                    let inp = if rows == n {
                        &lnf
                    } else {
                        be.copy_from(&mut lnf_rows, &lnf, r0 * c, rows * c);
                        &lnf_rows
                    };
                    be.matmul_forward(&mut out, false, inp, head, None, (rows, c, v))
                });
                be.with_host(&out, rows * v, |h| sink(first + r0, rows, h));
            }
        }
    }

    /// What a layer probe sees of block `l` on rows first..first + n.
    fn layer_rows(
        &self,
        l: usize,
        first: usize,
        n: usize,
        (x, y): (&B::Buf, &B::Buf),
        ba: &BlockActs<B::Buf>,
    ) -> LayerRows {
        let c = self.arch.d_model as usize;
        let bp = &self.blocks[l];
        let host = |buf: &B::Buf, k: usize| self.be.with_host(buf, k, |h| h.to_f64());
        LayerRows {
            layer: l,
            first,
            rows: n,
            input: host(x, n * c),
            output: host(y, n * c),
            attention: match &bp.attn {
                Some(at) => host(&ba.atty, n * at.inner),
                None => Vec::new(),
            },
            ffn_pre: self.ffn_pre_of(l, ba, n),
        }
    }
}
