"""Facial regions of an image from its 68 iBUG landmarks: forehead, nose, cheeks, mouth (REALY-style).

Why: one mean error over the face hides where a refinement helps or hurts; detail (furrows, folds,
the nose) is regional. The regions are polygons of landmark points (and, for the forehead, the brow
line moved up by the nose's length), so they follow the face in every pose and at every resolution.
They do not overlap: a pixel inside two polygons belongs to the one listed first in REGIONS.
"""
from __future__ import annotations

import numpy as np
from matplotlib.path import Path

REGIONS = ("nose", "mouth", "left cheek", "right cheek", "forehead")

_NOSE = (27, 42, 35, 33, 31, 39)                                   # nasion, inner eye corners, nose base
_MOUTH = (31, 33, 35, 54, 55, 56, 57, 58, 59, 48)                    # nose base down round the outer lip
_CHEEK_IMAGE_LEFT = (36, 41, 40, 31, 48, 4, 3, 2, 1)                # subject's right: lower lid → nose → mouth → jaw
_CHEEK_IMAGE_RIGHT = (45, 46, 47, 35, 54, 12, 13, 14, 15)
_BROWS = tuple(range(17, 27))


def _polygon(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    if not np.isfinite(points).all():
        return np.zeros(shape, bool)
    rows, cols = np.mgrid[0:h, 0:w]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)   # pixel centres (col, row)
    return Path(points).contains_points(centres).reshape(shape)


def face_regions(landmarks_image: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Boolean (H, W) masks of REGIONS from landmarks (68, 2) in image pixels (col, row); a region whose
    landmarks are missing (NaN) is empty. `left`/`right` are as seen in the image."""
    lm = np.asarray(landmarks_image, np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"face_regions: landmarks must be (68, 2) image pixels, got {lm.shape}")
    up = lm[27] - lm[30]                          # nose tip → nasion: the face's up, one nose length
    brows = lm[list(_BROWS)]
    polys = {
        "nose": lm[list(_NOSE)],
        "mouth": lm[list(_MOUTH)],
        "left cheek": lm[list(_CHEEK_IMAGE_LEFT)],
        "right cheek": lm[list(_CHEEK_IMAGE_RIGHT)],
        "forehead": np.concatenate([brows, (brows + up)[::-1]]),
    }
    out, taken = {}, np.zeros(shape, bool)
    for name in REGIONS:
        m = _polygon(polys[name], shape) & ~taken
        out[name] = m
        taken |= m
    return out
