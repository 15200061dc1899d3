"""Per-scan work of the preprocessing job as a plain function (no Ray): one scan → one row per pose.

The refine job reuses `build_samples` on raw scans (original pose only). Alignment (docs/design.md):
the coarse 3DMM fit gives the model → photo projection; the ground truth's projection is estimated
from its 3D landmarks to the same photo landmarks. Each model is rotated by its own R into the
photo's camera frame, then by the augmentation rotation, anchored at the mean of its IBUG_ANCHOR
landmarks and drawn at one fixed px/mm scale — so a landmark lands on the same pixel in the coarse
and the ground-truth image of every pose, and depth differences are millimetres.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from refine_ray import geometry as geo
from refine_ray.data import schema
from refine_ray.data.augment import Pose, noise_rng
from refine_ray.data.settings import PreprocessSettings
from refine_ray.geometry import (
    IBUG_ANCHOR,
    DceSurface,
    ImageView,
    anchor_from_landmarks,
    estimate_scaled_orthographic,
    pixels_to_plane,
    plane_to_pixels,
)
from refine_ray.landmarks import LandmarkError
from refine_ray.morphable import fit_landmarks
from refine_ray.scans.frontal import AlignmentError, align_to_reference, lift_to_surface, render_frontal

NOSE_TIP = 30
MIN_LANDMARKS_3D = 6


class SampleBuildError(ValueError):
    """A scan that cannot become samples; names the file, the pipeline stage and the reason."""

    def __init__(self, source: str, stage: str, reason: str):
        super().__init__(f"{source}: [{stage}] {reason}")
        self.source, self.stage, self.reason = source, stage, reason


@dataclass
class GroundTruth:
    """The cropped ground-truth mesh in its scan frame (mm) with what alignment and texture need."""

    vertices: np.ndarray
    faces: np.ndarray
    landmarks_3d: np.ndarray          # (68, 3), NaN = missing
    vertex_pixels: np.ndarray | None  # (N, 2) photo (col, row) of each vertex when the scanner registered them
    projection: Any                   # ScaledOrthographic: scan frame → photo plane coords


def landmark_anchor(landmarks_3d: np.ndarray, source: str = "<scan>") -> np.ndarray:
    """Mean of the IBUG_ANCHOR landmarks (nose tip and eye corners) that are present."""
    pts = np.asarray(landmarks_3d, dtype=np.float64)[list(IBUG_ANCHOR)]
    if int(np.isfinite(pts).all(axis=1).sum()) < 2:
        raise SampleBuildError(source, "align", "fewer than 2 of the anchor landmarks (nose tip, eye corners) are present")
    return anchor_from_landmarks(landmarks_3d)


def sample_photo(photo: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Bilinear RGB in [0,1] of `photo` (h,w,3 uint8) at (col,row) pixel positions (centres at +0.5)."""
    img = np.asarray(photo, dtype=np.float32) / 255.0
    coords = [np.asarray(pixels[:, 1]) - 0.5, np.asarray(pixels[:, 0]) - 0.5]
    out = np.stack([ndimage.map_coordinates(img[..., c], coords, order=1, mode="nearest") for c in range(3)], axis=1)
    return np.clip(out, 0.0, 1.0)


def lift_landmarks(grid: np.ndarray, valid: np.ndarray, landmarks_px: np.ndarray, search_px: int = 2) -> np.ndarray:
    """3D positions of 2D landmarks on a pixel-registered range grid (FRGC): bilinear over the four
    neighbouring grid points when all are valid, else the nearest valid point within `search_px`."""
    h, w = valid.shape
    out = np.full((len(landmarks_px), 3), np.nan)
    for i, (c, r) in enumerate(np.asarray(landmarks_px, dtype=np.float64)):
        if not np.isfinite([c, r]).all():
            continue
        x, y = c - 0.5, r - 0.5
        c0, r0 = int(np.floor(x)), int(np.floor(y))
        if 0 <= c0 < w - 1 and 0 <= r0 < h - 1 and valid[r0:r0 + 2, c0:c0 + 2].all():
            fx, fy = x - c0, y - r0
            q = grid[r0:r0 + 2, c0:c0 + 2]
            out[i] = (q[0, 0] * (1 - fx) * (1 - fy) + q[0, 1] * fx * (1 - fy)
                      + q[1, 0] * (1 - fx) * fy + q[1, 1] * fx * fy)
            continue
        rr, cc = int(round(y)), int(round(x))
        best = None
        for dr in range(-search_px, search_px + 1):
            for dc in range(-search_px, search_px + 1):
                R_, C_ = rr + dr, cc + dc
                if 0 <= R_ < h and 0 <= C_ < w and valid[R_, C_]:
                    d = dr * dr + dc * dc
                    if best is None or d < best[0]:
                        best = (d, R_, C_)
        if best is not None:
            out[i] = grid[best[1], best[2]]
    return out


def frontal_landmarks(landmarks_3d: np.ndarray, settings: PreprocessSettings) -> np.ndarray:
    """2D landmarks of a scan without a photo: its 3D landmarks seen from the front at the job's scale."""
    lm = np.asarray(landmarks_3d, dtype=np.float64)
    s, n = settings.scale_px_per_mm, settings.image_size
    centre = np.nanmean(lm[:, :2], axis=0)
    return np.stack([n / 2 + s * (lm[:, 0] - centre[0]), n / 2 - s * (lm[:, 1] - centre[1])], axis=1)


def _stage(source: str, stage: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except SampleBuildError:
        raise
    except Exception as exc:  # any failure of a stage becomes a named, recorded error
        raise SampleBuildError(source, stage, f"{type(exc).__name__}: {exc}") from exc


def _check_scan(scan) -> None:
    src = scan.source
    v = np.asarray(scan.vertices)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 3:
        raise SampleBuildError(src, "validate", f"vertices must be (N>=3, 3), got {v.shape}")
    if not np.isfinite(v).all():
        raise SampleBuildError(src, "validate", f"{int((~np.isfinite(v).all(axis=1)).sum())} vertices have NaN/inf coordinates")
    if scan.grid is not None and scan.grid_valid is not None:
        g = np.asarray(scan.grid)[np.asarray(scan.grid_valid, dtype=bool)]
        if not np.isfinite(g).all():
            raise SampleBuildError(src, "validate", "range grid has NaN/inf points marked valid")


def prepare_ground_truth(scan, landmarks_2d: np.ndarray, settings: PreprocessSettings) -> GroundTruth:
    """Mesh, 3D landmarks and vertex→photo pixels of the scan, cropped to the face (paper §5.2)."""
    src = scan.source
    _check_scan(scan)
    vertices, faces, vpix = _scan_mesh(scan, settings)
    grid_scale = _check_photo_fits(scan, vpix, landmarks_2d)
    lm3d = _landmarks_3d(scan, landmarks_2d, grid_scale)

    # Ground truth → photo projection from its 3D landmarks to the photo's 2D landmarks (docs/design.md).
    # Jaw landmarks (0-16) are excluded when enough others exist: in a photo they mark the pose-dependent
    # occluding contour, and lifted through a grid at grazing angles their depth is off by mm.
    use = np.isfinite(lm3d).all(axis=1) & np.isfinite(landmarks_2d).all(axis=1)
    if int(use[17:].sum()) >= MIN_LANDMARKS_3D:
        use[:17] = False
    projection = _stage(src, "align", lambda: estimate_scaled_orthographic(pixels_to_plane(landmarks_2d[use]), lm3d[use]))

    v2, f2, kept = _stage(src, "crop", lambda: _crop_face(vertices, faces, lm3d, landmarks_2d, projection, settings))
    if f2 is None or len(f2) == 0:
        raise SampleBuildError(src, "crop", f"nothing of the scan lies within {settings.crop_radius_mm} mm of the nose tip "
                               "and inside the face contour")
    return GroundTruth(v2, f2, lm3d, None if vpix is None else vpix[kept], projection)


def _scan_mesh(scan, settings: PreprocessSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(vertices, faces, vertex→photo pixels or None) of a mesh scan, or of a range grid triangulated."""
    src = scan.source
    if scan.faces is not None:
        vertices, faces = np.asarray(scan.vertices, float), np.asarray(scan.faces, np.int64)
        vpix = None if scan.vertex_pixels is None else np.asarray(scan.vertex_pixels, float)
    elif scan.grid is not None:
        grid = np.asarray(scan.grid, float)
        valid = np.asarray(scan.grid_valid, bool)
        vertices, faces, gidx = _stage(src, "mesh", lambda: geo.mesh_from_grid(grid, valid, max_edge_mm=settings.max_edge_mm))
        if scan.vertex_pixels is not None and len(scan.vertex_pixels) == int(valid.sum()):
            # Reader-provided pixels are for the valid grid points in row-major order.
            order = np.full(valid.size, -1)
            order[np.flatnonzero(valid.ravel())] = np.arange(int(valid.sum()))
            vpix = np.asarray(scan.vertex_pixels, float)[order[gidx]]
        else:  # pixel-registered grid: photo pixel = grid pixel (times the photo's scale, checked below)
            h, w = valid.shape
            sx, sy = (scan.photo.shape[1] / w, scan.photo.shape[0] / h) if scan.photo is not None else (1.0, 1.0)
            vpix = np.stack([(gidx % w + 0.5) * sx, (gidx // w + 0.5) * sy], axis=1).astype(float)
    else:
        raise SampleBuildError(src, "mesh", "scan has neither faces nor a range grid (a bare point cloud cannot be rendered)")
    if len(faces) == 0:
        raise SampleBuildError(src, "mesh", "scan has no triangles")
    return vertices, faces, vpix


def _check_photo_fits(scan, vpix: np.ndarray | None, landmarks_2d: np.ndarray) -> np.ndarray:
    """Refuse a photo that does not belong to the scan or its landmarks; returns the photo/grid pixel scale (2,)."""
    src = scan.source
    if scan.photo is not None and vpix is not None:
        h, w = scan.photo.shape[:2]
        inside = (vpix[:, 0] >= 0) & (vpix[:, 0] <= w) & (vpix[:, 1] >= 0) & (vpix[:, 1] <= h)
        if inside.mean() < 0.9:
            raise SampleBuildError(src, "validate", f"photo is {w}x{h} px but {100 * (1 - inside.mean()):.0f}% of the scan's "
                                   "points project outside it (photo and scan sizes do not match)")

    grid_scale = np.ones(2)
    if scan.grid is not None and scan.photo is not None:
        gh, gw = np.asarray(scan.grid_valid).shape
        ph, pw = scan.photo.shape[:2]
        grid_scale = np.array([pw / gw, ph / gh])
        if scan.dataset == "frgc" and abs(grid_scale[0] / grid_scale[1] - 1) > 0.01:
            # FRGC photos are pixel-registered with the range grid (same size or a scaled copy).
            raise SampleBuildError(src, "validate", f"photo is {pw}x{ph} px but the pixel-registered range grid is "
                                   f"{gw}x{gh}: photo and scan sizes do not match")
    if scan.photo is not None:
        ph, pw = scan.photo.shape[:2]
        ok = np.isfinite(landmarks_2d).all(axis=1)
        inside = ok & (landmarks_2d[:, 0] >= 0) & (landmarks_2d[:, 0] <= pw) & (landmarks_2d[:, 1] >= 0) & (landmarks_2d[:, 1] <= ph)
        if inside.sum() < 0.9 * ok.sum():
            raise SampleBuildError(src, "validate", f"{int(ok.sum() - inside.sum())} of {int(ok.sum())} 2D landmarks lie outside "
                                   f"the {pw}x{ph} px photo: photo and landmarks do not belong together")
    return grid_scale


def _landmarks_3d(scan, landmarks_2d: np.ndarray, grid_scale: np.ndarray) -> np.ndarray:
    """(68, 3) landmarks on the scan: its own, or the photo's lifted through the range grid; checked usable."""
    src = scan.source
    if scan.landmarks_3d is not None:
        lm3d = np.asarray(scan.landmarks_3d, float)
    elif scan.grid is not None:
        # Landmarks are photo pixels; a scaled photo of a registered grid maps back by the scale.
        lm3d = lift_landmarks(np.asarray(scan.grid, float), np.asarray(scan.grid_valid, bool), landmarks_2d / grid_scale)
    else:
        raise SampleBuildError(src, "landmarks", "no 3D landmarks (need a .lm3 file or landmarks on a range grid)")
    if lm3d.shape != (68, 3):
        raise SampleBuildError(src, "landmarks", f"3D landmarks must be (68, 3), got {lm3d.shape}")
    if int(np.isfinite(lm3d).all(axis=1).sum()) < MIN_LANDMARKS_3D:
        raise SampleBuildError(src, "landmarks", f"fewer than {MIN_LANDMARKS_3D} 3D landmarks could be located on the scan")
    if not np.isfinite(lm3d[NOSE_TIP]).all():
        raise SampleBuildError(src, "landmarks", "the nose-tip landmark (30) is missing; it centres the crop")
    return lm3d


def _crop_face(vertices, faces, lm3d, landmarks_2d, projection, settings: PreprocessSettings):
    """The face of the scan: a sphere around the nose tip, cut along the jaw contour, outliers filtered."""
    # The contour needs jaw landmarks; Bosphorus-style sets (chin only) fall back to the sphere.
    jaw_known = int(np.isfinite(landmarks_2d[:17]).all(axis=1).sum())
    contour = geo.face_contour_polygon(pixels_to_plane(landmarks_2d)) if settings.crop_contour and jaw_known >= 3 else None
    v2, f2, kept = geo.crop_face(vertices, faces, lm3d[NOSE_TIP], settings.crop_radius_mm,
                                 contour_plane=contour, projection=projection if contour is not None else None)
    if settings.median_filter and len(f2):
        v2, _ = geo.median_filter_outliers(v2, f2)
    return v2, f2, kept


def frontalize(scan, settings: PreprocessSettings, model, provider):
    """A mesh scan without a registered photo → the same scan in the camera frame (a rigid fit of its 3D
    landmarks to the model's mean landmarks; its own size kept, its unit checked) with its frontal render
    (settings.render_px_per_mm) as the photo and its 3D landmarks projected into it. Without 3D landmarks they
    are detected on a render of the file's own frame (facing +z) by `provider` and lifted to the surface.
    Other scans are returned unchanged."""
    if scan.faces is None or scan.photo is not None:
        return scan
    src = scan.source
    scale = settings.render_px_per_mm or settings.scale_px_per_mm
    v, f = np.asarray(scan.vertices, float), np.asarray(scan.faces, np.int64)
    lm3 = None if scan.landmarks_3d is None else np.asarray(scan.landmarks_3d, float)
    if lm3 is None:
        first = _stage(src, "render", lambda: render_frontal(v, f, None, scale, scan.vertex_colors, scan.uv, scan.texture))
        probe = dataclasses.replace(scan, photo=first.photo, extra=dict(scan.extra, frontal_view=first.view))
        try:
            lm2 = provider.landmarks_for(probe, first.photo)
        except LandmarkError as exc:
            raise SampleBuildError(src, "landmarks", f"no landmark file, and no face found on the mesh's frontal render "
                                   f"({exc.problem})") from None
        lm3 = lift_to_surface(v, f, first.view, np.asarray(lm2, float))
        if int(np.isfinite(lm3).all(axis=1).sum()) < MIN_LANDMARKS_3D:
            raise SampleBuildError(src, "landmarks", "fewer than 6 detected landmarks lie on the mesh's frontal render")
    for_fit = lm3
    if scan.landmarks_3d is None:   # detected jaw points mark the view's outline, not fixed surface points
        for_fit = lm3.copy()
        for_fit[:17] = np.nan
    try:
        rigid = align_to_reference(for_fit, model.landmarks_3d(), settings.scan_units)
    except AlignmentError as exc:
        raise SampleBuildError(src, "align", str(exc)) from None
    v2, lm3 = rigid.apply(v), rigid.apply(lm3)
    r = _stage(src, "render", lambda: render_frontal(v2, f, lm3, scale, scan.vertex_colors, scan.uv, scan.texture))
    extra = dict(scan.extra, photo="frontal render", to_camera=rigid.to_dict(), frontal_view=r.view)
    return dataclasses.replace(scan, vertices=v2, landmarks_3d=lm3, photo=r.photo, vertex_pixels=r.vertex_pixels,
                               landmarks_2d=r.landmarks_2d, extra=extra)


def _landmarks_2d(scan, provider, settings: PreprocessSettings) -> np.ndarray:
    src = scan.source
    if scan.extra.get("photo") == "frontal render":
        return np.asarray(scan.landmarks_2d, float)     # the 3D landmarks projected: exact, no detector needed
    if scan.photo is None:
        if settings.textured:
            raise SampleBuildError(src, "landmarks", "no photo next to the scan (textured samples need one; set textured: false)")
        if scan.landmarks_2d is not None:
            return np.asarray(scan.landmarks_2d, float)
        if scan.landmarks_3d is not None:
            return frontal_landmarks(scan.landmarks_3d, settings)
        raise SampleBuildError(src, "landmarks", "no photo and no landmarks")
    lm = _stage(src, "landmarks", lambda: provider.landmarks_for(scan, scan.photo)) if provider is not None else scan.landmarks_2d
    if lm is None:
        raise SampleBuildError(src, "landmarks", "no 2D landmarks (no landmark file next to the scan)")
    lm = np.asarray(lm, float)
    if lm.shape != (68, 2):
        raise SampleBuildError(src, "landmarks", f"2D landmarks must be (68, 2), got {lm.shape}")
    if int(np.isfinite(lm).all(axis=1).sum()) < MIN_LANDMARKS_3D:
        raise SampleBuildError(src, "landmarks", "fewer than 6 usable 2D landmarks")
    return lm


def build_samples(scan, settings: PreprocessSettings, model, landmark_provider, poses: list[Pose],
                  split: str = "test", normalization: geo.DceNormalization | None = None) -> list[dict]:
    """Rows of data.schema.SCHEMA for one scan in every pose of `poses`; raises SampleBuildError.
    `normalization` defaults to the settings' (a worker passes the one it built once)."""
    src = scan.source
    norm = normalization if normalization is not None else settings.dce_normalization()
    scan = frontalize(scan, settings, model, landmark_provider)
    lm_clean = _landmarks_2d(scan, landmark_provider, settings)
    gt = prepare_ground_truth(scan, lm_clean, settings)

    lm_fit = lm_clean
    if settings.landmark_noise_px > 0:
        lm_fit = lm_clean + noise_rng(scan.scan_id, settings.seed).normal(0, settings.landmark_noise_px, lm_clean.shape)
    fit = _stage(src, "fit", lambda: fit_landmarks(model, lm_fit))
    proj_gt = gt.projection
    anchor_c = landmark_anchor(fit.landmarks_3d, src)
    anchor_g = landmark_anchor(gt.landmarks_3d, src)

    colors_c = colors_g = None
    if settings.textured:
        colors_c = sample_photo(scan.photo, plane_to_pixels(fit.projection.project(fit.vertices)))
        pix_g = gt.vertex_pixels if gt.vertex_pixels is not None else plane_to_pixels(proj_gt.project(gt.vertices))
        colors_g = sample_photo(scan.photo, pix_g)

    n, s, t = settings.image_size, settings.scale_px_per_mm, settings.translation_px
    coarse_r = _stage(src, "render", lambda: DceSurface(fit.vertices, fit.faces, colors_c))
    gt_r = _stage(src, "render", lambda: DceSurface(gt.vertices, gt.faces, colors_g))
    rows = []
    for pose in poses:
        A = pose.rotation
        view_c = ImageView(A @ fit.projection.rotation, anchor_c, s, n, n, t)
        view_g = ImageView(A @ proj_gt.rotation, anchor_g, s, n, n, t)

        def render():
            ci, gi = coarse_r.render(view_c), gt_r.render(view_g)
            inp = norm.normalize(ci.dce, ci.mask, rgb=ci.rgb if settings.textured else None)
            tgt_full = norm.normalize(gi.dce, gi.mask, rgb=gi.rgb if settings.textured else None)
            return ci, gi, inp, tgt_full

        ci, gi, inp, tgt_full = _stage(src, "render", render)
        if not gi.mask.any():
            raise SampleBuildError(src, "render", f"ground truth covers no pixel in pose {pose.index}")
        if not ci.mask.any():
            raise SampleBuildError(src, "render", f"coarse model covers no pixel in pose {pose.index}")
        lm_img = view_g.to_image(gt.landmarks_3d)[:, :2]
        lm_img_c = view_c.to_image(fit.landmarks_3d)[:, :2]
        row = _stage(src, "schema", lambda: schema.build_row(
            dataset=scan.dataset, subject_id=scan.subject_id, scan_id=scan.scan_id, expression=scan.expression,
            pose=pose.index, yaw=pose.yaw, pitch=pose.pitch, roll=pose.roll, split=split,
            input_image=inp, target_image=tgt_full[..., :3], input_mask=ci.mask, target_mask=gi.mask,
            target_rgb=tgt_full[..., 3:6] if settings.textured else None,
            scale_px_per_mm=s, rotation=A, translation_px=t, anchor_input=anchor_c, anchor_target=anchor_g,
            landmarks_2d=lm_fit, landmarks_image=lm_img, source_uri=src,
            rotation_input=view_c.rotation, rotation_target=view_g.rotation,
            landmarks_input_image=lm_img_c, fit_rms_px=getattr(fit, "rms_px", None),
            encoding=settings.encoding))
        rows.append(row)
    return rows
