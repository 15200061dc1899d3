"""Coarse vs refined error per facial region (forehead, nose, cheeks, mouth), like REALY's regional table.

  python -m bench.quality_regions --work /tmp/q_large --tag T --config dce_d_dce [--json out.json]

Reads a quality run's test shards and its refine outputs. Per sample and region (geometry.regions, from
the coarse fit's landmarks in the image — they land on the ground truth's landmarks by construction of
the alignment), the depth error (mm) and the normal error (degrees) of the coarse fit and of the refined
surface against the ground truth, on the pixels both surfaces deliver and the ground truth has (the
refine job's refined_mask ∩ coarse ∩ ground truth) — the rule of bench/quality_breakdown.py. Normals
are computed on that whole set, then averaged per region, so a small region keeps its border pixels.
Means over the samples where the region has at least --min-pixels pixels.
"""
from __future__ import annotations

import sys

import numpy as np

from refine_ray import storage
from refine_ray.data.schema import decode_images, read_manifest
from refine_ray.geometry import DceNormalization
from refine_ray.geometry.regions import REGIONS, face_regions
from refine_ray.metrics import depth_normals
from bench.quality_paths import finish, paths, refine_outputs, run_arguments
from bench.quality_figure import _read_all

ALL = "whole face"


def error_maps(pred_mm: np.ndarray, gt_mm: np.ndarray, mask: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel |depth error| (mm), normal angle (degrees) and where the angle is defined."""
    n_p, v_p = depth_normals(pred_mm, mask, scale)
    n_t, v_t = depth_normals(gt_mm, mask, scale)
    cos = np.clip(np.sum(n_p.astype(np.float64) * n_t, axis=-1), -1.0, 1.0)
    return np.abs(pred_mm - gt_mm), np.degrees(np.arccos(cos)), v_p & v_t & mask


def refined_surfaces(refined_dir: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """sample_id → refined depth (units) and sample_id → the pixels the refined surface keeps, of a refine output."""
    ref, kept = {}, {}
    for row in _read_all(storage.join(refined_dir, "refined"), ["sample_id", "height", "width", "refined", "refined_mask"]).to_pylist():
        hw = (row["height"], row["width"])
        ref[row["sample_id"]] = np.frombuffer(row["refined"], "<f4").reshape(*hw, 3)[..., 0]
        kept[row["sample_id"]] = np.frombuffer(row["refined_mask"], "u1").reshape(hw).astype(bool)
    return ref, kept


def regional(refined_dir: str, data_dir: str, min_pixels: int = 5) -> dict[str, dict[str, float]]:
    """region → mean over samples of coarse/refined mm and degrees, the pixel share and the sample count."""
    manifest = read_manifest(data_dir)
    norm = DceNormalization.from_dict(manifest["normalization"])
    scale = float(manifest["scale_px_per_mm"])
    ref, kept = refined_surfaces(refined_dir)
    data = _read_all(storage.join(data_dir, "test"))
    imgs = decode_images(data)
    lms = data.column("landmarks_input_image").to_pylist()
    acc: dict[str, dict[str, list[float]]] = {r: {} for r in (ALL, *REGIONS)}
    for i, sid in enumerate(data.column("sample_id").to_pylist()):
        if sid not in ref or lms[i] is None:
            continue
        im, tm = imgs["input_mask"][i].astype(bool), imgs["target_mask"][i].astype(bool)
        shared = im & tm & kept[sid]
        gt = norm.denormalize_depth(imgs["target"][i, ..., 0])
        maps = {tag: error_maps(norm.denormalize_depth(d), gt, shared, scale)
                for tag, d in (("coarse", imgs["input"][i, ..., 0]), ("refined", ref[sid]))}
        regions = face_regions(np.asarray(lms[i], np.float64).reshape(68, 2), shared.shape)
        regions[ALL] = np.ones_like(shared)
        for name, reg in regions.items():
            m = reg & shared
            if m.sum() < min_pixels:
                continue
            a = acc[name]
            a.setdefault("pixel share", []).append(float(m.sum() / shared.sum()))
            for tag, (mm, deg, valid) in maps.items():
                a.setdefault(f"{tag} mm", []).append(float(mm[m].mean()))
                v = m & valid
                a.setdefault(f"{tag} deg", []).append(float(deg[v].mean()) if v.any() else float("nan"))
    out = {}
    for name, a in acc.items():
        if a:
            out[name] = {k: float(np.nanmean(v)) for k, v in a.items()}
            out[name]["samples"] = len(a["pixel share"])
    return out


def markdown(res: dict[str, dict[str, float]]) -> str:
    lines = ["| region | samples | pixel share | coarse mm | refined mm | refined/coarse mm | coarse ° | refined ° | refined/coarse ° |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, v in res.items():
        lines.append(f"| {name} | {v['samples']} | {v['pixel share']:.2f} | {v['coarse mm']:.2f} | {v['refined mm']:.2f} | "
                     f"{v['refined mm'] / v['coarse mm']:.2f} | {v['coarse deg']:.1f} | {v['refined deg']:.1f} | "
                     f"{v['refined deg'] / v['coarse deg']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = run_arguments(__doc__, config="dce_d_dce")
    ap.add_argument("--min-pixels", type=int, default=5)
    args = ap.parse_args(argv)
    results = {}
    for ds, out, data_dir in refine_outputs(args.work, args.tag, args.config):
        results[ds] = regional(out, data_dir, args.min_pixels)
        print(f"\n{args.config} on {ds} ({args.work}, tag '{args.tag}')\n\n{markdown(results[ds])}")
    return finish(results, args.json, f"no refine output under {paths(args.work, args.tag)['refined']}/{args.config}")


if __name__ == "__main__":
    sys.exit(main())
