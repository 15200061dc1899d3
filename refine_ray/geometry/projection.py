"""Scaled-orthographic cameras: the model → image maps that DCE images and landmark fits share.

Two objects, one convention (docs/INTERFACES.md):
- `ScaledOrthographic` is the paper's P = s·[R]_{2×3}, t, mapping 3D mm to *plane* coordinates
  (u, v) = (col, -row), estimated from 2D–3D landmark pairs (§3.2).
- `ImageView` is the fixed rendering camera of a sample: rotation, anchor and a fixed px/mm scale,
  so coarse and ground-truth images share one metric frame and depth stays in mm.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from scipy.spatial.transform import Rotation

from refine_ray.geometry.similarity import ScaledRotation


def pixels_to_plane(points: np.ndarray) -> np.ndarray:
    """(col, row) pixels (row down) → (u, v) = (col, -row) plane coordinates (y up)."""
    p = np.asarray(points, dtype=np.float64)
    return np.stack([p[..., 0], -p[..., 1]], axis=-1)


def plane_to_pixels(points: np.ndarray) -> np.ndarray:
    """(u, v) plane coordinates → (col, row) pixels; the inverse of `pixels_to_plane` (the flip is its own inverse)."""
    return pixels_to_plane(points)


@dataclass
class ScaledOrthographic(ScaledRotation):
    """x_plane = scale · (R X)[:2] + translation (2,), with R a proper rotation (det +1)."""

    translation_dims: ClassVar[int] = 2

    @property
    def matrix(self) -> np.ndarray:
        """The 2×3 matrix P = s·R[:2]."""
        return self.scale * self.rotation[:2]

    def project(self, points_3d: np.ndarray) -> np.ndarray:
        """(N, 3) mm → (N, 2) plane coordinates."""
        X = np.asarray(points_3d, dtype=np.float64).reshape(-1, 3)
        return self.scale * (X @ self.rotation.T)[:, :2] + self.translation


def nearest_rotation(m: np.ndarray) -> np.ndarray:
    """The proper rotation closest (Frobenius) to a 3×3 matrix."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, 1.0, d]) @ vt


def estimate_scaled_orthographic(plane_2d: np.ndarray, points_3d: np.ndarray) -> ScaledOrthographic:
    """Fit P = s·R[:2], t to 2D–3D correspondences (rows with a NaN in either are ignored).

    Affine least squares first (linear, needs ≥ 4 non-coplanar points), then the nearest scaled
    rotation (SVD of the 2×3 block: orthonormal rows, s = mean singular value), then s and t are
    re-fitted in closed form for that rotation so the result is the best fit within the model.
    """
    x = np.asarray(plane_2d, dtype=np.float64)
    X = np.asarray(points_3d, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2 or X.ndim != 2 or X.shape[1] != 3 or len(x) != len(X):
        raise ValueError(f"need plane_2d (N,2) and points_3d (N,3) of equal N, got {x.shape} and {X.shape}")
    keep = np.isfinite(x).all(axis=1) & np.isfinite(X).all(axis=1)
    x, X = x[keep], X[keep]
    if len(x) < 4:
        raise ValueError(f"need at least 4 valid 2D-3D correspondences, got {len(x)}")
    spread = np.linalg.svd(X - X.mean(axis=0), compute_uv=False)
    if not spread[2] > 1e-6 * max(spread[0], 1e-300):
        raise ValueError("2D-3D correspondences are degenerate (the 3D points are coplanar or collinear)")
    A = np.hstack([X, np.ones((len(X), 1))])
    sol = np.linalg.lstsq(A, x, rcond=None)[0]
    P = sol[:3].T  # (2, 3)
    u, sv, vt = np.linalg.svd(P, full_matrices=False)
    r12 = u @ vt  # (2, 3) orthonormal rows
    R = np.vstack([r12, np.cross(r12[0], r12[1])])
    # Best s, t for this rotation (closed form, centred least squares).
    Y = X @ r12.T
    Yc, xc = Y - Y.mean(axis=0), x - x.mean(axis=0)
    denom = float((Yc * Yc).sum())
    s = float((Yc * xc).sum()) / denom if denom > 0 else float(sv.mean())
    if s <= 0:
        s = float(sv.mean())
    t = x.mean(axis=0) - s * Y.mean(axis=0)
    return ScaledOrthographic(s, R, t)


@dataclass
class ImageView:
    """The rendering camera of one sample: camera coords Xc = (X - anchor) @ R.T (mm);
    col = W/2 + s·Xc_x + t_x, row = H/2 - s·Xc_y - t_y, depth = Xc_z (mm, larger = closer)."""

    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    anchor: np.ndarray = field(default_factory=lambda: np.zeros(3))
    scale_px_per_mm: float = 1.2
    height: int = 256
    width: int = 256
    translation_px: tuple = (0.0, 0.0)

    def __post_init__(self):
        self.rotation = np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)
        self.anchor = np.asarray(self.anchor, dtype=np.float64).reshape(3)
        self.scale_px_per_mm = float(self.scale_px_per_mm)
        self.height, self.width = int(self.height), int(self.width)
        self.translation_px = tuple(float(v) for v in np.asarray(self.translation_px).reshape(2))
        if self.scale_px_per_mm <= 0 or self.height <= 0 or self.width <= 0:
            raise ValueError(f"ImageView needs positive scale and size, got {self.scale_px_per_mm}, {self.height}x{self.width}")

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """Model-frame mm → camera-frame mm."""
        return (np.asarray(points, dtype=np.float64).reshape(-1, 3) - self.anchor) @ self.rotation.T

    def camera_to_model(self, points_camera: np.ndarray) -> np.ndarray:
        """Camera-frame mm → model-frame mm (inverse of `to_camera`)."""
        return np.asarray(points_camera, dtype=np.float64).reshape(-1, 3) @ self.rotation + self.anchor

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Model-frame mm (N,3) → (N,3) [col, row, depth mm]."""
        c = self.to_camera(points)
        s, (tx, ty) = self.scale_px_per_mm, self.translation_px
        return np.stack([self.width / 2 + s * c[:, 0] + tx, self.height / 2 - s * c[:, 1] - ty, c[:, 2]], axis=1)

    def from_image(self, cols, rows, depth) -> np.ndarray:
        """(col, row, depth mm) → (N,3) camera-frame mm."""
        s, (tx, ty) = self.scale_px_per_mm, self.translation_px
        cols, rows, depth = (np.asarray(a, dtype=np.float64).ravel() for a in (cols, rows, depth))
        return np.stack([(cols - self.width / 2 - tx) / s, (self.height / 2 - rows - ty) / s, depth], axis=1)

    def plane_projection(self) -> ScaledOrthographic:
        """This view as a `ScaledOrthographic` into plane coordinates (u, v) = (col, -row)."""
        s = self.scale_px_per_mm
        t_cam = -s * (self.rotation @ self.anchor)[:2]
        t = t_cam + np.array([self.width / 2 + self.translation_px[0], -(self.height / 2) + self.translation_px[1]])
        return ScaledOrthographic(s, self.rotation, t)


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rz(roll) · Rx(pitch) · Ry(yaw) in degrees: yaw first, then pitch, then roll, about fixed
    camera axes. The one head-pose convention of the project (synthetic renderer, pose augmentation)."""
    return Rotation.from_euler("yxz", [yaw, pitch, roll], degrees=True).as_matrix()
