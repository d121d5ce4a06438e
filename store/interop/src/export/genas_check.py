"""Checks that this export reproduces the network genas trained.

genas wrote `genas_check.json` here: a few token sequences and the logits genas computed for
them (at every position, or at the `positions` it lists). This script loads the exported model (the PyTorch `model.py` export, or the Hugging Face
one with `transformers`), runs the same tokens in float32 and compares the logits; for a
Hugging Face export with a tokenizer it also checks that the tokenizer encodes and decodes the
stored sample text as genas does. Then it generates a few tokens greedily with the model's own
`generate()` (with its KV cache where it has one) and checks them against the argmax of full
forward passes.

    python3 genas_check.py [EXPORT_DIR]        (default: the directory of this script)

For a checkpoint genas read rather than wrote (`genas teacher import`), genas_check.json names
the checkpoint's folder as `model_dir`; the model and tokenizer are loaded from there.

Prints one line of JSON: {"format", "class", "max_abs_diff", "tolerance", "ok", "tokenizer",
"generate"}. Exit status: 0 when the logits agree within the tolerance, the tokenizer (if any)
matches and generation agrees, 1 when they do not, 2 when torch or transformers is not installed.
"""

import importlib.util
import json
import math
import os
import sys


def fail_import(what, err):
    print(f"genas_check: this check needs {what} ({err}); install it with pip", file=sys.stderr)
    sys.exit(2)


def short(x, n=80):
    s = repr(x)
    return s if len(s) <= n else s[:n] + "..."


def check_tokenizer(directory, check, remote):
    text, ids = check.get("text"), check.get("text_tokens")
    if text is None or ids is None or not os.path.exists(os.path.join(directory, "tokenizer.json")):
        return "absent"
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        fail_import("transformers", e)
    tok = AutoTokenizer.from_pretrained(directory, trust_remote_code=remote)
    got = tok(text, add_special_tokens=False)["input_ids"]
    back = tok.decode(ids, clean_up_tokenization_spaces=False)
    problems = []
    if got != ids:
        problems.append(f"encode gave {short(got)}, expected {short(ids)}")
    if back != text:
        problems.append(f"decode gave {short(back)}, expected {short(text)}")
    return "mismatch: " + "; ".join(problems) if problems else "ok"


def check_generate(model, tokens, context, eos, hf):
    """Greedy generate() against the argmax of full forward passes, up to the first eos."""
    import torch

    prefix = tokens[:, :4]
    n = min(6, context - prefix.shape[1])
    if n <= 0:
        return "absent"
    with torch.no_grad():
        if hf:
            got = model.generate(prefix, max_new_tokens=n, do_sample=False,
                                 attention_mask=torch.ones_like(prefix), pad_token_id=0)
        else:
            got = model.generate(prefix, max_new_tokens=n, temperature=0)
        want = prefix
        for _ in range(n):
            out = model(want)
            logits = out.logits if hf else out
            want = torch.cat([want, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    for b in range(want.shape[0]):
        w, g = want[b].tolist(), got[b].tolist()
        stop = len(w)
        if eos is not None and eos in w[prefix.shape[1]:]:
            stop = w.index(eos, prefix.shape[1]) + 1
        if g[:stop] != w[:stop]:
            return f"mismatch: generate gave {short(g)}, forward passes {short(w)}"
    return "ok"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    directory = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else here)
    with open(os.path.join(directory, "genas_check.json")) as f:
        check = json.load(f)
    fmt, tol = check["format"], float(check.get("tolerance", 1e-4))
    # The model's own folder: this one, or the checkpoint a `genas teacher import` checked.
    directory = os.path.join(directory, check.get("model_dir", "."))
    try:
        import torch
    except ImportError as e:
        fail_import("PyTorch", e)

    tokens = torch.tensor(check["tokens"], dtype=torch.long)
    if fmt == "pytorch":
        path = os.path.join(directory, "model.py")
        spec = importlib.util.spec_from_file_location("genas_model", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.GenasLM.from_pretrained(directory).float().eval()
        with torch.no_grad():
            logits = model(tokens)
        tokenizer = "absent"
        cls = "GenasLM"
        generate = check_generate(model, tokens, model.context, None, hf=False)
    elif fmt == "hf":
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:
            from transformers import AutoModelForCausalLM
        except ImportError as e:
            fail_import("transformers", e)
        with open(os.path.join(directory, "config.json")) as f:
            config = json.load(f)
        # genas's own modeling code (no transformers family fits) needs trust_remote_code.
        remote = "auto_map" in config
        model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=remote)
        model = model.float().eval()
        with torch.no_grad():
            logits = model(tokens).logits
        tokenizer = check_tokenizer(directory, check, remote)
        cls = type(model).__name__
        context = config.get("max_position_embeddings", config.get("n_positions"))
        generate = check_generate(model, tokens, context, config.get("eos_token_id"), hf=True)
    else:
        raise SystemExit(f"genas_check: unknown format {fmt!r} in genas_check.json")

    expected = torch.tensor(check["logits"], dtype=torch.float64)
    # An imported checkpoint at a long context is checked at a few positions of each row.
    if "positions" in check:
        logits = logits[:, check["positions"]]
    report = {"format": fmt, "class": cls, "max_abs_diff": None, "tolerance": tol, "ok": False,
              "tokenizer": tokenizer, "generate": generate}
    if tuple(logits.shape) != tuple(expected.shape):
        report["error"] = f"logits shape {list(logits.shape)}, expected {list(expected.shape)}"
    else:
        diff = (logits.double() - expected).abs().max().item() if expected.numel() else 0.0
        if math.isfinite(diff):
            report["max_abs_diff"] = diff
            report["ok"] = diff <= tol
        else:
            report["error"] = "logits are not finite"
    print(json.dumps(report))
    good = report["ok"] and not tokenizer.startswith("mismatch") and not generate.startswith("mismatch")
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
