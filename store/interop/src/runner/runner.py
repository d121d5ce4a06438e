"""genas's brief distillation in PyTorch: one evaluation job, step for step as the genas engine
runs it.

This file was written by genas beside `model.py` (the candidate's network) and reads a job
directory genas wrote:

    job.json             the recipe: steps, learning-rate schedule, AdamW settings and decay
                         groups, clipping, distillation temperature and alpha
    model/               `genas export --format pytorch` of the candidate at its initial
                         weights: model.py, architecture.json, model.safetensors (with masks)
    targets.safetensors  the teacher's side (genas_scoring::inputs): the validation batches
                         and their teacher distribution, and the names of the shards beside it
                         that hold the batch schedule and its soft targets, a range of steps
                         each; a shard is read when a step of it is trained, after its bytes
                         are checked against its name (the first 32 hex digits of SHA-256)

and writes `result.json`: the loss of every step, the mean of the last 20, the validation
cross-entropy, KL(teacher || student) and top-1 agreement, the device and the time; and the
trained weights, `trained.safetensors`.

A job of kind "train" (the teacher) names a file of batches alone (genas_scoring::inputs::
encode_batches) instead of targets: it trains on the hard labels and leaves the validation to
genas, which reads the trained weights.

A job of kind "teacher" computes the teacher's side on the device (`teacher_pass`): the soft
targets of a batches file's batches and their cross-entropy, which genas writes into its
content-addressed targets as the engine's would be.

A job of kind "importance" computes on the device the sums genas ranks the teacher by
before pruning it for its students (`importance`).

A job of kind "proxies" computes the zero-cost proxies of the candidate in `model/` at its
initial weights on one batch (`proxy_values`).

A job of kind "final" (genas distill) is genas's full distillation (`distill::full_distill`):
the batches file is its training schedule, `teacher/` the teacher's module, whose logits at
temperature T are the soft targets of every step (top-k with the rest spread evenly over
vocabularies above 1,024 tokens); the targets file holds the validation set alone. It
evaluates every `eval_every` steps, keeps the best weights, stops after `patience`
evaluations without a new best, and checkpoints every `checkpoint_every` steps to
`checkpoint.pt`, from which a rerun of the same job resumes.

The recipe (genas `engine/train.rs`, `engine/cpu/loss.rs`, `engine/cpu/ops.rs`):
    loss  = alpha * CE(softmax(z), y) + (1 - alpha) * T^2 * KL(p_T || softmax(z / T)),
            averaged over positions
    lr    = linear warm-up over `warmup_steps`, then cosine to `learning_rate * min_lr_ratio`
    clip  = every gradient times min(1, grad_clip / ||g||), ||g|| the global L2 norm
    AdamW = m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
            w -= lr * (m / c1 / (sqrt(v / c2) + eps) + wd * w), wd only for decayed tensors

Usage: python runner.py JOB_DIR [--device cpu|cuda|auto]
Needs only torch and the Python standard library.
"""

import hashlib
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn.functional as F


def read_safetensors(path):
    """(tensors by name, metadata) of a safetensors file; U32 tensors come back as int64."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    body = memoryview(data)[8 + n:]
    kinds = {"F32": torch.float32, "F64": torch.float64, "U32": torch.int32,
             "I64": torch.int64, "I32": torch.int32}
    out = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        dtype = kinds[t["dtype"]]
        x = torch.frombuffer(bytearray(body[a:b]), dtype=dtype) if b > a else torch.empty(0, dtype=dtype)
        x = x.reshape(t["shape"])
        out[name] = x.long() if t["dtype"] == "U32" else x
    return out, meta


def read_header(path):
    """(header without metadata, metadata, byte offset of the data) of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", {}) or {}
    return header, meta, 8 + n


class Shards:
    """The schedule's steps from the shards beside a targets file, a step at a time: a shard
    is checked against its name the first time one of its steps is read, and only the
    step's tensors are read from it."""

    def __init__(self, targets_path, info):
        self.dir = os.path.dirname(targets_path)
        self.shards = info.get("shards", [])
        self.headers = {}

    def step(self, i):
        """The tensors `schedule.{i}.*` (U32 as int64), by name."""
        shard = next((s for s in self.shards if s["first"] <= i < s["first"] + s["steps"]), None)
        if shard is None:
            raise SystemExit(f"error: no shard of the targets file holds step {i}")
        name = shard["name"]
        path = os.path.join(self.dir, name + ".safetensors")
        if name not in self.headers:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    h.update(block)
            if h.hexdigest()[:32] != name:
                raise SystemExit(f"error: {path}: its content changed; it is not the shard the job refers to")
            self.headers[name] = read_header(path)
        header, _, start = self.headers[name]
        kinds = {"F32": torch.float32, "U32": torch.int32}
        out = {}
        prefix = f"schedule.{i}."
        with open(path, "rb") as f:
            for tname, t in header.items():
                if not tname.startswith(prefix):
                    continue
                a, b = t["data_offsets"]
                f.seek(start + a)
                x = torch.frombuffer(bytearray(f.read(b - a)), dtype=kinds[t["dtype"]]) if b > a \
                    else torch.empty(0, dtype=kinds[t["dtype"]])
                out[tname] = x.long() if t["dtype"] == "U32" else x
        return out


class Targets:
    """The teacher's side of a batch's rows: none (hard labels only), dense probabilities
    (n, V), or the top k of each row (index, prob: (n, k)) with the rest of the mass spread
    evenly over the other V - k tokens, as genas's loss reads them. Never expanded to a dense
    (n, V) tensor: the loss uses the closed form."""

    def __init__(self, v, p=None, index=None, prob=None, rest=None):
        self.v, self.p, self.index, self.prob = v, p, index, prob
        # Each row's mass per token outside its top k (rows, 1), float32, as genas spreads it.
        if prob is not None and rest is None:
            kept = prob.double().sum(-1, keepdim=True)
            rest = ((1.0 - kept) / max(v - prob.shape[1], 1)).clamp(min=0.0).float()
        self.rest = rest

    @staticmethod
    def of(tensors, prefix, k, n, v, device):
        prob = tensors[prefix + ".probs"].to(device)
        if k == 0:
            return Targets(v, p=prob.reshape(n, v))
        return Targets(v, index=tensors[prefix + ".index"].to(device).reshape(n, k),
                       prob=prob.reshape(n, k))

    def rows(self, a, b):
        if self.p is not None:
            return Targets(self.v, p=self.p[a:b])
        return Targets(self.v, index=self.index[a:b], prob=self.prob[a:b], rest=self.rest[a:b])

    def entropy_part(self):
        """sum over rows of sum_i p_i log p_i (terms with p_i = 0 left out), float64: the part
        of KL(p || q) that does not depend on the student."""
        def plogp(x):
            x = x.double()
            return torch.where(x > 0, x * torch.where(x > 0, x, torch.ones_like(x)).log(),
                               torch.zeros_like(x)).sum()
        if self.p is not None:
            return plogp(self.p)
        k = self.prob.shape[1]
        return plogp(self.prob) + (self.v - k) * plogp(self.rest)

    def cross_part(self, logq):
        """sum over rows of sum_i p_i log q_i, in logq's dtype."""
        if self.p is not None:
            return (self.p.to(logq.dtype) * logq).sum()
        picked = logq.gather(1, self.index)
        r = self.rest.to(logq.dtype)
        return (self.prob.to(logq.dtype) * picked).sum() + \
            (r[:, 0] * (logq.sum(-1) - picked.sum(-1))).sum()

    def argmax(self):
        """The teacher's most probable token of each row (the lowest index among ties)."""
        if self.p is not None:
            return self.p.argmax(-1)
        top = self.prob == self.prob.max(-1, keepdim=True).values
        return torch.where(top, self.index, torch.full_like(self.index, self.v)).min(-1).values


# Positions x vocabulary entries of the logits the loss makes at once; above it the rows are
# taken in chunks whose logits are recomputed in the backward pass (torch.utils.checkpoint),
# so the (positions, vocabulary) logits never exist whole.
LOSS_ELEMENTS = 1 << 25


def chunk_rows(n, v, rows):
    return rows if rows > 0 else max(1, min(n, LOSS_ELEMENTS // max(v, 1)))


def chunk_loss(h, w, y, tg, temp, alpha):
    """sum over the rows of h (rows, C) of alpha * CE - (1 - alpha) * T^2 * sum p log q_T,
    with logits h @ w.T in float32 (CE alone when tg is None): the loss but for the part of
    KL(p || q_T) that does not depend on the student, which `loss_sum` adds once."""
    z = (h @ w.T).float()
    ce = F.cross_entropy(z, y, reduction="sum")
    if tg is None:
        return ce
    return alpha * ce - (1.0 - alpha) * temp * temp * tg.cross_part(F.log_softmax(z / temp, dim=-1))


def loss_sum(h, w, y, tg, temp, alpha, rows):
    """sum over all rows of alpha * CE + (1 - alpha) * T^2 * KL(p || q_T), `rows` at a time
    (one piece when they all fit; chunks recomputed in the backward pass)."""
    n = h.shape[0]
    if rows >= n:
        total = chunk_loss(h, w, y, tg, temp, alpha)
    else:
        total = 0.0
        for a in range(0, n, rows):
            b = min(a + rows, n)
            part = torch.utils.checkpoint.checkpoint(
                lambda hc, a=a, b=b: chunk_loss(hc, w, y[a:b], None if tg is None else tg.rows(a, b),
                                                temp, alpha),
                h[a:b], use_reentrant=False)
            total = total + part
    if tg is not None:
        total = total + (1.0 - alpha) * temp * temp * tg.entropy_part().float()
    return total


def lr_at(step, c):
    lr, warm = c["learning_rate"], c["warmup_steps"]
    if step < warm:
        return lr * (step + 1) / warm
    span = max(c["steps"] - warm, 1)
    progress = min((step - warm) / span, 1.0)
    floor = lr * c["min_lr_ratio"]
    return floor + 0.5 * (lr - floor) * (1.0 + math.cos(math.pi * progress))


class Options:
    """How the job runs on its device, none of which changes the recipe: `precision` "fp32"
    (exact) or "bf16" (autocast to bfloat16, float32 master weights), `micro_batch`
    sequences per forward/backward (0: the whole batch; the gradients of the micro-batches
    are summed into exactly the step of the whole batch), `checkpointing` (each block's
    activations recomputed in the backward pass), and `loss_rows` (rows of logits made at once
    by the loss; 0: as many as LOSS_ELEMENTS allows)."""

    def __init__(self, job, device):
        self.device = device
        self.precision = job.get("precision", "fp32")
        if self.precision not in ("fp32", "bf16"):
            raise SystemExit(f"error: job.json: precision {self.precision!r} is not fp32 or bf16")
        self.micro_batch = int(job.get("micro_batch", 0))
        self.checkpointing = bool(job.get("checkpointing", False))
        self.loss_rows = int(job.get("loss_rows", 0))

    def autocast(self):
        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(kind, dtype=torch.bfloat16, enabled=self.precision == "bf16")


def trained_params(model, train_only):
    """The parameters a job trains, by name: all, or those under a `train_only` prefix (the
    rest are held: no gradient, no update, no decay, outside the clipping norm, as genas's
    `Optimizer::train_only`)."""
    named = list(model.named_parameters())
    if not train_only:
        return named
    kept = []
    for k, q in named:
        if any(k.startswith(p) for p in train_only):
            kept.append((k, q))
        else:
            q.requires_grad_(False)
    return kept


def make_adamw(named, c, decay):
    """torch's AdamW (fused where it can be) with genas's decay groups over the `named`
    parameters: its update w <- w (1 - lr wd) - lr m/c1 / (sqrt(v)/sqrt(c2) + eps) is genas's
    w <- w - lr (m/c1 / (sqrt(v/c2) + eps) + wd w) to float rounding."""
    groups = [{"params": [q for k, q in named if k in decay], "weight_decay": c["weight_decay"]},
              {"params": [q for k, q in named if k not in decay], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    kw = {"lr": c["learning_rate"], "betas": (c["beta1"], c["beta2"]), "eps": c["eps"]}
    try:
        return torch.optim.AdamW(groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=True, **kw)


class Recipe:
    """genas's training step: the loss (with soft targets, or hard labels alone), global-norm
    clipping and AdamW with genas's decay groups. No step waits for the device: each step's
    loss and gradient norm stay on it until `settle` reads them."""

    def __init__(self, model, c, decay, opts, temperature=1.0, alpha=1.0, train_only=()):
        self.model, self.c, self.decay, self.opts = model, c, decay, opts
        self.temp, self.alpha = temperature, alpha
        named = trained_params(model, train_only)
        self.params = [q for _, q in named]
        self.opt = make_adamw(named, c, decay) if named else None
        self.pending = []  # (step, loss, norm) on the device, not yet read
        model.checkpointing = opts.checkpointing

    def step(self, step, x, y, tg):
        """One step on inputs x (B, T), targets y (B*T) and the teacher's side tg (or None)."""
        c, model, opts = self.c, self.model, self.opts
        B, T = x.shape
        n = B * T
        mb = opts.micro_batch if 0 < opts.micro_batch < B else B
        w = model.head()
        rows = chunk_rows(mb * T, w.shape[0], opts.loss_rows)
        if self.opt is not None:
            self.opt.zero_grad(set_to_none=False)
        total = None
        for s in range(0, B, mb):
            e = min(s + mb, B)
            with opts.autocast():
                h = model.hidden(x[s:e]).reshape((e - s) * T, -1)
                part = loss_sum(h, model.head(), y[s * T:e * T],
                                None if tg is None else tg.rows(s * T, e * T),
                                self.temp, self.alpha, rows) / n
            if part.requires_grad:  # else nothing trains (a dropped sub-block)
                part.backward()
            total = part.detach() if total is None else total + part.detach()
        self.update(step, total)

    def step_on(self, step, loss_fn):
        """One step on the loss `loss_fn()` computes from the model (blockwise local
        distillation's error of one sub-block)."""
        if self.opt is not None:
            self.opt.zero_grad(set_to_none=False)
        with self.opts.autocast():
            loss = loss_fn()
        if loss.requires_grad:
            loss.backward()
        self.update(step, loss.detach())

    def update(self, step, total):
        """Clips the gradients of the trained parameters to their global norm and takes the
        optimiser's step at `step`'s learning rate; `total` is the step's loss. With nothing
        to train (a dropped sub-block), only the loss is kept."""
        c = self.c
        if not self.params:
            self.pending.append((step, total, torch.zeros((), device=total.device)))
            return
        grads = []
        for q in self.params:
            if q.grad is None:  # a parameter the loss does not reach still decays
                q.grad = torch.zeros_like(q)
            grads.append(q.grad)
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        scale = torch.where(norm > c["grad_clip"], c["grad_clip"] / norm, torch.ones_like(norm))
        torch._foreach_mul_(grads, scale)
        lr = lr_at(step, c)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()
        self.pending.append((step, total, norm))

    def settle(self, losses):
        """Appends the pending steps' losses to `losses` up to the first that diverged;
        returns why it diverged, or None."""
        if not self.pending:
            return None
        steps = [s for s, _, _ in self.pending]
        values = torch.stack([torch.stack([l.float(), g.float()]) for _, l, g in self.pending]).tolist()
        self.pending = []
        for step, (value, norm) in zip(steps, values):
            if not math.isfinite(value) or not math.isfinite(norm):
                what, bad = ("the loss", value) if not math.isfinite(value) else ("the gradient norm", norm)
                return f"training diverged at step {step}: {what} is {bad}"
            losses.append(value)
        return None


# Steps trained between looks at their losses (each look waits for the device).
SETTLE_EVERY = 32


def evaluate(model, tensors, info, device, opts):
    """Validation cross-entropy, KL(teacher || student) and top-1 agreement over the targets
    file's validation batches, as genas's evaluate_against_teacher computes them (in float64,
    a chunk of rows at a time)."""
    v = info["vocab"]
    was_training = model.training
    model.eval()
    ce_sum, kl_sum, agree, tokens = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for i, (b, t) in enumerate(info["val"]):
            n = b * t
            pre = f"val.{i}"
            x = tensors[pre + ".inputs"].reshape(b, t).to(device)
            y = tensors[pre + ".targets"].to(device)
            tg = Targets.of(tensors, pre, info["val_k"][i], n, v, device)
            with opts.autocast():
                h = model.hidden(x).reshape(n, -1)
            w = model.head()
            rows = chunk_rows(n, v, opts.loss_rows)
            for a in range(0, n, rows):
                e = min(a + rows, n)
                z = (h[a:e] @ w.T).double()
                logq = F.log_softmax(z, dim=-1)
                part = tg.rows(a, e)
                ce_sum += float(F.nll_loss(logq, y[a:e], reduction="sum"))
                kl_sum += float(part.entropy_part() - part.cross_part(logq))
                agree += int((z.argmax(-1) == part.argmax()).sum())
            tokens += n
    model.train(was_training)
    tokens = max(tokens, 1)
    return {"val_ce": ce_sum / tokens, "kl_to_teacher": kl_sum / tokens,
            "agreement": agree / tokens}


def soft_targets(teacher, x, temperature, top_k, opts, y=None):
    """The teacher's soft targets of inputs x, as genas's SoftTargets::from_logits then
    reads them: softmax(z / T) in float64 rounded to float32 once; above 1,024 tokens only
    the top k kept (the rest spread evenly by Targets). A chunk of rows at a time. With
    targets y, also the sum of each row's cross-entropy (float64, temperature 1): returns
    (Targets, that sum)."""
    ce = 0.0
    with torch.no_grad():
        with opts.autocast():
            h = teacher.hidden(x)
        h = h.reshape(-1, h.shape[-1])
        w = teacher.head()
        n, v = h.shape[0], w.shape[0]
        k = max(1, min(top_k, v))
        rows = chunk_rows(n, v, opts.loss_rows)
        ps, idx = [], []
        for a in range(0, n, rows):
            z = (h[a:a + rows] @ w.T).double()
            if y is not None:
                ce += float(F.cross_entropy(z, y[a:a + rows], reduction="sum"))
            e = ((z - z.max(-1, keepdim=True).values) / temperature).exp()
            p = (e / e.sum(-1, keepdim=True)).float()
            if v <= 1024:
                ps.append(p)
            else:
                prob, index = p.topk(k, dim=-1)
                ps.append(prob)
                idx.append(index)
    tg = Targets(v, p=torch.cat(ps)) if v <= 1024 else \
        Targets(v, index=torch.cat(idx), prob=torch.cat(ps))
    return tg if y is None else (tg, ce)


def teacher_pass(job_dir, job, device, opts, mod):
    """A job of kind "teacher": the soft targets of every batch of the batches file at the
    job's temperature (top k above 1,024 tokens), and with "ce" each batch's summed
    cross-entropy, computed on the device a chunk of rows at a time. Writes `out.safetensors`:
    `step.I.probs` (F32, rows x k or rows x V) and `step.I.index` (I32, rows x k), and the sums
    as metadata `genas.teacher_pass` ({"ce": [...]})."""
    _, teacher = load_model(os.path.join(job_dir, "teacher"), "genas_teacher_model")
    teacher.to(device).eval()
    batches, bmeta = read_safetensors(os.path.join(job_dir, job["batches"]))
    schedule = json.loads(bmeta["genas.batches"])["schedule"]
    out, sums = {}, []
    for i, (b, t) in enumerate(schedule):
        x = batches[f"schedule.{i}.inputs"].reshape(b, t).to(device)
        y = batches[f"schedule.{i}.targets"].to(device)
        tg, ce = soft_targets(teacher, x, job["temperature"], job["top_k"], opts, y)
        if tg.p is not None:
            out[f"step.{i}.probs"] = tg.p.cpu()
        else:
            out[f"step.{i}.probs"] = tg.prob.cpu()
            out[f"step.{i}.index"] = tg.index.to(torch.int32).cpu()
        sums.append(ce)
    tmp = os.path.join(job_dir, f".out.{os.getpid()}.tmp")
    mod.save_safetensors(out, tmp, {"genas.teacher_pass": json.dumps({"ce": sums})})
    os.replace(tmp, os.path.join(job_dir, "out.safetensors"))


def activation_magnitude(act, x):
    """|act(x)| of pre-activations x (float64) as genas's `inherit::activation_magnitude`
    reads them: GELU by its tanh form, swiglu by its gate alone."""
    if act == "relu":
        return x.clamp(min=0.0)
    if act == "swiglu":
        return (x / (1.0 + (-x).exp())).abs()
    return (0.5 * x * (1.0 + (math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)).tanh())).abs()


IMPORTANCE_VALUES = 1 << 25


def importance(teacher, x, opts):
    """The sums genas ranks a teacher by (genas_scoring::inherit::Importance) of inputs x
    (B, T), run without gradients a few sequences at a time: per residual channel the sum of
    |x| over the embedding sum and every block's output; per layer the sum over rows of
    cos(block input, block output); per head the sum of its attention output's L2 norm and per
    value dimension of its |output|; per FFN neuron the sum of |act(pre-activation)|. Sums in
    float64 of the device's values."""
    arch, layers = teacher.arch, teacher.arch["layers"]
    C, depth = arch["d_model"], len(layers)
    dev = x.device
    f64 = {"dtype": torch.float64, "device": dev}
    channel, cos = torch.zeros(C, **f64), torch.zeros(depth, **f64)
    head_norm, value_abs, neuron = [], [], []
    for spec in layers:
        H = spec["attention"]["heads"] if spec["attention"]["kind"] != "none" else 0
        hd = spec.get("head_dim") or C // max(H, 1)
        head_norm.append(torch.zeros(H, **f64))
        value_abs.append(torch.zeros(H * hd, **f64))
        neuron.append(torch.zeros(spec["ffn"]["hidden"] if spec.get("ffn") else 0, **f64))
    at = [0]  # the layer being run (a shared block runs for several)

    def on_attention(module, args):
        l = at[0]
        H = head_norm[l].shape[0]
        a = args[0].double().reshape(-1, H, value_abs[l].shape[0] // H)
        head_norm[l] += a.norm(dim=-1).sum(0)
        value_abs[l] += a.abs().sum(0).reshape(-1)

    def on_ffn(module, args, out):
        l = at[0]
        pre = out.double().reshape(-1, neuron[l].shape[0])
        neuron[l] += activation_magnitude(layers[l]["ffn"]["activation"], pre).sum(0)

    hooks = []
    for o in sorted(set(teacher.owners)):
        block = teacher.h[str(o)]
        if block.attn is not None:
            hooks.append(block.attn.c_proj.register_forward_pre_hook(on_attention))
        if block.mlp is not None:
            pre = block.mlp.c_gate if block.mlp.act == "swiglu" else block.mlp.c_fc
            hooks.append(pre.register_forward_hook(on_ffn))
    B, T = x.shape
    widest = max([C] + [v.shape[0] for v in value_abs] + [n.shape[0] for n in neuron])
    step = max(1, IMPORTANCE_VALUES // max(T * widest, 1))
    try:
        with torch.no_grad(), opts.autocast():
            for a in range(0, B, step):
                xi = x[a:a + step]
                h = teacher.wte(xi)
                if teacher.wpe is not None:
                    h = h + teacher.wpe(torch.arange(T, device=dev))
                channel += h.double().abs().sum((0, 1))
                for l, o in enumerate(teacher.owners):
                    at[0] = l
                    y = teacher.h[str(o)](h)
                    u, v = h.double().reshape(-1, C), y.double().reshape(-1, C)
                    channel += v.abs().sum(0)
                    norms = (u.pow(2).sum(-1).sqrt() * v.pow(2).sum(-1).sqrt()).clamp(min=1e-30)
                    cos[l] += ((u * v).sum(-1) / norms).sum()
                    h = y
    finally:
        for hook in hooks:
            hook.remove()
    out = {"importance.channel": channel, "importance.cos": cos}
    for l in range(depth):
        out[f"importance.head_norm.{l}"] = head_norm[l]
        out[f"importance.value_abs.{l}"] = value_abs[l]
        out[f"importance.neuron.{l}"] = neuron[l]
    return {k: t.cpu() for k, t in out.items()}, B * T


def one_batch(job_dir, job, device):
    """The inputs (B, T) and targets (B*T) of the one batch of the job's batches file."""
    batches, bmeta = read_safetensors(os.path.join(job_dir, job["batches"]))
    schedule = json.loads(bmeta["genas.batches"])["schedule"]
    if len(schedule) != 1:
        raise SystemExit(f"error: a {job['kind']} job takes one batch, not {len(schedule)}")
    b, t = schedule[0]
    return (batches["schedule.0.inputs"].reshape(b, t).to(device),
            batches["schedule.0.targets"].to(device))


def write_result(job_dir, result):
    """Writes result.json whole or not at all."""
    tmp = os.path.join(job_dir, f".result.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, os.path.join(job_dir, "result.json"))


def importance_pass(job_dir, job, device, opts, mod):
    """A job of kind "importance": the teacher's activation sums (`importance`) on the one
    batch of the batches file, written to `out.safetensors` (float64 tensors
    `importance.channel`, `importance.cos`, and per layer L `importance.head_norm.L`,
    `importance.value_abs.L`, `importance.neuron.L`; the rows summed over as metadata
    `genas.importance`, {"rows": N})."""
    _, teacher = load_model(os.path.join(job_dir, "teacher"), "genas_teacher_model")
    teacher.to(device).eval()
    x, _ = one_batch(job_dir, job, device)
    out, rows = importance(teacher, x, opts)
    tmp = os.path.join(job_dir, f".out.{os.getpid()}.tmp")
    mod.save_safetensors(out, tmp, {"genas.importance": json.dumps({"rows": rows})})
    os.replace(tmp, os.path.join(job_dir, "out.safetensors"))


ZEN_ALPHA = 0.01
JACOB_COV_K = 1e-5


def ln_pos(x):
    """ln of a positive, finite sum; None otherwise (genas's `zero_cost::ln_pos`)."""
    return math.log(x) if x > 0.0 and math.isfinite(x) else None


def finite(x):
    return x if math.isfinite(x) else None


class Probed:
    """A forward of `model` that keeps what the zero-cost proxies read: the input embeddings
    `x0` (a leaf when `grad_input`), the residual stream after the last block `last` (before
    the final norm), each block's FFN activation output `acts` (the input of its output
    projection, gradients retained under `keep_acts`) and FFN pre-activation `pres` (for
    swiglu the gate's input), block by block as the network runs them (a shared block once
    per layer it serves)."""

    def __init__(self, model, x, keep_acts=False, grad_input=False, keep_pres=False,
                 embedding=None):
        self.acts, self.pres, hooks = [], [], []

        def on_act(module, args):
            a = args[0]
            if keep_acts and a.requires_grad:
                a.retain_grad()
            self.acts.append(a)

        def on_pre(module, args, out):
            self.pres.append(out.detach())

        for o in sorted(set(model.owners)):
            mlp = model.h[str(o)].mlp
            if mlp is None:
                continue
            if keep_acts:
                hooks.append(mlp.c_proj.register_forward_pre_hook(on_act))
            if keep_pres:
                pre = mlp.c_gate if mlp.act == "swiglu" else mlp.c_fc
                hooks.append(pre.register_forward_hook(on_pre))
        T = x.shape[1]
        try:
            wte = model.wte.weight if embedding is None or embedding[0] != "wte.weight" \
                else embedding[1]
            h = F.embedding(x, wte)
            if model.wpe is not None:
                wpe = model.wpe.weight if embedding is None or embedding[0] != "wpe.weight" \
                    else embedding[1]
                h = h + wpe[:T]
            if grad_input:
                h = h.detach().requires_grad_(True)
            self.x0 = h
            for o in model.owners:
                h = model.h[str(o)](h)
            self.last = h
            self.hidden = model.ln_f(h)
        finally:
            for hook in hooks:
                hook.remove()


def sum_of_logits(model, hidden):
    """R = sum of every logit of `hidden` (B, T, C) @ head.T, without the logits: the sum
    over rows of hidden times the head's column sums (the same gradients, dR/dlogit = 1)."""
    return (hidden.reshape(-1, hidden.shape[-1]).sum(0) * model.head().sum(0)).sum()


def mean_ce(model, hidden, y, opts):
    n = y.shape[0]
    w = model.head()
    rows = chunk_rows(n, w.shape[0], opts.loss_rows)
    return loss_sum(hidden.reshape(n, -1), w, y, None, 1.0, 1.0, rows) / n


def saliency(mats):
    """(sum |w g|, sum g^2) over the matrices, float64 (a matrix the backward did not reach
    adds nothing)."""
    got = [w for w in mats if w.grad is not None]
    sal = sum(float((w.detach().double() * w.grad.double()).abs().sum()) for w in got)
    sq = sum(float(w.grad.double().pow(2).sum()) for w in got)
    return sal, sq


def proxy_values(model, x, y, decay, zen, opts):
    """genas's zero-cost proxies (genas_scoring::zero_cost) of `model` at its initial
    weights on inputs x (B, T) and targets y (B*T): snip, grad_norm and fisher from one
    cross-entropy backward; synflow with every weight replaced by its absolute value and
    R = sum of logits; jacob_cov from dR/d(input embeddings) per sequence; naswot from the
    sign pattern of every FFN pre-activation; zen_score from the blocks' contribution with the
    input embedding perturbed (`zen`: its name and perturbed rows, as genas drew them); zico
    from the gradients of up to 4 sub-batches. Values in float64, None where undefined. The
    weights are left as they were."""
    B, T = x.shape
    named = dict(model.named_parameters())
    mats = [named[k] for k in sorted(decay)]
    out = {}
    model.zero_grad(set_to_none=False)
    with opts.autocast():
        run = Probed(model, x, keep_acts=True)
        loss = mean_ce(model, run.hidden, y, opts)
    loss.backward()
    fisher = 0.0
    for a in run.acts:
        s = (a.detach().double() * a.grad.double()).reshape(B, T, -1).sum(1)
        fisher += float((0.5 * s * s).sum()) / B
    sal, sq = saliency(mats)
    out["snip"], out["grad_norm"], out["fisher"] = ln_pos(sal), ln_pos(math.sqrt(sq)), ln_pos(fisher)
    del run, loss
    # synflow
    saved = {k: p.detach().clone() for k, p in named.items()}
    with torch.no_grad():
        for p in named.values():
            p.abs_()
    model.zero_grad(set_to_none=False)
    with opts.autocast():
        r = sum_of_logits(model, Probed(model, x).hidden)
    r.backward()
    out["synflow"] = ln_pos(saliency(mats)[0])
    with torch.no_grad():
        for k, p in named.items():
            p.copy_(saved[k])
    del saved
    # jacob_cov
    model.zero_grad(set_to_none=False)
    with opts.autocast():
        run = Probed(model, x, grad_input=True)
        r = sum_of_logits(model, run.hidden)
    r.backward()
    z = run.x0.grad.double().reshape(B, -1)
    z = z - z.mean(1, keepdim=True)
    norms = z.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()) or not bool(torch.isfinite(norms).all()):
        out["jacob_cov"] = None
    else:
        z = z / norms
        lam = torch.linalg.eigvalsh(z @ z.T).clamp(min=0.0) + JACOB_COV_K
        out["jacob_cov"] = finite(float(-(lam.log() + 1.0 / lam).sum()))
    del run, r
    model.zero_grad(set_to_none=False)
    with torch.no_grad(), opts.autocast():
        # naswot
        run = Probed(model, x, keep_pres=True)
        codes = torch.cat([(p.reshape(B, -1) > 0).double() for p in run.pres], dim=1)
        k = codes @ codes.T + (1.0 - codes) @ (1.0 - codes).T
        sign, logdet = torch.linalg.slogdet(k)
        out["naswot"] = finite(float(logdet)) if float(sign) != 0.0 else None
        # zen_score
        f0 = (run.last - run.x0).double()
        del run, codes, k
        name, rows, values = zen
        noisy = named[name].detach().clone()
        noisy[rows] = values.to(noisy.dtype)
        run = Probed(model, x, embedding=(name, noisy))
        f1 = (run.last - run.x0).double()
        out["zen_score"] = ln_pos(float((f1 - f0).abs().mean()) / ZEN_ALPHA)
        del run, f0, f1, noisy
    # zico
    splits = min(B, 4)
    if splits < 2:
        out["zico"] = None
    else:
        grads = []
        for s in range(splits):
            r0, r1 = s * B // splits, (s + 1) * B // splits
            model.zero_grad(set_to_none=False)
            with opts.autocast():
                run = Probed(model, x[r0:r1])
                loss = mean_ce(model, run.hidden, y[r0 * T:r1 * T], opts)
            loss.backward()
            grads.append([torch.zeros(w.numel(), dtype=torch.float64, device=w.device)
                          if w.grad is None else w.grad.detach().double().reshape(-1).clone()
                          for w in mats])
        total, any_ = 0.0, False
        for m in range(len(mats)):
            g = torch.stack([gs[m] for gs in grads])
            mean_abs, var = g.abs().mean(0), g.var(0, unbiased=False)
            keep = var > 0
            total_m = float((mean_abs[keep] / var[keep].sqrt()).sum())
            if total_m > 0:
                total += math.log(total_m)
                any_ = True
        out["zico"] = finite(total) if any_ else None
    model.zero_grad(set_to_none=True)
    return out


def proxies_job(job_dir, job, model, device, opts, started):
    """A job of kind "proxies": the zero-cost proxies of the candidate in `model/` at its
    initial weights, on the one batch of the batches file; `zen.safetensors` holds the
    perturbed rows of its input embedding (`rows`, I64, and `values`, F32). Writes
    result.json: {"proxies": {name: value or null}, "device", "seconds"} (and a result
    record's other fields, empty)."""
    x, y = one_batch(job_dir, job, device)
    zen, _ = read_safetensors(os.path.join(job_dir, "zen.safetensors"))
    name = job["zen"]
    if name not in dict(model.named_parameters()):
        raise SystemExit(f"error: job.json: the model has no {name}")
    values = proxy_values(model, x, y, set(job["decay"]),
                          (name, zen["rows"].to(device), zen["values"].to(device)), opts)
    return {"steps": 0, "losses": [], "diverged": None, "train_loss": None, "eval": None,
            "proxies": values, "device": device_name(device), "seconds": time.time() - started}


def load_module(path, name):
    """The Python module at `path`, under `name` (each job's model.py on its own)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_model(directory, name):
    """(module, model) of an exported module folder: model.py, architecture.json, weights."""
    mod = load_module(os.path.join(directory, "model.py"), name)
    with open(os.path.join(directory, "architecture.json")) as f:
        model = mod.GenasLM(json.load(f))
    model.load_state_dict(mod.load_safetensors(os.path.join(directory, "model.safetensors")))
    return mod, model


# The format of checkpoint.pt; a checkpoint of another format is not resumed.
CHECKPOINT_FORMAT = 2


def final(job_dir, job, model, decay, device, opts, started):
    """genas's full distillation; returns the result record (the best weights are in model)."""
    _, teacher = load_model(os.path.join(job_dir, "teacher"), "genas_teacher_model")
    teacher.to(device).eval()
    batches, bmeta = read_safetensors(os.path.join(job_dir, job["batches"]))
    schedule = json.loads(bmeta["genas.batches"])["schedule"]
    tensors, meta = read_safetensors(os.path.join(job_dir, job["targets"]))
    info = json.loads(meta["genas.targets"])
    c = job["train"]
    temp, alpha, top_k = job["temperature"], job["alpha"], job["top_k"]
    recipe = Recipe(model, c, decay, opts, temp, alpha)
    params = dict(model.named_parameters())
    state = {"step": 0, "best_val": math.inf, "best_step": 0, "bad_evals": 0, "history": [],
             "recent": [], "seconds": 0.0, "losses": []}
    best = {k: w.detach().clone() for k, w in params.items()}
    resumed_from = None
    ckpt = os.path.join(job_dir, "checkpoint.pt")
    if os.path.exists(ckpt):
        saved = torch.load(ckpt, map_location=device)
        if saved.get("format") == CHECKPOINT_FORMAT and saved["job"] == job:
            with torch.no_grad():
                for k, w in params.items():
                    w.copy_(saved["weights"][k])
            recipe.opt.load_state_dict(saved["optimizer"])
            best = saved["best"]
            state = saved["state"]
            resumed_from = state["step"]
    before = state["seconds"]
    steps = min(c["steps"], len(schedule))
    stopped_early = False
    while state["step"] < steps:
        step = state["step"]
        b, t = schedule[step]
        pre = f"schedule.{step}"
        x = batches[pre + ".inputs"].reshape(b, t).to(device)
        y = batches[pre + ".targets"].to(device)
        recipe.step(step, x, y, soft_targets(teacher, x, temp, top_k, opts))
        state["step"] += 1
        evaluating = state["step"] % job["eval_every"] == 0 or state["step"] == steps
        saving = state["step"] % job["checkpoint_every"] == 0 or state["step"] == steps
        if evaluating or saving or len(recipe.pending) >= SETTLE_EVERY:
            done = len(state["losses"])
            why = recipe.settle(state["losses"])
            if why is not None:
                return {"steps": len(state["losses"]), "losses": state["losses"], "diverged": why}
            state["recent"] = (state["recent"] + state["losses"][done:])[-20:]
        if evaluating:
            val_ce = evaluate(model, tensors, info, device, opts)["val_ce"]
            state["history"].append([state["step"], val_ce])
            if val_ce < state["best_val"]:
                state["best_val"], state["best_step"], state["bad_evals"] = val_ce, state["step"], 0
                best = {k: w.detach().clone() for k, w in params.items()}
            else:
                state["bad_evals"] += 1
            stopped_early = state["bad_evals"] >= job["patience"] and state["step"] < steps
        if saving or stopped_early:
            state["seconds"] = before + time.time() - started
            tmp = ckpt + f".{os.getpid()}.tmp"
            torch.save({"format": CHECKPOINT_FORMAT, "job": job,
                        "weights": {k: w.detach() for k, w in params.items()},
                        "optimizer": recipe.opt.state_dict(), "best": best, "state": state}, tmp)
            os.replace(tmp, ckpt)
        if stopped_early:
            break
    why = recipe.settle(state["losses"])
    if why is not None:
        return {"steps": len(state["losses"]), "losses": state["losses"], "diverged": why}
    with torch.no_grad():
        for k, w in params.items():
            w.copy_(best[k])
    tail = state["recent"]
    return {"steps": state["step"], "losses": state["losses"], "diverged": None,
            "train_loss": sum(tail) / len(tail) if tail else None,
            "eval": evaluate(model, tensors, info, device, opts),
            "best_step": state["best_step"], "stopped_early": stopped_early,
            "resumed_from": resumed_from, "history": state["history"],
            "seconds": before + time.time() - started}


def resolve_device(device):
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: this torch has no CUDA device")
    return device


def device_name(device):
    return torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"


def run_job(job_dir, device):
    """Runs the job in `job_dir` and writes its result.json (and trained weights)."""
    started = time.time()
    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    opts = Options(job, device)
    # Full float32 matrix products on a GPU (TF32 would round inputs to 10 bits).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if job.get("kind") in ("teacher", "importance"):
        mod = load_module(os.path.join(job_dir, "teacher", "model.py"), "genas_teacher_module")
        work = teacher_pass if job["kind"] == "teacher" else importance_pass
        work(job_dir, job, device, opts, mod)
        write_result(job_dir, {"steps": 0, "losses": [], "diverged": None, "train_loss": None,
                               "eval": None, "device": device_name(device),
                               "seconds": time.time() - started})
        return
    mod, model = load_model(os.path.join(job_dir, "model"), "genas_student_model")
    model.to(device).train()
    params = dict(model.named_parameters())
    decay = set(job["decay"])
    unknown = decay - set(params)
    if unknown:
        raise SystemExit(f"error: job.json names parameters the model lacks: {sorted(unknown)}")

    if job.get("kind") == "proxies":
        write_result(job_dir, proxies_job(job_dir, job, model, device, opts, started))
        return
    if job.get("kind") == "final":
        result = final(job_dir, job, model, decay, device, opts, started)
        result["device"] = device_name(device)
        finish(job_dir, mod, model, result, started)
        return
    tensors, meta = read_safetensors(os.path.join(job_dir, job["targets"]))
    teacher = job.get("kind", "distill") == "train"
    info = json.loads(meta["genas.batches" if teacher else "genas.targets"])
    shards = None if teacher else Shards(os.path.join(job_dir, job["targets"]), info)
    temp, alpha = job["temperature"], job["alpha"]
    c = job["train"]
    steps = min(c["steps"], len(info["schedule"]))
    if job.get("kind") == "block":
        result = block_job(job, model, decay, device, opts, steps)
        if result.get("diverged") is None:
            result["eval"] = evaluate(model, tensors, info, device, opts)
        result["device"] = device_name(device)
        finish(job_dir, mod, model, result, started)
        return
    recipe = Recipe(model, c, decay, opts, temp, alpha, job.get("train_only", []))
    losses, diverged = [], None
    for step in range(steps):
        b, t = info["schedule"][step]
        pre = f"schedule.{step}"
        held = tensors if teacher else shards.step(step)
        x = held[pre + ".inputs"].reshape(b, t).to(device)
        y = held[pre + ".targets"].to(device)
        tg = None if teacher else Targets.of(held, pre, info["soft_k"][step], b * t, info["vocab"], device)
        recipe.step(step, x, y, tg)
        if len(recipe.pending) >= SETTLE_EVERY or step + 1 == steps:
            diverged = recipe.settle(losses)
            if diverged is not None:
                break

    result = {"steps": len(losses), "losses": losses, "diverged": diverged,
              "device": device_name(device)}
    tail = losses[-20:]
    result["train_loss"] = sum(tail) / len(tail) if tail else None
    if diverged is None and not teacher:
        result["eval"] = evaluate(model, tensors, info, device, opts)
    result["seconds"] = time.time() - started
    finish(job_dir, mod, model, result, started)


def block_job(job, model, decay, device, opts, steps):
    """Blockwise local distillation: layer `layer`'s attention half (`attention`) or FFN half
    trained on the normalised error of its output against the teacher's,
    |y - y_t|^2 / |y_t - x|^2 with x the sub-block's input, from the teacher's activations
    cached in `activations` (per step: the block's input, its attention half's output and its
    output, B*T x C float32 each, one record after another), every weight outside
    `train_only` held: genas_scoring::local's recipe."""
    c = job["train"]
    layer, attention = int(job["layer"]), bool(job["attention"])
    b, t = job["shape"]
    n = b * t * model.arch["d_model"]
    recipe = Recipe(model, c, decay, opts, train_only=job["train_only"])
    block = model.h[str(layer)]
    losses, diverged = [], None
    with open(job["activations"], "rb") as f:
        for step in range(steps):
            f.seek(step * 3 * n * 4)
            raw = f.read(3 * n * 4)
            if len(raw) != 3 * n * 4:
                raise SystemExit(f"error: {job['activations']}: no step {step} of {b}x{t}")
            rec = torch.frombuffer(bytearray(raw), dtype=torch.float32)
            x, mid, out = (rec[k * n:(k + 1) * n].reshape(b, t, -1).to(device) for k in range(3))

            def loss():
                if attention:
                    y = x + block.attn(block.ln_1(x)) if block.attn is not None else x
                    target, base = mid, x
                else:  # the FFN half alone, from the attention half's cached output
                    y = mid + block.mlp(block.ln_2(mid)) if block.mlp is not None else mid
                    target, base = out, mid
                branch = ((target - base).double() ** 2).sum()
                scale = torch.where(branch > 0, 1.0 / branch, torch.ones_like(branch))
                return ((y.double() - target.double()) ** 2).sum() * scale

            recipe.step_on(step, loss)
            if len(recipe.pending) >= SETTLE_EVERY or step + 1 == steps:
                diverged = recipe.settle(losses)
                if diverged is not None:
                    break
    tail = losses[-20:]
    return {"steps": len(losses), "losses": losses, "diverged": diverged,
            "train_loss": sum(tail) / len(tail) if tail else None}


def finish(job_dir, mod, model, result, started):
    """Writes the trained weights (unless training diverged) and result.json."""
    if result.get("diverged") is None:
        # The trained weights, for what genas measures on its own engine.
        mod.save_safetensors({k: t.detach().cpu() for k, t in model.state_dict().items()},
                             os.path.join(job_dir, "trained.safetensors"))
    result.setdefault("seconds", time.time() - started)
    write_result(job_dir, result)


def serve(device):
    """A long-lived runner: reads job directories from stdin, one per line, runs each, and
    answers one line per job on stdout: `done DIR`, or `failed DIR: why` (the job's error,
    one line). Torch is imported once; the process ends when stdin closes."""
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever a job prints must not be taken for an answer
    for line in sys.stdin:
        job_dir = line.strip()
        if not job_dir:
            continue
        try:
            run_job(job_dir, device)
            answer = f"done {job_dir}"
        except (Exception, SystemExit) as e:  # a job's failure is its own, not the slot's
            why = " ".join(str(e).split()) or type(e).__name__
            answer = f"failed {job_dir}: {why}"
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        out.write(answer + "\n")
        out.flush()


if __name__ == "__main__":
    args = sys.argv[1:]
    dev = "cpu"
    if "--device" in args:
        i = args.index("--device")
        dev = args[i + 1] if i + 1 < len(args) else ""
        del args[i:i + 2]
    serving = args == ["--serve"]
    if (len(args) != 1 and not serving) or dev not in ("cpu", "cuda", "auto"):
        raise SystemExit("usage: python runner.py JOB_DIR [--device cpu|cuda|auto]\n"
                         "       python runner.py --serve [--device cpu|cuda|auto]")
    dev = resolve_device(dev)
    if serving:
        serve(dev)
    else:
        run_job(args[0], dev)
