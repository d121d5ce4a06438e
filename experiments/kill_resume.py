#!/usr/bin/env python3
"""Kill the default search with SIGKILL at random points, resume it, and count how many
resumed runs end with the same archive as an uninterrupted run.

    cargo build --release
    python3 experiments/kill_resume.py [--kills 20] [--seed 1] [--experiment experiments/quick.toml]

What it does:
1. A prepared archive: the experiment's teacher (`genas teacher train`) and the proxy
   calibration the search screens with (`genas proxies calibrate --n N` at the last rung, N the
   experiment's `search.calibration`, default 40),
   so every trial starts where a search would after its expensive preparation.
2. A reference: the search run uninterrupted on a copy of the prepared archive.
3. Each trial: a fresh copy, `genas search` killed with SIGKILL after a random delay (uniform
   over the reference's duration), then `genas resume r1` until it finishes (`genas search`
   again if the kill came before the run was created).
4. Compares the trial's run with the reference: every candidate (architecture, cost, proxies,
   screen score, rung results), the Pareto front and the hypervolume history. Wall times and
   the measured generation latency are not compared: they are measurements, not decisions.

Prints one line per trial and the count of identical archives; --json writes the summary.
Needs only the Python standard library and the release binary.
"""

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Measurements that legitimately differ between runs.
VOLATILE = {"seconds", "millis", "latency_ms_per_token", "wall_s", "ms_per_token"}


def genas(binary, *args, check=True):
    p = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)
    if check and p.returncode != 0:
        sys.exit(f"error: genas {' '.join(map(str, args))} failed: {p.stderr.strip()}")
    return p


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def snapshot(binary, archive):
    """What must be identical: candidates, front, hypervolume history."""
    show = json.loads(genas(binary, "show", "r1", "--archive", archive, "--json").stdout)
    report = show["report"]
    return {
        "candidates": strip(show["candidates"]),
        "front": strip(report["front"]),
        "hypervolume_history": report["hypervolume_history"],
        "status": report["status"],
        "evaluations": report["evaluations"],
    }


def first_difference(a, b, path=""):
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: missing on one side"
            d = first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--experiment", default=str(ROOT / "experiments" / "quick.toml"))
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "genas"))
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    binary = Path(a.binary)
    if not binary.exists():
        sys.exit(f"error: {binary} not found: run cargo build --release first")
    rng = random.Random(a.seed)
    work = Path(tempfile.mkdtemp(prefix="genas-kill-"))
    plot = work / "front.svg"
    try:
        prepared = work / "prepared"
        t0 = time.time()
        genas(binary, "teacher", "train", a.experiment, "--archive", prepared)
        with open(a.experiment, "rb") as f:
            n = tomllib.load(f).get("search", {}).get("calibration", 40)
        genas(binary, "proxies", "calibrate", a.experiment, "--n", str(n), "--archive", prepared,
              "--out", work / "calibration")
        print(f"prepared archive: teacher and calibration in {time.time() - t0:.0f} s", flush=True)

        reference = work / "reference"
        shutil.copytree(prepared, reference)
        t0 = time.time()
        genas(binary, "search", a.experiment, "--archive", reference, "--plot", plot)
        duration = time.time() - t0
        ref = snapshot(binary, reference)
        print(f"reference: {ref['evaluations']} evaluations in {duration:.1f} s, "
              f"hypervolume {ref['hypervolume_history'][-1][1]:.4f}", flush=True)

        trials = []
        for k in range(a.kills):
            trial = work / f"trial-{k}"
            # A kill that lands after the search ended tests nothing: draw again (the run's
            # length varies with the machine's load).
            for _ in range(5):
                shutil.rmtree(trial, ignore_errors=True)
                shutil.copytree(prepared, trial)
                delay = rng.uniform(0.2, 0.95 * duration)
                child = subprocess.Popen(
                    [str(binary), "search", a.experiment, "--archive", str(trial), "--plot",
                     str(plot)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    child.wait(timeout=delay)
                    finished_before_kill = True
                except subprocess.TimeoutExpired:
                    child.send_signal(signal.SIGKILL)
                    child.wait()
                    finished_before_kill = False
                    break
            resumes = 0
            while True:
                runs = json.loads(genas(binary, "runs", "--archive", trial, "--json").stdout)
                if not runs:
                    genas(binary, "search", a.experiment, "--archive", trial, "--plot", plot)
                    continue
                if runs[0]["status"] == "finished":
                    break
                genas(binary, "resume", "r1", "--archive", trial, "--plot", plot)
                resumes += 1
            got = snapshot(binary, trial)
            diff = first_difference(ref, got)
            trials.append({"kill_after_s": round(delay, 2), "finished_before_kill": finished_before_kill,
                           "resumes": resumes, "identical": diff is None, "difference": diff})
            print(f"trial {k + 1:>2}: killed after {delay:5.1f} s"
                  f"{' (had finished)' if finished_before_kill else ''}, {resumes} resume(s): "
                  f"{'identical' if diff is None else 'DIFFERENT ' + diff}", flush=True)
            if not a.keep:
                shutil.rmtree(trial)
        same = sum(t["identical"] for t in trials)
        killed = sum(not t["finished_before_kill"] for t in trials)
        print(f"{same} of {len(trials)} resumed runs identical to the uninterrupted one "
              f"({killed} killed mid-run)")
        if a.json:
            Path(a.json).write_text(json.dumps({
                "experiment": a.experiment, "seed": a.seed, "reference_s": duration,
                "identical": same, "trials": trials}, indent=2) + "\n")
        return 0 if same == len(trials) else 1
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")


if __name__ == "__main__":
    sys.exit(main())
