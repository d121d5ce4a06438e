#!/usr/bin/env python3
"""Compare genas's training engine with the PyTorch CPU reference (torch_gpt.py).

For each configuration, runs `genas bench train ... --json` and
`python3 torch_gpt.py ... --json` alternately, --rounds times each (the order flips every
round so neither side always runs on a warmer machine), then prints median steps/s for both,
the ratio genas / pytorch, genas's gemm_fraction, and each round's own ratio (its two runs
are adjacent in time) with their median and range: how far one run's ratio can be trusted.

    cargo build --release
    python3 experiments/engine-bench/compare.py                      # small + large, 3 rounds
    python3 experiments/engine-bench/compare.py --config small --rounds 5
    python3 experiments/engine-bench/compare.py --d-model 192 --layers 3 --heads 6   # custom
    python3 experiments/engine-bench/compare.py --json               # JSON summary on stdout
    python3 experiments/engine-bench/compare.py --block llama        # rope + RMSNorm + SwiGLU

If `import torch` fails, says so in one line and runs (and prints) the genas side only,
exiting 0. Needs nothing beyond the standard library (and torch for the reference side).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TORCH_SCRIPT = os.path.join(HERE, "torch_gpt.py")

CONFIGS = {
    "small": dict(d_model=128, layers=4, heads=4, seq=64, batch=32, vocab=65),
    "large": dict(d_model=256, layers=6, heads=8, seq=128, batch=16, vocab=65),
}
MODEL_KEYS = ("d_model", "layers", "heads", "seq", "batch", "vocab")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def last_json_object(text):
    """The last line of `text` that parses as a JSON object."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    raise ValueError("no JSON object in output")


def run_json(cmd, timeout):
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout}s: {' '.join(cmd)}")
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        raise RuntimeError(
            f"exit {p.returncode}: {' '.join(cmd)}\n    " + "\n    ".join(tail)
        )
    try:
        obj = last_json_object(p.stdout)
    except ValueError:
        raise RuntimeError(f"no JSON object on stdout of: {' '.join(cmd)}")
    obj["_wall_s"] = wall
    return obj


def genas_cmd(args, cfg):
    cmd = [
        args.genas, "bench", "train",
        "--d-model", str(cfg["d_model"]),
        "--layers", str(cfg["layers"]),
        "--heads", str(cfg["heads"]),
        "--seq", str(cfg["seq"]),
        "--batch", str(cfg["batch"]),
        "--steps", str(args.steps),
        "--threads", str(args.threads),
        "--json",
    ]
    if args.block == "llama":
        cmd.append("--llama")
    if cfg["vocab"] != 65:  # not part of the agreed interface; only sent when non-default
        cmd[3:3] = ["--vocab", str(cfg["vocab"])]
    return cmd


def torch_cmd(args, cfg):
    return [
        args.python, TORCH_SCRIPT,
        "--d-model", str(cfg["d_model"]),
        "--layers", str(cfg["layers"]),
        "--heads", str(cfg["heads"]),
        "--seq", str(cfg["seq"]),
        "--batch", str(cfg["batch"]),
        "--vocab", str(cfg["vocab"]),
        "--steps", str(args.steps),
        "--warmup", str(args.warmup),
        "--threads", str(args.threads),
        "--block", args.block,
        "--json",
    ]


def torch_version(python):
    """torch.__version__ if `import torch` works in `python`, else (None, reason)."""
    try:
        p = subprocess.run(
            [python, "-W", "ignore", "-c", "import torch; print(torch.__version__)"],
            capture_output=True, text=True, timeout=300,
        )
    except Exception as e:  # noqa: BLE001
        return None, str(e)
    if p.returncode != 0:
        lines = p.stderr.strip().splitlines()
        return None, lines[-1] if lines else f"exit {p.returncode}"
    return p.stdout.strip().splitlines()[-1], None


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def summarize(name, cfg, g_runs, t_runs, rounds=()):
    """`rounds`: per round, {side: steps/s} of the runs that succeeded. A round's two runs are
    minutes apart, so their ratio cancels most of the machine's slow drift; the spread of these
    ratios says how far one run's ratio can be trusted."""
    def col(runs, key):
        return [r[key] for r in runs if isinstance(r.get(key), (int, float))]

    g_sps, t_sps = col(g_runs, "steps_per_s"), col(t_runs, "steps_per_s")
    s = {
        "config": name,
        **cfg,
        "genas_steps_per_s": med(g_sps),
        "genas_runs": g_sps,
        "genas_achieved_gflops": med(col(g_runs, "achieved_gflops")),
        "genas_gemm_gflops": med(col(g_runs, "gemm_gflops")),
        "genas_gemm_fraction": med(col(g_runs, "gemm_fraction")),
        "pytorch_steps_per_s": med(t_sps),
        "pytorch_runs": t_sps,
        "params": None,
        "ratio_genas_over_pytorch": None,
    }
    if s["genas_steps_per_s"] and s["pytorch_steps_per_s"]:
        s["ratio_genas_over_pytorch"] = s["genas_steps_per_s"] / s["pytorch_steps_per_s"]
    ratios = [r["genas"] / r["pytorch"] for r in rounds
              if r.get("genas") and r.get("pytorch")]
    s["round_ratios"] = ratios
    s["round_ratio_median"] = med(ratios)
    s["round_ratio_min"] = min(ratios) if ratios else None
    s["round_ratio_max"] = max(ratios) if ratios else None
    tp = {r.get("params") for r in t_runs if "params" in r}
    gp = {r.get("params") for r in g_runs if "params" in r}
    s["params"] = next(iter(tp or gp), None)
    if tp and gp and tp != gp:
        s["params_mismatch"] = {"genas": sorted(gp), "pytorch": sorted(tp)}
    return s


def print_table(summaries, torch_ver, threads):
    hdr = (
        f"{'config':<8} {'C':>4} {'L':>2} {'H':>2} {'T':>4} {'B':>3} {'params':>10} "
        f"{'genas st/s':>10} {'torch st/s':>10} {'ratio':>6} {'gemm_frac':>9} {'GFLOP/s':>8}"
    )
    print(f"threads={threads}  pytorch={torch_ver or 'unavailable'}  (medians over rounds)")
    print(hdr)
    print("-" * len(hdr))
    for s in summaries:
        params = "-" if s["params"] is None else f"{s['params']:,}"
        print(
            f"{s['config']:<8} {s['d_model']:>4} {s['layers']:>2} {s['heads']:>2} "
            f"{s['seq']:>4} {s['batch']:>3} {params:>10} "
            f"{fmt(s['genas_steps_per_s']):>10} {fmt(s['pytorch_steps_per_s']):>10} "
            f"{fmt(s['ratio_genas_over_pytorch']):>6} {fmt(s['genas_gemm_fraction'], '.3f'):>9} "
            f"{fmt(s['genas_achieved_gflops'], '.1f'):>8}"
        )
        if "params_mismatch" in s:
            print(f"  WARNING: parameter counts differ: {s['params_mismatch']}")
    for s in summaries:
        runs = ", ".join(
            f"{k}=[{' '.join(fmt(x) for x in s[k + '_runs'])}]"
            for k in ("genas", "pytorch")
            if s[k + "_runs"]
        )
        if runs:
            print(f"  {s['config']} steps/s per run: {runs}")
        if s["round_ratios"]:
            print(f"  {s['config']} ratio per round: "
                  f"{' '.join(fmt(x) for x in s['round_ratios'])} "
                  f"(median {fmt(s['round_ratio_median'])}, "
                  f"range {fmt(s['round_ratio_min'])}–{fmt(s['round_ratio_max'])})")


def main(argv=None):
    p = argparse.ArgumentParser(description="genas vs PyTorch CPU training benchmark")
    p.add_argument("--genas", default=os.path.join("target", "release", "genas"),
                   help="genas binary (default target/release/genas, relative to the "
                        "current directory, else to the repository root)")
    p.add_argument("--python", default=sys.executable, help="python for torch_gpt.py")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--block", choices=("gpt2", "llama"), default="gpt2",
                   help="llama: rope, RMSNorm and SwiGLU on both sides")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5, help="pytorch warm-up steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--config", choices=("small", "large", "both"), default="both")
    p.add_argument("--timeout", type=float, default=900, help="seconds per run")
    for k in MODEL_KEYS:
        p.add_argument("--" + k.replace("_", "-"), type=int, default=None,
                       help="custom model (other fields from the small config)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    args = p.parse_args(argv)

    if not os.path.exists(args.genas) and not os.path.isabs(args.genas):
        alt = os.path.join(REPO, args.genas)
        if os.path.exists(alt):
            args.genas = alt
    have_genas = os.path.isfile(args.genas) and os.access(args.genas, os.X_OK)
    if not have_genas:
        log(f"genas binary not found at {args.genas} (run `cargo build --release` first)")

    tver, why = torch_version(args.python)
    if tver is None:
        print(f"import torch failed ({why}); running the genas side only")

    custom = {k: getattr(args, k) for k in MODEL_KEYS if getattr(args, k) is not None}
    if custom:
        configs = [("custom", {**CONFIGS["small"], **custom})]
    elif args.config == "both":
        configs = [(n, CONFIGS[n]) for n in ("small", "large")]
    else:
        configs = [(args.config, CONFIGS[args.config])]

    sides = []
    if have_genas:
        sides.append(("genas", genas_cmd))
    if tver is not None:
        sides.append(("pytorch", torch_cmd))
    if not sides:
        log("nothing to run")
        return 2 if not have_genas else 0

    summaries, failed = [], False
    for name, cfg in configs:
        runs = {"genas": [], "pytorch": []}
        per_round = []
        for r in range(args.rounds):
            per_round.append({})
            order = sides if r % 2 == 0 else list(reversed(sides))
            for side, make in order:
                cmd = make(args, cfg)
                try:
                    out = run_json(cmd, args.timeout)
                except RuntimeError as e:
                    log(f"[{name} round {r + 1}] {side} failed: {e}")
                    failed = True
                    continue
                runs[side].append(out)
                if isinstance(out.get("steps_per_s"), (int, float)):
                    per_round[-1][side] = out["steps_per_s"]
                log(f"[{name} round {r + 1}/{args.rounds}] {side}: "
                    f"{out.get('steps_per_s', float('nan')):.3f} steps/s")
        summaries.append(summarize(name, cfg, runs["genas"], runs["pytorch"], per_round))

    if args.json:
        print(json.dumps({
            "threads": args.threads,
            "rounds": args.rounds,
            "steps": args.steps,
            "genas": args.genas if have_genas else None,
            "torch_version": tver,
            "configs": summaries,
        }, indent=2))
    else:
        print_table(summaries, tver, args.threads)

    if not have_genas:
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
