"""Refinement throughput: images/s of the predictor inside Ray Data (jobs/refine.py's pipeline) against a
plain PyTorch loop over the same shards on the same device (goal: Ray Data ≥ 1.0× the plain loop), at
each of `--sizes` in one run.

  python -m bench.refine [--images 1024] [--sizes 64 256] [--batch-size 32] [--gpu --bf16 --channels-last]
  python -m bench.refine --photos 16 [--sizes 256] [--job]     # the photo path, per core and per stage

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
from refine_ray.data.encoding import encoding_from_data
from refine_ray.data.photos import build_photo_sample, read_photo
from refine_ray.data.schema import decode_images, rows_to_table
from refine_ray.geometry import DceNormalization
from refine_ray.inference.api import Refiner
from refine_ray.inference.batch import run_refine
from refine_ray.inference.config import RefineConfig
from refine_ray.inference.inputs import find_input_shards
from refine_ray.inference.model import Predictor, depth_range_mm
from refine_ray.inference.model import refiner_from
from refine_ray.inference.outputs import OutputWriter, assemble
from refine_ray.data.photos import PhotoEncoder, PhotoOptions
from refine_ray.inference.photo_input import extras_of
from refine_ray.inference.units import plan_units, process_unit, refine_decoded
from refine_ray.morphable import fit_landmarks
from refine_ray.synth.face import Identity, make_face
from refine_ray.synth.render import FRGC, render_scan
from refine_ray.training import checkpoints as ckpt
from refine_ray.training.analytic_data import NORMALIZATION, write_analytic_dataset
from refine_ray.training.checkpoints import load_checkpoint, load_refiner, save_checkpoint
from refine_ray.training.config import ModelConfig, TrainConfig


def make_checkpoint(uri: str, size: int, channels: int) -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(model=ModelConfig(generator_input="DCE", max_resolution=size, max_channels=channels))
    gen, _ = ckpt.build_networks(cfg.model_dump(mode="json"))
    stage = int(np.log2(size)) - 2
    ckpt.save_checkpoint(uri, {"format": ckpt.FORMAT, "kind": "progressive", "stage": stage, "resolution": size,
                               "ema": gen.state_dict(), "config": cfg.model_dump(mode="json"),
                               "normalization": NORMALIZATION.to_dict(), "code_version": "bench"})


def photo_bench(args) -> int:
    """Photos per second per core for detect + fit + encode + refine (+ the user-facing files), on one
    thread, and where the time goes. Photos: synthetic FRGC-format renders (640×480, shaded), written
    as PNGs without landmark files, so the dlib detector runs on every one. The model: a randomly
    initialised progressive generator of the paper's widths at --size, with the input encoding of the
    project's default (size², 1.2 px/mm × size/256, DCE+RGB, the default 3DMM). With --job, the same
    photos through jobs/refine.py's pipeline (Ray Data, one actor per CPU) end to end as well."""
    from threadpoolctl import threadpool_limits


    torch.set_num_threads(1)
    size = args.sizes[-1]   # the photo path runs at one size: the last of --sizes
    work = tempfile.mkdtemp(prefix="bench-photos-")
    try:
        from PIL import Image

        folder = os.path.join(work, "photos")
        os.makedirs(folder)
        for k in range(args.photos):
            rng = np.random.default_rng(1000 + k)
            Image.fromarray(render_scan(make_face(Identity.sample(rng), f"s{k}"), FRGC, rng).photo).save(
                os.path.join(folder, f"face{k:04d}.png"))
        ck = os.path.join(work, "ck.pt")
        make_checkpoint(ck, size, args.max_channels)
        record = {"image_size": size, "scale_px_per_mm": 1.2 * size / 256, "translation_px": [0.0, 0.0],
                  "textured": True, "normalization": DceNormalization().to_dict(), "preprocess": {"model": None}}
        enc = encoding_from_data(record, "bench")
        encoder = PhotoEncoder(enc, PhotoOptions(landmarks="dlib"))
        refiner = Refiner(refiner_from(ck), enc)
        writer = OutputWriter(os.path.join(work, "out"), enc.dce_normalization())
        stages = {k: 0.0 for k in ("read", "detect", "fit", "encode", "refine", "outputs")}
        done = failed = 0
        photos = sorted(os.listdir(folder))
        encoder.detector.detect(read_photo(os.path.join(folder, photos[0])), "warm-up")   # load the predictor once
        with threadpool_limits(limits=1):
            for name in photos:
                uri = os.path.join(folder, name)
                t = time.process_time()
                photo = read_photo(uri)
                t1 = time.process_time()
                try:
                    found = encoder.detector.detect(photo, uri)
                except ValueError:
                    failed += 1
                    continue
                t2 = time.process_time()
                fit_landmarks(encoder.morphable, found.points)
                t3 = time.process_time()
                sample = build_photo_sample(photo, found.points, encoder.morphable, enc, uri, name, "dlib",
                                            found.faces_found)
                t4 = time.process_time()
                imgs = decode_images(rows_to_table([sample.row]))
                refined, kept = refine_decoded(refiner.predictor, imgs)
                t5 = time.process_time()
                writer.write(assemble(sample.row, imgs["input"][0], imgs["input_mask"][0], refined[0], kept[0],
                                      refiner.norm, extras_of(sample, photo, uri)))
                t6 = time.process_time()
                # build_photo_sample fits again: its encode share is its time minus the separate fit
                for key, dt in zip(stages, (t1 - t, t2 - t1, t3 - t2, (t4 - t3) - (t3 - t2), t5 - t4, t6 - t5)):
                    stages[key] += dt
                done += 1
        total = sum(stages.values())
        print(f"photos={args.photos} (640x480 synthetic renders) size={size}² max_channels={args.max_channels} "
              f"one thread; faces found in {done}, none in {failed}")
        core = sum(v for k, v in stages.items() if k != "outputs")
        print(f"detect+fit+encode+refine:          {done / core:9.2f} photos/s per core (CPU time)")
        print(f"  with the files (meshes, maps, …): {done / total:9.2f} photos/s per core")
        for key, v in stages.items():
            print(f"  {key:8s} {1000 * v / max(done, 1):8.1f} ms/photo  {100 * v / total:5.1f} %")
        if args.job:
            import ray



            state = load_checkpoint(ck)
            state["data"] = record
            save_checkpoint(ck, state)
            cpus = args.cpus or os.cpu_count()
            ensure_ray(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            cfg = RefineConfig(checkpoint=ck, input=folder, output=os.path.join(work, "job"), num_actors=cpus,
                               cpus_per_actor=1.0, photos={"per_unit": max(1, args.photos // (2 * cpus))})
            cfg.report.enabled = False
            t0 = time.perf_counter()
            res = run_refine(cfg)
            wall = time.perf_counter() - t0
            print(f"jobs/refine.py pipeline, {cpus} actors: {res.samples_refined / wall:9.2f} photos/s "
                  f"({res.samples_refined} refined, {res.errors} errors, {wall:.1f} s incl. actor start)")
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


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
    p.add_argument("--actors", type=int, default=1,
                   help="Ray Data actors sharing this process's torch threads as CPUs (CPU: one per core "
                        "runs the model single-threaded in each, as a CPU node would; the plain loop keeps all threads)")
    p.add_argument("--min-actors", type=int, default=1,
                   help="actors the pool starts with (the refine job's min_actors; more than --actors means all of them)")
    p.add_argument("--forward-batch", type=int, default=0,
                   help="images per forward pass (0: the refine job's default, refine_ray.inference.model.forward_batch_for)")
    p.add_argument("--forward-sweep", type=int, nargs="+", default=None, metavar="N",
                   help="instead: the bare generator forward img/s of a --batch-size batch run N images per pass, per size")
    p.add_argument("--photos", type=int, default=0, help="benchmark the photo path on this many photos instead")
    p.add_argument("--job", action="store_true", help="with --photos: also run them through jobs/refine.py's pipeline")
    args = p.parse_args(argv)
    if args.photos:
        return photo_bench(args)
    if args.forward_sweep:
        return forward_sweep(args)

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


def forward_rate(pred: Predictor, x: np.ndarray, seconds: float, gpu: bool) -> float:
    """img/s of the bare generator forward over `x`, repeated for `seconds` after one warm-up call."""
    pred(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pred(x)
        n += len(x)
    if gpu:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def forward_sweep(args) -> int:
    """Bare forward img/s of a --batch-size batch at each size, run `N` images per pass for each N of --forward-sweep."""
    device = "cuda" if args.gpu else "cpu"
    precision = "bf16" if args.bf16 else "fp32"
    work = tempfile.mkdtemp(prefix="bench-forward-")
    try:
        print(f"device={device} precision={precision} batch={args.batch_size} max_channels={args.max_channels} "
              f"torch_threads={torch.get_num_threads()}")
        print("size  " + "  ".join(f"{n:>6}/pass" for n in args.forward_sweep) + "   (img/s)")
        for size in args.sizes:
            ck = os.path.join(work, f"ck{size}.pt")
            make_checkpoint(ck, size, args.max_channels)
            refiner = load_refiner(ck)
            x = np.random.default_rng(0).uniform(-1, 1, (args.batch_size, size, size, 3)).astype(np.float32)
            rates = [forward_rate(Predictor(refiner, device=device, precision=precision, channels_last=args.channels_last,
                                            forward_batch=n), x, 5.0, args.gpu) for n in args.forward_sweep]
            print(f"{size:>4}² " + "  ".join(f"{r:11.1f}" for r in rates), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
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
        pred = Predictor(refiner, device=device, precision=precision, channels_last=args.channels_last,
                         forward_batch=args.forward_batch)
        x = np.random.default_rng(0).uniform(-1, 1, (args.batch_size, size, size, 3)).astype(np.float32)
        fwd = forward_rate(pred, x, 5.0, args.gpu)
        print(f"generator forward only:            {fwd:9.1f} img/s")

        units, _ = plan_units(find_input_shards(data, "test")[0])
        out_plain = os.path.join(work, "plain")
        t0 = time.perf_counter()
        done = sum(process_unit(u, pred, depth_range_mm(NORMALIZATION), out_plain, args.batch_size,
                                overlap=False)["samples_refined"] for u in units)
        plain = done / (time.perf_counter() - t0)
        print(f"plain PyTorch loop (same units):   {plain:9.1f} img/s  ({done} images)")

        cfg = RefineConfig(checkpoint=ck, input=data, output=os.path.join(work, "ray"), split="test",
                           batch_size=args.batch_size, gpu=args.gpu, precision=precision,
                           channels_last=args.channels_last, num_actors=args.actors, forward_batch=args.forward_batch,
                           min_actors=args.min_actors,
                           cpus_per_actor=float(torch.get_num_threads()) / args.actors if not args.gpu else 1.0)
        cfg.report.enabled = False
        t0 = time.perf_counter()
        res = run_refine(cfg)
        rd = res.samples_refined / (time.perf_counter() - t0)
        print(f"Ray Data actor pool ({args.actors} actor{'s' if args.actors > 1 else ''}):    {rd:9.1f} img/s  "
              f"({res.samples_refined} images, incl. actor start)")
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
