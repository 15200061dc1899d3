"""Shard size and decode cost: the same scans preprocessed with the float32 and the compact encoding.

Prints per encoding: Parquet bytes per sample (shard files only), decode time per sample (best of
`--repeats` over every sample, `schema.decode_images` on a table of all of them), and for compact the
largest difference from the float32 sample, per channel, in physical units next to the stated step.

  python -m bench.shards [--subjects 3] [--scans-per-subject 2] [--image-size 256] [--work DIR]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refine_ray.data import codec, schema
from refine_ray.data.pipeline import run_preprocess
from refine_ray.data.settings import PreprocessSettings
from refine_ray.geometry import DceNormalization
from refine_ray.synth.dataset import synthesize_dataset


def _read(folder: str) -> tuple[pa.Table, int]:
    files = sorted(glob.glob(os.path.join(folder, "*", "*.parquet")))
    files = [f for f in files if "/_ledger/" not in f]
    table = pa.concat_tables([pq.read_table(f) for f in files])
    return table.sort_by("sample_id"), sum(os.path.getsize(f) for f in files)


def _decode_ms(table: pa.Table, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        schema.decode_images(table)
        best = min(best, time.perf_counter() - t0)
    return best / table.num_rows * 1e3


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subjects", type=int, default=3)
    p.add_argument("--scans-per-subject", type=int, default=2)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default=None, help="folder for scans and datasets (default: a temporary one)")
    args = p.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="bench-shards-")
    scans = os.path.join(work, "scans")
    synthesize_dataset("frgc", args.subjects, args.scans_per_subject, scans, seed=0, parallel=False)
    result: dict = {"image_size": args.image_size, "encodings": {}}
    tables = {}
    for enc in ("float32", "compact"):
        out = os.path.join(work, enc)
        run_preprocess(PreprocessSettings(input=scans, output=out, image_size=args.image_size, encoding=enc),
                       use_ray=False, log=lambda _m: None)
        table, nbytes = _read(out)
        tables[enc] = table
        result["encodings"][enc] = {"samples": table.num_rows, "bytes_per_sample": nbytes / table.num_rows,
                                    "decode_ms_per_sample": _decode_ms(table, args.repeats)}
    a, b = schema.decode_images(tables["float32"]), schema.decode_images(tables["compact"])
    norm = DceNormalization()
    steps = codec.steps(norm, "compact")
    names = list(schema.DCE_CHANNELS) + list(schema.RGB_CHANNELS)
    ranges = np.array([steps[n]["range"] for n in names])
    to_phys = (ranges[:, 1] - ranges[:, 0]) / 2.0                  # physical units per network unit
    diff = {}
    for key, chans in (("input", names[: a["input"].shape[-1]]), ("target", names[:3])):
        err = np.abs(a[key].astype(np.float64) - b[key]).reshape(-1, len(chans)).max(0) * to_phys[: len(chans)]
        diff[key] = {n: {"max_abs_diff": float(e), "step": steps[n]["step"], "unit": steps[n]["unit"]} for n, e in zip(chans, err)}
    diff["masks_equal"] = bool((a["input_mask"] == b["input_mask"]).all() and (a["target_mask"] == b["target_mask"]).all())
    result["compact_vs_float32"] = diff
    f, c = result["encodings"]["float32"], result["encodings"]["compact"]
    print(f"{f['samples']} samples at {args.image_size}²: float32 {f['bytes_per_sample'] / 1e6:.3f} MB/sample, "
          f"compact {c['bytes_per_sample'] / 1e6:.3f} MB/sample ({c['bytes_per_sample'] / f['bytes_per_sample']:.2f}×); "
          f"decode {f['decode_ms_per_sample']:.2f} vs {c['decode_ms_per_sample']:.2f} ms/sample")
    for key in ("input", "target"):
        print(key + ": " + ", ".join(f"{n} {d['max_abs_diff']:.3g} (step {d['step']:.3g} {d['unit']})"
                                     for n, d in diff[key].items()))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
