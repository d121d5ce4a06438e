//! The whole network's forward and backward passes, side by side, built from the layer
//! kernels of `cpu/` behind the `Backend` boundary (shapes as in the module doc).

use super::*;
use crate::backend::{Act, Backend, Soft};
use crate::cpu::attention::AttnDims;
use crate::cpu::rmsnorm::HeadsDims;
use crate::cpu::rope::RopeDims;
use genas_space::{Activation, Architecture};

/// Activations and backward scratch for a (b, t) batch.
pub(super) fn alloc_acts<B: Backend>(
    be: &B,
    blocks_p: &[BlockParams],
    arch: &Architecture,
    b: usize,
    t: usize,
) -> Acts<B::Buf> {
    let (n, c, v) = (b * t, arch.d_model as usize, arch.vocab_size as usize);
    let z = |k: usize| be.zeros(k);
    let mut max_width = 0;
    let mut max_inner = 0;
    let mut max_h = 0;
    let mut max_r = 0;
    // Widest gated FFN: only swiglu's backward needs dh2 and dh3 (an ungated activation's
    // backward works in place in dh1).
    let mut max_gated_h = 0;
    let mut blocks = Vec::with_capacity(blocks_p.len());
    for bp in blocks_p {
        let width = bp.attn.as_ref().map_or(0, |a| a.width);
        max_inner = max_inner.max(bp.attn.as_ref().map_or(0, |a| a.inner));
        max_width = max_width.max(width);
        if let Some(m) = &bp.mlp {
            max_h = max_h.max(m.hidden);
            max_r = max_r.max(m.fc.rank().max(m.proj.rank()));
            if m.gate.is_some() {
                max_gated_h = max_gated_h.max(m.hidden);
            }
        }
        blocks.push(block_sizes(bp, (b, t, c), true).map(z));
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
        datty: z(n * max_inner),
        dh1: z(n * max_h),
        dh2: z(n * max_gated_h),
        dh3: z(n * max_gated_h),
        dlr: z(n * max_r),
    }
}

/// The length of each of a block's buffers for a (b, t) batch of width c; `keep`: with the
/// attention probabilities backward reads (training), without for a forward without gradients.
pub(super) fn block_sizes(
    bp: &BlockParams,
    (b, t, c): (usize, usize, usize),
    keep: bool,
) -> BlockActs<usize> {
    let n = b * t;
    let (width, cache) = match &bp.attn {
        None => (0, 0),
        Some(a) => match a.mixer {
            Mixer::Softmax(d) => (a.width, if keep { b * d.heads * t * t } else { 0 }),
            Mixer::Linear { heads, .. } => (a.width, b * heads * t),
        },
    };
    let has_attn = bp.attn.is_some();
    let if_attn = |k: usize| if has_attn { k } else { 0 };
    let if_ffn = |k: usize| if bp.mlp.is_some() { k } else { 0 };
    let (h, fc_r, proj_r, gated) = bp.mlp.as_ref().map_or((0, 0, 0, false), |m| {
        (m.hidden, m.fc.rank(), m.proj.rank(), m.gate.is_some())
    });
    let inner = bp.attn.as_ref().map_or(0, |a| a.inner);
    let (qk_pre, qk_rstd) = match bp.attn.as_ref().map(|a| (a.qk_norm, heads_dims(a, n))) {
        Some((Some(_), Some(d))) if keep => {
            let (k, span) = d.normed();
            (n * span, n * k)
        }
        _ => (0, 0),
    };
    BlockActs {
        ln1: if_attn(n * c),
        ln1_mean: if_attn(n),
        ln1_rstd: if_attn(n),
        qkv: n * width,
        qk_pre,
        qk_rstd,
        mix_cache: cache,
        atty: n * inner,
        x_mid: if_attn(n * c),
        ln2: if_ffn(n * c),
        ln2_mean: if_ffn(n),
        ln2_rstd: if_ffn(n),
        fc_lr: n * fc_r,
        fc_pre: n * h,
        gate_lr: if gated { n * fc_r } else { 0 },
        gate_pre: if gated { n * h } else { 0 },
        act: n * h,
        proj_lr: n * proj_r,
    }
}

/// Forward pass over `tokens` (B, T). With `targets` it returns the loss (and, when
/// `with_grad`, leaves dlogits ready for `backward`); `teacher` adds the distillation term:
/// (probabilities (B·T, V) at temperature, temperature, alpha).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_pass<B: Backend>(
    net: &Net<'_, B>,
    be: &B,
    a: &mut Acts<B::Buf>,
    tokens: &[u32],
    targets: Option<&[u32]>,
    teacher: Option<(&Soft<'_, B::Buf>, f64, f64)>,
    (b, t): (usize, usize),
    with_grad: bool,
) -> Option<Loss> {
    let Net {
        w,
        blocks,
        arch,
        ids: Ids { wte, lnf, head, .. },
        ..
    } = *net;
    let (n, c, v) = (b * t, arch.d_model as usize, arch.vocab_size as usize);
    be.install(|| {
        embed_and_blocks(net, be, a, tokens, (b, t), blocks.len(), true);
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

/// The embedding and blocks `0..=upto` over `tokens` (B, T), nothing above: the activations a
/// block's local training reads (`keep`: keep what its backward needs).
pub(super) fn forward_blocks<B: Backend>(
    net: &Net<'_, B>,
    be: &B,
    a: &mut Acts<B::Buf>,
    tokens: &[u32],
    (b, t): (usize, usize),
    upto: usize,
    keep: bool,
) {
    be.install(|| embed_and_blocks(net, be, a, tokens, (b, t), upto + 1, keep));
}

/// Block `l` alone over the residual stream already in `a.resid[l]`.
pub(super) fn block_from<B: Backend>(
    net: &Net<'_, B>,
    be: &B,
    a: &mut Acts<B::Buf>,
    l: usize,
    (b, t): (usize, usize),
    keep: bool,
) {
    let c = net.arch.d_model as usize;
    be.install(|| {
        let (before, after) = a.resid.split_at_mut(l + 1);
        block_forward(
            be,
            net.w,
            &net.blocks[l],
            &mut a.blocks[l],
            (&before[l], &mut after[0]),
            (b, t, c),
            keep,
        );
    });
}

/// The embedding and the first `count` blocks (in the backend's pool already).
fn embed_and_blocks<B: Backend>(
    net: &Net<'_, B>,
    be: &B,
    a: &mut Acts<B::Buf>,
    tokens: &[u32],
    (b, t): (usize, usize),
    count: usize,
    keep: bool,
) {
    let Net {
        w,
        blocks,
        arch,
        ids: Ids { wte, wpe, .. },
        ..
    } = *net;
    let c = arch.d_model as usize;
    be.embedding_forward(
        &mut a.resid[0],
        tokens,
        &w[wte],
        wpe.map(|p| &w[p]),
        (b, t, c),
    );
    for (l, bp) in blocks.iter().enumerate().take(count) {
        let (before, after) = a.resid.split_at_mut(l + 1);
        block_forward(
            be,
            w,
            bp,
            &mut a.blocks[l],
            (&before[l], &mut after[0]),
            (b, t, c),
            keep,
        );
    }
}

/// One block's forward, x_in (B·T, C) → x_out. `keep`: keep the attention probabilities for
/// backward (training); without, softmax attention writes none (`attention_infer`) and
/// `ba.mix_cache` is read only by linear attention. Both write the same values.
#[allow(clippy::too_many_arguments)]
pub(super) fn block_forward<B: Backend>(
    be: &B,
    w: &[B::Buf],
    bp: &BlockParams,
    ba: &mut BlockActs<B::Buf>,
    (x_in, x_out): (&B::Buf, &mut B::Buf),
    (b, t, c): (usize, usize, usize),
    keep: bool,
) {
    let n = b * t;
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
        if let (Some((wq, wk, _)), Some(d)) = (at.qk_norm, heads_dims(at, n)) {
            be.qk_norm_forward(
                &mut ba.qkv,
                &mut ba.qk_pre,
                &mut ba.qk_rstd,
                &w[wq],
                &w[wk],
                d,
            );
        }
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
                if keep {
                    be.attention_forward(&mut ba.atty, &mut ba.mix_cache, &ba.qkv, d);
                } else {
                    be.attention_infer(&mut ba.atty, &ba.qkv, d);
                }
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
            (n, at.inner, c),
        );
    }
    let h_in = if bp.attn.is_some() { &ba.x_mid } else { x_in };
    be.copy(x_out, h_in, n * c);
    let Some(m) = &bp.mlp else {
        return;
    };
    norm_forward(
        be,
        w,
        m.ln,
        &mut ba.ln2,
        &mut ba.ln2_mean,
        &mut ba.ln2_rstd,
        h_in,
        (n, c),
    );
    // Without a gate, fc's bias goes in with the activation (one pass over the
    // pre-activations instead of bias rows laid under the product and read back).
    let fc_bias = if m.gate.is_none() { m.fc.bias() } else { None };
    lin_forward(
        be,
        w,
        m.fc.without_bias(fc_bias.is_some()),
        &mut ba.fc_pre,
        false,
        &mut ba.fc_lr,
        &ba.ln2,
        n,
    );
    let nh = n * m.hidden;
    match m.gate {
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
                act_of(m.act),
                &mut ba.act,
                &ba.fc_pre,
                &w[bi],
                (n, m.hidden),
            ),
            None => be.act_forward(act_of(m.act), &mut ba.act, &ba.fc_pre, nh),
        },
    }
    lin_forward(be, w, m.proj, x_out, true, &mut ba.proj_lr, &ba.act, n);
}

/// Gradients of the loss of the last `forward(.., with_grad = true)` into the parameter
/// gradients (zeroed first). Masked weights get zero gradient.
pub(super) fn backward_pass<B: Backend>(
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
            block_backward(be, w, g, bp, a, l, (b, t, c), false, probe.as_deref_mut());
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

/// One block's backward: from the gradient at its output in `a.dx` (at its attention's
/// output, x_mid, when `attention_only`: the FFN half is then skipped) to the gradient at its
/// input, left in `a.dx`; its parameters' gradients are accumulated into `g`.
#[allow(clippy::too_many_arguments)]
pub(super) fn block_backward<B: Backend>(
    be: &B,
    w: &[B::Buf],
    g: &mut [B::Buf],
    bp: &BlockParams,
    a: &mut Acts<B::Buf>,
    l: usize,
    (b, t, c): (usize, usize, usize),
    attention_only: bool,
    mut probe: Option<&mut FfnProbe<'_, B>>,
) {
    let n = b * t;
    let x_in = &a.resid[l];
    let ba = &a.blocks[l];
    let h_in = if bp.attn.is_some() { &ba.x_mid } else { x_in };
    // Without an FFN, x_out = h_in: the gradient at the output is the gradient at h_in.
    if let Some(m) = bp.mlp.as_ref().filter(|_| !attention_only) {
        let nh = n * m.hidden;
        // FFN: x_out = h_in + proj(act(fc(LN2(h_in)))).
        lin_backward(
            be,
            w,
            g,
            m.proj,
            &mut a.dh1,
            false,
            &mut a.dlr,
            &a.dx,
            &ba.act,
            &ba.proj_lr,
            n,
        );
        if let Some(p) = probe.as_mut() {
            p(l, m.hidden, &ba.act, &a.dh1);
        }
        match m.gate {
            Some(gate) => {
                be.swiglu_backward(&mut a.dh3, &mut a.dh2, &ba.gate_pre, &ba.fc_pre, &a.dh1, nh);
                lin_backward(
                    be, w, g, m.fc, &mut a.dln, false, &mut a.dlr, &a.dh2, &ba.ln2, &ba.fc_lr, n,
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
                let fc_bias = m.fc.bias();
                match fc_bias {
                    Some(bi) => be.bias_act_backward(
                        act_of(m.act),
                        &mut a.dh1,
                        &mut g[bi],
                        &ba.fc_pre,
                        &ba.act,
                        &w[bi],
                        (n, m.hidden),
                    ),
                    None => be.act_backward(act_of(m.act), &mut a.dh1, &ba.fc_pre, &ba.act, nh),
                }
                let fc = m.fc.without_bias(fc_bias.is_some());
                lin_backward(
                    be, w, g, fc, &mut a.dln, false, &mut a.dlr, &a.dh1, &ba.ln2, &ba.fc_lr, n,
                );
            }
        }
        norm_backward(
            be,
            w,
            g,
            m.ln,
            &mut a.dx,
            &a.dln,
            h_in,
            &ba.ln2_mean,
            &ba.ln2_rstd,
            (n, c),
        );
    }
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
            (n, at.inner, c),
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
                // Then through the heads' norms to the projection's output.
                if let (Some((wq, wk, _)), Some(d)) = (at.qk_norm, heads_dims(at, n)) {
                    let [dwq, dwk] = g.get_disjoint_mut([wq, wk]).expect("distinct");
                    be.qk_norm_backward(
                        &mut a.dqkv,
                        dwq,
                        dwk,
                        &ba.qk_pre,
                        &ba.qk_rstd,
                        &w[wq],
                        &w[wk],
                        d,
                    );
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

/// The rope layout of a softmax layer's qkv buffer of `n` rows, sequences of `t`; `None` when
/// the layer is not rotated.
pub(super) fn rope_dims(at: &AttnParams, n: usize, t: usize) -> Option<RopeDims> {
    match (at.rope, at.mixer) {
        (Some((theta, scaling)), Mixer::Softmax(d)) => Some(RopeDims {
            n,
            t,
            offset: 0,
            heads: d.heads,
            kv_heads: d.kv_heads,
            head_dim: d.head_dim,
            width: at.width,
            theta,
            scaling,
        }),
        _ => None,
    }
}

/// Where a softmax layer's query and key heads lie in its qkv buffer of `n` rows, for their
/// norms; `None` for linear attention (whose layers have none).
pub(super) fn heads_dims(at: &AttnParams, n: usize) -> Option<HeadsDims> {
    match at.mixer {
        Mixer::Softmax(d) => Some(HeadsDims {
            n,
            width: at.width,
            heads: d.heads,
            kv_heads: d.kv_heads,
            head_dim: d.head_dim,
            eps: at.qk_norm.map_or(0.0, |(_, _, eps)| eps),
        }),
        Mixer::Linear { .. } => None,
    }
}

/// LayerNorm or RMSNorm forward, as `p` says (RMSNorm leaves `mean` alone).
#[allow(clippy::too_many_arguments)]
pub(super) fn norm_forward<B: Backend>(
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
        Some(b) => be.layernorm_forward(out, mean, rstd, inp, &w[p.w], &w[b], nc, p.eps),
        None => be.rmsnorm_forward(out, rstd, inp, &w[p.w], nc, p.eps),
    }
}

/// LayerNorm or RMSNorm backward: dinp += ; the norm's parameter gradients in `g` +=.
#[allow(clippy::too_many_arguments)]
pub(super) fn norm_backward<B: Backend>(
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

pub(super) fn act_of(a: Activation) -> Act {
    match a {
        Activation::Relu => Act::Relu,
        Activation::GeluTanh => Act::GeluTanh,
        Activation::Gelu | Activation::Swiglu => Act::Gelu,
    }
}

/// The gradient buffers of a weight and, when there is one, its bias.
pub(super) fn weight_and_bias_grads<T>(
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
pub(super) fn lin_forward<B: Backend>(
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
pub(super) fn lin_backward<B: Backend>(
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
