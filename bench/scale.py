"""An FRGC-size run end to end, measured per stage: synthesize → preprocess (Ray Data) → refine the test split.

  python -m bench.scale --scans 4007 [--cpus 2] [--image-size 256] [--poses 5] [--work DIR]
  python -m bench.scale --scans 4007 --work DIR --synthesize-only     # make the scans once
  python -m bench.scale --scans 4007 --work DIR --reuse-scans         # measure preprocess + refine on them

`--scans N` synthesizes N FRGC-profile scans (.abs.gz + .ppm + .pts; 466 subjects' worth at N = 4,007,
i.e. ≈ 8.6 scans per subject), preprocesses them with the Ray Data pipeline of jobs/preprocess.py
(subject-disjoint split, pose augmentation, compact shards), then refines the test split through the
actor pool of jobs/refine.py with a small randomly initialised progressive generator at the full
resolution (throughput does not depend on the weights). Per stage it prints: wall time, scans/s (and
per core), peak resident memory of each Ray worker process (the largest) and of the driver, object-store
bytes spilled to disk, and bytes written. Memory is read from /proc (VmHWM of the raylet's descendants,
sampled every 0.5 s), so the per-worker figure needs Linux and a Ray started by this script.
Goals: preprocessing ≥ 4 scans/s/core held at N = 4,007; no worker above 2 GB.

Synthesis makes the input, it is not part of the pipeline under test, and at N = 4,007 it costs more CPU time
than preprocessing: `--synthesize-only` writes the scans under `<work>/scans` (it can run at low priority
beside other work), `--reuse-scans` measures the later stages on them on an otherwise idle machine (it checks
that `<work>/scans/synthesis.json` describes the same N and seed, and reports the synthesis time recorded there).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import tempfile
import threading
import time
from typing import Any, Callable

import ray
import torch

from refine_ray.data.pipeline import run_preprocess
from refine_ray.data.settings import PoseSettings, PreprocessSettings
from refine_ray.geometry import DceNormalization
from refine_ray.inference.batch import run_refine
from refine_ray.inference.config import RefineConfig
from refine_ray.nn.config import ModelConfig
from refine_ray.nn.refiner import build_networks
from refine_ray.synth.dataset import synthesize_dataset
from refine_ray.training import checkpoints as ckpt
from refine_ray.training.config import TrainConfig

FRGC_SCANS, FRGC_SUBJECTS = 4007, 466
SEED = 0


def frgc_profile(n: int) -> tuple[int, int]:
    """(subjects, scans per subject) of an FRGC-like set of at least n scans (FRGC v2: 4,007 / 466)."""
    subjects = max(3, round(n * FRGC_SUBJECTS / FRGC_SCANS))  # 3: both splits get a subject
    return subjects, math.ceil(n / subjects)


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _kb(value: str | None) -> int:
    return int(value.split()[0]) if value else 0


def _children(root: int) -> set[int]:
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - out
        out |= frontier
    return out


def _raylet_pid() -> int | None:
    """The raylet of the Ray this script started (private API, hence the guard)."""
    try:
        node = ray._private.worker._global_node
        return int(node.all_processes["raylet"][0].process.pid)
    except Exception:
        return None


class PeakMemory:
    """Largest VmHWM of any Ray worker process (descendant of our raylet) while active, and the driver's."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peaks, self.stop = interval, {}, threading.Event()
        self.raylet = _raylet_pid()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        if self.raylet is None:
            return
        for pid in _children(self.raylet):
            try:
                st = _status(pid)
            except OSError:
                continue
            self.peaks[pid] = max(self.peaks.get(pid, 0), _kb(st.get("VmHWM")) * 1024)

    def _run(self) -> None:
        while not self.stop.is_set():
            self._sample()
            self.stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()

    def worker_peak(self) -> int | None:
        return max(self.peaks.values()) if self.peaks else None


def spilled_bytes() -> int | None:
    """Bytes the object store has spilled to disk so far (from Ray's memory summary)."""
    try:
        from ray._private.internal_api import memory_summary

        text = memory_summary(stats_only=True)
    except Exception:
        return None
    m = re.search(r"Spilled (\d+) MiB", text)
    return int(m.group(1)) * 2**20 if m else 0


def reused_synthesis(scans_dir: str, subjects: int, per_subject: int) -> dict:
    """The summary an earlier `--synthesize-only` run wrote, checked to describe this run's scans."""
    path = os.path.join(scans_dir, "synthesis.json")
    if not os.path.exists(path):
        raise SystemExit(f"{path}: missing; run with --synthesize-only first")
    summary = json.load(open(path))
    want = {"format": "frgc", "subjects": subjects, "scans": subjects * per_subject, "seed": SEED}
    got = {k: summary.get(k) for k in want}
    if got != want:
        raise SystemExit(f"{path}: describes {got}, this run needs {want}")
    return summary


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def stage(name: str, fn: Callable[[], Any], scans: Callable[[Any], int], out: str, cpus: int) -> tuple[dict, Any]:
    spill0 = spilled_bytes()
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        result = fn()
    wall = time.perf_counter() - t0
    spill1 = spilled_bytes()
    n = scans(result)
    row = {"stage": name, "wall_s": wall, "scans": n, "scans_per_s": n / wall, "scans_per_s_per_core": n / wall / cpus,
           "worker_peak_bytes": mem.worker_peak(), "workers_seen": len(mem.peaks),
           "driver_peak_bytes": _kb(_status(os.getpid()).get("VmHWM")) * 1024,
           "spilled_bytes": None if spill0 is None or spill1 is None else spill1 - spill0,
           "bytes_written": folder_bytes(out)}
    return row, result


def small_checkpoint(uri: str, size: int, channels: int = 16) -> None:
    """A randomly initialised progressive generator at `size`² in the training checkpoint format."""
    torch.manual_seed(0)
    cfg = TrainConfig(model=ModelConfig(generator_input="DCE", max_resolution=size, max_channels=channels))
    gen, _ = build_networks(cfg.model_dump(mode="json"))
    ckpt.save_checkpoint(uri, {"format": ckpt.FORMAT, "kind": "progressive", "stage": int(math.log2(size)) - 2,
                               "resolution": size, "ema": gen.state_dict(), "config": cfg.model_dump(mode="json"),
                               "normalization": DceNormalization().to_dict(), "code_version": "bench"})


def _mb(v: int | None) -> str:
    return "n/a" if v is None else f"{v / 2**20:,.0f} MB"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scans", type=int, required=True)
    p.add_argument("--cpus", type=int, default=os.cpu_count())
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--poses", type=int, default=5, help="random poses per scan besides the original")
    p.add_argument("--batch-size", type=int, default=32, help="refinement batch")
    p.add_argument("--object-store-mb", type=int, default=512)
    p.add_argument("--work", default=None, help="folder for scans, dataset and outputs (default: a temporary one)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--synthesize-only", action="store_true", help="write the scans and stop")
    mode.add_argument("--reuse-scans", action="store_true",
                      help="skip synthesis: use the scans an earlier run with the same --scans left in <work>/scans")
    args = p.parse_args(argv)
    if args.reuse_scans and not args.work:
        p.error("--reuse-scans needs --work (the folder of the earlier run)")
    work = args.work or tempfile.mkdtemp(prefix="bench-scale-")
    scans_dir, data_dir, ck, refined = (os.path.join(work, x) for x in ("scans", "data", "ck.pt", "refined"))
    subjects, per_subject = frgc_profile(args.scans)
    reused = reused_synthesis(scans_dir, subjects, per_subject) if args.reuse_scans else None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=args.cpus, object_store_memory=args.object_store_mb * 2**20, include_dashboard=False,
                 configure_logging=False, log_to_driver=False)
    cpus = int(ray.cluster_resources().get("CPU", args.cpus))
    print(f"scale run: {args.scans} scans ({subjects} subjects × ≤ {per_subject}), {args.poses + 1} poses, "
          f"{args.image_size}², {cpus} CPUs, work {work}", flush=True)
    rows = []
    try:
        if reused is None:
            row, _ = stage("synthesize", lambda: synthesize_dataset("frgc", subjects, per_subject, scans_dir, seed=SEED),
                           lambda r: subjects * per_subject, scans_dir, cpus)
            rows.append(row)
        else:
            print(f"reusing {reused['scans']} scans in {scans_dir} (synthesized earlier in {reused['seconds']:.0f} s)")
        if args.synthesize_only:
            return {"scans": args.scans, "stages": rows}
        settings = PreprocessSettings(input=scans_dir, output=data_dir, image_size=args.image_size,
                                      poses=PoseSettings(count=args.poses), limit=args.scans, num_workers=cpus)
        row, pre = stage("preprocess", lambda: run_preprocess(settings, log=lambda _m: None),
                         lambda r: r["scans_ok"] + r["scans_failed"], data_dir, cpus)
        row["samples"] = pre["samples"]
        row["scans_failed"] = pre["scans_failed"]
        rows.append(row)
        if not pre["samples"]["test"]:
            raise SystemExit("no test samples to refine: use more scans")
        small_checkpoint(ck, args.image_size)
        cfg = RefineConfig(checkpoint=ck, input=data_dir, output=refined, split="test", batch_size=args.batch_size,
                           num_actors=max(1, cpus), cpus_per_actor=1.0)
        cfg.report.enabled = False
        row, res = stage("refine (test split)", lambda: run_refine(cfg), lambda r: r.samples_refined, refined, cpus)
        test_scans = pre["samples"]["test"] / (args.poses + 1)   # scans of the test split (every pose of each)
        row.update(samples=res.samples_refined, scans=test_scans, scans_per_s=test_scans / row["wall_s"],
                   scans_per_s_per_core=test_scans / row["wall_s"] / cpus, samples_per_s=res.samples_refined / row["wall_s"])
        rows.append(row)
    finally:
        if started_here:
            ray.shutdown()
    print(f"\n{'stage':<22}{'wall':>9}{'scans/s':>9}{'/core':>7}{'worker peak':>13}{'driver peak':>13}"
          f"{'spilled':>10}{'written':>11}")
    for r in rows:
        print(f"{r['stage']:<22}{r['wall_s']:8.1f}s{r['scans_per_s']:9.2f}{r['scans_per_s_per_core']:7.2f}"
              f"{_mb(r['worker_peak_bytes']):>13}{_mb(r['driver_peak_bytes']):>13}{_mb(r['spilled_bytes']):>10}"
              f"{_mb(r['bytes_written']):>11}")
    summary = {"scans": args.scans, "subjects": subjects, "reused_synthesis": reused, "poses": args.poses + 1, "image_size": args.image_size,
               "cpus": cpus, "load_average": os.getloadavg(), "stages": rows}
    with open(os.path.join(work, "scale.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({"load_average": summary["load_average"], "json": os.path.join(work, "scale.json")}))
    return summary


if __name__ == "__main__":
    main()
