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


def dense(tensors, prefix, k, n, v, device):
    """The (n, v) probabilities of one batch's targets, as genas's loss reads them: top-k
    targets get the rest of the mass spread evenly over the other tokens."""
    prob = tensors[prefix + ".probs"].to(device)
    if k == 0:
        return prob.reshape(n, v)
    index = tensors[prefix + ".index"].to(device).reshape(n, k)
    prob = prob.reshape(n, k)
    kept = prob.double().sum(-1, keepdim=True)
    rest = ((1.0 - kept) / max(v - k, 1)).clamp(min=0.0).float()
    out = rest.expand(n, v).clone()
    out.scatter_(1, index, prob)
    return out


def lr_at(step, c):
    lr, warm = c["learning_rate"], c["warmup_steps"]
    if step < warm:
        return lr * (step + 1) / warm
    span = max(c["steps"] - warm, 1)
    progress = min((step - warm) / span, 1.0)
    floor = lr * c["min_lr_ratio"]
    return floor + 0.5 * (lr - floor) * (1.0 + math.cos(math.pi * progress))


def kl_rows(p, logq):
    """KL(p || q) of each row, terms with p = 0 left out."""
    safe = torch.where(p > 0, p, torch.ones_like(p))
    return torch.where(p > 0, p * (safe.log() - logq), torch.zeros_like(p)).sum(-1)


class Recipe:
    """genas's training step: the loss (with soft targets `p`, or hard labels alone when p is
    None), global-norm clipping and AdamW with genas's decay groups."""

    def __init__(self, model, c, decay, temperature=1.0, alpha=1.0):
        self.model, self.c, self.decay = model, c, decay
        self.temp, self.alpha = temperature, alpha
        self.params = dict(model.named_parameters())
        self.m = {k: torch.zeros_like(q) for k, q in self.params.items()}
        self.s = {k: torch.zeros_like(q) for k, q in self.params.items()}

    def step(self, step, x, y, p):
        """One step on inputs x (B, T), targets y (B*T); returns (loss, None) or (None, why
        it diverged)."""
        c, model = self.c, self.model
        z = model(x)
        z = z.reshape(-1, z.shape[-1])
        ce = F.cross_entropy(z, y)
        if p is None:
            loss = ce
        else:
            kl = kl_rows(p, F.log_softmax(z / self.temp, dim=-1)).mean()
            loss = self.alpha * ce + (1.0 - self.alpha) * self.temp * self.temp * kl
        model.zero_grad(set_to_none=True)
        loss.backward()
        value = loss.item()
        params = self.params
        grads = {k: q.grad if q.grad is not None else torch.zeros_like(q) for k, q in params.items()}
        norm = math.sqrt(float(sum(g.double().pow(2).sum() for g in grads.values())))
        if not math.isfinite(value) or not math.isfinite(norm):
            what, bad = ("the loss", value) if not math.isfinite(value) else ("the gradient norm", norm)
            return None, f"training diverged at step {step}: {what} is {bad}"
        scale = c["grad_clip"] / norm if norm > c["grad_clip"] else 1.0
        lr = lr_at(step, c)
        c1 = 1.0 - c["beta1"] ** (step + 1)
        c2 = 1.0 - c["beta2"] ** (step + 1)
        with torch.no_grad():
            for k, w in params.items():
                g = grads[k] * scale
                self.m[k].mul_(c["beta1"]).add_(g, alpha=1.0 - c["beta1"])
                self.s[k].mul_(c["beta2"]).add_(g * g, alpha=1.0 - c["beta2"])
                upd = (self.m[k] / c1) / ((self.s[k] / c2).sqrt() + c["eps"])
                if k in self.decay:
                    upd = upd + c["weight_decay"] * w
                w.sub_(lr * upd)
        return value, None


def evaluate(model, tensors, info, device):
    """Validation cross-entropy, KL(teacher || student) and top-1 agreement over the targets
    file's validation batches, as genas's evaluate_against_teacher computes them."""
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
            p = dense(tensors, pre, info["val_k"][i], n, v, device)
            z = model(x).reshape(n, v).double()
            logq = F.log_softmax(z, dim=-1)
            ce_sum += float(F.nll_loss(logq, y, reduction="sum"))
            kl_sum += float(kl_rows(p.double(), logq).sum())
            agree += int((z.argmax(-1) == p.argmax(-1)).sum())
            tokens += n
    model.train(was_training)
    tokens = max(tokens, 1)
    return {"val_ce": ce_sum / tokens, "kl_to_teacher": kl_sum / tokens,
            "agreement": agree / tokens}


def soft_targets(z, temperature, top_k):
    """genas's SoftTargets::from_logits then dense_f32: softmax(z / T) in float64 rounded to
    float32 once; above 1,024 tokens only the top k kept and the rest spread evenly."""
    n, v = z.shape
    z = z.double()
    e = ((z - z.max(-1, keepdim=True).values) / temperature).exp()
    p = (e / e.sum(-1, keepdim=True)).float()
    if v <= 1024:
        return p
    k = max(1, min(top_k, v))
    prob, index = p.topk(k, dim=-1)
    kept = prob.double().sum(-1, keepdim=True)
    rest = ((1.0 - kept) / max(v - k, 1)).clamp(min=0.0).float()
    out = rest.expand(n, v).clone()
    out.scatter_(1, index, prob)
    return out


def final(job_dir, job, model, decay, device, started):
    """genas's full distillation; returns the result record (the best weights are in model)."""
    # The teacher's model.py under a module name of its own (the student's is `model`).
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "genas_teacher_model", os.path.join(job_dir, "teacher", "model.py"))
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    with open(os.path.join(job_dir, "teacher", "architecture.json")) as f:
        teacher = tm.GenasLM(json.load(f))
    teacher.load_state_dict(tm.load_safetensors(os.path.join(job_dir, "teacher", "model.safetensors")))
    teacher.to(device).eval()
    batches, bmeta = read_safetensors(os.path.join(job_dir, job["batches"]))
    schedule = json.loads(bmeta["genas.batches"])["schedule"]
    tensors, meta = read_safetensors(os.path.join(job_dir, job["targets"]))
    info = json.loads(meta["genas.targets"])
    c = job["train"]
    temp, alpha, top_k = job["temperature"], job["alpha"], job["top_k"]
    recipe = Recipe(model, c, decay, temp, alpha)
    params = recipe.params
    state = {"step": 0, "best_val": math.inf, "best_step": 0, "bad_evals": 0, "history": [],
             "recent": [], "seconds": 0.0, "losses": []}
    best = {k: w.detach().clone() for k, w in params.items()}
    resumed_from = None
    ckpt = os.path.join(job_dir, "checkpoint.pt")
    if os.path.exists(ckpt):
        saved = torch.load(ckpt, map_location=device)
        if saved["job"] == job:
            with torch.no_grad():
                for k, w in params.items():
                    w.copy_(saved["weights"][k])
            recipe.m, recipe.s = saved["m"], saved["s"]
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
        with torch.no_grad():
            zt = teacher(x).reshape(b * t, -1)
        p = soft_targets(zt, temp, top_k)
        value, why = recipe.step(step, x, y, p)
        if why is not None:
            return {"steps": step, "losses": state["losses"], "diverged": why}
        state["losses"].append(value)
        state["recent"] = (state["recent"] + [value])[-20:]
        state["step"] += 1
        if state["step"] % job["eval_every"] == 0 or state["step"] == steps:
            val_ce = evaluate(model, tensors, info, device)["val_ce"]
            state["history"].append([state["step"], val_ce])
            if val_ce < state["best_val"]:
                state["best_val"], state["best_step"], state["bad_evals"] = val_ce, state["step"], 0
                best = {k: w.detach().clone() for k, w in params.items()}
            else:
                state["bad_evals"] += 1
            stopped_early = state["bad_evals"] >= job["patience"] and state["step"] < steps
        if state["step"] % job["checkpoint_every"] == 0 or state["step"] == steps or stopped_early:
            state["seconds"] = before + time.time() - started
            tmp = ckpt + f".{os.getpid()}.tmp"
            torch.save({"job": job, "weights": {k: w.detach() for k, w in params.items()},
                        "m": recipe.m, "s": recipe.s, "best": best, "state": state}, tmp)
            os.replace(tmp, ckpt)
        if stopped_early:
            break
    with torch.no_grad():
        for k, w in params.items():
            w.copy_(best[k])
    tail = state["recent"]
    return {"steps": state["step"], "losses": state["losses"], "diverged": None,
            "train_loss": sum(tail) / len(tail) if tail else None,
            "eval": evaluate(model, tensors, info, device),
            "best_step": state["best_step"], "stopped_early": stopped_early,
            "resumed_from": resumed_from, "history": state["history"],
            "seconds": before + time.time() - started}


def main(job_dir, device):
    started = time.time()
    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    model_dir = os.path.join(job_dir, "model")
    sys.path.insert(0, model_dir)
    from model import GenasLM, load_safetensors  # the candidate's own module

    # Full float32 matrix products on a GPU (TF32 would round inputs to 10 bits).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: this torch has no CUDA device")
    with open(os.path.join(model_dir, "architecture.json")) as f:
        arch = json.load(f)
    model = GenasLM(arch)
    model.load_state_dict(load_safetensors(os.path.join(model_dir, "model.safetensors")))
    model.to(device).train()
    params = dict(model.named_parameters())
    decay = set(job["decay"])
    unknown = set(job["decay"]) - set(params)
    if unknown:
        raise SystemExit(f"error: job.json names parameters the model lacks: {sorted(unknown)}")

    if job.get("kind") == "final":
        result = final(job_dir, job, model, decay, device, started)
        result["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        finish(job_dir, model, result, started)
        return
    tensors, meta = read_safetensors(os.path.join(job_dir, job["targets"]))
    teacher = job.get("kind", "distill") == "train"
    info = json.loads(meta["genas.batches" if teacher else "genas.targets"])
    shards = None if teacher else Shards(os.path.join(job_dir, job["targets"]), info)
    temp, alpha = job["temperature"], job["alpha"]
    c = job["train"]
    steps = min(c["steps"], len(info["schedule"]))
    recipe = Recipe(model, c, decay, temp, alpha)
    losses, diverged = [], None
    for step in range(steps):
        b, t = info["schedule"][step]
        n = b * t
        pre = f"schedule.{step}"
        held = tensors if teacher else shards.step(step)
        x = held[pre + ".inputs"].reshape(b, t).to(device)
        y = held[pre + ".targets"].to(device)
        p = None if teacher else dense(held, pre, info["soft_k"][step], n, info["vocab"], device)
        value, why = recipe.step(step, x, y, p)
        if why is not None:
            diverged = why
            break
        losses.append(value)

    result = {"steps": len(losses), "losses": losses, "diverged": diverged,
              "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}
    tail = losses[-20:]
    result["train_loss"] = sum(tail) / len(tail) if tail else None
    if diverged is None and not teacher:
        result["eval"] = evaluate(model, tensors, info, device)
    result["seconds"] = time.time() - started
    finish(job_dir, model, result, started)


def finish(job_dir, model, result, started):
    """Writes the trained weights (unless training diverged) and result.json."""
    if result.get("diverged") is None:
        # The trained weights, for what genas measures on its own engine.
        from model import save_safetensors
        save_safetensors({k: t.detach().cpu() for k, t in model.state_dict().items()},
                         os.path.join(job_dir, "trained.safetensors"))
    result.setdefault("seconds", time.time() - started)
    tmp = os.path.join(job_dir, f".result.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, os.path.join(job_dir, "result.json"))


if __name__ == "__main__":
    args = sys.argv[1:]
    dev = "cpu"
    if "--device" in args:
        i = args.index("--device")
        dev = args[i + 1] if i + 1 < len(args) else ""
        del args[i:i + 2]
    if len(args) != 1 or dev not in ("cpu", "cuda", "auto"):
        raise SystemExit("usage: python runner.py JOB_DIR [--device cpu|cuda|auto]")
    main(args[0], dev)
