#!/usr/bin/env python3
"""Does the Llama block's position and norm belong in a space? A paired measurement.

Draws N architectures from an experiment's space (`genas space sample`, within its
constraints), and trains each one three times with `genas train` on the experiment's data,
same steps, seed and recipe: as drawn (learned positions, LayerNorm), with rope, and with
rope + RMSNorm. Prints each architecture's validation bits and the paired differences to the
drawn one: mean, a 95% bootstrap interval, and how many of the N it improved, overall and by
attention kind; and the parameters each variant saves.

    cargo build --release
    python3 experiments/benchmarks/rope_rmsnorm.py experiments/quick.toml --n 20 --steps 1000

Needs only the standard library. Results: experiments/benchmarks/rope_rmsnorm-quick.txt.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

VARIANTS = {
    "drawn": {},
    "rope": {"position": {"kind": "rope", "theta": 10000.0}},
    "rope+rmsnorm": {"position": {"kind": "rope", "theta": 10000.0}, "norm": "rmsnorm"},
}


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr.strip()}")
    return json.loads(p.stdout)


def interval(diffs, rng, n=4000):
    means = sorted(statistics.fmean(rng.choices(diffs, k=len(diffs))) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("experiment")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7, help="seeds the draw of architectures")
    ap.add_argument("--genas", default=os.path.join("target", "release", "genas"))
    a = ap.parse_args()
    drawn = run([a.genas, "space", "sample", a.experiment, "--n", str(a.n),
                 "--seed", str(a.seed), "--json"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, d in enumerate(drawn):
            row = {"summary": d["summary"],
                   "kind": d["architecture"]["layers"][0]["attention"]["kind"]}
            for name, change in VARIANTS.items():
                arch = dict(d["architecture"], **change)
                path = os.path.join(tmp, f"{k}-{name}.json")
                with open(path, "w") as f:
                    json.dump(arch, f)
                r = run([a.genas, "train", path, "--experiment", a.experiment,
                         "--steps", str(a.steps), "--out", os.path.join(tmp, "w.safetensors"),
                         "--json"])
                row[name] = r["validation_bits"]
                row[name + " params"] = r["params"]
                unit = r["bits_unit"]
            rows.append(row)
            print(f"{k + 1:>3}/{len(drawn)} {row['summary']:<48} "
                  + "  ".join(f"{v} {row[v]:.4f}" for v in VARIANTS), file=sys.stderr, flush=True)
    rng = random.Random(0)
    print(f"{len(rows)} architectures from {a.experiment} (seed {a.seed}), {a.steps} steps each, "
          f"validation {unit}; difference to the drawn architecture (negative is better):\n")
    print(f"{'variant':<14} {'group':<10} {'n':>3} {'mean Δ':>8}  {'95% interval':<20} {'better':>7}  params saved")
    kinds = sorted({r["kind"] for r in rows})
    for name in list(VARIANTS)[1:]:
        for group in ["all"] + kinds:
            sel = [r for r in rows if group == "all" or r["kind"] == group]
            diffs = [r[name] - r["drawn"] for r in sel]
            lo, hi = interval(diffs, rng) if len(diffs) > 1 else (diffs[0], diffs[0])
            saved = statistics.fmean(r["drawn params"] - r[name + " params"] for r in sel)
            better = sum(d < 0 for d in diffs)
            print(f"{name:<14} {group:<10} {len(sel):>3} {statistics.fmean(diffs):>+8.4f}  "
                  f"[{lo:+.4f}, {hi:+.4f}]    {better:>3}/{len(sel):<3}  {saved:,.0f}")
    print("\nper architecture:")
    for r in rows:
        print(f"  {r['summary']:<48} " + "  ".join(f"{v} {r[v]:.4f}" for v in VARIANTS))


if __name__ == "__main__":
    main()
