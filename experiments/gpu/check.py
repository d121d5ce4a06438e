"""The GPU check of genas's PyTorch runner (run by check.sh; needs only torch).

On the fixtures `genas bench runner` wrote (jobs with the genas engine's results beside them):
1. parity: every space choice's job trained by the runner on the device against the engine's
   loss at every step (relative difference, 50 steps) and validation cross-entropy;
2. speed: steps/s of the `genas bench train` network (d128, 4 layers, batch 32, context 64)
   under the runner's recipe against plain PyTorch eager (torch.optim.AdamW, clip_grad_norm_);
3. throughput: candidates per hour for the default experiment's rung (its space, 400 steps),
   with 1, 2, 4 and 8 runner processes side by side (`--jobs`), against the engine on one CPU
   core, and the count that gives the most: what `search.device_jobs` should be there.
Prints one table and writes it as JSON.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

TOLERANCE = 1e-4


def run_job(job_dir, device):
    subprocess.run([sys.executable, os.path.join(job_dir, "runner.py"), job_dir,
                    "--device", device], check=True)
    with open(os.path.join(job_dir, "result.json")) as f:
        return json.load(f)


def reference(job_dir):
    with open(os.path.join(job_dir, "reference.json")) as f:
        return json.load(f)


def parity(fixtures, device):
    rows = []
    root = os.path.join(fixtures, "parity")
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        r, ref = run_job(d, device), reference(d)
        worst = max(abs(a - b) / abs(a) for a, b in zip(ref["losses"], r["losses"]))
        ce = abs(ref["eval"]["val_ce"] - r["eval"]["val_ce"]) / ref["eval"]["val_ce"]
        same_len = len(r["losses"]) == len(ref["losses"])
        rows.append({"case": name, "steps": len(r["losses"]), "worst_step_rel": worst,
                     "val_ce_rel": ce,
                     "ok": bool(same_len and worst < TOLERANCE and ce < TOLERANCE)})
    return rows


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def speed(fixtures, device, steps):
    model_dir = os.path.join(fixtures, "bench", "model")
    sys.path.insert(0, model_dir)
    sys.path.insert(0, os.path.join(fixtures, "parity", sorted(os.listdir(os.path.join(fixtures, "parity")))[0]))
    from model import GenasLM
    from runner import Options, Recipe
    with open(os.path.join(model_dir, "architecture.json")) as f:
        arch = json.load(f)
    torch.backends.cuda.matmul.allow_tf32 = False
    gen = torch.Generator().manual_seed(0)
    B, T, V = 32, arch["context"], arch["vocab_size"]
    x = torch.randint(0, V, (B, T), generator=gen).to(device)
    y = torch.randint(0, V, (B * T,), generator=gen).to(device)
    c = {"learning_rate": 1e-3, "warmup_steps": 10, "steps": 1000, "min_lr_ratio": 0.1,
         "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "grad_clip": 1.0}

    def timed(step_fn):
        for i in range(3):
            step_fn(i)
        sync(device)
        start = time.perf_counter()
        for i in range(steps):
            step_fn(i)
        sync(device)
        return steps / (time.perf_counter() - start)

    model = GenasLM(arch).to(device).train()
    decay = {k for k, p in model.named_parameters() if p.dim() >= 2}
    recipe = Recipe(model, c, decay, Options({}, device))
    ours = timed(lambda i: (recipe.step(i, x, y, None), recipe.settle([])))

    plain_model = GenasLM(arch).to(device).train()
    opt = torch.optim.AdamW(plain_model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)

    def plain_step(_):
        z = plain_model(x)
        loss = torch.nn.functional.cross_entropy(z.reshape(-1, V), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain_model.parameters(), 1.0)
        opt.step()
        return loss.item()

    eager = timed(plain_step)
    return {"model": "d128 L4 h4 T64 B32", "runner_steps_per_s": ours,
            "eager_steps_per_s": eager, "ratio": ours / eager}


def throughput(fixtures, device, jobs):
    root = os.path.join(fixtures, "default")
    dirs = [os.path.join(root, n) for n in sorted(os.listdir(root), key=int)]
    if not dirs:
        return None
    start = time.perf_counter()
    pending, running = list(dirs), []
    while pending or running:
        while pending and len(running) < jobs:
            d = pending.pop(0)
            running.append(subprocess.Popen([sys.executable, os.path.join(d, "runner.py"), d,
                                             "--device", device]))
        for p in list(running):
            if p.poll() is not None:
                if p.returncode != 0:
                    raise SystemExit(f"error: a default-experiment job failed ({p.returncode})")
                running.remove(p)
        time.sleep(0.05)
    wall = time.perf_counter() - start
    engine = statistics.median(reference(d)["seconds"] for d in dirs)
    steps = len(reference(dirs[0])["losses"])
    return {"candidates": len(dirs), "steps": steps, "jobs_at_once": jobs, "wall_s": wall,
            "runner_candidates_per_hour": len(dirs) / wall * 3600,
            "engine_s_per_candidate_one_core": engine,
            "engine_candidates_per_hour_per_core": 3600 / engine}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fixtures")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--jobs", default="1,2,4,8",
                    help="runner processes side by side, one throughput run per value (comma-separated)")
    ap.add_argument("--speed-steps", type=int, default=50)
    ap.add_argument("--out", default="gpu-check.json")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: torch {torch.__version__} sees no CUDA device")
    report = {"device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
              "torch": torch.__version__}
    report["parity"] = parity(a.fixtures, a.device)
    report["speed"] = speed(a.fixtures, a.device, a.speed_steps)
    try:
        counts = [int(j) for j in a.jobs.split(",")]
    except ValueError:
        raise SystemExit(f"error: --jobs {a.jobs}: not a comma-separated list of counts")
    if not counts or min(counts) < 1:
        raise SystemExit(f"error: --jobs {a.jobs}: every count must be at least 1")
    runs = [t for t in (throughput(a.fixtures, a.device, j) for j in counts) if t]
    report["throughput"] = runs
    # search.device_jobs: the count with the most candidates per hour.
    report["best_device_jobs"] = (max(runs, key=lambda t: t["runner_candidates_per_hour"])["jobs_at_once"]
                                  if runs else None)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)

    print(f"device {report['device']}, torch {report['torch']}")
    print(f"{'parity case':<22} {'steps':>5} {'worst step':>11} {'val CE':>9}  ok")
    for r in report["parity"]:
        print(f"{r['case']:<22} {r['steps']:>5} {r['worst_step_rel']:>11.1e} {r['val_ce_rel']:>9.1e}  {'yes' if r['ok'] else 'NO'}")
    s = report["speed"]
    print(f"{s['model']}: runner {s['runner_steps_per_s']:.1f} steps/s, eager {s['eager_steps_per_s']:.1f} steps/s, ratio {s['ratio']:.2f}")
    for t in report["throughput"]:
        print(f"default rung ({t['steps']} steps): {t['runner_candidates_per_hour']:.0f} candidates/h "
              f"({t['candidates']} jobs, {t['jobs_at_once']} at once, {t['wall_s']:.1f} s); "
              f"engine {t['engine_candidates_per_hour_per_core']:.0f}/h per CPU core")
    if report["best_device_jobs"]:
        print(f"most candidates per hour with search.device_jobs = {report['best_device_jobs']}")
    print(f"written to {a.out}")
    if not all(r["ok"] for r in report["parity"]):
        raise SystemExit("error: the runner disagrees with the engine beyond 1e-4")


if __name__ == "__main__":
    main()
