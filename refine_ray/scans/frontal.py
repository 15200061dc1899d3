"""A mesh with 3D landmarks, from any tool or scanner, in the project's camera frame and as a frontal photo.

Two steps every mesh input shares (scans for training, coarse meshes for refinement):
1. `align_to_reference`: a similarity fit of the mesh's 68 landmarks to a reference face's (the morphable
   model's mean landmarks) gives the rotation and translation into the camera frame of docs/design.md
   (x right, y up, z toward the camera, mm), whatever the file's orientation. The mesh keeps its own size:
   the fitted scale is only a unit check (a face 1000× too small is in metres, not a small face).
2. `render_frontal`: an orthographic frontal view at a fixed px/mm, coloured from the UV texture (per pixel),
   the vertex colours, or shaded grey — the photo for a mesh that has none, with the 3D landmarks and every
   vertex projected into it, so the coarse fit follows the same path as for a scanner's registered photo.
`detect_landmarks_3d` covers meshes without landmarks: detect on a render of the file's own frame (which must
face +z roughly), then lift each 2D point to the visible surface.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from refine_ray.geometry import ImageView, rasterize, rasterize_visibility, vertex_normals
from refine_ray.geometry.similarity import Similarity, fit_similarity

UNITS_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
PLAUSIBLE_SCALE = (0.6, 1.6)        # a face's landmark spread relative to the reference face (children to large adults)
MAX_RENDER_SIDE = 2048
BACKGROUND = (60, 60, 64)


class AlignmentError(ValueError):
    """The mesh cannot be brought to the camera frame; the message says why (and which unit it looks like)."""


def guess_unit(mm_per_unit: float) -> str:
    """The unit (mm, cm, m) nearest (in log) to a number of millimetres per file unit."""
    return min(UNITS_MM, key=lambda u: abs(np.log(mm_per_unit / UNITS_MM[u])))


def align_to_reference(landmarks_3d: np.ndarray, reference_landmarks: np.ndarray, units: str = "mm") -> Similarity:
    """The rigid transform (scale 1) of mm-coordinates into the reference frame, from a similarity fit.

    `landmarks_3d` are already in mm (read with `units`); raises AlignmentError when the fitted scale says the
    face is implausibly small or large for the stated unit, naming the unit the coordinates look like.
    """
    lm = np.asarray(landmarks_3d, dtype=np.float64)
    ref = np.asarray(reference_landmarks, dtype=np.float64)
    try:
        fit = fit_similarity(lm, ref)
    except ValueError as exc:
        raise AlignmentError(f"cannot align the landmarks to the model's: {exc}") from None
    size = 1.0 / fit.scale            # the face's landmark spread relative to the reference face
    lo, hi = PLAUSIBLE_SCALE
    if not lo <= size <= hi:
        looks = guess_unit(UNITS_MM[units] / size)   # mm per file unit that gives a reference-sized face
        raise AlignmentError(f"landmark distances are implausible for a face in {units} (it would be {size:.3g}× the "
                             f"model's mean face); the coordinates look like {looks}: set scan_units: {looks} "
                             f"(--scan-units {looks})")
    rigid = fit_similarity(lm, ref, with_scale=False)
    return rigid


@dataclass
class FrontalRender:
    photo: np.ndarray            # (H, W, 3) uint8
    view: ImageView              # camera frame → image (rotation identity: the mesh is already frontal)
    vertex_pixels: np.ndarray    # (N, 2) (col, row) of every vertex
    landmarks_2d: np.ndarray     # (68, 2) (col, row), NaN where the 3D landmark is missing
    mask: np.ndarray             # (H, W) pixels the mesh covers


def frontal_view(vertices: np.ndarray, scale_px_per_mm: float, margin_px: int = 8,
                 max_side: int = MAX_RENDER_SIDE) -> ImageView:
    """A frontal orthographic view at `scale_px_per_mm` whose image holds the whole mesh (x, y extent)."""
    v = np.asarray(vertices, dtype=np.float64)
    lo, hi = v[:, :2].min(axis=0), v[:, :2].max(axis=0)
    centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 0.0])
    w, h = (np.ceil((hi - lo) * scale_px_per_mm).astype(int) + 2 * margin_px).tolist()
    if max(w, h) > max_side:
        raise AlignmentError(f"a frontal render at {scale_px_per_mm} px/mm would be {w}×{h} px (the mesh is "
                             f"{hi[0] - lo[0]:.0f}×{hi[1] - lo[1]:.0f} mm across; limit {max_side} px)")
    return ImageView(np.eye(3), centre, scale_px_per_mm, h, w)


def _sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear colours (K, 3) in [0, 1] of a texture at UVs (origin bottom-left, as OBJ/glTF-through-trimesh)."""
    img = np.asarray(texture, dtype=np.float32) / 255.0
    th, tw = img.shape[:2]
    cols = np.clip(uv[:, 0], 0, 1) * tw - 0.5
    rows = (1.0 - np.clip(uv[:, 1], 0, 1)) * th - 0.5
    return np.stack([ndimage.map_coordinates(img[..., c], [rows, cols], order=1, mode="nearest")
                     for c in range(3)], axis=1)


def render_frontal(vertices: np.ndarray, faces: np.ndarray, landmarks_3d: np.ndarray | None,
                   scale_px_per_mm: float, vertex_colors: np.ndarray | None = None, uv: np.ndarray | None = None,
                   texture: np.ndarray | None = None, view: ImageView | None = None) -> FrontalRender:
    """Render camera-frame mm vertices seen from +z; colours: texture per pixel > vertex colours > grey shading."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    view = view or frontal_view(v, scale_px_per_mm)
    iv = view.to_image(v)
    if texture is not None and uv is not None:
        uv_img, mask = rasterize(iv, f, np.asarray(uv, dtype=np.float64), view.height, view.width)
        rgb = np.zeros((view.height, view.width, 3), np.float32)
        rgb[mask] = _sample_texture(texture, uv_img[mask])
    elif vertex_colors is not None:
        rgb, mask = rasterize(iv, f, np.asarray(vertex_colors, dtype=np.float64), view.height, view.width)
    else:   # no colours: Lambertian grey under a frontal-top light, enough for a landmark detector
        n = vertex_normals(v, f)
        shade = np.clip(n @ np.array([0.0, 0.35, 0.94]), 0, 1) * 0.8 + 0.15
        rgb, mask = rasterize(iv, f, np.repeat(shade[:, None], 3, axis=1), view.height, view.width)
    photo = np.empty((view.height, view.width, 3), np.uint8)
    photo[:] = BACKGROUND
    photo[mask] = (np.clip(rgb[mask], 0, 1) * 255 + 0.5).astype(np.uint8)
    lm2 = np.full((68, 2), np.nan)
    if landmarks_3d is not None:
        lm2 = view.to_image(np.asarray(landmarks_3d, dtype=np.float64))[:, :2]
    return FrontalRender(photo, view, iv[:, :2], lm2, mask)


def lift_to_surface(vertices: np.ndarray, faces: np.ndarray, view: ImageView, points_2d: np.ndarray,
                    search_mm: float = 6.0) -> np.ndarray:
    """(68, 3) surface points seen at (col, row) pixels of `view` (the visible triangle's barycentric point).

    A point over a hole of the surface (scanners lose the eyes, brows, nostrils) takes the nearest covered pixel
    within `search_mm`, as a landmark on a range grid does; NaN where a point is missing or nothing is near."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    tri, bary = rasterize_visibility(view.to_image(v), f, view.height, view.width)
    radius = max(1, int(np.ceil(search_mm * view.scale_px_per_mm)))
    out = np.full((len(points_2d), 3), np.nan)
    for i, (c, r) in enumerate(np.asarray(points_2d, dtype=np.float64)):
        if not np.isfinite([c, r]).all():
            continue
        ci, ri = int(np.floor(c)), int(np.floor(r))
        r0, r1 = max(ri - radius, 0), min(ri + radius + 1, view.height)
        c0, c1 = max(ci - radius, 0), min(ci + radius + 1, view.width)
        if r0 >= r1 or c0 >= c1:
            continue
        rr, cc = np.nonzero(tri[r0:r1, c0:c1] >= 0)
        if len(rr) == 0:
            continue
        d2 = (rr + r0 + 0.5 - r) ** 2 + (cc + c0 + 0.5 - c) ** 2
        k = int(np.argmin(d2))
        if d2[k] > (radius + 0.5) ** 2:
            continue
        R_, C_ = rr[k] + r0, cc[k] + c0
        out[i] = bary[R_, C_] @ v[f[tri[R_, C_]]]
    return out
