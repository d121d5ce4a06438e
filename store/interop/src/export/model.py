"""A genas language model in plain PyTorch.

This file was written by genas next to `architecture.json` and `model.safetensors`. It needs
only `torch` and the Python standard library, and it reproduces the network genas trained
exactly: the same layers, in the same order, with the same parameter names and shapes, so the
weights load with `strict=True` and the logits match genas's to float32 rounding.

The network (C = d_model, H heads of hd = C/H unless the layer names its "head_dim", Q = H*hd,
G key/value heads):

    x = wte[idx] + wpe[positions]               (no wpe with position "rope")
    for each layer:  x = x + attn(ln_1(x))      (skipped for attention "none")
                     x = x + mlp(ln_2(x))       (skipped for "ffn": null)
    logits = ln_f(x) @ head.T                   (head = wte.weight when tie_embeddings)

Attention is full (causal softmax), grouped (query head h reads key/value head h // (H/G)),
sliding (each query sees itself and the window - 1 positions before it; grouped too with
"kv_heads") or linear (Katharopoulos et al., 2020, feature map elu(x) + 1, no 1/sqrt(hd)
scaling). Softmax attention goes through torch's scaled_dot_product_attention (flash or
memory-efficient kernels where the device has them; sliding windows as a boolean mask), and
linear attention runs in chunks with a running sum, so no (T, T) matrix is kept. The FFN is
gelu (exact erf), gelu_tanh (GPT-2's tanh approximation) or relu, `c_proj(act(c_fc(x)))`
with biases, or swiglu,
`c_proj(silu(c_gate(x)) * c_fc(x))` without biases. The norms are LayerNorm (weight and bias)
or, with norm "rmsnorm", RMSNorm (x / sqrt(mean(x^2) + eps) * weight, no bias); both use eps
"norm_eps" (1e-5 when absent). With position "rope" the queries and keys of full, grouped and
sliding attention are rotated as in GPT-NeoX and Llama (dimension i of a head pairs with
i + hd/2, turned by position * theta^(-2i/hd), the frequencies changed by the "scaling" of
type "linear" or "llama3" as transformers changes them); linear and "none" layers get no
position signal. A layer with "qk_norm" applies RMSNorm over every query and key head (weights
q_norm, k_norm of hd) after the projection and before rope.

Parameter names (matrices are (out, in), like torch.nn.Linear):

    wte.weight (V, C), wpe.weight (context, C; learned positions only), ln_f.weight/.bias
    (RMSNorm: .weight only), lm_head.weight (untied only)
    h.{i}.ln_1.weight/.bias, h.{i}.attn.c_attn.weight (Q + 2*G*hd, C) rows q | k | v,
    h.{i}.attn.c_proj.weight (C, Q), h.{i}.ln_2.weight/.bias,
    h.{i}.attn.c_attn.bias (layers with "attention_bias" or "qkv_bias"),
    h.{i}.attn.c_proj.bias (layers with "attention_bias"),
    h.{i}.attn.q_norm.weight, h.{i}.attn.k_norm.weight (hd; layers with "qk_norm"),
    h.{i}.mlp.c_fc.weight/.bias, h.{i}.mlp.c_gate.weight (swiglu), h.{i}.mlp.c_proj.weight/.bias
    (a layer whose "ffn" is null has neither ln_2 nor mlp)

A low-rank FFN matrix `X.weight` (out, in) is stored as `X.weight_a` (r, in) and `X.weight_b`
(out, r), so X(x) = x @ weight_a.T @ weight_b.T + bias. With `share_layers` = S, layer i uses
the weights of layer S * (i // S), and only those layers appear under `h`. In a sparse layer
every matrix P has a 0/1 buffer `P_mask`; the forward pass uses P * P_mask, so masked weights
stay zero when you train the model further. An FFN whose "ffn" names its own "sparsity" is
masked by that one, its layer's attention by the layer's.

Usage:

    import torch
    from model import GenasLM

    model = GenasLM.from_pretrained("path/to/export").eval()
    idx = torch.tensor([[1, 2, 3]])                 # token ids (B, T), T <= context
    logits = model(idx)                             # (B, T, vocab_size)
    out = model.generate(idx, max_new_tokens=50, temperature=0.8, top_k=40)

    # Train further (or from scratch: GenasLM(json.load(open("architecture.json")))),
    # with x, y (B, T) the input ids and the next-token targets:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
    opt.zero_grad(); loss.backward(); opt.step()
    save_safetensors(model.state_dict(), "model.safetensors")   # also defined here
"""

import json
import math
import os
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

# --- safetensors, read and written with torch alone ---------------------------------------

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}


def load_safetensors(path):
    """Reads a .safetensors file into a dict of CPU tensors (name -> tensor)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape = _DTYPES[info["dtype"]], info["shape"]
        begin, end = info["data_offsets"]
        itemsize = torch.empty((), dtype=dtype).element_size()
        numel = math.prod(shape)
        if end - begin != numel * itemsize:
            raise ValueError(f"{path}: {name} has {end - begin} bytes for shape {shape}")
        if numel == 0:
            out[name] = torch.empty(shape, dtype=dtype)
        else:
            t = torch.frombuffer(data, dtype=dtype, count=numel, offset=base + begin)
            out[name] = t.reshape(shape).clone()
    return out


def save_safetensors(tensors, path, metadata=None):
    """Writes a dict of tensors (name -> tensor) as a .safetensors file."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in sorted(tensors.items())}
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # align the data buffer to 8 bytes
    buf = bytearray(offset)
    if offset:
        flat = torch.frombuffer(buf, dtype=torch.uint8)
        for name, t in tensors.items():
            begin, end = header[name]["data_offsets"]
            if end > begin:
                flat[begin:end].copy_(t.reshape(-1).view(torch.uint8))
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(buf)


# --- the network ---------------------------------------------------------------------------

class Linear(nn.Module):
    """y = x @ W.T (+ bias); W dense (`weight`) or low rank (`weight_b @ weight_a`), each
    matrix multiplied by its `*_mask` buffer when the layer is sparse."""

    def __init__(self, n_in, n_out, bias=True, rank=None, masked=False, std=0.02):
        super().__init__()
        if rank is None:
            self.weight = nn.Parameter(torch.randn(n_out, n_in) * std)
            self.mats = ["weight"]
        else:
            s = math.sqrt(std / math.sqrt(rank))  # so that weight_b @ weight_a has std `std`
            self.weight_a = nn.Parameter(torch.randn(rank, n_in) * s)
            self.weight_b = nn.Parameter(torch.randn(n_out, rank) * s)
            self.mats = ["weight_a", "weight_b"]
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None
        self.masked = masked
        if masked:
            for m in self.mats:
                self.register_buffer(m + "_mask", torch.ones_like(getattr(self, m)))

    def _w(self, name):
        w = getattr(self, name)
        return w * getattr(self, name + "_mask") if self.masked else w

    def forward(self, x):
        for m in self.mats:  # x @ weight_a.T @ weight_b.T for low rank
            x = x @ self._w(m).T
        return x + self.bias if self.bias is not None else x


class RMSNorm(nn.Module):
    def __init__(self, d_model, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(kind, d_model, eps=1e-5):
    return RMSNorm(d_model, eps) if kind == "rmsnorm" else nn.LayerNorm(d_model, eps=eps)


def rope_inv_freq(rope, hd):
    """The rotary frequencies theta^(-2i/hd), i < hd/2, in float64, changed by the scaling
    ("linear": divided by its factor; "llama3": long wavelengths divided by the factor, short
    ones kept, the band between interpolated), as transformers computes them."""
    theta, scaling = rope["theta"], rope.get("scaling")
    inv = [theta ** (-(2 * i) / hd) for i in range(hd // 2)]
    if scaling is not None and scaling["type"] == "linear":
        inv = [f / scaling["factor"] for f in inv]
    elif scaling is not None and scaling["type"] == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_context"]
        out = []
        for f in inv:
            wavelen = 2 * math.pi / f
            if wavelen < old / high:
                out.append(f)
            elif wavelen > old / low:
                out.append(f / factor)
            else:
                smooth = (old / wavelen - low) / (high - low)
                out.append((1 - smooth) * f / factor + smooth * f)
        inv = out
    return torch.tensor(inv, dtype=torch.float64)


_ROPE_TABLES = {}


def rope_tables(rope, hd, T, device, dtype, name=None):
    """(cos, sin), each (T, hd/2), of positions 0 .. T - 1: computed in float64 once per
    rope (`name`: its JSON, made here when not given), head width, length, device and dtype,
    then kept."""
    key = (name or json.dumps(rope, sort_keys=True), hd, T, str(device), dtype)
    if key not in _ROPE_TABLES:
        inv = rope_inv_freq(rope, hd).to(device)
        ang = torch.arange(T, dtype=torch.float64, device=device)[:, None] * inv
        _ROPE_TABLES[key] = (ang.cos().to(dtype), ang.sin().to(dtype))
    return _ROPE_TABLES[key]


def rotate(x, rope, name=None):
    """Rotary embedding of x (B, heads, T, hd) at positions 0 .. T - 1, with the
    architecture's `position` dict `rope` (its theta and scaling; `name` its JSON)."""
    T, hd = x.shape[-2], x.shape[-1]
    half = hd // 2
    cos, sin = rope_tables(rope, hd, T, x.device, x.dtype, name)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


_WINDOW_MASKS = {}


def window_mask(T, window, device):
    """(T, T) booleans, True where query i may read key j: j <= i and i - j < window."""
    key = (T, window, str(device))
    if key not in _WINDOW_MASKS:
        i = torch.arange(T, device=device)
        d = i[:, None] - i[None, :]
        _WINDOW_MASKS[key] = (d >= 0) & (d < window)
    return _WINDOW_MASKS[key]


# Queries reading shared key/value heads inside scaled_dot_product_attention (torch >= 2.5).
_GQA = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)

# Linear attention runs in chunks of this many positions: exact within a chunk, a running
# sum of phi(k) v^T across chunks, so no (T, T) matrix is ever made.
LINEAR_CHUNK = 64


def linear_attention(q, k, v):
    """Causal linear attention (elu + 1 feature map) of q, k, v (B, H, T, hd):
    o_t = phi(q_t) S_t / phi(q_t) z_t with S_t = sum_{s<=t} phi(k_s) v_s^T and
    z_t = sum_{s<=t} phi(k_s), in chunks of LINEAR_CHUNK positions."""
    B, H, T, hd = q.shape
    phi = lambda t: torch.where(t > 0, t + 1, torch.exp(t.clamp(max=0)))
    q, k = phi(q), phi(k)
    c = min(LINEAR_CHUNK, T)
    pad = -T % c
    if pad:  # padded keys are zero features: they add nothing to any sum
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    n = (T + pad) // c
    q, k, v = (t.reshape(B, H, n, c, hd) for t in (q, k, v))
    kv = k.transpose(-1, -2) @ v                      # (B, H, n, hd, hd), each chunk's sum
    s = kv.cumsum(2) - kv                             # what the chunks before hold
    z = k.sum(-2)                                     # (B, H, n, hd)
    zs = z.cumsum(2) - z
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    a = (q @ k.transpose(-1, -2)).masked_fill(~causal, 0)  # within the chunk
    num = a @ v + q @ s
    den = a.sum(-1) + (q * zs[..., None, :]).sum(-1)
    o = num / den[..., None]
    return o.reshape(B, H, n * c, hd)[:, :, :T]


class Attention(nn.Module):
    def __init__(self, layer, d_model, masked, proj_std, rope=None, eps=1e-5):
        super().__init__()
        spec = layer["attention"]
        self.kind = spec["kind"]
        self.rope = rope if self.kind in ("full", "grouped", "sliding") else None
        self.rope_name = json.dumps(rope, sort_keys=True) if self.rope is not None else None
        self.heads = spec["heads"]
        self.kv_heads = spec.get("kv_heads") or self.heads
        self.window = spec.get("window") if self.kind == "sliding" else None
        self.hd = layer.get("head_dim") or d_model // self.heads
        q, kvd = self.heads * self.hd, self.kv_heads * self.hd
        bias = layer.get("attention_bias", False)
        self.c_attn = Linear(d_model, q + 2 * kvd, bias=bias or layer.get("qkv_bias", False),
                             masked=masked)
        self.c_proj = Linear(q, d_model, bias=bias, masked=masked, std=proj_std)
        self.q_norm = self.k_norm = None
        if layer.get("qk_norm", False):
            self.q_norm, self.k_norm = RMSNorm(self.hd, eps), RMSNorm(self.hd, eps)

    def forward(self, x):
        B, T, C = x.shape
        H, G, hd = self.heads, self.kv_heads, self.hd
        q, k, v = self.c_attn(x).split([H * hd, G * hd, G * hd], dim=-1)
        q = q.view(B, T, H, hd).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, G, hd).transpose(1, 2)
        v = v.view(B, T, G, hd).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            q, k = rotate(q, self.rope, self.rope_name), rotate(k, self.rope, self.rope_name)
        gqa = {}
        if G != H:  # query head h reads key/value head h // (H // G)
            if _GQA and self.kind != "linear":
                gqa = {"enable_gqa": True}
            else:
                k, v = k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1)
        if self.kind == "linear":
            o = linear_attention(q, k, v)
        elif self.window is not None and self.window < T:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=window_mask(T, self.window, x.device), **gqa)
        else:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)
        return self.c_proj(o.transpose(1, 2).reshape(B, T, H * hd))


class MLP(nn.Module):
    def __init__(self, spec, d_model, masked, proj_std):
        super().__init__()
        h, rank, self.act = spec["hidden"], spec.get("rank"), spec["activation"]
        bias = self.act != "swiglu"
        self.c_fc = Linear(d_model, h, bias, rank, masked)
        if self.act == "swiglu":
            self.c_gate = Linear(d_model, h, False, rank, masked)
        self.c_proj = Linear(h, d_model, bias, rank, masked, std=proj_std)

    def forward(self, x):
        if self.act == "swiglu":
            return self.c_proj(F.silu(self.c_gate(x)) * self.c_fc(x))
        h = self.c_fc(x)
        if self.act == "gelu":
            return self.c_proj(F.gelu(h))
        if self.act == "gelu_tanh":
            return self.c_proj(F.gelu(h, approximate="tanh"))
        return self.c_proj(F.relu(h))


class Block(nn.Module):
    def __init__(self, spec, d_model, proj_std, norm="layernorm", rope=None, eps=1e-5):
        super().__init__()
        masked = spec.get("sparsity", "dense") != "dense"
        if spec["attention"]["kind"] != "none":
            self.ln_1 = make_norm(norm, d_model, eps)
            self.attn = Attention(spec, d_model, masked, proj_std, rope, eps)
        else:
            self.attn = None
        if spec.get("ffn") is not None:
            # The FFN's own sparsity where it names one, else the layer's.
            ffn_masked = spec["ffn"].get("sparsity", spec.get("sparsity", "dense")) != "dense"
            self.ln_2 = make_norm(norm, d_model, eps)
            self.mlp = MLP(spec["ffn"], d_model, ffn_masked, proj_std)
        else:
            self.mlp = None

    def forward(self, x):
        if self.attn is not None:
            x = x + self.attn(self.ln_1(x))
        if self.mlp is not None:
            x = x + self.mlp(self.ln_2(x))
        return x


class GenasLM(nn.Module):
    """The genas network for an architecture dict (the contents of `architecture.json`)."""

    def __init__(self, arch):
        super().__init__()
        self.arch = arch
        V, C, self.context = arch["vocab_size"], arch["d_model"], arch["context"]
        layers, S = arch["layers"], max(1, arch.get("share_layers", 1))
        self.owners = [S * (i // S) for i in range(len(layers))]
        proj_std = 0.02 / math.sqrt(2 * len(layers))
        norm = arch.get("norm", "layernorm")
        position = arch.get("position", {"kind": "learned"})
        rope = position if position["kind"] == "rope" else None
        eps = arch.get("norm_eps", 1e-5)
        self.wte = nn.Embedding(V, C)
        nn.init.normal_(self.wte.weight, std=0.02)
        self.wpe = None
        if rope is None:
            self.wpe = nn.Embedding(self.context, C)
            nn.init.normal_(self.wpe.weight, std=0.02)
        self.h = nn.ModuleDict({str(i): Block(layers[i], C, proj_std, norm, rope, eps)
                                for i in sorted(set(self.owners))})
        self.ln_f = make_norm(norm, C, eps)
        self.tied = arch["tie_embeddings"]
        self.checkpointing = False
        if not self.tied:
            self.lm_head = nn.Linear(C, V, bias=False)
            nn.init.normal_(self.lm_head.weight, std=0.02)

    def hidden(self, idx):
        """Token ids (B, T), T <= context -> the final norm's output (B, T, d_model). With
        `checkpointing` set, each block's activations are recomputed in the backward pass
        instead of kept (torch.utils.checkpoint): less memory, the same gradients."""
        T = idx.shape[1]
        if T > self.context:
            raise ValueError(f"sequence length {T} > context {self.context}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        for o in self.owners:
            block = self.h[str(o)]
            if self.checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.ln_f(x)

    def head(self):
        """The output projection (vocab_size, d_model): logits = hidden @ head().T."""
        return self.wte.weight if self.tied else self.lm_head.weight

    def forward(self, idx):
        """Token ids (B, T), T <= context -> logits (B, T, vocab_size)."""
        return self.hidden(idx) @ self.head().T

    @classmethod
    def from_pretrained(cls, directory):
        """Builds the model from `architecture.json` and loads `model.safetensors`."""
        with open(os.path.join(directory, "architecture.json")) as f:
            model = cls(json.load(f))
        model.load_state_dict(load_safetensors(os.path.join(directory, "model.safetensors")))
        return model

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Appends `max_new_tokens` sampled tokens to idx (B, T); temperature 0 is greedy."""
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.context:])[:, -1, :].float()
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(logits.softmax(-1), 1)
            idx = torch.cat([idx, nxt], dim=1)
        return idx
