"""Does the photo carry the shape the coarse fit lacks, and does the refined surface use it?

  python -m bench.quality_shading --work /tmp/q_s2 --tag T --config dcergb_d_dce [--json out.json]

The photo of a scan is shaded with the true surface's normals. Per test sample, the luminance of the
input's RGB channels (the photo as the generator sees it, on the coarse surface) is fitted by a
first-order shading model L ≈ c₀ + c·n (ambient plus one distant light, albedo taken as constant; least
squares, 4 parameters per sample) with the normals of three surfaces in turn: the coarse fit, the refined
output and the ground truth. R² of each fit says how much of the photo's variation that surface's normals
explain. If the ground truth explains much more than the coarse fit, the photo carries the missing shape;
the refined surface's R² says how much of it the generator has taken up. Two references: the same fits of
the photo as sampled on the ground-truth surface (the target's RGB: registered with the true shape), and the
size of the shape signal — the standard deviation of the shading difference c·(n_gt − n_coarse) under the
light fitted with the ground truth — against that of the fit's residual (albedo, shadows, everything else). Pixels: those the three surfaces
all have (the refine job's refined_mask ∩ coarse ∩ ground truth), where every normal is defined and the
photo is not black (occluders, eye holes).
"""
from __future__ import annotations

import sys

import numpy as np

from refine_ray import storage
from refine_ray.data.schema import decode_images, read_manifest
from refine_ray.geometry import DceNormalization
from refine_ray.metrics import depth_normals
from bench.quality_figure import _read_all
from bench.quality_paths import finish, paths, refine_outputs, run_arguments
from bench.quality_regions import refined_surfaces

SURFACES = ("coarse", "refined", "ground truth")
OWN_PHOTO = ("coarse on the ground truth's photo R²", "ground truth on its own photo R²")
COLUMNS = (*(f"{s} R²" for s in SURFACES), *OWN_PHOTO, "shape signal / residual")
MIN_PIXELS = 50


def shading_fit(luminance: np.ndarray, normals: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares (c₀, c) of luminance ≈ c₀ + c·n over `mask` (normals (H,W,3), unit), and the residuals."""
    y = np.asarray(luminance, np.float64)[mask]
    a = np.column_stack([np.ones_like(y), np.asarray(normals, np.float64)[mask]])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return coef, y - a @ coef


def shading_r2(luminance: np.ndarray, normals: np.ndarray, mask: np.ndarray) -> float:
    """R² of the shading fit: the share of the luminance's variance over `mask` the normals explain."""
    y = np.asarray(luminance, np.float64)[mask]
    _, residual = shading_fit(luminance, normals, mask)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float((residual ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")


def luminance_of(rgb_units: np.ndarray) -> np.ndarray:
    """Rec. 601 luma in 0..1 of RGB channels normalized to [-1, 1]."""
    rgb = (np.asarray(rgb_units, np.float64) + 1.0) / 2.0
    return rgb @ np.array([0.299, 0.587, 0.114])


def shading_fits(refined_dir: str, data_dir: str) -> dict[str, float]:
    """Mean R² of the shading fit per surface, over the samples with ≥ MIN_PIXELS usable pixels."""
    manifest = read_manifest(data_dir)
    if len(manifest.get("input_channels") or []) < 6:
        raise ValueError(f"{data_dir}: the samples have no RGB channels (preprocess with textured: true)")
    norm = DceNormalization.from_dict(manifest["normalization"])
    scale = float(manifest["scale_px_per_mm"])
    ref, kept = refined_surfaces(refined_dir)
    data = _read_all(storage.join(data_dir, "test"))
    imgs = decode_images(data)
    acc: dict[str, list[float]] = {c: [] for c in COLUMNS}
    for i, sid in enumerate(data.column("sample_id").to_pylist()):
        if sid not in ref:
            continue
        shared = imgs["input_mask"][i].astype(bool) & imgs["target_mask"][i].astype(bool) & kept[sid]
        lum = luminance_of(imgs["input"][i, ..., 3:6])
        lum_gt = luminance_of(imgs["target_rgb"][i])
        depths = {"coarse": imgs["input"][i, ..., 0], "refined": ref[sid], "ground truth": imgs["target"][i, ..., 0]}
        normals, mask = {}, shared & (lum > 0.02) & (lum_gt > 0.02)
        for name, d in depths.items():
            normals[name], valid = depth_normals(norm.denormalize_depth(d), shared, scale)
            mask &= valid
        if mask.sum() < MIN_PIXELS:
            continue
        for name in SURFACES:
            acc[f"{name} R²"].append(shading_r2(lum, normals[name], mask))
        for col, name in zip(OWN_PHOTO, ("coarse", "ground truth")):
            acc[col].append(shading_r2(lum_gt, normals[name], mask))
        coef, residual = shading_fit(lum, normals["ground truth"], mask)
        signal = (normals["ground truth"][mask] - normals["coarse"][mask]) @ coef[1:]
        acc["shape signal / residual"].append(float(signal.std() / residual.std()))
    out = {c: float(np.nanmean(v)) for c, v in acc.items()}
    out["samples"] = len(acc["coarse R²"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = run_arguments(__doc__)
    args = ap.parse_args(argv)
    results = {}
    print("| set | samples | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for ds, out, data_dir in refine_outputs(args.work, args.tag, args.config):
        res = results[ds] = shading_fits(out, data_dir)
        print(f"| {ds} | {res['samples']} | " + " | ".join(f"{res[c]:.3f}" for c in COLUMNS) + " |")
    return finish(results, args.json, f"no refine output under {paths(args.work, args.tag)['refined']}/{args.config}")


if __name__ == "__main__":
    sys.exit(main())
