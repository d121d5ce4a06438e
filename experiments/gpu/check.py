"""The GPU check of genas's PyTorch runner (run by check.sh; needs only torch).

On the fixtures `genas bench runner` wrote (jobs with the genas engine's results beside them):
1. parity: every space choice's job trained by the runner on the device against the engine's
   loss at every step (relative difference, 50 steps) and validation cross-entropy;
2. speed: steps/s of the `genas bench train` network (d128, 4 layers, batch 32, context 64)
   under the runner's recipe against plain PyTorch eager (torch.optim.AdamW, clip_grad_norm_);
3. throughput: candidates per hour for the default experiment's rung (its space, 400 steps),
   with 1, 2, 4 and 8 runner processes side by side (`--jobs`), against the engine on one CPU
   core, and the count that gives the most: what `search.device_jobs` should be there.
4. at real scale (the fixtures' `real/`, written by `genas bench runner --real`): parity of a
   12M-parameter student at vocabulary 49,152 and context 1,024; for students of 12M, 25M and
   50M parameters, steps/s under the runner's recipe (top-64 distillation, fused AdamW) against
   a plain PyTorch eager loop training the same model, in fp32 and bf16, with the peak device
   memory against genas's device memory model; a final distillation's steps/s with a
   SmolLM2-135M-shaped teacher giving the soft targets every step; and candidates per hour with
   1, 2, 4 and 8 long-lived runner slots on the GPU (`runner.py --serve`, as genas runs them),
   and the `search.device_jobs` that gives the most.
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


def load_runner(fixtures):
    """runner.py and model.py of the fixtures' first parity job, as modules."""
    d = os.path.join(fixtures, "parity", sorted(os.listdir(os.path.join(fixtures, "parity")))[0])
    sys.path.insert(0, d)
    sys.path.insert(0, os.path.join(d, "model"))
    import runner
    import model
    return runner, model, d


def real_parity(fixtures, device):
    rows = []
    root = os.path.join(fixtures, "real", "parity")
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        r, ref = run_job(d, device), reference(d)
        worst = max(abs(a - b) / abs(a) for a, b in zip(ref["losses"], r["losses"]))
        ce = abs(ref["eval"]["val_ce"] - r["eval"]["val_ce"]) / ref["eval"]["val_ce"]
        rows.append({"case": f"real {name}", "steps": len(r["losses"]), "worst_step_rel": worst,
                     "val_ce_rel": ce,
                     "ok": bool(len(r["losses"]) == len(ref["losses"]) and worst < TOLERANCE and ce < TOLERANCE)})
    return rows


RECIPE = {"learning_rate": 1e-3, "warmup_steps": 10, "steps": 1000, "min_lr_ratio": 0.1,
          "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "grad_clip": 1.0}


def peak_reset(device):
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak(device):
    return torch.cuda.max_memory_allocated() if device == "cuda" else None


def real_speed(fixtures, device, batch, steps):
    """Steps/s of each real student under the runner's recipe and plain eager, fp32 and bf16,
    with peak device memory against the model's estimate; and a final distillation's steps/s
    from the SmolLM2-135M-shaped teacher."""
    R, M, _ = load_runner(fixtures)
    root = os.path.join(fixtures, "real", "students")
    rows = []
    gen = torch.Generator().manual_seed(0)
    for name in sorted(os.listdir(root), key=lambda n: int(n.rstrip("M"))):
        with open(os.path.join(root, name, "architecture.json")) as f:
            arch = json.load(f)
        with open(os.path.join(root, name, "estimate.json")) as f:
            estimate = json.load(f)
        V, T = arch["vocab_size"], arch["context"]
        x = torch.randint(0, V, (batch, T), generator=gen).to(device)
        y = torch.randint(0, V, (batch * T,), generator=gen).to(device)
        k = 64
        tg = R.Targets(V, index=torch.randint(0, V, (batch * T, k), generator=gen).to(device),
                       prob=(torch.rand(batch * T, k, generator=gen) / k).to(device))
        for precision in ("fp32", "bf16"):
            def runner_run(opts):
                """Steps/s and peak memory of the runner's recipe on a drawn model."""
                peak_reset(device)
                model, recipe = fresh_recipe(R, M, arch, opts, device)

                def ours(i):
                    recipe.step(i, x, y, tg)
                    recipe.settle([])
                return timed_steps(ours, device, steps), peak(device)
            runner_sps, runner_peak = runner_run(R.Options({"precision": precision}, device))
            # The loss over every row at once, as genas runs it where the device has room.
            whole_sps, whole_peak = runner_run(
                R.Options({"precision": precision, "loss_rows": batch * T}, device))
            opts = R.Options({"precision": precision}, device)
            peak_reset(device)
            plain = M.GenasLM(arch).to(device).train()
            opt = torch.optim.AdamW(plain.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)

            def eager(_):
                with opts.autocast():
                    z = plain(x)
                loss = torch.nn.functional.cross_entropy(z.float().reshape(-1, V), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
                opt.step()
                return loss.item()
            eager_sps = timed_steps(eager, device, steps)
            eager_peak = peak(device)
            del plain, opt
            e = estimate[precision]
            rows.append({"student": name, "params": e["params"], "precision": precision,
                         "batch": batch, "seq": T, "runner_steps_per_s": runner_sps,
                         "runner_whole_loss_steps_per_s": whole_sps, "runner_whole_loss_peak_bytes": whole_peak,
                         "eager_steps_per_s": eager_sps, "ratio": runner_sps / eager_sps,
                         "runner_peak_bytes": runner_peak, "eager_peak_bytes": eager_peak,
                         "estimate_bytes": e["without_context"] if batch == 8 else None,
                         "estimate_line": e["line"]})
    # A final distillation: the teacher's logits every step (top-64 soft targets).
    with open(os.path.join(fixtures, "real", "teacher", "architecture.json")) as f:
        tarch = json.load(f)
    teacher = M.GenasLM(tarch).to(device).eval()
    with open(os.path.join(root, "25M", "architecture.json")) as f:
        arch = json.load(f)
    V, T = arch["vocab_size"], arch["context"]
    x = torch.randint(0, V, (batch, T), generator=gen).to(device)
    y = torch.randint(0, V, (batch * T,), generator=gen).to(device)
    finals = []
    for precision in ("fp32", "bf16"):
        opts = R.Options({"precision": precision}, device)
        peak_reset(device)
        model, recipe = fresh_recipe(R, M, arch, opts, device)

        def step(i):
            recipe.step(i, x, y, R.soft_targets(teacher, x, 2.0, 64, opts))
            recipe.settle([])
        finals.append({"student": "25M", "teacher": "SmolLM2-135M shape", "precision": precision,
                       "steps_per_s": timed_steps(step, device, steps), "peak_bytes": peak(device)})
        del model, recipe
    return rows, finals


def fresh_recipe(R, M, arch, opts, device):
    """A drawn model of `arch` on the device and the runner's recipe over it."""
    model = M.GenasLM(arch).to(device).train()
    decay = {n for n, p in model.named_parameters() if p.dim() >= 2}
    return model, R.Recipe(model, RECIPE, decay, opts, 2.0, 0.5)


def timed_steps(step_fn, device, steps):
    for i in range(2):
        step_fn(i)
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        step_fn(i)
    sync(device)
    return steps / (time.perf_counter() - start)


def real_throughput(fixtures, device, slots_list, jobs, steps):
    """Candidates per hour of real students (hard-label jobs of `steps` steps of 8 sequences)
    through 1, 2, 4, 8 long-lived runner slots on this GPU, as genas feeds them."""
    R, M, parity_dir = load_runner(fixtures)
    work = os.path.join(fixtures, "real", "throughput")
    os.makedirs(work, exist_ok=True)
    batches = os.path.abspath(os.path.join(fixtures, "real", "batches.safetensors"))
    names = ["12M", "25M"]
    dirs = []
    for j in range(jobs):
        name = names[j % len(names)]
        d = os.path.abspath(os.path.join(work, f"job{j}"))
        os.makedirs(os.path.join(d, "model"), exist_ok=True)
        with open(os.path.join(fixtures, "real", "students", name, "architecture.json")) as f:
            arch = json.load(f)
        torch.manual_seed(j)
        model = M.GenasLM(arch)
        M.save_safetensors(model.state_dict(), os.path.join(d, "model", "model.safetensors"))
        with open(os.path.join(d, "model", "architecture.json"), "w") as f:
            json.dump(arch, f)
        for src, dst in ((os.path.join(parity_dir, "model", "model.py"), os.path.join(d, "model", "model.py")),
                         (os.path.join(parity_dir, "runner.py"), os.path.join(d, "runner.py"))):
            with open(src) as f, open(dst, "w") as g:
                g.write(f.read())
        c = dict(RECIPE, steps=steps, batch_size=8, seed=0)
        job = {"kind": "train", "targets": batches, "temperature": 1.0, "alpha": 1.0,
               "decay": sorted(n for n, p in model.named_parameters() if p.dim() >= 2), "train": c}
        with open(os.path.join(d, "job.json"), "w") as f:
            json.dump(job, f)
        dirs.append(d)
    runner_py = os.path.join(parity_dir, "runner.py")
    rows = []
    for k in slots_list:
        env = dict(os.environ)
        if device == "cuda":
            env["CUDA_VISIBLE_DEVICES"] = str(torch.cuda.current_device())
        procs = [subprocess.Popen([sys.executable, runner_py, "--serve", "--device", device],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                 for _ in range(k)]
        # Warm: each slot imports torch and initialises the device before the clock starts.
        start = time.perf_counter()
        pending = list(dirs)
        busy = {}
        import selectors
        sel = selectors.DefaultSelector()
        for p in procs:
            sel.register(p.stdout, selectors.EVENT_READ, p)
        for p in procs:
            if pending:
                d = pending.pop(0)
                p.stdin.write(d + "\n"); p.stdin.flush(); busy[p] = d
        done = 0
        while busy:
            for key, _ in sel.select():
                p = key.data
                line = p.stdout.readline().strip()
                if not line.startswith("done "):
                    raise SystemExit(f"error: a throughput job failed: {line or 'the slot died'}")
                done += 1
                del busy[p]
                if pending:
                    d = pending.pop(0)
                    p.stdin.write(d + "\n"); p.stdin.flush(); busy[p] = d
        wall = time.perf_counter() - start
        for p in procs:
            p.stdin.close(); p.wait()
        rows.append({"slots": k, "jobs": done, "steps": steps, "wall_s": wall,
                     "candidates_per_hour": done / wall * 3600})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fixtures")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--jobs", default="1,2,4,8",
                    help="runner processes side by side, one throughput run per value (comma-separated)")
    ap.add_argument("--speed-steps", type=int, default=50)
    ap.add_argument("--out", default="gpu-check.json")
    ap.add_argument("--real-batch", type=int, default=8, help="sequences per step at real scale")
    ap.add_argument("--real-steps", type=int, default=10, help="timed steps at real scale")
    ap.add_argument("--real-jobs", type=int, default=16, help="jobs per throughput run at real scale")
    ap.add_argument("--real-job-steps", type=int, default=20, help="steps of each throughput job")
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
    real = os.path.isdir(os.path.join(a.fixtures, "real"))
    if real:
        report["parity"] += real_parity(a.fixtures, a.device)
        report["real_speed"], report["real_final"] = real_speed(a.fixtures, a.device, a.real_batch, a.real_steps)
        report["real_throughput"] = real_throughput(a.fixtures, a.device, counts, a.real_jobs, a.real_job_steps)
        best = max(report["real_throughput"], key=lambda t: t["candidates_per_hour"])
        report["device_jobs_to_ship"] = best["slots"]
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
    if real:
        mb = lambda b: "-" if b is None else f"{b / 1e6:.0f} MB"
        print("steps/s (runner: loss in chunks | loss whole; eager: plain PyTorch, CE, AdamW) and peak device memory")
        print(f"{'student':<8}{'prec':<6}{'chunks':>8}{'whole':>8}{'eager':>8}{'ratio':>7}{'peak':>10}{'model':>10}{'eager peak':>11}")
        for r in report["real_speed"]:
            print(f"{r['student']:<8}{r['precision']:<6}{r['runner_steps_per_s']:>8.2f}{r['runner_whole_loss_steps_per_s']:>8.2f}"
                  f"{r['eager_steps_per_s']:>8.2f}{r['runner_whole_loss_steps_per_s'] / r['eager_steps_per_s']:>7.2f}"
                  f"{mb(r['runner_peak_bytes']):>10}{mb(r['estimate_bytes']):>10}{mb(r['eager_peak_bytes']):>11}")
        for r in report["real_final"]:
            print(f"final distillation {r['student']} from the {r['teacher']} teacher, {r['precision']}: "
                  f"{r['steps_per_s']:.2f} steps/s, peak {mb(r['peak_bytes'])}")
        for t in report["real_throughput"]:
            print(f"real students ({t['steps']} steps of 8 x 1024): {t['candidates_per_hour']:.0f} candidates/h "
                  f"with {t['slots']} slot(s) ({t['jobs']} jobs, {t['wall_s']:.1f} s)")
        print(f"search.device_jobs to ship for this GPU: {report['device_jobs_to_ship']}")
    print(f"written to {a.out}")
    if not all(r["ok"] for r in report["parity"]):
        raise SystemExit("error: the runner disagrees with the engine beyond 1e-4")


if __name__ == "__main__":
    main()
