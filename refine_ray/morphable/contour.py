"""Jaw-contour candidates: where the face outline (what a 2D detector marks as landmarks 0-16) can lie.

A detector puts jaw landmarks on the visible outline of the face. When the head turns, the outline on the
far side moves inward over the cheek, so a fixed jaw vertex would pull the fit (and the yaw) wrong. For each
jaw landmark we keep a horizontal band of vertices from its default vertex to the face midline; under a
given rotation the outermost of them is the occluding contour (Zhu et al.'s "landmark marching").
"""
from __future__ import annotations

import numpy as np

from refine_ray.morphable.model import JAW

CHIN = 8
MIDLINE_LANDMARKS = (27, 28, 29, 30, 33, 51, 57)   # nose bridge, nose tip, lip centres


def median_edge_length(vertices: np.ndarray, faces: np.ndarray) -> float:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return float(np.median(np.linalg.norm(vertices[e[:, 0]] - vertices[e[:, 1]], axis=1)))


def contour_candidates(mean: np.ndarray, faces: np.ndarray, landmark_index: np.ndarray,
                       band_mm: float | None = None, max_per_landmark: int = 160) -> np.ndarray:
    """(17, M) vertex indices, -1 padded; row j lists landmark j's default vertex first.

    band_mm: half-height of the horizontal band (default: half a median edge, i.e. about one mesh row).
    The chin (landmark 8) and landmarks the model lacks keep only their default vertex.
    """
    mean = np.asarray(mean, dtype=np.float64)
    landmark_index = np.asarray(landmark_index)
    band = float(band_mm) if band_mm else 0.5 * median_edge_length(mean, faces)
    mids = [landmark_index[i] for i in MIDLINE_LANDMARKS if landmark_index[i] >= 0]
    x_mid = float(np.median(mean[mids, 0])) if mids else float(np.median(mean[:, 0]))
    rows: list[np.ndarray] = []
    for j in JAW:
        v0 = int(landmark_index[j])
        if v0 < 0:
            rows.append(np.array([-1]))
            continue
        p = mean[v0]
        if j == CHIN:
            rows.append(np.array([v0]))
            continue
        lo, hi = sorted((p[0], x_mid))
        sel = np.flatnonzero((np.abs(mean[:, 1] - p[1]) <= band) & (mean[:, 0] >= lo) & (mean[:, 0] <= hi))
        sel = sel[sel != v0]
        if len(sel) > max_per_landmark - 1:       # keep those nearest the band's centre line
            sel = sel[np.argsort(np.abs(mean[sel, 1] - p[1]), kind="stable")[: max_per_landmark - 1]]
        rows.append(np.concatenate([[v0], np.sort(sel)]))
    width = max(len(r) for r in rows)
    out = np.full((len(JAW), width), -1, dtype=np.int64)
    for j, r in enumerate(rows):
        out[j, : len(r)] = r
    return out


def select_contour(candidate_points_cam_x: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Column index of the outermost candidate per jaw landmark, given candidates' camera-frame x.

    Landmarks 0-7 are on the image's left (outermost = smallest x), 9-16 on its right (largest x);
    padding (-1) is never chosen. The chin keeps column 0 (its default vertex).
    """
    x = np.where(candidates >= 0, candidate_points_cam_x, np.nan)
    out = np.zeros(len(JAW), dtype=np.int64)
    left = np.arange(len(JAW)) < CHIN
    right = np.arange(len(JAW)) > CHIN
    xl = np.where(np.isnan(x), np.inf, x)
    xr = np.where(np.isnan(x), -np.inf, x)
    out[left] = np.argmin(xl[left], axis=1)
    out[right] = np.argmax(xr[right], axis=1)
    return out
