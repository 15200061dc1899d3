"""Can the photo's shading correct a surface? A per-sample photometric fit, measured against the truth.

  python -m bench.quality_photometric --work /tmp/q_s2 [--smoothness 0.03,0.3,3] [--steps 300] [--json out.json]

The generator learns no shape from the photo (docs/quality.md, experiments 3, 3c, 3d). This asks the
question without learning: starting from the coarse fit, each test sample's depth is moved to explain the
photo's shading, and the result is judged against the ground truth. The photo model is the synthetic
scanner's own (refine_ray.synth.render): linear intensity = albedo × (ambient + light·n), seen through a
1/2.2 gamma. With the albedo unknown per pixel, the fit compares log-luminance *gradients*, in which a
smooth albedo cancels, with those of the shading (ratio-image shape from shading), under a robust
(Charbonnier) penalty so albedo edges (brows, lips, moles) count as outliers rather than shape. The light
(c₀, c) is fitted once per sample by least squares on the coarse normals; the depth correction is kept
smooth by a Laplacian penalty of weight `--smoothness` (swept). Two photos: the input's own (the photo
sampled on the coarse surface, what a user has) and the photo sampled on the ground truth (registered with
the true shape: an upper bound). Reported per set: mean mm and normal error on the pixels the coarse fit
and the ground truth both cover, and each as a ratio to the coarse fit's.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from refine_ray import storage
from refine_ray.data.schema import decode_images, read_manifest
from refine_ray.geometry import DceNormalization
from refine_ray.metrics import mae_mm, normal_angle_error_deg
from refine_ray.nn.losses import depth_image_normals, normal_support
from bench.quality_figure import _read_all
from bench.quality_paths import finish, paths, run_arguments
from bench.quality_shading import luminance_of

GAMMA = 2.2
PHOTOS = ("input photo", "photo on the ground truth")
MIN_PIXELS = 50


def light_fit(lum_linear: torch.Tensor, normals: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample least-squares (c₀, c) (B,4) of linear luminance ≈ c₀ + c·n over `mask` (B,H',W');
    normals (B,3,H',W'). Constant albedo: the fit gives the light up to the mean albedo, which the
    log-gradient term does not see."""
    a = torch.cat([torch.ones_like(normals[:, :1]), normals], 1)            # B,4,H',W'
    w = mask.unsqueeze(1).double()
    ata = torch.einsum("bihw,bjhw->bij", a.double() * w, a.double())
    aty = torch.einsum("bihw,bhw->bi", a.double() * w, lum_linear.double())
    ridge = 1e-6 * torch.eye(4, dtype=torch.float64)
    return torch.linalg.solve(ata + ridge, aty).float()


def _differences(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences of (B,H,W) images along x and y."""
    return img[:, :, 1:] - img[:, :, :-1], img[:, 1:, :] - img[:, :-1, :]


def photometric_fit(depth_mm: np.ndarray, lum: np.ndarray, mask: np.ndarray, scale_px_per_mm: float,
                    smoothness: float, steps: int = 300, lr: float = 0.05, eps: float = 0.02) -> np.ndarray:
    """Depth images (B,H,W, mm) moved from `depth_mm` so their shading explains the luminance `lum`
    (B,H,W, gamma-encoded 0..1) over `mask` (B,H,W): Charbonnier on the difference of log-luminance
    and log-shading gradients + `smoothness` × mean squared Laplacian of the correction. Pixels outside
    the mask keep their depth."""
    z0 = torch.as_tensor(depth_mm, dtype=torch.float32)
    m = torch.as_tensor(mask, dtype=torch.bool)
    interior = normal_support(m) > 0
    lin = torch.as_tensor(lum, dtype=torch.float32).clamp_min(1e-3) ** GAMMA
    lin_i = lin[:, 1:-1, 1:-1]
    with torch.no_grad():
        n0 = depth_image_normals(z0, scale_px_per_mm)
        coef = light_fit(lin_i, n0, interior)
        shade0 = coef[:, :1, None] + torch.einsum("bi,bihw->bhw", coef[:, 1:], n0)
    # attached shadows (shading at the ambient floor) carry no gradient of the light term: left out
    lit = interior & (shade0 > 0.05 * shade0.flatten(1).amax(1)[:, None, None])
    gx_l, gy_l = _differences(lin_i.log())
    vx, vy = lit[:, :, 1:] & lit[:, :, :-1], lit[:, 1:, :] & lit[:, :-1, :]
    delta = torch.zeros_like(z0, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    mf = m.float()
    for _ in range(steps):
        z = z0 + delta * mf
        n = depth_image_normals(z, scale_px_per_mm)
        shade = (coef[:, :1, None] + torch.einsum("bi,bihw->bhw", coef[:, 1:], n)).clamp_min(1e-3)
        gx_s, gy_s = _differences(shade.log())
        rx, ry = (gx_l - gx_s)[vx], (gy_l - gy_s)[vy]
        data = (torch.sqrt(rx ** 2 + eps ** 2).sum() + torch.sqrt(ry ** 2 + eps ** 2).sum()) / (vx.sum() + vy.sum()).clamp_min(1)
        d = delta * mf
        lap = (d[:, 1:-1, 2:] + d[:, 1:-1, :-2] + d[:, 2:, 1:-1] + d[:, :-2, 1:-1] - 4 * d[:, 1:-1, 1:-1])[interior]
        loss = data + smoothness * (lap ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return np.asarray(depth_mm, np.float64) + (delta.detach() * mf).numpy().astype(np.float64)


def _errors(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, scale: float) -> tuple[float, float]:
    return mae_mm(pred, gt, mask), normal_angle_error_deg(pred, gt, mask, scale)


def evaluate(data_dir: str, smoothness: list[float], steps: int, max_samples: int | None = None) -> dict:
    """Coarse and photometrically fitted errors of the test samples of `data_dir`, per photo and smoothness."""
    manifest = read_manifest(data_dir)
    if len(manifest.get("input_channels") or []) < 6:
        raise ValueError(f"{data_dir}: the samples have no RGB channels (preprocess with textured: true)")
    norm = DceNormalization.from_dict(manifest["normalization"])
    scale = float(manifest["scale_px_per_mm"])
    imgs = decode_images(_read_all(storage.join(data_dir, "test")), require_target=True)
    shared = imgs["input_mask"].astype(bool) & imgs["target_mask"].astype(bool)
    support = normal_support(torch.as_tensor(shared)).flatten(1).sum(1).numpy()   # pixels with a normal
    keep = np.flatnonzero(support >= MIN_PIXELS)[:max_samples]
    coarse = norm.denormalize_depth(imgs["input"][keep, ..., 0])
    gt = norm.denormalize_depth(imgs["target"][keep, ..., 0])
    mask = shared[keep]
    photos = {PHOTOS[0]: np.stack([luminance_of(imgs["input"][i, ..., 3:6]) for i in keep]),
              PHOTOS[1]: np.stack([luminance_of(imgs["target_rgb"][i]) for i in keep])}
    base = np.array([_errors(coarse[k], gt[k], mask[k], scale) for k in range(len(keep))])
    out = {"samples": len(keep), "coarse mm": float(base[:, 0].mean()), "coarse normals": float(base[:, 1].mean()),
           "fits": []}
    for photo, lum in photos.items():
        m = mask & (lum > 0.02)
        for lam in smoothness:
            fitted = photometric_fit(coarse, lum, m, scale, lam, steps)
            e = np.array([_errors(fitted[k], gt[k], mask[k], scale) for k in range(len(keep))])
            out["fits"].append({"photo": photo, "smoothness": lam, "mm": float(e[:, 0].mean()),
                                "normals": float(e[:, 1].mean()), "mm ratio": float(e[:, 0].mean() / base[:, 0].mean()),
                                "normals ratio": float(e[:, 1].mean() / base[:, 1].mean())})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = run_arguments(__doc__, reads_runs=False)
    ap.add_argument("--smoothness", default="0.03,0.3,3", help="Laplacian weights to sweep, comma-separated")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--max-samples", type=int, default=None, help="first N usable test samples of each set")
    args = ap.parse_args(argv)
    lams = [float(x) for x in args.smoothness.split(",") if x]
    p = paths(args.work)
    results = {}
    print("| set | samples | photo | smoothness | mm (ratio) | normals (ratio) |")
    print("|---|---|---|---|---|---|")
    for ds, key in (("frgc", "frgc_data"), ("bosphorus", "bos_data")):
        if not storage.exists(storage.join(p[key], "test")):
            print(f"{p[key]}: no test shards, skipped", file=sys.stderr)
            continue
        res = results[ds] = evaluate(p[key], lams, args.steps, args.max_samples)
        print(f"| {ds} | {res['samples']} | coarse | – | {res['coarse mm']:.3f} (1.000) | {res['coarse normals']:.3f}° (1.000) |")
        for f in res["fits"]:
            print(f"| {ds} | {res['samples']} | {f['photo']} | {f['smoothness']:g} | {f['mm']:.3f} ({f['mm ratio']:.3f}) | "
                  f"{f['normals']:.3f}° ({f['normals ratio']:.3f}) |")
    return finish(results, args.json, f"no preprocessed test data under {args.work}/data")


if __name__ == "__main__":
    sys.exit(main())
