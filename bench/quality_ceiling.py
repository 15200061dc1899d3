"""How much of the coarse error a refinement could remove, per image resolution (no training involved).

  python -m bench.quality_ceiling --work /tmp/q_large [--dataset frgc] [--resolution 64:0.3 --resolution 128:0.6]

For every test scan of a quality run's preprocessed data (the same scans, settings, landmark noise and
poses as its test set) it rebuilds, in the ground truth's image of every pose, at each resolution:

- the coarse fit as the benchmark gives it (3DMM fitted to noisy landmarks) and fitted to the true ones:
  their difference is what the landmark detector's noise costs;
- the 3DMM fitted densely to the ground-truth surface (morphable.dense_fit): the best face the model can
  express, so its error is the floor of any coarse fit — what only a refinement can remove;
- the ground truth low-passed at σ (mm): its error is the detail finer than σ the image holds;
- the coarse fit with the ground truth's detail finer than σ pasted in (low-passed coarse + the
  ground truth's high-pass): what a network that adds perfect detail but leaves the coarse shape
  would score — the part of the coarse error that is low-frequency shape, not detail.

Every figure is the mean over samples of the depth error (mm) and the normal error (degrees) on the
pixels every one of these surfaces and the ground truth cover, the same rule as the benchmark's
"pixels both deliver". Prints a Markdown table per resolution; --json writes everything.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from scipy import ndimage

from refine_ray import storage
from refine_ray.data.augment import assign_split, noise_rng, sample_poses
from refine_ray.data.samples import landmark_anchor, prepare_ground_truth
from refine_ray.data.schema import read_manifest
from refine_ray.data.settings import PreprocessSettings
from refine_ray.geometry import ImageView, rasterize, vertex_normals
from refine_ray.landmarks import make_provider
from refine_ray.metrics import mae_mm, normal_angle_error_deg
from refine_ray.morphable import MorphableModel, fit_landmarks
from refine_ray.morphable.dense_fit import fit_to_points
from refine_ray.scans import read_scan

SURFACES = ("coarse, noisy landmarks", "coarse, true landmarks", "3DMM dense fit")


def _depth(vertices: np.ndarray, faces: np.ndarray, view: ImageView) -> tuple[np.ndarray, np.ndarray]:
    iv = view.to_image(vertices)
    img, mask = rasterize(iv, faces, iv[:, 2:3], view.height, view.width)
    return img[..., 0], mask.astype(bool)


def low_pass(depth: np.ndarray, mask: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian smoothing inside `mask` (normalised convolution: no background leaks in at the border)."""
    m = mask.astype(np.float64)
    num = ndimage.gaussian_filter(np.where(mask, depth, 0.0), sigma_px, mode="constant")
    den = ndimage.gaussian_filter(m, sigma_px, mode="constant")
    return np.divide(num, den, out=np.array(depth, np.float64), where=den > 1e-9)


def scan_surfaces(scan, settings: PreprocessSettings, model: MorphableModel, provider,
                  prior_weights: tuple[float, ...] = ()) -> dict:
    """The ground truth, the two landmark fits and the dense fit of one scan, with its poses; and the
    noisy-landmark fit with each prior weight of `prior_weights` (the pipeline's fit uses the default)."""
    uri = scan.source
    lm_true = np.asarray(provider.landmarks_for(scan, scan.photo), np.float64)
    gt = prepare_ground_truth(scan, lm_true, settings)
    lm_noisy = lm_true
    if settings.landmark_noise_px > 0:   # the same draw as the preprocessing job's (data.samples.build_samples)
        lm_noisy = lm_true + noise_rng(scan.scan_id, settings.seed).normal(0, settings.landmark_noise_px, lm_true.shape)
    fits = {SURFACES[0]: fit_landmarks(model, lm_noisy), SURFACES[1]: fit_landmarks(model, lm_true)}
    for lam in prior_weights:
        fits[f"coarse, noisy landmarks, prior weight {lam:g}"] = fit_landmarks(model, lm_noisy, prior_weight=lam)
    clean = fits[SURFACES[1]]
    dense = fit_to_points(model, gt.vertices, vertex_normals(gt.vertices, gt.faces), gt.landmarks_3d,
                          init_coeffs=np.concatenate([clean.shape_coeffs, clean.expr_coeffs]))
    p = settings.poses
    poses = sample_poses(f"{scan.dataset}/{scan.scan_id}", p.count, p.yaw_deg, p.pitch_deg, p.roll_deg, settings.seed)
    return {"gt": gt, "fits": fits, "dense": dense, "poses": poses, "anchor_g": landmark_anchor(gt.landmarks_3d, uri),
            "dense_rms_mm": dense.rms_mm}


def sample_errors(s: dict, size: int, scale: float, sigmas_mm: tuple[float, ...], translation=(0.0, 0.0)) -> list[dict]:
    """Per pose: depth (mm) and normal (°) error of every surface against the ground truth on the common pixels."""
    gt, faces = s["gt"], s["fits"][SURFACES[0]].faces
    out = []
    for pose in s["poses"]:
        A = pose.rotation
        view_g = ImageView(A @ gt.projection.rotation, s["anchor_g"], scale, size, size, translation)
        z_gt, m_gt = _depth(gt.vertices, gt.faces, view_g)
        depths = {}
        for name, fit in s["fits"].items():
            view_c = ImageView(A @ fit.projection.rotation, landmark_anchor(fit.landmarks_3d), scale, size, size, translation)
            depths[name] = _depth(fit.vertices, fit.faces, view_c)
        depths[SURFACES[2]] = _depth(s["dense"].vertices, faces, view_g)   # dense fit is in the scan's frame
        common = m_gt.copy()
        for name in SURFACES:
            common &= depths[name][1]
        if common.sum() < 10:
            continue
        row = {}
        for name, (z, m) in depths.items():   # prior-weight variants: on the common pixels they also cover
            row[f"{name}|mm"] = mae_mm(z, z_gt, common & m)
            row[f"{name}|deg"] = normal_angle_error_deg(z, z_gt, common & m, scale)
        z_c = depths[SURFACES[0]][0]
        for sig in sigmas_mm:
            sp = sig * scale
            lp_gt = low_pass(z_gt, common, sp)
            pasted = low_pass(z_c, common, sp) + (z_gt - lp_gt)
            row[f"ground truth low-passed σ={sig:g} mm|mm"] = mae_mm(lp_gt, z_gt, common)
            row[f"ground truth low-passed σ={sig:g} mm|deg"] = normal_angle_error_deg(lp_gt, z_gt, common, scale)
            row[f"coarse + true detail finer than σ={sig:g} mm|mm"] = mae_mm(pasted, z_gt, common)
            row[f"coarse + true detail finer than σ={sig:g} mm|deg"] = normal_angle_error_deg(pasted, z_gt, common, scale)
        row["pixels"] = int(common.sum())
        out.append(row)
    return out


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    """name → {mm, deg, mm/coarse, deg/coarse} (means over samples)."""
    names = [k.rsplit("|", 1)[0] for k in rows[0] if k.endswith("|mm")]
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
    ref_mm, ref_deg = mean[f"{SURFACES[0]}|mm"], mean[f"{SURFACES[0]}|deg"]
    return {n: {"mm": mean[f"{n}|mm"], "deg": mean[f"{n}|deg"], "mm_ratio": mean[f"{n}|mm"] / ref_mm,
                "deg_ratio": mean[f"{n}|deg"] / ref_deg} for n in names}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="a bench/quality.py --work folder (its data/ and model.npz are read)")
    ap.add_argument("--dataset", default="frgc", choices=["frgc", "bosphorus"])
    ap.add_argument("--resolution", action="append", help="SIZE:PX_PER_MM (default 64:0.3 and 128:0.6)")
    ap.add_argument("--sigma-mm", default="2,4,8", help="low-pass scales in mm")
    ap.add_argument("--limit", type=int, help="first N test scans only")
    ap.add_argument("--prior-weights", default="", help="also fit the noisy landmarks with these prior weights "
                    "(comma-separated; the pipeline's fit uses morphable.fit_landmarks' default)")
    ap.add_argument("--json", help="write the per-resolution summaries and the per-sample rows here")
    args = ap.parse_args(argv)
    data = storage.join(args.work, "data", args.dataset)
    try:
        manifest = read_manifest(data)
        settings = PreprocessSettings(**{**manifest["config"], "storage": {}})
        model = MorphableModel.load_npz(settings.model or storage.join(args.work, "model.npz"))
        resolutions = [tuple(float(v) for v in r.split(":")) for r in (args.resolution or ["64:0.3", "128:0.6"])]
        sigmas = tuple(float(v) for v in args.sigma_mm.split(","))
        lams = tuple(float(v) for v in args.prior_weights.split(",") if v.strip())
    except (ValueError, KeyError, OSError) as exc:
        print(f"error: {data}: {exc}", file=sys.stderr)
        return 2
    provider = make_provider(settings.landmarks)
    uris = [u for u in manifest["inputs"]["scans"]]
    rows = {f"{int(n)}:{s:g}": [] for n, s in resolutions}
    t0, used, dense_rms, failed = time.time(), 0, [], []
    for uri in uris:
        if args.limit and used >= args.limit:
            break
        try:
            scan = read_scan(uri)
            if assign_split(scan.subject_id, settings.split, settings.train_fraction, settings.seed) != "test":
                continue
            surf = scan_surfaces(scan, settings, model, provider, lams)
        except Exception as exc:  # a scan the preprocessing also rejects: recorded, not silent
            failed.append(f"{uri}: {type(exc).__name__}: {exc}")
            continue
        used += 1
        dense_rms.append(surf["dense_rms_mm"])
        for (n, s), key in zip(resolutions, rows):
            rows[key] += sample_errors(surf, int(n), s, sigmas, settings.translation_px)
        print(f"[ceiling] {used} test scans, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    if not used:
        print(f"error: {data}: no test scan could be rebuilt ({len(failed)} failed)", file=sys.stderr)
        return 2
    result = {"work": args.work, "dataset": args.dataset, "test_scans": used, "failed": failed,
              "dense_fit_rms_mm": float(np.mean(dense_rms)), "seconds": round(time.time() - t0, 1), "resolutions": {}}
    for key, rs in rows.items():
        summ = summarize(rs)
        result["resolutions"][key] = {"samples": len(rs), "summary": summ}
        n, s = key.split(":")
        print(f"\n{args.dataset} test set, {n}² at {s} px/mm ({1 / float(s):.1f} mm/px): {len(rs)} samples of {used} scans\n")
        print("| surface | depth error (mm) | / coarse | normal error (°) | / coarse |\n|---|---|---|---|---|")
        for name, v in summ.items():
            print(f"| {name} | {v['mm']:.2f} | {v['mm_ratio']:.2f} | {v['deg']:.1f} | {v['deg_ratio']:.2f} |")
    print(f"\ndense fit RMS point-to-plane residual on the scan: {result['dense_fit_rms_mm']:.2f} mm; "
          f"{len(failed)} scan(s) failed", flush=True)
    if args.json:
        result["rows"] = rows
        storage.atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
