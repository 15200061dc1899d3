"""How much of a surface's depth error is its placement (offset and tilt), and how much its shape?

  python -m bench.quality_rigid --work /tmp/q_s2 [--tag T --config dcergb_d_dce] [--json out.json]

Each surface is placed in the image by its own landmarks (the coarse fit by the fitted 3DMM's, the ground
truth by its own: data/samples.py), so the per-pixel depth difference of the coarse fit from the ground truth
holds a per-sample placement error — a depth offset, and a tilt where the fit's head pose is off — besides
the shape error. Per sample, on the pixels every judged surface delivers (the refined surface's kept pixels
when a refine output is given), the difference e = ground truth − surface is fitted by least squares with a
constant, a plane (offset + tilt: a small rotation about the image axes plus a depth shift) and a quadric,
and the mean |e| left after each is reported, with the mean |plane| itself: the error a surface of the true
shape would still have in this placement, a floor for any refinement that keeps it. The share the plane removes is placement error; what the
quadric removes further is the face's low-order shape (width, curvature); the rest is finer shape and detail.
Shading cannot observe the plane part when the light is unknown (a tilted surface under a rotated light
shades the same), so a photo-driven refinement cannot be expected to remove it.
"""
from __future__ import annotations

import sys

import numpy as np

from refine_ray import storage
from refine_ray.data.schema import decode_images, read_manifest
from refine_ray.geometry import DceNormalization
from bench.quality_figure import _read_all
from bench.quality_paths import finish, paths, refine_outputs, run_arguments
from bench.quality_regions import refined_surfaces

MODELS = ("error", "less offset", "less plane", "less quadric", "plane alone")
PLACEMENT = ("offset mm", "tilt x deg", "tilt y deg")   # the fitted plane: depth shift, slope along x and y
MIN_PIXELS = 50


def placement_residuals(diff_mm: np.ndarray, mask: np.ndarray, scale_px_per_mm: float) -> dict[str, float]:
    """Mean |diff| over `mask`, after removing its least-squares constant, plane and quadric in x, y (mm), and
    the mean |plane| itself (the error of a perfect shape left in this placement); and the plane's offset (mm,
    at the pixels' centroid) and tilts along x and y (degrees)."""
    rows, cols = np.nonzero(mask)
    e = np.asarray(diff_mm, np.float64)[mask]
    x, y = cols / scale_px_per_mm, -rows / scale_px_per_mm
    x, y = x - x.mean(), y - y.mean()
    one = np.ones_like(e)
    out = {"error": float(np.abs(e).mean())}
    for name, cols_ in (("less offset", [one]), ("less plane", [one, x, y]),
                        ("less quadric", [one, x, y, x * x, y * y, x * y])):
        a = np.column_stack(cols_)
        coef, *_ = np.linalg.lstsq(a, e, rcond=None)
        out[name] = float(np.abs(e - a @ coef).mean())
        if name == "less plane":   # what a surface of the true shape in the surface's own placement would err
            out["plane alone"] = float(np.abs(a @ coef).mean())
            out["offset mm"] = float(coef[0])
            out["tilt x deg"], out["tilt y deg"] = (float(np.degrees(np.arctan(c))) for c in coef[1:])
    return out


def decompose(data_dir: str, refined_dir: str | None = None) -> dict:
    """Mean over test samples of placement_residuals for the coarse fit (and the refined surface)."""
    manifest = read_manifest(data_dir)
    norm = DceNormalization.from_dict(manifest["normalization"])
    scale = float(manifest["scale_px_per_mm"])
    ref, kept = refined_surfaces(refined_dir) if refined_dir else ({}, {})
    data = _read_all(storage.join(data_dir, "test"))
    imgs = decode_images(data, require_target=True)
    acc: dict[str, list[dict[str, float]]] = {"coarse": [], "refined": []}
    for i, sid in enumerate(data.column("sample_id").to_pylist()):
        if refined_dir and sid not in ref:
            continue
        mask = imgs["input_mask"][i].astype(bool) & imgs["target_mask"][i].astype(bool)
        if refined_dir:
            mask &= kept[sid]
        if mask.sum() < MIN_PIXELS:
            continue
        gt = norm.denormalize_depth(imgs["target"][i, ..., 0])
        acc["coarse"].append(placement_residuals(gt - norm.denormalize_depth(imgs["input"][i, ..., 0]), mask, scale))
        if refined_dir:
            acc["refined"].append(placement_residuals(gt - norm.denormalize_depth(ref[sid]), mask, scale))
    out = {"samples": len(acc["coarse"])}
    for surface, rows in acc.items():
        if rows:
            out[surface] = {m: float(np.mean([r[m] for r in rows])) for m in MODELS}
            out[surface]["placement"] = {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))}
                                         for k in PLACEMENT}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = run_arguments(__doc__, config=None,
                       config_help="also judge this configuration's refine outputs (on the same pixels as the coarse fit)")
    args = ap.parse_args(argv)
    p = paths(args.work, args.tag)
    if args.config:
        sets = [(ds, data_dir, out) for ds, out, data_dir in refine_outputs(args.work, args.tag, args.config)]
    else:
        sets = [(ds, p[key], None) for ds, key in (("frgc", "frgc_data"), ("bosphorus", "bos_data"))
                if storage.exists(storage.join(p[key], "test"))]
    results = {}
    print("| set | samples | surface | mm | less offset | less plane (offset + tilt) | less quadric | plane alone |")
    print("|---|---|---|---|---|---|---|---|")
    for ds, data_dir, refined_dir in sets:
        res = results[ds] = decompose(data_dir, refined_dir)
        for surface in ("coarse", "refined"):
            if surface in res:
                r = res[surface]
                print(f"| {ds} | {res['samples']} | {surface} | {r['error']:.3f} | "
                      + " | ".join(f"{r[m]:.3f} ({r[m] / r['error']:.2f})" for m in MODELS[1:]) + " |")
    for ds, res in results.items():
        if "coarse" not in res:
            continue
        pl = res["coarse"]["placement"]
        print(f"{ds}, coarse placement over samples (mean ± sd): "
              + ", ".join(f"{k} {pl[k]['mean']:+.2f} ± {pl[k]['std']:.2f}" for k in PLACEMENT))
    return finish(results, args.json, f"no preprocessed test data (or refine output) under {args.work}")


if __name__ == "__main__":
    sys.exit(main())
