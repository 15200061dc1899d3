"""The GPU check: one script, one JSON, within a time budget, nothing downloaded.

On one GPU (or on CPU at tiny sizes, as CI runs it) it measures, with the paper's networks (Tables 1–2)
built from `refine_ray.nn` and random weights and data (throughput does not depend on their values):

  1. refinement img/s at the full resolution: fp32 vs bf16, NCHW vs channels_last, a batch sweep;
  2. training samples/s at the full resolution for batch 4 / 16 / 64 (fp32 and bf16 on a GPU): one critic
     update with the WGAN-GP double backward, one generator update, the EMA, as training runs them;
  3. the FLOPs of one training step (counted from the operators) against a dense matmul in the same run;
  4. a two-process all-reduce of a gradient-sized buffer (NCCL on a GPU, gloo on CPU; two processes on
     one GPU when there is only one — NCCL may refuse that, and then gloo over the same tensors is measured);
  5. a short training run through every stage (4² … full) → the projected time of the paper's schedule
     (7 stages × 10,000 iterations, batch 4, one GPU).

It imports torch, numpy and refine_ray.nn only, so it runs on a machine with nothing else installed
(no Ray, trimesh, pydantic). Goals it reports against: refinement ≥ 8,000 img/s at 256² bf16 on one
H100-class GPU; the paper schedule ≤ 10 minutes there.

  python -m bench.gpu --out gpu.json                    # a GPU, full sizes, ~8 minutes at most
  python -m bench.gpu --tiny --device cpu --out x.json  # the CI dry run (seconds)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
import traceback

import numpy as np
import torch

from refine_ray.nn.losses import critic_wgan_gp_loss, generator_loss
from refine_ray.nn.progressive import ProgressiveCritic, ProgressiveGenerator, resolutions
from refine_ray.nn.throughput import count_flops, matmul_flops_per_s, synchronize, timed

GOAL_REFINE_IMG_S = 8000.0           # 256², bf16, one H100-class GPU
GOAL_SCHEDULE_S = 600.0              # 7 stages × 10,000 iterations
PAPER_ITERATIONS = 10_000
FULL = dict(resolution=256, channels=128, refine_batches=[64, 128, 256, 512, 1024], train_batches=[4, 16, 64],
            run_iterations=20, allreduce_mb=None, matmul_n=8192, seconds=2.0)
TINY = dict(resolution=16, channels=8, refine_batches=[2, 4], train_batches=[2, 4], run_iterations=2,
            allreduce_mb=1.0, matmul_n=256, seconds=0.05)


class Budget:
    """Wall-clock budget shared by the sections: a section that would start past it is skipped."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def networks(res: int, channels: int, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The paper's proposed setting (generator sees D,C,E; critic judges (D, D); pixel loss on D,C,E)."""
    torch.manual_seed(0)
    g = ProgressiveGenerator(3, 3, res, channels, False).to(device)
    d = ProgressiveCritic(2, res, channels, False).to(device)
    return g, d


class TrainStep:
    """One optimisation step as training.gan.ConditionalGan.step runs it for the default model
    (critic update with gradient penalty, generator update, EMA), on networks from refine_ray.nn."""

    def __init__(self, res: int, channels: int, device: torch.device, bf16: bool, channels_last: bool = False):
        self.g, self.d = networks(res, channels, device)
        if channels_last:
            self.g.to(memory_format=torch.channels_last)
            self.d.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=1e-5, betas=(0.0, 0.99))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=1e-5, betas=(0.0, 0.99))
        self.device, self.bf16 = device, bf16 and device.type == "cuda"
        self.kappa = 3e-5

    def __call__(self, x: torch.Tensor, y: torch.Tensor, stage: int, alpha: float) -> None:
        critic = lambda c, img: self.d(c, img, stage, alpha)  # noqa: E731
        cond, real = x[:, :1], y[:, :1]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            with torch.no_grad():
                fake = self.g(x, stage, alpha)
            d_loss, _ = critic_wgan_gp_loss(critic, cond, real, fake[:, :1].float(), 10.0, 1e-3)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        self.d.requires_grad_(False)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            fake = self.g(x, stage, alpha).float()
            g_loss, _ = generator_loss(critic, cond, fake[:, :1], fake, y, kappa=self.kappa)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.d.requires_grad_(True)
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.g.parameters()):
                e.lerp_(p, 0.001)


def _batch(b: int, res: int, device: torch.device, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(b)
    x = (torch.rand(b, 3, res, res, generator=gen) * 2 - 1).to(device)
    y = (torch.rand(b, 3, res, res, generator=gen) * 2 - 1).to(device)
    if channels_last:
        x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
    return x, y


def _oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def refine_sweep(p: dict, device: torch.device, budget: Budget) -> list[dict]:
    res, out = p["resolution"], []
    stage = len(resolutions(res)) - 1
    precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    for precision in precisions:
        for cl in (False, True):
            g, _ = networks(res, p["channels"], device)
            g.eval()
            if cl:
                g.to(memory_format=torch.channels_last)
            for b in p["refine_batches"]:
                row = {"precision": precision, "channels_last": cl, "batch": b}
                if budget.left() < 0:
                    out.append(dict(row, skipped="time budget"))
                    continue
                x, _ = _batch(b, res, device, cl)

                @torch.inference_mode()
                def run():
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                        return g(x, stage, 1.0)
                try:
                    sec, n = timed(run, device, min_seconds=p["seconds"], warmup=2)
                    out.append(dict(row, img_per_s=b / sec, calls=n))
                except RuntimeError as exc:
                    if not _oom(exc):
                        raise
                    out.append(dict(row, error="out of memory"))
                    break
                finally:
                    del x
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
    return out


def train_rates(p: dict, device: torch.device, budget: Budget, flops_ref: dict) -> list[dict]:
    res, out = p["resolution"], []
    stage = len(resolutions(res)) - 1
    precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    for precision in precisions:
        for b in p["train_batches"]:
            row = {"precision": precision, "batch": b, "resolution": res}
            if budget.left() < 0:
                out.append(dict(row, skipped="time budget"))
                continue
            step = TrainStep(res, p["channels"], device, precision == "bf16")
            x, y = _batch(b, res, device)
            try:
                flops = count_flops(lambda: step(x, y, stage, 0.5))   # inside a fade-in: both paths run
                sec, n = timed(lambda: step(x, y, stage, 0.5), device, min_seconds=p["seconds"], warmup=1)
            except RuntimeError as exc:
                if not _oom(exc):
                    raise
                out.append(dict(row, error="out of memory"))
                break
            achieved = flops / sec
            ref = flops_ref.get(precision)
            out.append(dict(row, samples_per_s=b / sec, seconds_per_step=sec, steps=n, flops_per_step=flops,
                            achieved_flop_per_s=achieved, matmul_flop_per_s=ref,
                            fraction_of_matmul=None if not ref else achieved / ref))
            del step, x, y
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out


def _allreduce_worker(rank: int, backend: str, init: str, numel: int, device_type: str, iters: int, queue) -> None:
    import torch.distributed as dist

    try:
        dist.init_process_group(backend, init_method=init, rank=rank, world_size=2)
        dev = torch.device("cuda", rank % torch.cuda.device_count()) if device_type == "cuda" else torch.device("cpu")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        t = torch.ones(numel, device=dev)
        for _ in range(3):
            dist.all_reduce(t)
        synchronize(dev)
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(t)
        synchronize(dev)
        sec = (time.perf_counter() - t0) / iters
        ok = bool(torch.allclose(t[:4].float().cpu(), torch.full((4,), 2.0 ** (iters + 3))))
        if rank == 0:
            queue.put({"ok": ok, "seconds": sec})
        dist.destroy_process_group()
    except Exception as exc:  # reported in the JSON; the other sections still run
        if rank == 0:
            queue.put({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})


def allreduce(p: dict, device: torch.device, numel: int, budget: Budget) -> list[dict]:
    """Two processes all-reduce a `numel`-float buffer (the gradients of both networks)."""
    import torch.multiprocessing as mp

    backends = ["nccl", "gloo"] if device.type == "cuda" else ["gloo"]
    out = []
    ctx = mp.get_context("spawn")
    for backend in backends:
        if budget.left() < 0:
            out.append({"backend": backend, "skipped": "time budget"})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            queue = ctx.Queue()
            init = "file://" + os.path.join(tmp, "rendezvous")
            procs = [ctx.Process(target=_allreduce_worker, args=(r, backend, init, numel, device.type, 10, queue))
                     for r in range(2)]
            for pr in procs:
                pr.start()
            try:
                res = queue.get(timeout=max(30.0, min(120.0, budget.left())))
            except Exception:
                res = {"error": "no result within the time limit"}
            for pr in procs:
                pr.join(timeout=10)
                if pr.is_alive():
                    pr.kill()
        row = {"backend": backend, "processes": 2, "gpus": torch.cuda.device_count() if device.type == "cuda" else 0,
               "megabytes": numel * 4 / 1e6, **res}
        if "seconds" in res:
            # ring all-reduce bus bandwidth: 2·(n−1)/n · bytes / time, n = 2
            row["bus_gb_per_s"] = numel * 4 / res["seconds"] / 1e9
        out.append(row)
        if backend == "nccl" and "error" not in res:
            break
    return out


def short_run(p: dict, device: torch.device, budget: Budget) -> dict:
    """Every stage for `run_iterations` steps at batch 4 (first half fading in) → the paper schedule projected."""
    res, iters = p["resolution"], p["run_iterations"]
    bf16 = device.type == "cuda"
    step = TrainStep(res, p["channels"], device, bf16)
    full_x, full_y = _batch(4, res, device)
    stages = []
    for stage, r in enumerate(resolutions(res)):
        if budget.left() < 0:
            stages.append({"stage": stage, "resolution": r, "skipped": "time budget"})
            continue
        x, y = (torch.nn.functional.avg_pool2d(t, res // r) for t in (full_x, full_y))
        alpha = lambda i: min(1.0, (i + 1) / (iters / 2)) if stage else 1.0  # noqa: E731
        step(x, y, stage, alpha(0))  # warm-up (kernels for this resolution)
        synchronize(device)
        t0 = time.perf_counter()
        for i in range(iters):
            step(x, y, stage, alpha(i))
        synchronize(device)
        sec = (time.perf_counter() - t0) / iters
        stages.append({"stage": stage, "resolution": r, "seconds_per_iteration": sec, "iterations": iters})
    timed_stages = [s for s in stages if "seconds_per_iteration" in s]
    projected = (sum(s["seconds_per_iteration"] for s in timed_stages) * PAPER_ITERATIONS
                 if len(timed_stages) == len(stages) else None)
    return {"batch": 4, "precision": "bf16" if bf16 else "fp32", "stages": stages,
            "projected_schedule_s": projected, "schedule": f"{len(stages)} stages × {PAPER_ITERATIONS} iterations"}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--tiny", action="store_true", help="tiny networks and batches (the CI dry run)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget; later sections are skipped past it")
    ap.add_argument("--out", default="gpu.json")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's; 1 for --tiny on CPU, where more threads only contend)")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = args.threads or (1 if args.tiny and device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    p = dict(TINY if args.tiny else FULL)
    budget = Budget(args.budget_s)
    started = time.perf_counter()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine()),
        "device_type": device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(), "tiny": args.tiny, "resolution": p["resolution"],
        "max_channels": p["channels"], "python": sys.version.split()[0],
        # torch's defaults, as training and refinement run: "fp32" convolutions may use TF32 on Ampere and later
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
        "sections": {},
    }

    def section(name, fn):
        t0 = time.perf_counter()
        try:
            result["sections"][name] = fn()
        except Exception as exc:
            result["sections"][name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
        print(f"[gpu] {name}: {time.perf_counter() - t0:.1f} s", flush=True)

    flops_ref: dict = {}
    section("matmul", lambda: flops_ref.update(
        {"fp32": matmul_flops_per_s(device, torch.float32, p["matmul_n"], p["seconds"]),
         **({"bf16": matmul_flops_per_s(device, torch.bfloat16, p["matmul_n"], p["seconds"])} if device.type == "cuda" else {})})
        or dict(flops_ref, n=p["matmul_n"]))
    section("refine", lambda: refine_sweep(p, device, budget))
    section("train", lambda: train_rates(p, device, budget, flops_ref))
    g, d = networks(p["resolution"], p["channels"], torch.device("cpu"))
    numel = sum(t.numel() for t in list(g.parameters()) + list(d.parameters()))
    if p["allreduce_mb"]:
        numel = int(p["allreduce_mb"] * 1e6 / 4)
    section("allreduce", lambda: allreduce(p, device, numel, budget))
    section("short_run", lambda: short_run(p, device, budget))
    result["wall_s"] = time.perf_counter() - started
    result["goals"] = goals(result)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, default=float)
    print(json.dumps(result["goals"], indent=1))
    print(f"[gpu] wrote {args.out} in {result['wall_s']:.1f} s")
    return result


def goals(result: dict) -> dict:
    """Each goal: the measured figure, the goal, whether it was met (None when not measurable here)."""
    refine = [r for r in result["sections"].get("refine", []) if isinstance(r, dict) and "img_per_s" in r]
    bf16 = [r for r in refine if r["precision"] == "bf16"]
    best = max(bf16 or refine, key=lambda r: r["img_per_s"], default=None)
    run = result["sections"].get("short_run", {})
    proj = run.get("projected_schedule_s") if isinstance(run, dict) else None
    full = result["resolution"] == 256 and result["device_type"] == "cuda"
    return {
        "refine_img_per_s": {"measured": best and best["img_per_s"], "config": best and
                             {k: best[k] for k in ("precision", "channels_last", "batch")},
                             "goal": GOAL_REFINE_IMG_S, "met": (best["img_per_s"] >= GOAL_REFINE_IMG_S) if (best and full and bf16) else None},
        "paper_schedule_s": {"projected": proj, "goal": GOAL_SCHEDULE_S,
                             "met": (proj <= GOAL_SCHEDULE_S) if (proj is not None and full) else None},
        "note": None if full else "not a 256² GPU run: the figures only show the script works",
    }


if __name__ == "__main__":
    main()
