"""Continue the distillation genas ran for this student, anywhere (written by genas export
--with-training).

This folder holds the student genas found (the model files beside this script), and `train.toml`:
the exact recipe of genas's final distillation of it and where its teacher and corpus are. This
script is plain PyTorch (and `transformers` for a Hugging Face export or teacher); it needs no
genas. It

  - reads and tokenizes the corpus as genas did (the character or byte vocabulary of
    genas_vocab.json, the teacher's tokenizer.json, or images quantised to gray levels) and
    splits it into training and validation blocks as genas did;
  - computes the teacher's soft targets on the fly, on the student's device: softmax(z / T),
    above 1,024 tokens its top k with the rest of the mass spread evenly over the others;
  - trains with genas's recipe: alpha * CE + (1 - alpha) * T^2 * KL, AdamW (decay on matrices and
    embeddings), linear warm-up then cosine to a floor, global-norm clipping; it evaluates every
    `eval_every` steps, keeps the best weights and stops after `patience` evaluations without a
    new best;
  - writes a checkpoint every `checkpoint_every` steps (checkpoints/last.pt) and resumes from it
    when run again; logs each step's loss (train_log.jsonl) and the validation bits per
    character (per byte, per pixel); writes the best weights to trained/ in this folder's format.

Run it:

    python train.py                               # the recipe as genas ran it, CPU or one GPU
    python train.py --steps 100000                # longer (warm-up, evaluations and checkpoints
                                                  # follow genas's rules for that many steps)
    torchrun --nproc-per-node 8 train.py          # several GPUs (or CPU processes): each takes
                                                  # its share of every batch; the same steps

With `[train] batch_order` (genas's own draw of sequences for the steps it ran), the first steps
train on exactly genas's batches, and the per-step losses are genas's to float rounding.
"""

import argparse
import array
import hashlib
import importlib.util
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn.functional as F

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

HERE = os.path.dirname(os.path.abspath(__file__))
# Above this many tokens the teacher's soft targets keep their top k (genas's DENSE_VOCAB_MAX).
DENSE_VOCAB_MAX = 1024
# Bytes of text a chunk of a document holds before it is cut after a line end (genas's
# CHUNK_BYTES): the Hugging Face tokenizer encodes each chunk on its own, as genas does.
CHUNK_BYTES = 256 << 10
# Positions x vocabulary entries of logits the loss makes at once.
LOSS_ELEMENTS = 1 << 25
CHECKPOINT_FORMAT = 1


class Bad(Exception):
    """Input that cannot be trained on: one line, before any training."""


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


# --- train.toml ----------------------------------------------------------------------------

SCHEMA = {
    "model": {"format": str, "dir": str, "frozen": list, "masked": list},
    "teacher": {"kind": str, "dir": str},
    "data": {"kind": str, "path": str, "validation_path": str, "tokenizer": str, "vocab": str,
             "tokenizer_file": str, "eos": int, "text_field": str, "seq_len": int,
             "validation_fraction": float, "image_size": int, "gray_levels": int,
             "max_images": int, "val_sequences": int},
    "train": {"steps": int, "batch_size": int, "learning_rate": float, "min_lr_ratio": float,
              "warmup_steps": int, "weight_decay": float, "beta1": float, "beta2": float,
              "eps": float, "grad_clip": float, "temperature": float, "alpha": float,
              "top_k": int, "eval_every": int, "checkpoint_every": int, "patience": int,
              "seed": int, "batch_order": str},
    "genas": None,  # provenance, free-form
}


def read_config(path):
    """train.toml, checked: every key known and of its type, every number in its range."""
    if tomllib is None:
        raise Bad("reading train.toml needs Python 3.11 or later (tomllib)")
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 20)
        cfg = tomllib.loads(raw.decode("utf-8"))
    except OSError as e:
        raise Bad(f"{path}: {e.strerror}")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise Bad(f"{path}: not a TOML file: {str(e).splitlines()[0]}")
    for section, value in cfg.items():
        if section not in SCHEMA:
            raise Bad(f"{path}: unknown section [{section}]")
        keys = SCHEMA[section]
        if keys is None:
            continue
        if not isinstance(value, dict):
            raise Bad(f"{path}: [{section}] is not a table")
        for key, v in value.items():
            if key not in keys:
                raise Bad(f"{path}: unknown key {section}.{key}")
            kind = keys[key]
            ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
            if kind is float and isinstance(v, int) and not isinstance(v, bool):
                value[key], ok = float(v), True
            if not ok:
                raise Bad(f"{path}: {section}.{key} = {v!r} is not {kind.__name__ if kind is not str else 'a string'}")
    for section in ("model", "teacher", "data", "train"):
        if section not in cfg:
            raise Bad(f"{path}: [{section}] is missing")
    need = {"model": ["format", "dir"], "teacher": ["kind", "dir"], "data": ["kind", "path"],
            "train": ["steps", "batch_size", "learning_rate", "min_lr_ratio", "warmup_steps",
                      "weight_decay", "beta1", "beta2", "eps", "grad_clip", "temperature",
                      "alpha", "top_k", "eval_every", "checkpoint_every", "patience", "seed"]}
    for section, keys in need.items():
        for key in keys:
            if key not in cfg[section]:
                raise Bad(f"{path}: {section}.{key} is missing")
    t, d = cfg["train"], cfg["data"]
    checks = [
        (t["steps"] >= 1, "train.steps must be at least 1"),
        (t["batch_size"] >= 1, "train.batch_size must be at least 1"),
        (t["learning_rate"] > 0 and math.isfinite(t["learning_rate"]), "train.learning_rate must be positive"),
        (0 <= t["min_lr_ratio"] <= 1, "train.min_lr_ratio must be in [0, 1]"),
        (t["warmup_steps"] >= 1, "train.warmup_steps must be at least 1"),
        (t["weight_decay"] >= 0, "train.weight_decay must not be negative"),
        (0 <= t["beta1"] < 1 and 0 <= t["beta2"] < 1, "train.beta1 and beta2 must be in [0, 1)"),
        (t["eps"] > 0, "train.eps must be positive"),
        (t["grad_clip"] > 0, "train.grad_clip must be positive"),
        (t["temperature"] > 0 and math.isfinite(t["temperature"]), "train.temperature must be positive"),
        (0 <= t["alpha"] <= 1, "train.alpha must be in [0, 1]"),
        (t["top_k"] >= 1, "train.top_k must be at least 1"),
        (t["eval_every"] >= 1 and t["checkpoint_every"] >= 1, "train.eval_every and checkpoint_every must be at least 1"),
        (t["patience"] >= 1, "train.patience must be at least 1"),
        (t["seed"] >= 0, "train.seed must not be negative"),
        (cfg["model"]["format"] in ("pytorch", "hf"), "model.format must be \"pytorch\" or \"hf\""),
        (cfg["teacher"]["kind"] in ("genas", "pretrained"), "teacher.kind must be \"genas\" or \"pretrained\""),
        (d["kind"] in ("text", "image"), "data.kind must be \"text\" or \"image\""),
        (d.get("seq_len", 1) >= 1, "data.seq_len must be at least 1"),
        (0 < d.get("validation_fraction", 0.05) < 1, "data.validation_fraction must be in (0, 1)"),
        (d.get("val_sequences", 128) >= 1, "data.val_sequences must be at least 1"),
    ]
    if d["kind"] == "text":
        checks.append((d.get("tokenizer") in ("char", "byte", "hf"), "data.tokenizer must be \"char\", \"byte\" or \"hf\""))
    else:
        checks.append((2 <= d.get("gray_levels", 0) <= 256, "data.gray_levels must be in 2..=256"))
        checks.append((1 <= d.get("image_size", 0) <= 1024, "data.image_size must be in 1..=1024"))
    for ok, why in checks:
        if not ok:
            raise Bad(f"{path}: {why}")
    return cfg


def here(p):
    """A path of train.toml, relative to this folder unless absolute."""
    return p if os.path.isabs(p) else os.path.join(HERE, p)


# --- the corpus, as genas reads it ------------------------------------------------------------

def corpus_files(path):
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.rsplit(".", 1)[-1] in ("txt", "jsonl", "parquet")
                       and os.path.isfile(os.path.join(path, f)))
        if not files:
            raise Bad(f"{path}: the folder holds no .txt, .jsonl or .parquet files")
        return files
    if not os.path.isfile(path):
        raise Bad(f"{path}: no such file or folder (data.path)")
    return [path]


def documents(path, field):
    """Every document of the corpus, in genas's order: a .txt file is one document, a .jsonl
    line's `field` one, a .parquet row's `field` one (empty ones make none)."""
    for f in corpus_files(path):
        if f.endswith(".jsonl"):
            with open(f, "rb") as h:
                for number, line in enumerate(h, 1):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line).get(field)
                    except (ValueError, AttributeError):
                        raise Bad(f"{f}: line {number} is not a JSON object")
                    if text:
                        yield text
        elif f.endswith(".parquet"):
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise Bad(f"{f}: reading .parquet needs pyarrow (pip install pyarrow)")
            for text in pq.read_table(f, columns=[field]).column(field).to_pylist():
                if text:
                    yield text
        else:
            with open(f, "rb") as h:
                raw = h.read()
            if b"\0" in raw:
                raise Bad(f"{f}: binary data, not text")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise Bad(f"{f}: not UTF-8 text (invalid byte at offset {e.start})")
            if not text.strip():
                raise Bad(f"{f}: the file is empty")
            yield text


def chunks(text, target=CHUNK_BYTES):
    """`text` cut after a line end once a chunk holds `target` bytes (a longer line cut at a
    character boundary at 4 x target), as genas's tokenizer cuts a document."""
    data = text.encode("utf-8")
    out, start, limit = [], 0, 4 * target
    while start < len(data):
        rest = len(data) - start
        if rest <= target:
            cut = rest
        else:
            nl = data.find(b"\n", start + target)
            if nl != -1 and nl - start < limit:
                cut = nl - start + 1
            elif nl != -1 or rest > limit:
                cut = limit
                while cut > 0 and (data[start + cut] & 0xC0) == 0x80:
                    cut -= 1
            else:
                cut = rest
        out.append(data[start:start + cut].decode("utf-8"))
        start += cut
    return out


def evenly_spaced(n, k):
    marks = [False] * n
    for j in range(k):
        marks[((2 * j + 1) * n) // (2 * k)] = True
    return marks


def round_half_away(x):
    return int(math.floor(x + 0.5))


def split_blocks(stream, min_len, fraction):
    """(training, validation) of a token stream, as genas splits it: blocks of
    min(4096, len/20) tokens (at least min_len), round(blocks * fraction) of them evenly spaced
    for validation."""
    n = len(stream)
    block = min(max(n // 20, min_len), max(4096, min_len))
    blocks = -(-n // block)
    n_val = max(round_half_away(blocks * fraction), 1)
    if n_val >= blocks:
        raise Bad(f"corpus too small: {n} tokens cannot give training and validation splits of at least {min_len} tokens each")
    marks = evenly_spaced(blocks, n_val)
    train = [stream[i * block:(i + 1) * block] for i in range(blocks) if not marks[i]]
    val = [stream[i * block:(i + 1) * block] for i in range(blocks) if marks[i]]
    return torch.cat(train), torch.cat(val)


def text_data(d, vocab_size):
    """(train, validation, tokens per character or None) of a text corpus."""
    path, field = d["path"], d.get("text_field", "text")
    t = d.get("seq_len", 64)
    kind = d["tokenizer"]
    if kind in ("char", "byte"):
        text = "\n".join(documents(path, field))
        if kind == "byte":
            stream = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()
            train, val = split_blocks(stream, t + 1, d.get("validation_fraction", 0.05))
            return train, val, None
        with open(here(d.get("vocab", "genas_vocab.json"))) as f:
            chars = json.load(f)["tokens"]
        index = {c: i for i, c in enumerate(chars)}
        unknown = index.get("\ufffd", 0)
        points = torch.tensor(array.array("l", map(ord, text)), dtype=torch.long)
        train_pts, val_pts = split_blocks(points, t + 1, d.get("validation_fraction", 0.05))
        missing = sorted({chr(c) for c in torch.unique(train_pts).tolist()} - index.keys())
        if missing:
            raise Bad(f"{path}: the corpus holds {len(missing)} character(s) the vocabulary lacks "
                      f"(first {missing[0]!r}); genas_vocab.json is the vocabulary of the corpus genas searched on")
        # Code point -> token; a validation character the vocabulary lacks is its replacement
        # character's token (or 0), as genas maps it.
        table = torch.full((int(points.max()) + 1,), unknown, dtype=torch.long)
        for c, i in index.items():
            if ord(c) < len(table):
                table[ord(c)] = i
        return table[train_pts], table[val_pts], None
    # A Hugging Face tokenizer: each document cut into chunks, each chunk encoded without
    # special tokens, eos after every document (without one, documents joined by a newline).
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise Bad("data.tokenizer = \"hf\" needs the tokenizers package (pip install tokenizers)")
    tf = here(d.get("tokenizer_file", "tokenizer.json"))
    try:
        tok = Tokenizer.from_file(tf)
    except Exception as e:  # the tokenizers library raises its own exception types
        raise Bad(f"{tf}: not a tokenizer.json the tokenizers library reads: {str(e).splitlines()[0] if str(e) else e}")
    eos = d.get("eos")
    ids, chars = array.array("l"), 0
    if eos is None:
        text = "\n".join(documents(path, field))
        pieces = [(text, False)]
    else:
        pieces = ((doc, True) for doc in documents(path, field))
    for text, ends in pieces:
        for c in chunks(text):
            ids.extend(tok.encode(c, add_special_tokens=False).ids)
            chars += len(c)
        if ends:
            ids.append(eos)
    stream = torch.tensor(ids, dtype=torch.long)
    if len(stream) and int(stream.max()) >= vocab_size:
        raise Bad(f"{tf}: the tokenizer gives id {int(stream.max())}, but the student's vocabulary has {vocab_size} entries")
    train, val = split_blocks(stream, t + 1, d.get("validation_fraction", 0.05))
    return train, val, len(stream) / max(chars, 1)


def idx_images(path):
    """(count, rows, cols, pixels uint8) of an IDX image file (optionally gzipped)."""
    if not os.path.isfile(path):
        raise Bad(f"{path}: no such file (data)")
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        import gzip
        raw = gzip.decompress(raw)
    if len(raw) < 16 or raw[:4] != b"\x00\x00\x08\x03":
        raise Bad(f"{path}: not an IDX file of unsigned-byte images")
    count, rows, cols = struct.unpack(">III", raw[4:16])
    if len(raw) - 16 != count * rows * cols or count == 0:
        raise Bad(f"{path}: the IDX header promises {count} images of {rows}x{cols}, the file holds {len(raw) - 16} bytes")
    pixels = torch.frombuffer(bytearray(raw[16:]), dtype=torch.uint8).reshape(count, rows, cols)
    return pixels


def resample_weights(src, size):
    scale = src / size
    out = []
    for o in range(size):
        a, b = o * scale, (o + 1) * scale
        w, p = [], int(math.floor(a))
        while p < b and p < src:
            lo, hi = max(a, p), min(b, p + 1.0)
            if hi > lo:
                w.append((p, torch.tensor((hi - lo) / scale, dtype=torch.float32)))
            p += 1
        out.append(w)
    return out


def image_tokens(pixels, size, levels):
    """Each image area-resampled to size x size and quantised to `levels` gray levels, in
    float32 operation for operation as genas does it; (count * size * size) tokens."""
    n, rows, cols = pixels.shape
    img = pixels.float()
    wr, wc = resample_weights(rows, size), resample_weights(cols, size)
    out = torch.empty(n, size, size, dtype=torch.long)
    for r, row_w in enumerate(wr):
        for c, col_w in enumerate(wc):
            acc = torch.zeros(n, dtype=torch.float32)
            for y, wy in row_w:
                for x, wx in col_w:
                    acc = acc + (wy * wx) * img[:, y, x]
            q = torch.floor(acc * float(levels) / 256.0).long().clamp(max=levels - 1)
            out[:, r, c] = q
    return out.reshape(-1)


def image_data(d):
    levels, size = d["gray_levels"], d["image_size"]
    train = idx_images(d["path"])
    if "validation_path" in d:
        val = idx_images(d["validation_path"])
    else:
        n_val = max(round_half_away(len(train) * d.get("validation_fraction", 0.05)), 1)
        if n_val >= len(train):
            raise Bad(f"{d['path']}: {len(train)} image(s) cannot give both a training and a validation split")
        marks = torch.tensor(evenly_spaced(len(train), n_val))
        train, val = train[~marks], train[marks]
    if "max_images" in d:
        train = train[:d["max_images"]]
    if val.shape[1:] != train.shape[1:]:
        raise Bad(f"validation images are {val.shape[1]}x{val.shape[2]} but training images {train.shape[1]}x{train.shape[2]}")
    return image_tokens(train, size, levels), image_tokens(val, size, levels)


class Data:
    """A split's sequences as genas forms them: text from any offset (inputs, then the next
    tokens as targets), an image after its begin token."""

    def __init__(self, train, val, context, bos):
        self.streams = {"train": train, "val": val}
        self.t, self.bos = context, bos

    def positions(self, split):
        s = self.streams[split]
        return len(s) // self.t if self.bos is not None else max(len(s) - self.t, 0)

    def sequences(self, split, ks):
        s, t = self.streams[split], self.t
        ks = torch.as_tensor(ks, dtype=torch.long)
        if self.bos is not None:
            rows = s[(ks * t).unsqueeze(1) + torch.arange(t)]
            x = torch.cat([torch.full((len(ks), 1), self.bos, dtype=torch.long), rows[:, :-1]], 1)
            return x, rows
        rows = s[ks.unsqueeze(1) + torch.arange(t + 1)]
        return rows[:, :-1], rows[:, 1:]

    def eval_batches(self, b, max_sequences):
        """genas's fixed evaluation set: up to max_sequences evenly spaced, non-overlapping
        sequences of the validation split, in batches of at most b."""
        s, t = self.streams["val"], self.t
        available = len(s) // t if self.bos is not None else max(len(s) - 1, 0) // t
        count = min(max(min(available, max_sequences), 1), available)
        ks = [(j * available // count) * (1 if self.bos is not None else t) for j in range(count)]
        return [self.sequences("val", ks[a:a + b]) for a in range(0, count, b)]


# --- models ----------------------------------------------------------------------------------

def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Net:
    """A model and how to reach its last hidden states and output projection, whatever its
    format: genas's model.py (hidden/head), genas's transformers code, or a transformers
    family (its base model's last hidden state, its output embeddings)."""

    def __init__(self, model, name):
        self.model, self.name = model, name
        own = getattr(model, "transformer", None)
        if hasattr(model, "hidden") and hasattr(model, "head"):
            self.hidden, self.head = model.hidden, model.head
        elif own is not None and hasattr(own, "hidden") and hasattr(own, "head"):
            self.hidden, self.head = own.hidden, own.head
        else:
            base = model.base_model
            self.hidden = lambda x: base(input_ids=x).last_hidden_state
            self.head = lambda: model.get_output_embeddings().weight


def load_net(directory, fmt, role):
    if not os.path.isdir(directory):
        raise Bad(f"{directory}: the {role}'s folder is missing")
    if fmt == "pytorch":
        for f in ("model.py", "architecture.json", "model.safetensors"):
            if not os.path.isfile(os.path.join(directory, f)):
                raise Bad(f"{directory}: {f} is missing; not a genas --format pytorch export")
        mod = load_module(os.path.join(directory, "model.py"), f"genas_{role}_model")
        return Net(mod.GenasLM.from_pretrained(directory), role)
    if not os.path.isfile(os.path.join(directory, "config.json")):
        raise Bad(f"{directory}: config.json is missing; not a Hugging Face checkpoint")
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise Bad("a Hugging Face model needs the transformers package (pip install transformers)")
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True,
                                                     torch_dtype=torch.float32)
    except Exception as e:  # transformers raises many kinds; one line says which
        raise Bad(f"{directory}: transformers cannot load it: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    return Net(model, role)


def vocab_size_of(net):
    return int(net.head().shape[0])


# --- the recipe ------------------------------------------------------------------------------

class Targets:
    """The teacher's side of rows: dense probabilities (n, V), or the top k of each row with the
    rest of the mass spread evenly over the other V - k tokens, never expanded."""

    def __init__(self, v, p=None, index=None, prob=None):
        self.v, self.p, self.index, self.prob = v, p, index, prob
        if prob is not None:
            kept = prob.double().sum(-1, keepdim=True)
            self.rest = ((1.0 - kept) / max(v - prob.shape[1], 1)).clamp(min=0.0).float()

    def rows(self, a, b):
        if self.p is not None:
            return Targets(self.v, p=self.p[a:b])
        t = Targets(self.v, index=self.index[a:b], prob=self.prob[a:b])
        t.rest = self.rest[a:b]
        return t

    def entropy_part(self):
        """sum p log p over the rows (float64): the part of KL not depending on the student."""
        def plogp(x):
            x = x.double()
            return torch.where(x > 0, x * torch.where(x > 0, x, torch.ones_like(x)).log(),
                               torch.zeros_like(x)).sum()
        if self.p is not None:
            return plogp(self.p)
        return plogp(self.prob) + (self.v - self.prob.shape[1]) * plogp(self.rest)

    def cross_part(self, logq):
        """sum p log q over the rows, in logq's dtype."""
        if self.p is not None:
            return (self.p.to(logq.dtype) * logq).sum()
        picked = logq.gather(1, self.index)
        r = self.rest.to(logq.dtype)
        return (self.prob.to(logq.dtype) * picked).sum() + (r[:, 0] * (logq.sum(-1) - picked.sum(-1))).sum()


def chunk_rows(n, v):
    return max(1, min(n, LOSS_ELEMENTS // max(v, 1)))


@torch.no_grad()
def soft_targets(teacher, x, temperature, top_k):
    """softmax(z / T) of the teacher's logits in float64, rounded to float32 once; above 1,024
    tokens only each row's top k."""
    h = teacher.hidden(x)
    h = h.reshape(-1, h.shape[-1])
    w = teacher.head()
    n, v = h.shape[0], w.shape[0]
    k = max(1, min(top_k, v))
    ps, idx = [], []
    for a in range(0, n, chunk_rows(n, v)):
        z = (h[a:a + chunk_rows(n, v)] @ w.T).double()
        e = ((z - z.max(-1, keepdim=True).values) / temperature).exp()
        p = (e / e.sum(-1, keepdim=True)).float()
        if v <= DENSE_VOCAB_MAX:
            ps.append(p)
        else:
            prob, index = p.topk(k, dim=-1)
            ps.append(prob)
            idx.append(index)
    if v <= DENSE_VOCAB_MAX:
        return Targets(v, p=torch.cat(ps))
    return Targets(v, index=torch.cat(idx), prob=torch.cat(ps))


def loss_sum(h, w, y, tg, temp, alpha):
    """sum over rows of alpha * CE + (1 - alpha) * T^2 * KL(p || softmax(z / T)) (CE alone
    without a teacher), the logits made a chunk of rows at a time and recomputed in the
    backward pass when they do not fit at once."""
    n, v = h.shape[0], w.shape[0]
    rows = chunk_rows(n, v)

    def part(hc, a, b):
        z = (hc @ w.T).float()
        ce = F.cross_entropy(z, y[a:b], reduction="sum")
        if tg is None:
            return ce
        return alpha * ce - (1.0 - alpha) * temp * temp * tg.rows(a, b).cross_part(F.log_softmax(z / temp, dim=-1))

    if rows >= n:
        total = part(h, 0, n)
    else:
        total = 0.0
        for a in range(0, n, rows):
            b = min(a + rows, n)
            total = total + torch.utils.checkpoint.checkpoint(
                lambda hc, a=a, b=b: part(hc, a, b), h[a:b], use_reentrant=False)
    if tg is not None:
        total = total + (1.0 - alpha) * temp * temp * tg.entropy_part().float()
    return total


def lr_at(step, t):
    lr, warm = t["learning_rate"], t["warmup_steps"]
    if step < warm:
        return lr * (step + 1) / warm
    span = max(t["steps"] - warm, 1)
    progress = min((step - warm) / span, 1.0)
    floor = lr * t["min_lr_ratio"]
    return floor + 0.5 * (lr - floor) * (1.0 + math.cos(math.pi * progress))


def rescale(t, steps):
    """The recipe for `steps` steps by genas's rules: warm-up over a tenth (1 to 100 steps),
    ten evaluations and checkpoints over the run."""
    t = dict(t)
    t["steps"] = steps
    t["warmup_steps"] = min(max(steps // 10, 1), 100)
    t["eval_every"] = t["checkpoint_every"] = max(steps // 10, 1)
    return t


@torch.no_grad()
def evaluate(net, batches, device, world, rank):
    """Validation cross-entropy (nats per token) over genas's evaluation set, in float64;
    under torchrun each process takes every world-th batch and the sums are added."""
    was = net.model.training
    net.model.eval()
    ce_sum, count = 0.0, 0
    for i, (x, y) in enumerate(batches):
        if i % world != rank:
            continue
        x, y = x.to(device), y.to(device).reshape(-1)
        h = net.hidden(x)
        h = h.reshape(-1, h.shape[-1])
        w = net.head()
        rows = chunk_rows(h.shape[0], w.shape[0])
        for a in range(0, h.shape[0], rows):
            z = (h[a:a + rows] @ w.T).double()
            ce_sum += float(F.nll_loss(F.log_softmax(z, -1), y[a:a + rows], reduction="sum"))
        count += y.numel()
    net.model.train(was)
    if world > 1:
        s = torch.tensor([ce_sum, float(count)], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(s)
        ce_sum, count = float(s[0]), float(s[1])
    return ce_sum / max(count, 1)


def read_batch_order(path, batch):
    """genas's draw of sequences, (steps, batch) indices into the training split."""
    with open(path, "rb") as f:
        data = f.read(1 << 31)
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    info = header["index"]
    if info["dtype"] != "U32" or len(info["shape"]) != 2:
        raise Bad(f"{path}: not a batch order file (a U32 tensor 'index' of steps x batch)")
    a, b = info["data_offsets"]
    index = torch.frombuffer(bytearray(data[8 + n + a:8 + n + b]), dtype=torch.int32).long()
    index = index.reshape(info["shape"])
    if index.shape[1] != batch:
        raise Bad(f"{path}: the batch order draws {index.shape[1]} sequences a step, train.batch_size is {batch}")
    return index


def main():
    ap = argparse.ArgumentParser(description="Continue genas's distillation of this student.")
    ap.add_argument("--config", default=os.path.join(HERE, "train.toml"))
    ap.add_argument("--steps", type=int, help="train this many steps (genas's rules set warm-up, evaluations and checkpoints)")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    ap.add_argument("--out", default=HERE, help="where checkpoints/, train_log.jsonl and trained/ go")
    ap.add_argument("--fresh", action="store_true", help="start over, ignoring a checkpoint")
    ap.add_argument("--quiet", action="store_true", help="no line per step on stdout")
    ap.add_argument("--stop-at", type=int, metavar="STEP",
                    help="checkpoint and stop once STEP steps are done (a later run resumes)")
    args = ap.parse_args()
    try:
        run(args)
    except Bad as e:
        fail(str(e))


def run(args):
    cfg = read_config(args.config)
    t, d = cfg["train"], cfg["data"]
    if args.steps is not None:
        if args.steps < 1:
            raise Bad("--steps must be at least 1")
        t = rescale(t, args.steps)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if t["batch_size"] % world:
        raise Bad(f"train.batch_size {t['batch_size']} does not split over {world} processes")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise Bad("--device cuda: this torch sees no CUDA device")
        if world > 1:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    fmt = cfg["model"]["format"]
    student = load_net(here(cfg["model"]["dir"]), fmt, "student")
    tdir = here(cfg["teacher"]["dir"])
    teacher = load_net(tdir, "hf" if cfg["teacher"]["kind"] == "pretrained" else fmt, "teacher")
    v = vocab_size_of(student)
    if vocab_size_of(teacher) != v:
        raise Bad(f"{tdir}: the teacher's vocabulary has {vocab_size_of(teacher)} entries, the student's {v}")
    if d["kind"] == "text":
        train, val, tokens_per_char = text_data(d, v)
        bos, context = None, d.get("seq_len", 64)
        unit = "bits/byte" if d["tokenizer"] == "byte" else "bits/char"
    else:
        train, val = image_data(d)
        tokens_per_char, bos, context = None, d["gray_levels"], d["image_size"] ** 2
        unit = "bits/dim"
    for name, s in (("training", train), ("validation", val)):
        if len(s) and int(s.max()) >= v:
            raise Bad(f"{d['path']}: the {name} split holds token {int(s.max())}, beyond the student's vocabulary of {v}")
    data = Data(train, val, context, bos)
    n_pos = data.positions("train")
    if n_pos < 1:
        raise Bad(f"{d['path']}: the training split is shorter than one sequence of {context}")
    order = None
    if t.get("batch_order"):
        p = here(t["batch_order"])
        if not os.path.isfile(p):
            raise Bad(f"{p}: no such file (train.batch_order)")
        order = read_batch_order(p, t["batch_size"])
        if int(order.max()) >= n_pos:
            raise Bad(f"{p}: the batch order draws sequence {int(order.max())}, the training split holds {n_pos}; it is not this corpus's")
    val_batches = data.eval_batches(t["batch_size"], d.get("val_sequences", 128))
    bits = lambda nats: nats / math.log(2) * (tokens_per_char or 1.0)

    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    model, tnet = student.model, teacher
    model.to(device).train()
    tnet.model.to(device).eval()
    for q in tnet.model.parameters():
        q.requires_grad_(False)
    # A transformers family's tensors genas's network lacks stay at zero (frozen); its sparse
    # matrices keep their zeros: their gradients are masked, so AdamW never moves them.
    own = dict(model.named_parameters())
    for name in cfg["model"].get("frozen", []) + cfg["model"].get("masked", []):
        if name not in own:
            raise Bad(f"{args.config}: model.frozen or masked names {name!r}, which the student lacks")
    for name in cfg["model"].get("frozen", []):
        own[name].requires_grad_(False)
    masks = {name: (own[name].detach() != 0).to(own[name].dtype) for name in cfg["model"].get("masked", [])}
    named = [(k, q) for k, q in model.named_parameters() if q.requires_grad]
    params = [q for _, q in named]
    masked = [(q, masks[k]) for k, q in named if k in masks]
    decay = [q for _, q in named if q.dim() >= 2]
    rest = [q for _, q in named if q.dim() < 2]
    groups = [g for g in ({"params": decay, "weight_decay": t["weight_decay"]},
                          {"params": rest, "weight_decay": 0.0}) if g["params"]]
    opt = torch.optim.AdamW(groups, lr=t["learning_rate"], betas=(t["beta1"], t["beta2"]),
                            eps=t["eps"], foreach=True)

    os.makedirs(os.path.join(args.out, "checkpoints"), exist_ok=True)
    ckpt = os.path.join(args.out, "checkpoints", "last.pt")
    recipe_key = hashlib.sha256(json.dumps([t, d, cfg["model"], cfg["teacher"], world], sort_keys=True).encode()).hexdigest()
    state = {"step": 0, "best_val": math.inf, "best_step": 0, "bad_evals": 0, "history": []}
    best = {k: q.detach().clone() for k, q in named}
    gen = torch.Generator().manual_seed(t["seed"])
    if os.path.exists(ckpt) and not args.fresh:
        saved = torch.load(ckpt, map_location=device, weights_only=False)
        if saved.get("format") != CHECKPOINT_FORMAT or saved.get("recipe") != recipe_key:
            raise Bad(f"{ckpt}: a checkpoint of another recipe, data or process count; run with --fresh to start over")
        with torch.no_grad():
            for k, q in named:
                q.copy_(saved["weights"][k])
        opt.load_state_dict(saved["optimizer"])
        best, state = saved["best"], saved["state"]
        gen.set_state(saved["generator"])
        if rank == 0:
            print(f"resumed from step {state['step']} ({ckpt})", flush=True)
    log = open(os.path.join(args.out, "train_log.jsonl"), "a") if rank == 0 else None

    B, share = t["batch_size"], t["batch_size"] // world
    stopped_early = False
    started = time.time()
    while state["step"] < t["steps"]:
        step = state["step"]
        if order is not None and step < len(order):
            ks = order[step]
        else:
            ks = torch.randint(n_pos, (B,), generator=gen)
        ks = ks[rank * share:(rank + 1) * share]
        x, y = data.sequences("train", ks)
        x, y = x.to(device), y.to(device).reshape(-1)
        tg = soft_targets(tnet, x, t["temperature"], t["top_k"]) if t["alpha"] < 1 else None
        opt.zero_grad(set_to_none=False)
        h = student.hidden(x)
        h = h.reshape(-1, h.shape[-1])
        loss = loss_sum(h, student.head(), y, tg, t["temperature"], t["alpha"]) / y.numel()
        loss.backward()
        grads = []
        for q in params:
            if q.grad is None:  # a parameter the loss does not reach still decays
                q.grad = torch.zeros_like(q)
            grads.append(q.grad)
        loss = loss.detach()
        for q, m in masked:
            q.grad.mul_(m)
        if world > 1:
            flat = torch.cat([g.reshape(-1) for g in grads] + [loss.reshape(1)])
            torch.distributed.all_reduce(flat)
            flat /= world
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
            loss = flat[-1]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = torch.where(norm > t["grad_clip"], t["grad_clip"] / norm, torch.ones_like(norm))
        for g in grads:
            g.mul_(scale)
        lr = lr_at(step, t)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        value = float(loss)
        if not math.isfinite(value):
            raise SystemExit(f"error: training diverged at step {step}: the loss is {value}")
        state["step"] += 1
        if log is not None:
            log.write(json.dumps({"step": step, "loss": value, "lr": lr}) + "\n")
            if not args.quiet:
                print(f"step {step}  loss {value:.6f}  lr {lr:.3e}", flush=True)
        done = state["step"]
        if done % t["eval_every"] == 0 or done == t["steps"]:
            val_ce = evaluate(student, val_batches, device, world, rank)
            state["history"].append([done, val_ce])
            if val_ce < state["best_val"]:
                state["best_val"], state["best_step"], state["bad_evals"] = val_ce, done, 0
                best = {k: q.detach().clone() for k, q in named}
            else:
                state["bad_evals"] += 1
            stopped_early = state["bad_evals"] >= t["patience"] and done < t["steps"]
            if log is not None:
                log.write(json.dumps({"step": done, "val_ce": val_ce, unit: bits(val_ce)}) + "\n")
                log.flush()
                print(f"eval  step {done}  validation {bits(val_ce):.4f} {unit}  (CE {val_ce:.6f} nats)", flush=True)
        pausing = args.stop_at is not None and done >= args.stop_at and done < t["steps"]
        if (done % t["checkpoint_every"] == 0 or done == t["steps"] or stopped_early or pausing) and rank == 0:
            tmp = ckpt + f".{os.getpid()}.tmp"
            torch.save({"format": CHECKPOINT_FORMAT, "recipe": recipe_key,
                        "weights": {k: q.detach() for k, q in named},
                        "optimizer": opt.state_dict(), "best": best, "state": state,
                        "generator": gen.get_state()}, tmp)
            os.replace(tmp, ckpt)
        if pausing:
            if log is not None:
                log.close()
                print(f"stopped at step {done} as asked; run again to resume from {ckpt}", flush=True)
            if world > 1:
                torch.distributed.destroy_process_group()
            return
        if stopped_early:
            break

    with torch.no_grad():
        for k, q in named:
            q.copy_(best[k])
    if rank == 0:
        out = os.path.join(args.out, "trained")
        os.makedirs(out, exist_ok=True)
        if fmt == "hf":
            model.save_pretrained(out)
        else:
            mod = sys.modules[type(model).__module__]
            mod.save_safetensors(model.state_dict(), os.path.join(out, "model.safetensors"))
        # What loads and reads it beside the weights: the code, the architecture, the vocabulary.
        for f in ("model.py", "architecture.json", "configuration_genas.py", "modeling_genas.py",
                  "genas_vocab.json", "tokenizer.json", "tokenizer_config.json"):
            src = os.path.join(here(cfg["model"]["dir"]), f)
            if os.path.isfile(src) and not os.path.exists(os.path.join(out, f)):
                with open(src, "rb") as a, open(os.path.join(out, f), "wb") as b:
                    b.write(a.read())
        summary = {"steps": state["step"], "best_step": state["best_step"],
                   "stopped_early": stopped_early, "val_ce": state["best_val"],
                   unit: bits(state["best_val"]), "seconds": time.time() - started}
        log.write(json.dumps({"done": summary}) + "\n")
        log.close()
        print(f"done: {state['step']} steps, best validation {bits(state['best_val']):.4f} {unit} at step {state['best_step']}; weights in {out}", flush=True)
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
