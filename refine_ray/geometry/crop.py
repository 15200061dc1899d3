"""Face crop and outlier removal for raw ground-truth scans (paper §5.2).

The crop keeps the vertices inside a sphere around the nose tip AND inside the face contour drawn by
the landmarks, so the jaw line is followed per person instead of a sphere that is either too tight
(loses the jaw) or too loose (keeps neck and ears).
"""
from __future__ import annotations

import numba
import numpy as np
from matplotlib.path import Path

from refine_ray.geometry.projection import ScaledOrthographic
from refine_ray.geometry.surface import _adjacency

JAW = tuple(range(0, 17))  # iBUG 0..16, right ear → chin → left ear (subject's view)
BROWS = tuple(range(17, 27))


def face_contour_polygon(landmarks_plane, close: str = "forehead", extent: float | None = None) -> np.ndarray:
    """The face-contour polygon in plane coordinates (u, v) = (col, -row) from iBUG-68 landmarks.

    The jaw line (0–16) is open at the top; it is closed either
    - close="forehead" (default): by extending both jaw ends straight up (away from the chin) by
      `extent` (default: the jaw width), so above the jaw ends only the sphere limits the crop and the
      forehead is kept — the 3DMM covers it too;
    - close="brows": through the eyebrow landmarks 26…17, which cuts the forehead off.
    NaN landmarks are skipped; at least 3 jaw points are required.
    """
    lm = np.asarray(landmarks_plane, dtype=np.float64).reshape(-1, 2)
    if len(lm) != 68:
        raise ValueError(f"need 68 iBUG landmarks, got {len(lm)}")
    jaw = lm[list(JAW)]
    jaw = jaw[np.isfinite(jaw).all(axis=1)]
    if len(jaw) < 3:
        raise ValueError("face contour needs at least 3 of the jaw landmarks 0-16")
    if close == "brows":
        brows = lm[list(BROWS)][::-1]
        brows = brows[np.isfinite(brows).all(axis=1)]
        return np.vstack([jaw, brows])
    if close != "forehead":
        raise ValueError(f"close must be 'forehead' or 'brows', got {close!r}")
    left, right = jaw[0], jaw[-1]
    across = right - left
    width = float(np.linalg.norm(across))
    up = np.array([-across[1], across[0]]) / max(width, 1e-12)
    lowest = jaw[np.argmax(np.abs((jaw - left) @ up))]  # the chin side of the jaw-end line
    if (lowest - left) @ up > 0:
        up = -up
    ext = width if extent is None else float(extent)
    return np.vstack([jaw, right + ext * up, left + ext * up])


def crop_face(vertices, faces, nose_tip, radius_mm: float, contour_plane=None,
              projection: ScaledOrthographic | None = None):
    """Keep vertices within `radius_mm` of `nose_tip` and (if given) inside `contour_plane`.

    contour_plane: (K,2) polygon in plane coordinates; `projection` maps the vertices there.
    Faces survive when all three corners do. Returns (vertices, faces or None, kept_index).
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    keep = np.linalg.norm(v - np.asarray(nose_tip, dtype=np.float64).reshape(3), axis=1) <= radius_mm
    if contour_plane is not None:
        if projection is None:
            raise ValueError("crop_face: a contour needs the projection of the vertices onto its plane")
        poly = np.asarray(contour_plane, dtype=np.float64).reshape(-1, 2)
        if len(poly) < 3 or not np.isfinite(poly).all():
            raise ValueError("crop_face: the contour polygon needs at least 3 finite points")
        inside = np.zeros(len(v), dtype=bool)
        if keep.any():
            inside[keep] = Path(poly).contains_points(projection.project(v[keep]))
        keep &= inside
    kept_index = np.flatnonzero(keep)
    if faces is None:
        return v[kept_index], None, kept_index
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    remap = np.full(len(v), -1, dtype=np.int64)
    remap[kept_index] = np.arange(len(kept_index))
    f = remap[f]
    return v[kept_index], f[(f >= 0).all(axis=1)], kept_index


@numba.njit(cache=True, nogil=True)
def _sorted_prefix(buf, k):
    """Insertion sort of buf[:k] in place (rings are small: a dozen entries)."""
    for a in range(1, k):
        x = buf[a]
        b = a - 1
        while b >= 0 and buf[b] > x:
            buf[b + 1] = buf[b]
            b -= 1
        buf[b + 1] = x


@numba.njit(cache=True, nogil=True)
def _ring_medians(v, ptr, idx):
    """Coordinate-wise median of each vertex's distinct one-ring neighbours (NaN if fewer than 3)."""
    n = v.shape[0]
    out = np.full((n, 3), np.nan)
    width = 0
    for i in range(n):
        width = max(width, ptr[i + 1] - ptr[i])
    ring = np.empty(width, dtype=np.int64)
    vals = np.empty(width)
    for i in range(n):
        k = 0
        for e in range(ptr[i], ptr[i + 1]):
            ring[k] = idx[e]
            k += 1
        _sorted_prefix(ring, k)
        m = 0
        for a in range(k):  # drop duplicates (an interior edge is listed twice)
            if m == 0 or ring[a] != ring[m - 1]:
                ring[m] = ring[a]
                m += 1
        if m < 3:
            continue
        for c in range(3):
            for a in range(m):
                vals[a] = v[ring[a], c]
            _sorted_prefix(vals, m)
            out[i, c] = vals[m // 2] if m % 2 else 0.5 * (vals[m // 2 - 1] + vals[m // 2])
    return out


@numba.njit(cache=True, nogil=True)
def _edge_lengths(v, f):
    """|v[f[:,k+1]] − v[f[:,k]]| for the three edges of every face (the same arithmetic as
    np.linalg.norm, without the (F,3,3) gathers: 11 → ~1 ms on a cropped FRGC face)."""
    out = np.empty(3 * f.shape[0])
    for t in range(f.shape[0]):
        for k in range(3):
            a, b = f[t, k], f[t, (k + 1) % 3]
            dx, dy, dz = v[b, 0] - v[a, 0], v[b, 1] - v[a, 1], v[b, 2] - v[a, 2]
            out[3 * t + k] = np.sqrt(dx * dx + dy * dy + dz * dz)
    return out


def median_filter_outliers(vertices, faces, threshold_mm: float | None = None, iterations: int = 2):
    """Replace spike vertices by the median of their one-ring; leave every other vertex untouched.

    A switching median filter: a vertex moves only when it lies farther than `threshold_mm` from the
    coordinate-wise median of its neighbours, so fine detail (wrinkles, pores: sub-mm deviations)
    is preserved exactly while scanner spikes are removed. threshold_mm None: 3 × the median edge
    length (a boundary vertex sits ~½ an edge from its neighbours' median; a spike sits far more).
    Returns (vertices (N,3), outlier (N,) bool = vertices that were replaced).
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3).copy()
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    outlier = np.zeros(len(v), dtype=bool)
    if len(f) == 0:
        return v, outlier
    ptr, idx = _adjacency(f, len(v))
    if threshold_mm is None:
        threshold_mm = 3.0 * float(np.median(_edge_lengths(v, f)))
    for _ in range(max(1, int(iterations))):
        med = _ring_medians(v, ptr, idx)
        dev = np.linalg.norm(v - med, axis=1)
        bad = np.isfinite(dev) & (dev > threshold_mm)
        if not bad.any():
            break
        v[bad] = med[bad]
        outlier |= bad
    return v, outlier
