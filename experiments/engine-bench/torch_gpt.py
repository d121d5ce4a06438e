#!/usr/bin/env python3
"""PyTorch CPU reference for genas's training-engine benchmark (`genas bench train`).

Trains a small GPT (decoder-only transformer) on random token batches and reports
training steps per second. The model is fixed so that the Rust engine can run the
exact same computation:

  token embedding (V, C) + learned positional embedding (T, C)
  L pre-LayerNorm blocks (eps 1e-5):
      x = x + attn(LN1(x))      q, k, v, o: Linear(C, C, bias=False)
                                causal softmax attention, H heads, scale 1/sqrt(C/H)
      x = x + mlp(LN2(x))       Linear(C, 4C) -> exact GELU -> Linear(4C, C), with biases
  final LayerNorm, LM head Linear(C, V, bias=False) (untied), cross-entropy,
  torch.optim.Adam(lr=1e-3).

Defaults (V=65, C=128, L=4, H=4, T=64) give 816,128 parameters.

With --block llama (`genas bench train --llama`), the Llama block instead: no positional
embedding, rotary embeddings on q and k ("rotate half", theta 10000), RMSNorm (eps 1e-5) in
place of every LayerNorm, and a SwiGLU MLP down(silu(gate(x)) * up(x)) with hidden 4C and no
biases (1,066,368 parameters at the defaults).

Timing covers only the timed steps (forward, backward, optimizer.step, zero_grad),
after the warm-up steps, measured with time.perf_counter.

    python3 experiments/engine-bench/torch_gpt.py                 # readable line
    python3 experiments/engine-bench/torch_gpt.py --json          # one JSON object on stdout
"""

import argparse
import json
import math
import sys
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_PARAMS = 816_128


def rotate(x, theta=10000.0):
    """Rotary embedding of x (B, H, T, hd), GPT-NeoX / Llama layout."""
    t, hd = x.shape[-2], x.shape[-1]
    inv = theta ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    ang = torch.arange(t, dtype=torch.float32)[:, None] * inv
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, d_model, heads, rope=False):
        super().__init__()
        assert d_model % heads == 0, "d_model must be divisible by heads"
        self.heads = heads
        self.rope = rope
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.o = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        h = self.heads
        q = self.q(x).view(b, t, h, c // h).transpose(1, 2)
        k = self.k(x).view(b, t, h, c // h).transpose(1, 2)
        v = self.v(x).view(b, t, h, c // h).transpose(1, 2)
        if self.rope:
            q, k = rotate(q), rotate(k)
        # default scale is 1/sqrt(head_dim) = 1/sqrt(C/H)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.o(y)


class Mlp(nn.Module):
    def __init__(self, d_model):
        super().__init__()
        self.fc1 = nn.Linear(d_model, 4 * d_model, bias=True)
        self.fc2 = nn.Linear(4 * d_model, d_model, bias=True)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="none"))


class SwiGlu(nn.Module):
    def __init__(self, d_model):
        super().__init__()
        self.gate = nn.Linear(d_model, 4 * d_model, bias=False)
        self.up = nn.Linear(d_model, 4 * d_model, bias=False)
        self.down = nn.Linear(4 * d_model, d_model, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


def norm(d_model, llama):
    return nn.RMSNorm(d_model, eps=1e-5) if llama else nn.LayerNorm(d_model, eps=1e-5)


class Block(nn.Module):
    def __init__(self, d_model, heads, llama=False):
        super().__init__()
        self.ln1 = norm(d_model, llama)
        self.attn = Attention(d_model, heads, rope=llama)
        self.ln2 = norm(d_model, llama)
        self.mlp = SwiGlu(d_model) if llama else Mlp(d_model)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return x


class Gpt(nn.Module):
    def __init__(self, vocab, d_model, layers, heads, seq, llama=False):
        super().__init__()
        self.seq = seq
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = None if llama else nn.Embedding(seq, d_model)
        self.blocks = nn.ModuleList([Block(d_model, heads, llama) for _ in range(layers)])
        self.ln_f = norm(d_model, llama)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, idx, targets):
        b, t = idx.shape
        pos = torch.arange(t, device=idx.device)
        x = self.tok(idx) if self.pos is None else self.tok(idx) + self.pos(pos)
        for blk in self.blocks:
            x = blk(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(b * t, -1), targets.reshape(b * t))


def param_count(v, c, l, t, llama=False):
    """Closed form, matches Gpt's parameter count."""
    if llama:
        return v * c + l * (2 * c + 4 * c * c + 3 * 4 * c * c) + c + c * v
    per_block = 2 * (2 * c) + 4 * c * c + (c * 4 * c + 4 * c) + (4 * c * c + c)
    return v * c + t * c + l * per_block + 2 * c + c * v


def train_flops_per_step(v, c, l, h, t, b):
    """Approximate matmul FLOPs of one training step: 3 x forward (backward ~ 2 x forward),
    counting 2 FLOPs per multiply-add and the full T x T attention scores (no causal halving).
    Informational only; genas reports its own achieved_gflops."""
    tokens = b * t
    dense = l * (4 * c * c + 8 * c * c) + c * v  # MACs per token in linear layers
    attn = l * 2 * t * c  # QK^T and PV MACs per token
    return 3 * 2 * tokens * (dense + attn)


def set_threads(threads):
    try:
        torch.set_num_threads(threads)
    except Exception as e:  # pragma: no cover
        print(f"warning: set_num_threads({threads}) failed: {e}", file=sys.stderr)
    try:
        torch.set_num_interop_threads(1)
    except Exception as e:  # raises if parallel work already started
        print(f"warning: set_num_interop_threads(1) failed: {e}", file=sys.stderr)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--vocab", type=int, default=65)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", type=int, default=8, help="pre-generated batches to cycle")
    p.add_argument("--block", choices=("gpt2", "llama"), default="gpt2")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)

    set_threads(a.threads)
    warnings.filterwarnings("ignore", message=".*NumPy.*")
    torch.manual_seed(a.seed)

    llama = a.block == "llama"
    model = Gpt(a.vocab, a.d_model, a.layers, a.heads, a.seq, llama)
    n_params = sum(q.numel() for q in model.parameters())
    assert n_params == param_count(a.vocab, a.d_model, a.layers, a.seq, llama), n_params
    defaults = (a.vocab, a.d_model, a.layers, a.heads, a.seq, llama) == (65, 128, 4, 4, 64, False)
    if defaults:
        assert n_params == DEFAULT_PARAMS, f"expected {DEFAULT_PARAMS} params, got {n_params}"
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    g = torch.Generator().manual_seed(a.seed)
    data = [
        torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=g)
        for _ in range(max(1, a.batches))
    ]
    batches = [(d[:, :-1].contiguous(), d[:, 1:].contiguous()) for d in data]

    def step(i):
        x, y = batches[i % len(batches)]
        loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for i in range(a.warmup):
        step(i)
    t0 = time.perf_counter()
    loss = None
    for i in range(a.warmup, a.warmup + a.steps):
        loss = step(i)
    seconds = time.perf_counter() - t0
    final_loss = float(loss.item()) if loss is not None else float("nan")

    sps = a.steps / seconds if seconds > 0 else float("inf")
    flops = train_flops_per_step(a.vocab, a.d_model, a.layers, a.heads, a.seq, a.batch)
    out = {
        "impl": "pytorch",
        "block": a.block,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "d_model": a.d_model,
        "layers": a.layers,
        "heads": a.heads,
        "seq": a.seq,
        "batch": a.batch,
        "vocab": a.vocab,
        "params": n_params,
        "steps": a.steps,
        "seconds": seconds,
        "steps_per_s": sps,
        "ms_per_step": 1000.0 * seconds / a.steps if a.steps else float("nan"),
        "final_loss": final_loss,
        "approx_gflops": flops * sps / 1e9,
    }
    if a.json:
        print(json.dumps(out))
    else:
        print(
            f"pytorch {out['torch_version']} threads={out['threads']} "
            f"C={a.d_model} L={a.layers} H={a.heads} T={a.seq} B={a.batch} V={a.vocab} "
            f"params={n_params:,}: {a.steps} steps in {seconds:.3f}s = "
            f"{sps:.2f} steps/s ({out['ms_per_step']:.1f} ms/step, "
            f"~{out['approx_gflops']:.1f} GFLOP/s), final loss {final_loss:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
