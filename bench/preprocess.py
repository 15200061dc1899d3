"""Preprocessing throughput on FRGC-profile synthetic scans (6 poses, DCE+RGB, 256²).

Prints scans/s of a plain single-process loop over the scans, of the Ray Data job on `--cpus` CPUs
(actor start-up included: that is what a user waits for), scans/s per core, and their ratio.
Goals (issue 5): ≥ 4 scans/s/core, Ray/loop ratio ≥ 1.8 on 2 CPUs.

  python bench/preprocess.py [--scans 12] [--cpus 2] [--image-size 256] [--poses 5] [--work DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from refine_ray.data.pipeline import load_model, run_preprocess  # noqa: E402
from refine_ray.data.settings import PreprocessSettings  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scans", type=int, default=12, help="synthetic FRGC scans (2 per subject)")
    p.add_argument("--cpus", type=int, default=2, help="CPUs given to Ray")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--poses", type=int, default=5, help="random poses besides the original (5 → 6 samples per scan)")
    p.add_argument("--work", help="folder for scans and outputs (default: a temp folder, removed)")
    args = p.parse_args(argv)

    work = args.work or tempfile.mkdtemp(prefix="bench-preprocess-")
    scans = os.path.join(work, "scans")
    try:
        if not os.path.isdir(scans):
            from refine_ray.synth.dataset import synthesize_dataset

            t = time.perf_counter()
            synthesize_dataset("frgc", max(1, args.scans // 2), 2, scans, seed=0, parallel=False)
            print(f"synthesized {args.scans} FRGC scans in {time.perf_counter() - t:.1f} s")

        def settings(out, **kw):
            return PreprocessSettings(input=scans, output=os.path.join(work, out), image_size=args.image_size,
                                      scale_px_per_mm=1.2 * args.image_size / 256, poses={"count": args.poses},
                                      limit=args.scans, **kw)

        load_model(settings("warm"))  # build/cache the default 3DMM outside the timings
        for out in ("loop", "ray"):
            shutil.rmtree(os.path.join(work, out), ignore_errors=True)
        quiet = lambda msg: None  # noqa: E731

        cpu0 = time.process_time()
        loop = run_preprocess(settings("loop", local=True), use_ray=False, log=quiet)
        loop_cpu = time.process_time() - cpu0  # this process's CPU time: robust to other load on the machine
        import ray

        ray.init(num_cpus=args.cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
        par = run_preprocess(settings("ray", num_workers=args.cpus), log=quiet)
        ray.shutdown()

        n = loop["this_run_scans"]
        samples = loop["this_run_samples"]
        lr, rr = loop["scans_per_s"], par["scans_per_s"]
        print(f"scans={n} samples={samples} image={args.image_size}² poses={args.poses + 1} channels=DCE+RGB")
        print(f"plain loop, 1 process : {loop['seconds']:.1f} s  {lr:.3f} scans/s  ({lr:.3f} scans/s/core)")
        print(f"Ray Data, {args.cpus} CPUs      : {par['seconds']:.1f} s  {rr:.3f} scans/s  ({rr / args.cpus:.3f} scans/s/core)")
        print(f"ratio Ray/loop        : {rr / lr:.2f}  (goal ≥ 1.8)   per-core goal ≥ 4 scans/s/core")
        print(f"plain loop CPU time   : {loop_cpu:.1f} s = {n / loop_cpu:.3f} scans per CPU-second "
              "(the per-core rate on an otherwise idle core)")
        if loop["scans_failed"] or par["scans_failed"]:
            print(f"warning: failed scans loop={loop['scans_failed']} ray={par['scans_failed']}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
