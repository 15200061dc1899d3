"""Similarity transforms X' = s·R·X + t between corresponding 3D point sets (Umeyama 1991, closed form).

Why here: a mesh made by a scanner or another tool comes in its own frame and unit; its landmarks against
the model's mean landmarks say how to bring it into the project's camera frame (and back again).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass
class ScaledRotation:
    """A scale, a 3×3 rotation and a translation of `translation_dims` entries, coerced to float64 once
    (the parameters of `Similarity` and of the scaled-orthographic camera of geometry.projection)."""

    scale: float
    rotation: np.ndarray      # (3, 3)
    translation: np.ndarray   # (translation_dims,)

    translation_dims: ClassVar[int] = 3

    def __post_init__(self):
        self.scale = float(self.scale)
        self.rotation = np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)
        self.translation = np.asarray(self.translation, dtype=np.float64).reshape(self.translation_dims)


@dataclass
class Similarity(ScaledRotation):
    """X' = scale · X @ rotation.T + translation (rotation proper, scale > 0)."""

    def apply(self, points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        return self.scale * p @ self.rotation.T + self.translation

    def apply_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Directions (normals): rotated only."""
        return np.asarray(vectors, dtype=np.float64) @ self.rotation.T

    def inverse(self) -> "Similarity":
        r = self.rotation.T
        return Similarity(1.0 / self.scale, r, -(self.translation @ self.rotation) / self.scale)   # -Rᵀt/s

    def then(self, other: "Similarity") -> "Similarity":
        """The transform `other ∘ self` (self first)."""
        return Similarity(self.scale * other.scale, other.rotation @ self.rotation,
                          other.scale * self.translation @ other.rotation.T + other.translation)

    def to_dict(self) -> dict:
        return {"scale": self.scale, "rotation": self.rotation.tolist(), "translation": self.translation.tolist()}

    @classmethod
    def identity(cls) -> "Similarity":
        return cls(1.0, np.eye(3), np.zeros(3))


def fit_similarity(source: np.ndarray, target: np.ndarray, with_scale: bool = True) -> Similarity:
    """Least-squares s, R, t with target ≈ s·R·source + t over rows finite in both (≥ 3, not collinear).

    No reflections: a mirrored point set gets the best proper rotation, never a flip.
    """
    x = np.asarray(source, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"need two (N, 3) point sets of one shape, got {x.shape} and {y.shape}")
    keep = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    x, y = x[keep], y[keep]
    if len(x) < 3:
        raise ValueError(f"need at least 3 corresponding points, got {len(x)}")
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    var_x = float((xc * xc).sum()) / len(x)
    cov = yc.T @ xc / len(x)
    u, d, vt = np.linalg.svd(cov)
    if not d[1] > 1e-9 * max(d[0], 1e-300):
        raise ValueError("the corresponding points are collinear: the rotation is undetermined")
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    r = u @ sign @ vt
    s = float(np.trace(np.diag(d) @ sign)) / var_x if with_scale else 1.0
    return Similarity(s, r, my - s * mx @ r.T)
