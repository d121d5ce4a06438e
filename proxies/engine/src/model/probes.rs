//! What the zero-cost proxies read from a model: gradients with respect to the input,
//! residual streams, attention outputs and FFN pre-activations, and a backward pass that
//! hands each FFN's activation and gradient to a probe.

use super::*;
use crate::backend::Backend;

/// Called by `Model::backward_probed` with (layer, hidden width, activation, its gradient).
pub type FfnProbe<'a, B> =
    dyn FnMut(usize, usize, &<B as Backend>::Buf, &<B as Backend>::Buf) + Send + 'a;

impl<B: Backend> Model<B> {
    /// Like `backward`, calling `probe(layer, hidden, act, dact)` as each block's FFN
    /// activation output `act` (N, hidden) and its gradient `dact` get known (both buffers may
    /// be wider than N·hidden). The zero-cost proxies read activations through this.
    pub fn backward_probed(&mut self, tokens: &[u32], probe: &mut FfnProbe<'_, B>) {
        let mut acts = self.acts.take().expect("forward first");
        self.pending = None; // overwritten whole below
        self.ensure_grads();
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
        d.truncate(a.b * a.t * self.arch.attn_width(&self.arch.layers[l]) as usize);
        d
    }

    /// Block `l`'s FFN pre-activation after the last forward, (B·T, hidden): the input of the
    /// nonlinearity (for swiglu, the gate's input, whose sign sets the gate open or shut);
    /// empty for a layer without an FFN.
    pub fn ffn_preactivation(&self, l: usize) -> Vec<f64> {
        let a = self.acts.as_ref().expect("forward first");
        self.ffn_pre_of(l, &a.blocks[l], a.b * a.t)
    }

    /// Block `l`'s FFN pre-activation held in `ba`, its first `n` rows widened to f64, with
    /// fc's bias added where the activation's pass adds it (no gate): what `forward` and
    /// `infer` both hand out.
    pub(super) fn ffn_pre_of(&self, l: usize, ba: &BlockActs<B::Buf>, n: usize) -> Vec<f64> {
        let Some(m) = &self.blocks[l].mlp else {
            return Vec::new();
        };
        let h = m.hidden;
        let buf = if m.gate.is_some() {
            &ba.gate_pre
        } else {
            &ba.fc_pre
        };
        let mut d = self.be.with_host(buf, n * h, |x| x.to_f64());
        // Without a gate, fc's bias is added in the activation's pass, not stored in fc_pre.
        if let Some(bi) = m.fc.bias().filter(|_| m.gate.is_none()) {
            let bias = self.be.download(&self.weights[bi]);
            for row in d.chunks_exact_mut(h) {
                for (x, b) in row.iter_mut().zip(&bias) {
                    *x += b;
                }
            }
        }
        d
    }
}
