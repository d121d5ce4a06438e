//! The boundary between the model code and the kernels that run it.
//!
//! The model (`model/`) owns buffers of type `B::Buf` and calls only these methods, with the
//! shapes spelled out; it never touches buffer contents except through `upload` / `download`.
//! Only the CPU backend exists today; a device backend would implement the same trait over
//! device memory.
//! Token ids and targets travel as host slices: they are small and the backend may copy them.

use crate::cpu::attention::AttnDims;
use crate::cpu::ops::AdamW;
use crate::cpu::rmsnorm::HeadsDims;
use crate::cpu::rope::RopeDims;
use crate::real::Host;

/// FFN non-linearity with a single input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Gelu,
    /// GELU's tanh approximation (GPT-2's "gelu_new").
    GeluTanh,
    Relu,
}

/// A teacher's soft targets for one batch, as a backend's loss reads them.
pub enum Soft<'a, Buf> {
    /// (N, V) probabilities on the backend.
    Dense(Buf),
    /// The k most probable tokens of each of the N rows and their probabilities, (N, k) each,
    /// on the host; the rest of each row's mass is spread evenly over the other V − k tokens
    /// (`cpu::loss::SoftRef::TopK`). Never spread into an (N, V) buffer.
    TopK {
        k: usize,
        index: &'a [u32],
        prob: &'a [f32],
    },
}

pub trait Backend: Send + Sync {
    type Buf: Send + Sync;

    fn name(&self) -> String;
    /// Runs `f` on the backend's worker threads.
    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R;

    fn zeros(&self, n: usize) -> Self::Buf;
    fn upload(&self, host: &[f64]) -> Self::Buf;
    /// `upload` of f32 values (soft targets), without an f64 copy on the way (and, where the
    /// buffer is host f32, without any copy).
    fn upload_f32(&self, host: Vec<f32>) -> Self::Buf;
    fn download(&self, buf: &Self::Buf) -> Vec<f64>;
    /// buf[offset..offset + values.len()] = values, converted as `upload` converts them.
    fn write_at(&self, buf: &mut Self::Buf, offset: usize, values: &[f64]);
    /// Values `buf` holds.
    fn len(&self, buf: &Self::Buf) -> usize;
    /// Bytes of one value in this backend's buffers.
    fn value_bytes(&self) -> usize;
    /// Calls `f` with the first `n` values of `buf` as the host sees them, without widening
    /// them to f64 (a device backend would copy them over once).
    fn with_host<R>(&self, buf: &Self::Buf, n: usize, f: impl FnOnce(Host<'_>) -> R) -> R;
    fn set_zero(&self, buf: &mut Self::Buf);
    /// dst[..n] = src[..n]
    fn copy(&self, dst: &mut Self::Buf, src: &Self::Buf, n: usize);
    /// dst[..n] = src[offset..offset + n]
    fn copy_from(&self, dst: &mut Self::Buf, src: &Self::Buf, offset: usize, n: usize);

    /// out (B,T,C) = wte[tokens] (+ wpe[t] with learned positions)
    fn embedding_forward(
        &self,
        out: &mut Self::Buf,
        tokens: &[u32],
        wte: &Self::Buf,
        wpe: Option<&Self::Buf>,
        btc: (usize, usize, usize),
    );
    /// dwte (and dwpe) += scatter of dout (B,T,C)
    fn embedding_backward(
        &self,
        dwte: &mut Self::Buf,
        dwpe: Option<&mut Self::Buf>,
        dout: &Self::Buf,
        tokens: &[u32],
        btc: (usize, usize, usize),
    );

    #[allow(clippy::too_many_arguments)]
    fn layernorm_forward(
        &self,
        out: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        b: &Self::Buf,
        nc: (usize, usize),
        eps: f64,
    );
    /// dinp += ; dw, db +=
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        dinp: &mut Self::Buf,
        dw: &mut Self::Buf,
        db: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        nc: (usize, usize),
    );

    /// out = inp · rstd · w (RMSNorm over C); rstd (N) cached.
    fn rmsnorm_forward(
        &self,
        out: &mut Self::Buf,
        rstd: &mut Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        nc: (usize, usize),
        eps: f64,
    );
    /// dinp += ; dw +=
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_backward(
        &self,
        dinp: &mut Self::Buf,
        dw: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        rstd: &Self::Buf,
        nc: (usize, usize),
    );

    /// RMSNorm over each query and key head of a qkv buffer, in place (`qk_norm`); the heads
    /// before it and their rstd kept in `pre` and `rstd` unless those are empty.
    #[allow(clippy::too_many_arguments)]
    fn qk_norm_forward(
        &self,
        qkv: &mut Self::Buf,
        pre: &mut Self::Buf,
        rstd: &mut Self::Buf,
        wq: &Self::Buf,
        wk: &Self::Buf,
        d: HeadsDims,
    );
    /// The gradient at the normed heads of `dqkv` becomes the gradient at their inputs, in
    /// place; dwq, dwk +=.
    #[allow(clippy::too_many_arguments)]
    fn qk_norm_backward(
        &self,
        dqkv: &mut Self::Buf,
        dwq: &mut Self::Buf,
        dwk: &mut Self::Buf,
        pre: &Self::Buf,
        rstd: &Self::Buf,
        wq: &Self::Buf,
        wk: &Self::Buf,
        d: HeadsDims,
    );

    /// Rotary embeddings on the query and key parts of a qkv buffer, in place; `inverse`
    /// rotates back (the backward pass of a rotation, applied to its gradient).
    fn rope(&self, qkv: &mut Self::Buf, d: RopeDims, inverse: bool);

    /// out (N,OC) = [out +] inp (N,C) · w (OC,C)ᵀ + bias; `accumulate` adds to out (residuals).
    #[allow(clippy::too_many_arguments)]
    fn matmul_forward(
        &self,
        out: &mut Self::Buf,
        accumulate: bool,
        inp: &Self::Buf,
        w: &Self::Buf,
        bias: Option<&Self::Buf>,
        nc_oc: (usize, usize, usize),
    );
    /// dinp = [dinp +] dout · w ; dw += doutᵀ · inp ; dbias += Σ dout
    #[allow(clippy::too_many_arguments)]
    fn matmul_backward(
        &self,
        dinp: Option<&mut Self::Buf>,
        acc_inp: bool,
        dw: &mut Self::Buf,
        dbias: Option<&mut Self::Buf>,
        dout: &Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        nc_oc: (usize, usize, usize),
    );

    fn attention_forward(
        &self,
        out: &mut Self::Buf,
        probs: &mut Self::Buf,
        qkv: &Self::Buf,
        d: AttnDims,
    );
    /// `attention_forward` keeping no probabilities: a forward without gradients, whose
    /// working memory is a query tile's scores per worker, never (B, H, T, T).
    fn attention_infer(&self, out: &mut Self::Buf, qkv: &Self::Buf, d: AttnDims);
    fn attention_backward(
        &self,
        dqkv: &mut Self::Buf,
        dout: &Self::Buf,
        qkv: &Self::Buf,
        probs: &Self::Buf,
        d: AttnDims,
    );
    /// dims (B, T, H, hd)
    fn linear_attention_forward(
        &self,
        out: &mut Self::Buf,
        den: &mut Self::Buf,
        qkv: &Self::Buf,
        d: (usize, usize, usize, usize),
    );
    #[allow(clippy::too_many_arguments)]
    fn linear_attention_backward(
        &self,
        dqkv: &mut Self::Buf,
        dout: &Self::Buf,
        qkv: &Self::Buf,
        out: &Self::Buf,
        den: &Self::Buf,
        d: (usize, usize, usize, usize),
    );

    fn act_forward(&self, act: Act, out: &mut Self::Buf, inp: &Self::Buf, n: usize);
    /// out = act(pre + bias) over (rows, width), the bias added to every row: a linear
    /// layer's bias applied in the activation's pass. `pre` is left without the bias.
    fn bias_act_forward(
        &self,
        act: Act,
        out: &mut Self::Buf,
        pre: &Self::Buf,
        bias: &Self::Buf,
        rows_width: (usize, usize),
    );
    /// Backward of `bias_act_forward`: d = d · act′(pre + bias) in place (dout in, dinp out),
    /// and dbias += Σ_rows d in the same pass.
    #[allow(clippy::too_many_arguments)]
    fn bias_act_backward(
        &self,
        act: Act,
        d: &mut Self::Buf,
        dbias: &mut Self::Buf,
        pre: &Self::Buf,
        out: &Self::Buf,
        bias: &Self::Buf,
        rows_width: (usize, usize),
    );
    /// d = d · act′(inp) in place: dout on entry, dinp on return (the result overwrites
    /// lines the pass has just read instead of pulling a fresh buffer into cache). `out` is
    /// the forward output act(inp).
    fn act_backward(&self, act: Act, d: &mut Self::Buf, inp: &Self::Buf, out: &Self::Buf, n: usize);
    fn swiglu_forward(&self, out: &mut Self::Buf, gate: &Self::Buf, up: &Self::Buf, n: usize);
    fn swiglu_backward(
        &self,
        dgate: &mut Self::Buf,
        dup: &mut Self::Buf,
        gate: &Self::Buf,
        up: &Self::Buf,
        dout: &Self::Buf,
        n: usize,
    );

    /// Loss over logits (N,V) with optional teacher soft targets (dense or top-k) at
    /// `temperature` mixed by `alpha`; writes dlogits when given. Returns (loss, hard-label
    /// CE), means over N.
    #[allow(clippy::too_many_arguments)]
    fn loss(
        &self,
        dlogits: Option<&mut Self::Buf>,
        logits: &Self::Buf,
        targets: &[u32],
        teacher: Option<(&Soft<'_, Self::Buf>, f64, f64)>,
        nv: (usize, usize),
    ) -> (f64, f64);

    fn mul_assign(&self, x: &mut Self::Buf, mask: &Self::Buf);
    /// y += a · x
    fn axpy(&self, y: &mut Self::Buf, a: f64, x: &Self::Buf);
    /// Single-threaded backends for the workers of a data-parallel training step, one per
    /// thread; empty (the default) when this backend parallelises only inside its kernels.
    fn workers(&self) -> Vec<Self>
    where
        Self: Sized,
    {
        Vec::new()
    }
    /// Σ over elements of (Σ_s weights[s]·parts[s])²: the squared norm of a gradient held as
    /// a weighted sum of parts (data-parallel shards; one part of weight 1 when whole). The
    /// parts are combined first, element by element, exactly as `axpy` onto zeros would.
    fn sum_squares(&self, parts: &[&Self::Buf], weights: &[f64]) -> f64;
    /// One AdamW update of `param` with gradient Σ_s weights[s]·grads[s], combined as in
    /// `sum_squares`.
    #[allow(clippy::too_many_arguments)]
    fn adamw(
        &self,
        param: &mut Self::Buf,
        grads: &[&Self::Buf],
        weights: &[f64],
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        o: AdamW,
        decay: bool,
    );
}
