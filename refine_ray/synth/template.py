"""The fixed face template: a (u, v) grid mapped onto the unit disc (p, q), shared by every synthetic face.

Why a disc: the grid boundary becomes the face outline, so the iBUG jaw landmarks 0–16 are boundary
vertices, and a vertex index names the same anatomical point for every subject (dense correspondence,
which a PCA morphable model needs). p runs across the face (−1 = subject's right = image left),
q from the chin (−1) to the top of the forehead (+1).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

GRID_U = 121   # across
GRID_V = 141   # chin → forehead ⇒ 17,061 vertices, ≈1.2 mm spacing on an adult face

# iBUG-68 positions in template (p, q) coordinates (0-based iBUG order; subject's right first).
_EYE_Q = 0.22
_BROW = [(-0.62, 0.33), (-0.50, 0.385), (-0.38, 0.40), (-0.26, 0.39), (-0.15, 0.365)]
_NOSE_BRIDGE = [(0.0, 0.24), (0.0, 0.12), (0.0, 0.0), (0.0, -0.13)]
_NOSE_BASE = [(-0.17, -0.235), (-0.085, -0.255), (0.0, -0.265), (0.085, -0.255), (0.17, -0.235)]
_RIGHT_EYE = [(-0.66, _EYE_Q), (-0.55, _EYE_Q + 0.04), (-0.37, _EYE_Q + 0.04), (-0.235, _EYE_Q),
              (-0.37, _EYE_Q - 0.03), (-0.55, _EYE_Q - 0.03)]
_MOUTH_Q = -0.48
_MOUTH_OUTER = [(-0.38, _MOUTH_Q), (-0.25, _MOUTH_Q + 0.045), (-0.10, _MOUTH_Q + 0.065), (0.0, _MOUTH_Q + 0.055),
                (0.10, _MOUTH_Q + 0.065), (0.25, _MOUTH_Q + 0.045), (0.38, _MOUTH_Q),
                (0.25, _MOUTH_Q - 0.06), (0.10, _MOUTH_Q - 0.085), (0.0, _MOUTH_Q - 0.09),
                (-0.10, _MOUTH_Q - 0.085), (-0.25, _MOUTH_Q - 0.06)]
_MOUTH_INNER = [(-0.33, _MOUTH_Q), (-0.10, _MOUTH_Q + 0.012), (0.0, _MOUTH_Q + 0.012), (0.10, _MOUTH_Q + 0.012),
                (0.33, _MOUTH_Q), (0.10, _MOUTH_Q - 0.012), (0.0, _MOUTH_Q - 0.012), (-0.10, _MOUTH_Q - 0.012)]

# Bosphorus points without an iBUG-68 counterpart, also as template positions.
BOSPHORUS_EXTRA_PQ = {
    "Nose saddle right": (-0.11, 0.20), "Nose saddle left": (0.11, 0.20),
    "Right nose peak": (-0.235, -0.19), "Left nose peak": (0.235, -0.19),
}


def _mirror(points):
    return [(-p, q) for p, q in points]


def ibug68_pq() -> np.ndarray:
    """(68, 2) template (p, q) of the iBUG landmarks; jaw points lie on the unit circle (the outline)."""
    theta = np.deg2rad(174.0 + 12.0 * np.arange(17))         # 174° (right temple side) … 270° chin … 366°
    jaw = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    brows = _BROW + _mirror(_BROW)[::-1]
    left_eye = _mirror(_RIGHT_EYE)
    left_eye = [left_eye[3], left_eye[2], left_eye[1], left_eye[0], left_eye[5], left_eye[4]]
    pts = np.concatenate([jaw, brows, _NOSE_BRIDGE, _NOSE_BASE, _RIGHT_EYE, left_eye, _MOUTH_OUTER, _MOUTH_INNER])
    assert pts.shape == (68, 2)
    return np.asarray(pts, dtype=np.float64)


@dataclass(frozen=True)
class Template:
    """Template topology: per-vertex (p, q), triangles (CCW seen from +z), boundary flag, landmark indices."""

    pq: np.ndarray              # (V, 2)
    faces: np.ndarray           # (F, 3) int64
    boundary: np.ndarray        # (V,) bool
    landmark_index: np.ndarray  # (68,) int64
    extra_index: dict           # Bosphorus-only labels → vertex index


def _disc(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Square → disc (elliptical grid mapping): smooth, boundary square → unit circle."""
    return u * np.sqrt(1.0 - v * v / 2.0), v * np.sqrt(1.0 - u * u / 2.0)


@lru_cache(maxsize=1)
def template() -> Template:
    u = np.linspace(-1.0, 1.0, GRID_U)
    v = np.linspace(-1.0, 1.0, GRID_V)
    uu, vv = np.meshgrid(u, v)                       # (GRID_V, GRID_U), row j = v[j]
    p, q = _disc(uu, vv)
    pq = np.stack([p.ravel(), q.ravel()], axis=1)
    idx = np.arange(GRID_U * GRID_V).reshape(GRID_V, GRID_U)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    # v grows with the row index j and maps to +y, u to +x: (a, b, d) and (a, d, c) are CCW from +z.
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)]).astype(np.int64)
    boundary = np.zeros((GRID_V, GRID_U), bool)
    boundary[0, :] = boundary[-1, :] = boundary[:, 0] = boundary[:, -1] = True
    boundary = boundary.ravel()

    def nearest(target, candidates):
        d2 = ((pq[candidates] - np.asarray(target)) ** 2).sum(1)
        return int(candidates[np.argmin(d2)])

    everywhere = np.arange(len(pq))
    on_outline = np.flatnonzero(boundary)
    lm_pq = ibug68_pq()
    lmi = np.array([nearest(t, on_outline if k < 17 else everywhere) for k, t in enumerate(lm_pq)], dtype=np.int64)
    extra = {k: nearest(t, everywhere) for k, t in BOSPHORUS_EXTRA_PQ.items()}
    return Template(pq=pq, faces=faces, boundary=boundary, landmark_index=lmi, extra_index=extra)


def mouth_opening_weight(pq) -> np.ndarray:
    """Where the template band between the lips becomes mouth cavity when the jaw drops (0..1)."""
    p, q = pq[:, 0], pq[:, 1]
    return np.exp(-0.5 * ((q + 0.48) / 0.012) ** 2) * np.exp(-((p / 0.3) ** 4))
