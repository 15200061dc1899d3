"""Where the refined and coarse errors of a quality run come from.

  python -m bench.quality_breakdown --work /tmp/refine-ray-quality-cpu [--tag T] [--config dce_d_dce]

Prints, per test set, the paper's mae_norm split into face / scan holes / outside the ground truth's
crop / ground truth only (inference.metrics.mae_norm_parts), and the depth error in mm of both surfaces on
the same pixels — those the coarse fit, the refined output and the ground truth all have — eroded by 0–3 px
from the border of that set. Why: at 64² most of the coarse mae_norm is
footprint disagreement, and a refined model can trade surface error at the border for footprint.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from scipy import ndimage

from refine_ray import storage
from refine_ray.data.schema import decode_images, read_manifest
from refine_ray.geometry import DceNormalization, scan_holes
from refine_ray.metrics import mae_mm, mae_norm_parts
from bench.quality_paths import paths
from bench.quality_figure import _read_all

EROSIONS = (0, 1, 2, 3)


def breakdown(refined_dir: str, data_dir: str) -> dict[str, dict[str, float]]:
    """Mean over test samples of each mae_norm part and of mae_mm per erosion, for coarse and refined."""
    norm = DceNormalization.from_dict(read_manifest(data_dir)["normalization"])
    ref, kept = {}, {}
    cols = ["sample_id", "height", "width", "refined", "refined_mask"]
    for row in _read_all(storage.join(refined_dir, "refined"), cols).to_pylist():
        hw = (row["height"], row["width"])
        ref[row["sample_id"]] = np.frombuffer(row["refined"], "<f4").reshape(*hw, 3)[..., 0]
        kept[row["sample_id"]] = np.frombuffer(row["refined_mask"], "u1").reshape(hw).astype(bool)
    data = _read_all(storage.join(data_dir, "test"))
    imgs = decode_images(data)
    acc: dict[str, dict[str, list[float]]] = {"coarse": {}, "refined": {}}
    for i, sid in enumerate(data.column("sample_id").to_pylist()):
        if sid not in ref:
            continue
        im, tm = imgs["input_mask"][i].astype(bool), imgs["target_mask"][i].astype(bool)
        holes = scan_holes(im, tm)
        tgt = imgs["target"][i, ..., 0]
        # paired: the pixels both surfaces deliver (the refine job's refined_mask) and the ground truth has
        shared = im & tm & kept[sid]
        for tag, depth in (("coarse", imgs["input"][i, ..., 0]), ("refined", ref[sid])):
            for k, v in mae_norm_parts(depth, tgt, im, tm, holes).items():
                acc[tag].setdefault(f"mae_norm {k}", []).append(v)
            for e in EROSIONS:
                both = ndimage.binary_erosion(shared, iterations=e) if e else shared
                acc[tag].setdefault(f"mae_mm ≥{e} px inside", []).append(
                    mae_mm(norm.denormalize_depth(depth), norm.denormalize_depth(tgt), both))
    return {tag: {k: float(np.nanmean(v)) for k, v in d.items()} for tag, d in acc.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--tag", default="")
    p.add_argument("--config", default="dce_d_dce")
    args = p.parse_args(argv)
    pth = paths(args.work, args.tag)
    for ds, data_key in (("frgc", "frgc_data"), ("bosphorus", "bos_data")):
        out = storage.join(pth["refined"], args.config, ds)
        if not storage.exists(out):
            print(f"{out}: no refine output, skipped", file=sys.stderr)
            continue
        res = breakdown(out, pth[data_key])
        print(f"\n{args.config} on {ds} ({args.work}, tag '{args.tag}')\n")
        print("| measure | coarse | refined |\n|---|---|---|")
        for k in res["coarse"]:
            print(f"| {k} | {res['coarse'][k]:.4f} | {res['refined'][k]:.4f} |")
        print(f"| mae_norm (sum of the parts) | {sum(v for k, v in res['coarse'].items() if k.startswith('mae_norm')):.4f} "
              f"| {sum(v for k, v in res['refined'].items() if k.startswith('mae_norm')):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
