"""Refinement throughput: images/s of the predictor inside Ray Data (jobs/refine.py's pipeline) against a
plain PyTorch loop over the same shards on the same device (goal: Ray Data ≥ 1.0× the plain loop), at
each of `--sizes` in one run.

  python -m bench.refine [--images 1024] [--sizes 64 256] [--batch-size 32] [--gpu --bf16 --channels-last]

Both sides run the same per-unit code (read shard → decode → generator → metrics → write shards): the
plain loop one step after the other in this process, Ray Data through the actor pool, where each actor
reads and decodes the next batch and scores and writes the previous one while the model runs
(inference.overlap; model load and actor start included, as a user sees it). Also prints the bare
generator forward rate. The model is a randomly initialised progressive generator of the paper's
widths (max_channels 128) at each size.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
from refine_ray.cluster import ensure_ray
from refine_ray.inference.batch import find_input_shards, run_refine
from refine_ray.inference.config import RefineConfig
from refine_ray.inference.model import Predictor, depth_range_mm
from refine_ray.inference.units import plan_units, process_unit
from refine_ray.training import checkpoints as ckpt
from refine_ray.training.analytic_data import NORMALIZATION, write_analytic_dataset
from refine_ray.training.checkpoints import load_refiner
from refine_ray.training.config import ModelConfig, TrainConfig


def make_checkpoint(uri: str, size: int, channels: int) -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(model=ModelConfig(generator_input="DCE", max_resolution=size, max_channels=channels))
    gen, _ = ckpt.build_networks(cfg.model_dump(mode="json"))
    stage = int(np.log2(size)) - 2
    ckpt.save_checkpoint(uri, {"format": ckpt.FORMAT, "kind": "progressive", "stage": stage, "resolution": size,
                               "ema": gen.state_dict(), "config": cfg.model_dump(mode="json"),
                               "normalization": NORMALIZATION.to_dict(), "code_version": "bench"})


def steady_rate(output: str) -> float | None:
    """img/s between the first and the last unit's commit (their done-marker times), which leaves out
    the one-time actor start and model load that the end-to-end figure includes."""
    import glob
    import json

    marks = sorted((os.path.getmtime(f), json.load(open(f))["samples_refined"])
                   for f in glob.glob(os.path.join(output, "parts", "*.done.json")))
    if len(marks) < 3 or marks[-1][0] <= marks[0][0]:
        return None
    return sum(n for _, n in marks[1:]) / (marks[-1][0] - marks[0][0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="image sides = model resolutions (paper: 256)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rows-per-shard", type=int, default=64)
    p.add_argument("--max-channels", type=int, default=128)
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    args = p.parse_args(argv)

    import ray

    ensure_ray(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        rows = [measure(args, size) for size in args.sizes]
    finally:
        ray.shutdown()
    print("\nsize  forward  plain  Ray Data  ratio  (img/s; ratio = Ray Data end to end / plain loop, goal >= 1.0)")
    for r in rows:
        print(f"{r['size']:>4}² {r['forward']:8.1f} {r['plain']:6.1f} {r['ray']:9.1f} {r['ratio']:6.2f}")
    return 0


def measure(args, size: int) -> dict:
    device = "cuda" if args.gpu else "cpu"
    precision = "bf16" if args.bf16 else "fp32"
    work = tempfile.mkdtemp(prefix="bench-refine-")
    try:
        data, ck = os.path.join(work, "data"), os.path.join(work, "ck.pt")
        write_analytic_dataset(data, n_train=0, n_test=args.images, size=size, rows_per_shard=args.rows_per_shard)
        make_checkpoint(ck, size, args.max_channels)
        print(f"device={device} precision={precision} channels_last={args.channels_last} images={args.images} "
              f"size={size}² batch={args.batch_size} torch_threads={torch.get_num_threads()}")

        refiner = load_refiner(ck)
        pred = Predictor(refiner, device=device, precision=precision, channels_last=args.channels_last)
        x = np.random.default_rng(0).uniform(-1, 1, (args.batch_size, size, size, 3)).astype(np.float32)
        pred(x)  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 5.0:
            pred(x)
            n += args.batch_size
        if args.gpu:
            torch.cuda.synchronize()
        fwd = n / (time.perf_counter() - t0)
        print(f"generator forward only:            {fwd:9.1f} img/s")

        units, _ = plan_units(find_input_shards(data, "test")[0])
        out_plain = os.path.join(work, "plain")
        t0 = time.perf_counter()
        done = sum(process_unit(u, pred, depth_range_mm(NORMALIZATION.to_dict()), out_plain, args.batch_size,
                                overlap=False)["samples_refined"] for u in units)
        plain = done / (time.perf_counter() - t0)
        print(f"plain PyTorch loop (same units):   {plain:9.1f} img/s  ({done} images)")

        cfg = RefineConfig(checkpoint=ck, input=data, output=os.path.join(work, "ray"), split="test",
                           batch_size=args.batch_size, gpu=args.gpu, precision=precision,
                           channels_last=args.channels_last, num_actors=1,
                           cpus_per_actor=float(torch.get_num_threads()) if not args.gpu else 1.0)
        cfg.report.enabled = False
        t0 = time.perf_counter()
        res = run_refine(cfg)
        rd = res.samples_refined / (time.perf_counter() - t0)
        print(f"Ray Data actor pool (1 actor):     {rd:9.1f} img/s  ({res.samples_refined} images, incl. actor start)")
        steady = steady_rate(os.path.join(work, "ray"))
        print(f"ratio Ray Data / plain loop:       {rd / plain:9.2f}  (goal >= 1.0)")
        if steady is not None:
            print(f"Ray Data steady state:             {steady:9.1f} img/s  (after the first unit: no actor start, no model load)")
            print(f"ratio steady state / plain loop:   {steady / plain:9.2f}")
        return {"size": size, "forward": fwd, "plain": plain, "ray": rd, "ratio": rd / plain, "steady": steady}
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
