"""The DCE face image (paper §3.2): depth, mean curvature and elevation rendered in one camera.

Units are physical so coarse and ground-truth images compare in mm (docs/design.md): depth in mm relative
to the view's anchor (larger = closer), curvature in 1/mm (convex +), elevation in radians. The map to
network units is a fixed affine map per channel (`DceNormalization`), never per-image min/max, which
would destroy the mm scale.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numba
import numpy as np

from refine_ray.geometry.projection import ImageView
from refine_ray.geometry.rasterize import rasterize
from refine_ray.geometry.surface import elevation, mean_curvature, smooth_normals, vertex_normals

# iBUG-68 (0-based): nose tip and the four eye corners. The anchor of a model (the origin of its
# depth channel) is the mean of its 3D landmarks at these indices, computed the same way for the
# coarse model and the ground truth so their depth channels share an origin.
IBUG_ANCHOR = (30, 36, 39, 42, 45)

# Default neighbourhood of the curvature estimate: about 2.4 px at 1.2 px/mm, i.e. the finest
# scale the image can show, and enough averaging to keep scan noise below the signal.
CURVATURE_RADIUS_MM = 2.0


def anchor_from_landmarks(landmarks_3d: np.ndarray) -> np.ndarray:
    """Mean of the IBUG_ANCHOR landmarks (NaN rows ignored); raises if none is available."""
    pts = np.asarray(landmarks_3d, dtype=np.float64).reshape(-1, 3)
    if len(pts) != 68:
        raise ValueError(f"need 68 iBUG landmarks, got {len(pts)}")
    sel = pts[list(IBUG_ANCHOR)]
    sel = sel[np.isfinite(sel).all(axis=1)]
    if len(sel) == 0:
        raise ValueError("none of the anchor landmarks (nose tip, eye corners) is available")
    return sel.mean(axis=0)


@dataclass
class DceImage:
    """dce (H,W,3) float32 [depth mm, curvature 1/mm, elevation rad]; rgb (H,W,3) in [0,1] or None; mask (H,W).
    dce and rgb may be views of one (H,W,6) render (not C-contiguous)."""

    dce: np.ndarray
    rgb: np.ndarray | None
    mask: np.ndarray


def fill_invalid(values, valid, faces, iterations=4):
    """Give invalid vertices the mean of valid neighbours (a few rings), so rims render sensibly."""
    values, valid = np.array(values, dtype=np.float64), np.array(valid, dtype=bool)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if valid.all() or len(faces) == 0:
        return values
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    n = len(values)
    for _ in range(iterations):
        src_ok = valid[e[:, 1]] & ~valid[e[:, 0]]
        if not src_ok.any():
            break
        s = np.bincount(e[src_ok, 0], weights=values[e[src_ok, 1]], minlength=n)
        c = np.bincount(e[src_ok, 0], minlength=n)
        new = (c > 0) & ~valid
        values[new] = s[new] / c[new]
        valid |= new
    return values


_fill_invalid = fill_invalid  # older private name, kept for callers


class DceSurface:
    """The pose-independent half of a DCE encoding: normals, curvature and colours of one mesh.

    Curvature and normals do not change when the camera rotates, so a sample rendered in K poses
    computes them once and only `render(view)` runs per pose. `encode_dce` is `DceSurface(...).render`.
    normal_radius_mm > 0 takes the elevation from normals averaged over that ball (robust on noisy
    scans); 0 keeps the per-vertex normal.
    """

    def __init__(self, vertices, faces, vertex_colors=None, curvature_radius_mm: float = CURVATURE_RADIUS_MM,
                 normal_radius_mm: float = 0.0):
        self.vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
        self.faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
        normals = vertex_normals(self.vertices, self.faces)
        curv, valid = mean_curvature(self.vertices, self.faces, curvature_radius_mm, normals=normals)
        self.curvature = fill_invalid(curv, valid, self.faces)
        self.normals = smooth_normals(self.vertices, self.faces, normal_radius_mm) if normal_radius_mm > 0 else normals
        self.colors = None
        if vertex_colors is not None:
            col = np.asarray(vertex_colors)
            if col.shape != (len(self.vertices), 3):
                raise ValueError(f"vertex_colors must be ({len(self.vertices)}, 3), got {col.shape}")
            self.colors = col / 255.0 if np.issubdtype(col.dtype, np.integer) else col.astype(np.float64)

    def render(self, view: ImageView) -> DceImage:
        """Rasterize depth (mm), curvature (1/mm), elevation (rad) and colours in `view`."""
        elev = elevation(self.normals @ view.rotation.T, (0.0, 0.0, 1.0))
        iv = view.to_image(self.vertices)
        attrs = [iv[:, 2:3], self.curvature[:, None], elev[:, None]]
        if self.colors is not None:
            attrs.append(self.colors)
        img, mask = rasterize(iv, self.faces, np.hstack(attrs), view.height, view.width)
        # Views into the one rendered image: normalize and the encoders read strided arrays, so the
        # 12 renders of a preprocessed scan copy nothing here.
        return DceImage(dce=img[..., :3], rgb=img[..., 3:6] if self.colors is not None else None, mask=mask)


def encode_dce(vertices, faces, view: ImageView, vertex_colors=None,
               curvature_radius_mm: float = CURVATURE_RADIUS_MM, normal_radius_mm: float = 0.0) -> DceImage:
    """Render a model-frame mesh (mm, CCW faces = outward normals) as a DCE image in `view`."""
    return DceSurface(vertices, faces, vertex_colors, curvature_radius_mm, normal_radius_mm).render(view)


@numba.njit(cache=True, nogil=True)
def _normalize_kernel(dce, rgb, mask, ranges, with_rgb):
    """One pass of DceNormalization.normalize (float64 arithmetic, float32 out): numpy needed ~6
    full-image temporaries, and it runs 12× per preprocessed scan."""
    h, w = mask.shape
    c_out = 6 if with_rgb else 3
    out = np.empty((h, w, c_out), dtype=np.float32)
    for r in range(h):
        for c in range(w):
            if not mask[r, c]:
                for k in range(c_out):
                    out[r, c, k] = -1.0
                continue
            for k in range(c_out):
                v = np.float64(dce[r, c, k]) if k < 3 else np.float64(rgb[r, c, k - 3])
                y = 2.0 * (v - ranges[k, 0]) / (ranges[k, 1] - ranges[k, 0]) - 1.0
                out[r, c, k] = -1.0 if y < -1.0 else (1.0 if y > 1.0 else y)  # NaN stays NaN, like np.clip
    return out


def units_to_physical(units, lo, hi) -> np.ndarray:
    """Network units (-1 … 1) → the physical range (lo … hi): the inverse of the fixed per-channel map
    `units = 2·(x − lo)/(hi − lo) − 1` (lo, hi may be arrays, one pair per channel)."""
    return (np.asarray(units, dtype=np.float64) + 1.0) * 0.5 * (hi - lo) + lo


def depth_units_to_mm(depth_units, depth_range: tuple[float, float]) -> np.ndarray:
    """Depth in network units → mm relative to the anchor, for the manifest's `depth_mm` range (lo, hi)."""
    lo, hi = depth_range
    return units_to_physical(depth_units, float(lo), float(hi))


@dataclass
class DceNormalization:
    """Fixed affine map of each physical channel range (lo, hi) to [-1, 1]; background = -1."""

    depth_mm: tuple = (-100.0, 50.0)
    curvature_per_mm: tuple = (-0.3, 0.3)
    elevation_rad: tuple = (0.0, float(np.pi / 2))
    rgb: tuple = (0.0, 1.0)

    def __post_init__(self):
        for name in ("depth_mm", "curvature_per_mm", "elevation_rad", "rgb"):
            lo, hi = (float(x) for x in getattr(self, name))
            if not hi > lo:
                raise ValueError(f"DceNormalization.{name} needs lo < hi, got ({lo}, {hi})")
            setattr(self, name, (lo, hi))

    def _ranges(self, channels):
        r = [self.depth_mm, self.curvature_per_mm, self.elevation_rad] + [self.rgb] * 3
        return np.array(r[:channels], dtype=np.float64)

    def normalize(self, dce, mask, rgb=None) -> np.ndarray:
        """(H,W,3) physical DCE (+ optional (H,W,3) rgb) → (H,W,3|6) float32 in [-1,1], background -1."""
        x = np.asarray(dce)
        mask = np.asarray(mask, dtype=bool)
        if x.ndim != 3 or x.shape[2] != 3 or mask.shape != x.shape[:2]:
            raise ValueError(f"normalize needs dce (H,W,3) and mask (H,W), got {x.shape} and {mask.shape}")
        rgb_arr = np.zeros((0, 0, 3), dtype=np.float32) if rgb is None else np.asarray(rgb)
        if rgb is not None and rgb_arr.shape != x.shape:
            raise ValueError(f"normalize needs rgb {x.shape}, got {rgb_arr.shape}")
        r = self._ranges(3 if rgb is None else 6)
        return _normalize_kernel(x, rgb_arr, mask, r, rgb is not None)  # numba reads strided views as they are

    def denormalize(self, image) -> np.ndarray:
        """Network units (…,C) → physical units (depth mm, curvature 1/mm, elevation rad, rgb)."""
        x = np.asarray(image, dtype=np.float64)
        r = self._ranges(x.shape[-1])
        return units_to_physical(x, r[:, 0], r[:, 1])

    def denormalize_depth(self, img_depth) -> np.ndarray:
        """Depth channel in network units → mm."""
        return depth_units_to_mm(img_depth, self.depth_mm)

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "DceNormalization":
        unknown = set(d) - {"depth_mm", "curvature_per_mm", "elevation_rad", "rgb"}
        if unknown:
            raise ValueError(f"unknown DceNormalization keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) for k, v in d.items()})
