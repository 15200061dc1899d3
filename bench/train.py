"""Training throughput: samples/s at the 256² stage, and Ray Train's overhead against a plain
single-process PyTorch loop doing the same steps on the same device.

  python -m bench.train [--device cpu|cuda] [--steps 3] [--overhead-resolution 32] [--overhead-iterations 20]

Also prints the achieved FLOP/s of the 256² step (its matmul and convolution FLOPs counted from the
operators, refine_ray.nn.throughput) against a dense matmul's FLOP/s measured in the same run.
Prints figures; asserts nothing. On a GPU it also projects the paper's full schedule
(7 stages × 10,000 iterations × batch 4) from the measured per-stage rates.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from refine_ray import storage
from refine_ray.cluster import ensure_ray
from refine_ray.nn.progressive import resolutions
from refine_ray.nn.throughput import count_flops, matmul_flops_per_s
from refine_ray.training.analytic_data import analytic_pair, write_analytic_dataset
from refine_ray.training.batches import COLUMNS, crop_and_pad, decode_for_training, read_validation, reduce_images
from refine_ray.training.config import TrainConfig
from refine_ray.training.gan import ConditionalGan
from refine_ray.training.loop import fade_alpha
from refine_ray.training.trainer import train


def stage_rate(cfg: TrainConfig, stage: int, x: torch.Tensor, y: torch.Tensor, steps: int, warmup: int = 1,
               flops: dict | None = None) -> float:
    """samples/s of ConditionalGan.step at one stage (synchronised on GPU); with `flops`, the warm-up
    step's FLOPs are counted into flops["per_step"]."""
    gan = ConditionalGan(cfg, x.device)
    r = resolutions(cfg.model.max_resolution)[stage]
    xs, ys = reduce_images(x, r), reduce_images(y, r)
    for i in range(warmup):
        if flops is not None and i == 0:
            flops["per_step"] = count_flops(lambda: gan.step(xs, ys, stage, 0.5 if stage else 1.0))
        else:
            gan.step(xs, ys, stage, 0.5 if stage else 1.0)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        gan.step(xs, ys, stage, 0.5 if stage else 1.0)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * x.shape[0] / (time.perf_counter() - t)


def plain_loop(cfg: TrainConfig, data_uri: str, device: str) -> list[float]:
    """The same schedule as the Ray job (all stages, same batch, reduction, crop-and-pad), no Ray."""
    torch.manual_seed(0)
    gan = ConditionalGan(cfg, device)
    # The training split read once into memory (the Ray job streams it through Ray Data).
    import pyarrow.parquet as pq

    files = storage.list_files(storage.join(data_uri, "train"), suffixes=[".parquet"])
    import pyarrow as pa

    data = decode_for_training(pa.concat_tables([pq.read_table(f, columns=COLUMNS) for f in files]))
    x_all, y_all = torch.from_numpy(data["input"]), torch.from_numpy(data["target"])
    aug = torch.Generator().manual_seed(1)
    bs, n = cfg.schedule.batch_size, cfg.schedule.iterations_per_stage
    rates, k = [], 0
    for stage, r in enumerate(resolutions(cfg.model.max_resolution)):
        t = time.perf_counter()
        for it in range(n):
            idx = [(k + j) % len(x_all) for j in range(bs)]
            k += bs
            x = reduce_images(x_all[idx].to(device), r)
            y = reduce_images(y_all[idx].to(device), r)
            x, y = crop_and_pad([x, y], int(round(cfg.schedule.crop_pad * r)), aug, fills=[-1.0, -1.0])
            gan.step(x, y, stage, fade_alpha(stage, it, cfg))
        rates.append(n * bs / (time.perf_counter() - t))
    return rates


def lr_curves(out_png: str, iterations: int, max_resolution: int, max_channels: int) -> None:
    """The equalized-lr decision in a picture: L1 per step of the paper setting (plain init, lr 1e-5)
    against PGGAN's (equalized lr, lr 1e-3) and plain init at lr 1e-3, same data and schedule, no Ray."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    pairs = [analytic_pair(max_resolution * 2, rng) for _ in range(16)]
    x_all = torch.from_numpy(np.stack([q[0] for q in pairs]).transpose(0, 3, 1, 2).copy())
    y_all = torch.from_numpy(np.stack([q[1] for q in pairs]).transpose(0, 3, 1, 2).copy())
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, eq, lr in (("paper: plain init, lr 1e-5", False, 1e-5), ("plain init, lr 1e-3", False, 1e-3),
                          ("equalized lr, lr 1e-3 (PGGAN)", True, 1e-3)):
        torch.manual_seed(0)
        cfg = TrainConfig.model_validate({"model": {"max_resolution": max_resolution, "max_channels": max_channels,
                                                    "equalized_lr": eq},
                                          "optim": {"lr_g": lr, "lr_d": lr},
                                          "schedule": {"iterations_per_stage": iterations}})
        gan, l1, k = ConditionalGan(cfg), [], 0
        aug = torch.Generator().manual_seed(1)
        for stage, r in enumerate(resolutions(max_resolution)):
            for it in range(iterations):
                idx = [(k + j) % 16 for j in range(4)]
                k += 4
                xb, yb = crop_and_pad([reduce_images(x_all[idx], r), reduce_images(y_all[idx], r)],
                                      int(round(cfg.schedule.crop_pad * r)), aug, fills=[-1.0, -1.0])
                l1.append(gan.step(xb, yb, stage, fade_alpha(stage, it, cfg))["l1"])
        print(f"{label}: L1 first 10 steps {np.mean(l1[:10]):.4f}, last 10 steps {np.mean(l1[-10:]):.4f}")
        ax.plot(l1, label=label, lw=0.8)
    for s_ in range(1, len(resolutions(max_resolution))):
        ax.axvline(s_ * iterations, color="grey", lw=0.5)
    ax.set_yscale("log")
    ax.set_xlabel("iteration (stage boundaries in grey)")
    ax.set_ylabel("L1 (network units)")
    ax.set_title(f"analytic data, stages 4…{max_resolution}, batch 4, max {max_channels} channels")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    print(f"wrote {out_png}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=3, help="timed steps at 256² (after 1 warm-up step)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    p.add_argument("--matmul-n", type=int, default=2048, help="side of the dense matmul the step is held against")
    p.add_argument("--overhead-resolution", type=int, default=32, help="max resolution of the overhead comparison")
    p.add_argument("--overhead-iterations", type=int, default=20, help="iterations per stage in the comparison")
    p.add_argument("--skip-ray", action="store_true", help="only the 256² figure")
    p.add_argument("--skip-256", action="store_true", help="only the Ray Train overhead comparison")
    p.add_argument("--curves", metavar="PNG", help="only draw the learning-rate comparison to PNG")
    p.add_argument("--curves-iterations", type=int, default=60)
    args = p.parse_args(argv)
    if args.curves:
        torch.set_num_threads(args.threads or 1)
        lr_curves(args.curves, args.curves_iterations, 16, 32)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(f"device: {dev} ({torch.cuda.get_device_name(0) if dev.type == 'cuda' else os.cpu_count()} "
          f"{'' if dev.type == 'cuda' else 'cores'}), torch {torch.__version__}, threads {torch.get_num_threads()}")

    # 1. samples/s at the 256² stage, full paper networks, batch 4, inside the fade-in (both paths run).
    rng = np.random.default_rng(0)
    pairs = [analytic_pair(256, rng) for _ in range(args.batch_size)]
    x = torch.from_numpy(np.stack([q[0] for q in pairs]).transpose(0, 3, 1, 2).copy()).to(dev)
    y = torch.from_numpy(np.stack([q[1] for q in pairs]).transpose(0, 3, 1, 2).copy()).to(dev)
    results = {}
    for bf16 in ([] if args.skip_256 else [False, True] if dev.type == "cuda" else [False]):
        cfg = TrainConfig.model_validate({"workers": {"bf16": bf16}, "schedule": {"batch_size": args.batch_size}})
        counted: dict = {}
        rate = stage_rate(cfg, 6, x, y, args.steps, flops=counted)
        tag = "_bf16" if bf16 else ""
        results[f"256_fade_samples_per_s{tag}"] = rate
        print(f"256² stage (fade-in, DCE|D|DCE, batch {args.batch_size}{', bf16' if bf16 else ''}): {rate:.2f} samples/s")
        # 2. how far that is from the machine's limit: the step's FLOPs against a dense matmul, same run
        peak = matmul_flops_per_s(dev, torch.bfloat16 if bf16 else torch.float32, args.matmul_n)
        achieved = counted["per_step"] * rate / args.batch_size
        results.update({f"flops_per_step{tag}": counted["per_step"], f"achieved_flop_per_s{tag}": achieved,
                        f"matmul_flop_per_s{tag}": peak, f"fraction_of_matmul{tag}": achieved / peak})
        print(f"  {counted['per_step'] / 1e9:.1f} GFLOP per step → {achieved / 1e9:.2f} GFLOP/s achieved; dense "
              f"{args.matmul_n}² matmul {peak / 1e9:.2f} GFLOP/s → {100 * achieved / peak:.1f} % of it")
        if dev.type == "cuda":
            per_stage = [stage_rate(cfg, s, x, y, args.steps * 5) for s in range(7)]
            hours = sum(10_000 * 4 / r for r in per_stage) / 3600
            print(f"  projected paper schedule (7 × 10,000 it × batch 4): {hours * 60:.1f} min")

    if args.skip_ray:
        print(json.dumps(results))
        return 0

    # 2. Ray Train vs plain loop: same schedule, same data, same device, 1 worker.
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        # One Ray Data pass per stage: each pass restarts the stream, a fixed cost the plain loop lacks.
        n_train = max(16, args.overhead_iterations * args.batch_size)
        data = write_analytic_dataset(f"{tmp}/data", n_train=n_train, n_test=4, size=args.overhead_resolution)
        cfg = TrainConfig.model_validate({
            "model": {"max_resolution": args.overhead_resolution},
            "schedule": {"iterations_per_stage": args.overhead_iterations, "batch_size": args.batch_size,
                         "checkpoint_every": 10**9, "log_every": 10**9, "val_samples": 4},
            "workers": {"num_workers": 1, "use_gpu": dev.type == "cuda", "cpus_per_worker": 1.0, "max_failures": 0},
        })
        t = time.perf_counter()
        plain = plain_loop(cfg, data, args.device)
        plain_wall = time.perf_counter() - t
        ensure_ray(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        t = time.perf_counter()
        res = train(cfg, data=data, storage_uri=f"{tmp}/runs", name="bench")
        ray_wall = time.perf_counter() - t
        recs = [json.loads(line) for line in open(f"{res.run_dir}/metrics.jsonl")]
        ray_rates = [r["samples_per_s"] for r in recs if r["kind"] == "stage_end"]
        ray.shutdown()
    print(f"overhead comparison ({args.overhead_iterations} it/stage, stages {resolutions(args.overhead_resolution)}):")
    for r, a, b in zip(resolutions(args.overhead_resolution), plain, ray_rates):
        print(f"  {r:>3}²: plain {a:7.2f} samples/s, Ray Train {b:7.2f} samples/s, overhead {100 * (a / b - 1):+.1f} %")
    total_plain = len(plain) * args.overhead_iterations * args.batch_size / sum(
        args.overhead_iterations * args.batch_size / a for a in plain)
    total_ray = len(ray_rates) * args.overhead_iterations * args.batch_size / sum(
        args.overhead_iterations * args.batch_size / b for b in ray_rates)
    print(f"  steady state, all stages: plain {total_plain:.2f}, Ray {total_ray:.2f} samples/s "
          f"→ overhead {100 * (total_plain / total_ray - 1):+.1f} %")
    print(f"  wall clock incl. start-up, validation, checkpoints: plain {plain_wall:.1f} s, Ray Train {ray_wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
