"""Dense fit of a morphable model to a surface: the closest face the model can express.

Why: the error of a landmark fit mixes three causes — the landmarks' noise, what 68 points cannot pin
down, and what the model cannot express at all (fine detail, shapes outside its span). Fitting the
model to every point of the true surface removes the first two, so the dense fit's error is the
floor of any coarse reconstruction with this model: the part that only a refinement can remove.

Method: iterative closest points with the model's coefficients in the loop. Each iteration matches
every (sampled) target point to its nearest model vertex and takes one Gauss-Newton step of the
point-to-plane residuals in the similarity transform (rotation, translation, scale) and the std-unit
coefficients together, with a ridge prior on the coefficients.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from refine_ray.morphable.model import MorphableModel


@dataclass
class DenseFit:
    """The fitted face in the target's frame, its coefficients and how well it matches."""

    vertices: np.ndarray        # (V, 3) mm in the target's frame
    coeffs: np.ndarray          # (P,) std units: shape coefficients, then expression ones
    scale: float                # model mm → target mm
    rotation: np.ndarray        # (3, 3) model frame → target frame
    translation: np.ndarray     # (3,)
    rms_mm: float               # RMS point-to-plane residual of the matched points in the last iteration
    matched: int                # target points matched in the last iteration


def similarity_from_points(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising Σ‖s·R·src_i + t − dst_i‖² over the rows finite in both (Umeyama); ≥ 3 needed."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ok = np.isfinite(src).all(axis=1) & np.isfinite(dst).all(axis=1)
    if int(ok.sum()) < 3:
        raise ValueError(f"a similarity needs at least 3 corresponding points, got {int(ok.sum())}")
    a, b = src[ok] - src[ok].mean(axis=0), dst[ok] - dst[ok].mean(axis=0)
    rot, _ = Rotation.align_vectors(b, a)
    R = rot.as_matrix()
    s = float(np.sum(b * (a @ R.T)) / np.sum(a * a))
    t = dst[ok].mean(axis=0) - s * src[ok].mean(axis=0) @ R.T
    return s, R, t


def _basis(model: MorphableModel) -> np.ndarray:
    """(V, 3, P) vertex displacement per unit (std) coefficient: shape components, then expression ones."""
    blocks = [np.moveaxis(model.shape_basis * model.shape_std[:, None, None], 0, -1)]
    if model.n_expr:
        blocks.append(np.moveaxis(model.expr_basis * model.expr_std[:, None, None], 0, -1))
    return np.concatenate(blocks, axis=-1)


def fit_to_points(model: MorphableModel, points: np.ndarray, normals: np.ndarray, landmarks_3d: np.ndarray, *,
                  init_coeffs: np.ndarray | None = None, prior_weight: float = 1.0, iterations: int = 15,
                  max_points: int = 6000, max_distance_mm: float = 10.0, seed: int = 0) -> DenseFit:
    """Fit `model` to a surface given as points (N, 3) mm with unit normals (N, 3), in any frame.

    `landmarks_3d` (68, 3) of the surface in that frame (NaN = missing) give the starting similarity;
    `init_coeffs` (P,) a starting face (e.g. a landmark fit's; default the mean). prior_weight λ adds
    λ·‖coeffs‖² (mm²) to Σ residual²: small against thousands of points, it only keeps unconstrained
    components at zero. Points farther than `max_distance_mm` (later: 3× the median distance) from the
    model are left out of a step, so a surface larger than the model's region does not pull it.
    """
    pts, nrm = np.asarray(points, np.float64), np.asarray(normals, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or nrm.shape != pts.shape:
        raise ValueError(f"points and normals must both be (N, 3), got {pts.shape} and {nrm.shape}")
    ok = np.isfinite(pts).all(axis=1) & np.isfinite(nrm).all(axis=1)
    pts, nrm = pts[ok], nrm[ok]
    if len(pts) < 100:
        raise ValueError(f"a dense fit needs at least 100 surface points, got {len(pts)}")
    if len(pts) > max_points:
        pick = np.random.default_rng(seed).choice(len(pts), max_points, replace=False)
        pts, nrm = pts[pick], nrm[pick]
    B = _basis(model)                                    # (V, 3, P)
    P = B.shape[-1]
    c = np.zeros(P) if init_coeffs is None else np.asarray(init_coeffs, np.float64).reshape(P).copy()
    verts = model.mean + B @ c
    s, R, t = similarity_from_points(model.landmarks_3d(verts), landmarks_3d)
    lam = float(prior_weight)
    limit = float(max_distance_mm)
    rms, matched = float("nan"), 0
    for it in range(max(1, iterations)):
        Y = s * verts @ R.T + t
        dist, idx = cKDTree(Y).query(pts)
        keep = dist < limit
        if int(keep.sum()) < P + 7:
            raise ValueError(f"dense fit: only {int(keep.sum())} surface points within {limit:.1f} mm of the model")
        g, n, i = pts[keep], nrm[keep], idx[keep]
        y = Y[i]
        centre = y.mean(axis=0)
        r = np.sum(n * (y - g), axis=1)                  # point-to-plane residuals (mm)
        # unknowns: small rotation ω about `centre`, translation δt, relative scale δs, coefficient step δc
        J = np.empty((len(g), 7 + P))
        J[:, 0:3] = np.cross(y - centre, n)
        J[:, 3:6] = n
        J[:, 6] = np.sum(n * (y - t), axis=1)
        J[:, 7:] = s * np.einsum("nj,jk,nkp->np", n, R, B[i])
        H = J.T @ J
        H[7:, 7:] += lam * np.eye(P)
        grad = J.T @ r
        grad[7:] += lam * c
        step = -np.linalg.solve(H + 1e-9 * np.eye(7 + P), grad)
        Rw = Rotation.from_rotvec(step[0:3]).as_matrix()
        R = Rw @ R
        t = Rw @ (t - centre) + centre + step[3:6]
        s *= 1.0 + step[6]
        c = c + step[7:]
        verts = model.mean + B @ c
        rms, matched = float(np.sqrt(np.mean(r * r))), int(keep.sum())
        if it >= 1:
            limit = min(limit, max(3.0 * float(np.median(dist[keep])), 1.0))
    return DenseFit(vertices=s * verts @ R.T + t, coeffs=c, scale=float(s), rotation=R, translation=t,
                    rms_mm=rms, matched=matched)
