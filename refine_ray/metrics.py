"""Error metrics of refined depth images (paper Eq. 4 and surface-quality measures). Pure numpy.

Two MAEs because they answer different questions: `mae_norm` reproduces the paper's number
(comparable with its Table 3/4), `mae_mm` is what a user of the meshes cares about.
The surface-quality metrics exist because an MAE in depth barely sees fine detail: a smooth
surface can have a low MAE and still lack every wrinkle. Normals and high-frequency energy do see it.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = [
    "mae_norm",
    "mae_norm_parts",
    "mae_mm",
    "depth_normals",
    "normal_angle_error_deg",
    "high_frequency_energy",
    "detail_energy_error",
]


def _check_same_shape(name: str, *arrays: np.ndarray) -> None:
    shapes = {np.shape(a) for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"{name}: arrays must share one (H, W) shape, got {sorted(shapes)}")
    if len(next(iter(shapes))) != 2:
        raise ValueError(f"{name}: expected 2-D depth images, got shape {next(iter(shapes))}")


def mae_norm(
    pred_depth: np.ndarray,
    target_depth: np.ndarray,
    pred_mask: np.ndarray | None = None,
    target_mask: np.ndarray | None = None,
) -> float:
    """Paper Eq. 4 for one sample: depth in network units [-1, 1] mapped to [0, 1] by (v+1)/2,
    background 0, mean |pred - target| over the pixels where either is non-zero.

    Background is -1 in network units, hence 0 after the map. Masks, when given, force the pixels
    outside them to background (a generator's output is not exactly -1 off the face).
    Returns NaN when both images are empty (no pixel to average over).
    """
    _check_same_shape("mae_norm", pred_depth, target_depth)
    p, t, support = _eq4_depths(pred_depth, target_depth, pred_mask, target_mask)
    if not support.any():
        return float("nan")
    return float(np.abs(p - t)[support].mean())


def _eq4_depths(pred_depth, target_depth, pred_mask, target_mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq. 4's view of two depth images: values in [0, 1] with background 0 (masks force it), and the
    support where either is non-zero. Shared by mae_norm and its split, so the two always agree."""
    p = (np.clip(np.asarray(pred_depth, np.float64), -1.0, 1.0) + 1.0) / 2.0
    t = (np.clip(np.asarray(target_depth, np.float64), -1.0, 1.0) + 1.0) / 2.0
    if pred_mask is not None:
        p = np.where(np.asarray(pred_mask, bool), p, 0.0)
    if target_mask is not None:
        t = np.where(np.asarray(target_mask, bool), t, 0.0)
    return p, t, (p != 0) | (t != 0)


def mae_norm_parts(
    pred_depth: np.ndarray,
    target_depth: np.ndarray,
    pred_mask: np.ndarray,
    target_mask: np.ndarray,
    holes: np.ndarray,
) -> dict[str, float]:
    """`mae_norm` split by where its error comes from; the four parts sum to `mae_norm` (same support).

    - `face`: pixels both the prediction's input and the ground truth cover — the surface itself;
    - `holes`: scan holes inside the ground truth's outline (geometry.scan_holes);
    - `outside_crop`: the rest of the input's footprint, beyond the ground truth's crop;
    - `target_only`: ground truth where the input has nothing (a masked prediction cannot reach it).
    Why: at low resolution most of the coarse model's Eq. 4 error is footprint, not surface.
    """
    _check_same_shape("mae_norm_parts", pred_depth, target_depth, pred_mask, target_mask, holes)
    pm, tm, hm = (np.asarray(m, bool) for m in (pred_mask, target_mask, holes))
    p, t, support = _eq4_depths(pred_depth, target_depth, pm, tm)
    n = int(support.sum())
    regions = {"face": pm & tm, "holes": pm & ~tm & hm, "outside_crop": pm & ~tm & ~hm, "target_only": tm & ~pm}
    if n == 0:
        return {k: float("nan") for k in regions}
    err = np.abs(p - t)
    return {k: float(err[m & support].sum() / n) for k, m in regions.items()}


def mae_mm(pred_depth_mm: np.ndarray, target_depth_mm: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute depth error in mm over `mask` (pixels where both the target and the input exist).

    NaN when the mask is empty: a sample without overlap has no defined error, and a 0 would lie.
    """
    _check_same_shape("mae_mm", pred_depth_mm, target_depth_mm, mask)
    m = np.asarray(mask, bool)
    if not m.any():
        return float("nan")
    diff = np.asarray(pred_depth_mm, np.float64)[m] - np.asarray(target_depth_mm, np.float64)[m]
    return float(np.abs(diff).mean())


def depth_normals(depth_mm: np.ndarray, mask: np.ndarray, scale_px_per_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit surface normals (H, W, 3) in the camera frame (x right, y up, z toward the camera)
    of the depth image z(x, y), by central differences; and the pixels where they are defined
    (the pixel and its four neighbours inside `mask`).

    Image rows grow downward while y grows upward (docs/design.md), hence dz/dy = -s * dz/drow.
    """
    _check_same_shape("depth_normals", depth_mm, mask)
    if scale_px_per_mm <= 0:
        raise ValueError(f"depth_normals: scale_px_per_mm must be > 0, got {scale_px_per_mm}")
    z = np.asarray(depth_mm, np.float64)
    m = np.asarray(mask, bool)
    dz_drow, dz_dcol = np.gradient(z)
    zx = dz_dcol * scale_px_per_mm
    zy = -dz_drow * scale_px_per_mm
    n = np.stack([-zx, -zy, np.ones_like(z)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    valid = m.copy()
    valid &= np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)
    valid[0, :] = valid[-1, :] = False
    valid[:, 0] = valid[:, -1] = False
    return n.astype(np.float32), valid


def normal_angle_error_deg(
    pred_depth_mm: np.ndarray, target_depth_mm: np.ndarray, mask: np.ndarray, scale_px_per_mm: float
) -> float:
    """Mean angle in degrees between the normals of two depth images, over pixels where both are defined."""
    n_p, v_p = depth_normals(pred_depth_mm, mask, scale_px_per_mm)
    n_t, v_t = depth_normals(target_depth_mm, mask, scale_px_per_mm)
    v = v_p & v_t
    if not v.any():
        return float("nan")
    cos = np.clip(np.sum(n_p[v].astype(np.float64) * n_t[v], axis=-1), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


def high_frequency_energy(depth_mm: np.ndarray, mask: np.ndarray, sigma_px: float = 2.0) -> float:
    """Mean squared residual (mm²) of the depth after removing a Gaussian-smoothed copy — the energy
    of the fine detail (wrinkles, pores) that the refinement is meant to restore.

    The smoothing is a normalized (masked) convolution so the face border does not leak background in;
    pixels within the filter radius (4σ) of the border are left out, where the smoothing is one-sided.
    """
    _check_same_shape("high_frequency_energy", depth_mm, mask)
    m = np.asarray(mask, bool)
    z = np.where(m, np.asarray(depth_mm, np.float64), 0.0)
    w = ndimage.gaussian_filter(m.astype(np.float64), sigma_px, mode="constant")
    zs = ndimage.gaussian_filter(z, sigma_px, mode="constant")
    smooth = np.divide(zs, w, out=np.zeros_like(zs), where=w > 1e-12)
    radius = max(1, int(4.0 * sigma_px + 0.5))  # scipy's default truncate=4.0
    core = ndimage.binary_erosion(m, structure=np.ones((3, 3), bool), iterations=radius, border_value=0)
    if not core.any():
        return float("nan")
    return float(np.mean((z - smooth)[core] ** 2))


def detail_energy_error(
    pred_depth_mm: np.ndarray, target_depth_mm: np.ndarray, mask: np.ndarray, sigma_px: float = 2.0
) -> float:
    """Relative error of the high-frequency energy, (E_pred - E_target) / E_target:
    -1 = all detail missing (over-smooth), 0 = as much detail as the ground truth, > 0 = noise/excess."""
    e_t = high_frequency_energy(target_depth_mm, mask, sigma_px)
    e_p = high_frequency_energy(pred_depth_mm, mask, sigma_px)
    if not np.isfinite(e_t) or e_t <= 0:
        return float("nan")
    return float((e_p - e_t) / e_t)
