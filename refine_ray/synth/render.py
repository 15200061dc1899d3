"""Scanner simulation: a SynthFace → pixel-registered range grid (mm) + photo, as FRGC / Bosphorus capture them.

The smooth template mesh is rasterized (refine_ray.geometry.rasterize) with its camera-frame
positions, normals and template coordinates (p, q) as attributes; fine detail and albedo are then
evaluated per pixel from (p, q), so they are sharper than the template's vertex spacing. The photo
is Lambertian + ambient under a random light, shaded with the normals of the *detailed* surface,
so wrinkles show in the image as they do in a real photo.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh

from refine_ray.geometry import rasterize, rotation_from_angles
from refine_ray.synth.albedo import albedo_at, skin_rgb
from refine_ray.synth.detail import detail_at
from refine_ray.synth.face import SynthFace
from refine_ray.synth.template import template


@dataclass(frozen=True)
class ScannerProfile:
    name: str
    height: int                 # range grid rows
    width: int                  # range grid cols
    px_per_mm: float
    depth_noise_mm: float
    spike_fraction: float       # share of valid pixels with a gross outlier
    camera_distance_mm: float   # the scanner frame's z offset (FRGC stores z ≈ −distance)
    photo_scale: int            # photo pixels per range pixel (1 = pixel-registered)
    eye_holes: bool
    brow_dropout: float         # share of brow pixels lost
    occlusion_rate: float       # share of scans with a hand / glasses / hair occlusion
    max_yaw_deg: float
    max_pitch_deg: float


FRGC = ScannerProfile("frgc", 480, 640, 1.45, 0.15, 2e-4, 1200.0, 1, True, 0.5, 0.0, 10.0, 8.0)
BOSPHORUS = ScannerProfile("bosphorus", 400, 320, 1.6, 0.07, 0.0, 800.0, 2, False, 0.15, 0.25, 6.0, 5.0)
PROFILES = {"frgc": FRGC, "bosphorus": BOSPHORUS}
OCCLUSIONS = ("hand", "glasses", "hair")


@dataclass
class RenderedScan:
    grid: np.ndarray                 # (H, W, 3) mm camera frame, NaN where invalid
    valid: np.ndarray                # (H, W) bool
    photo: np.ndarray                # (h, w, 3) uint8
    landmarks_2d: np.ndarray         # (68, 2) photo pixels (col, row)
    landmarks_3d: np.ndarray         # (68, 3) mm, same frame as grid
    extra_2d: dict                   # Bosphorus-only labels → photo (col, row)
    extra_3d: dict
    subject_id: str
    expression: str
    meta: dict = field(default_factory=dict)


def _to_image(points, s, height, width, center):
    """Orthographic scanner: col = W/2 + s·(x − cx), row = H/2 − s·(y − cy), depth = z."""
    return np.stack([width / 2 + s * (points[:, 0] - center[0]),
                     height / 2 - s * (points[:, 1] - center[1]), points[:, 2]], axis=1)


def _pixel_to_xy(s, height, width, center):
    """Inverse of `_to_image` for x, y at pixel centres (for occluders that reach past the face)."""
    return lambda cols, rows: ((cols - width / 2) / s + center[0], (height / 2 - rows) / s + center[1])


def _grid_normals(points: np.ndarray) -> np.ndarray:
    """Unit normals of a range grid from central differences (NaN where a neighbour is missing)."""
    d_row = np.gradient(points, axis=0)      # row down ⇒ −y
    d_col = np.gradient(points, axis=1)      # col right ⇒ +x
    n = np.cross(d_col, -d_row)
    return n / np.linalg.norm(n, axis=2, keepdims=True)


def _surface(face: SynthFace, verts_cam, normals_cam, s, height, width, center):
    """Rasterize → (points (H,W,3) with detail, NaN outside; smooth normals; pq (H,W,2); mask; mole weight)."""
    pq = template().pq
    attrs = np.concatenate([verts_cam, normals_cam, pq], axis=1)
    img, mask = rasterize(_to_image(verts_cam, s, height, width, center), face.faces, attrs, height, width)
    img = img.astype(np.float64)
    flat_pq = img[mask][:, 6:8]
    det = detail_at(flat_pq, face.identity, face.actions)
    n = img[..., 3:6]
    n /= np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-9)
    pts = img[..., 0:3].copy()
    disp = np.zeros(mask.shape)
    disp[mask] = det.displacement
    pts[mask] += disp[mask][:, None] * n[mask]
    mole = np.zeros(mask.shape)
    mole[mask] = det.mole
    pqi = np.zeros(mask.shape + (2,))
    pqi[mask] = flat_pq
    pts[~mask] = np.nan
    return pts, n, pqi, mask, mole


def _ellipse(cols, rows, c, r, rx, ry):
    return ((cols - c) / rx) ** 2 + ((rows - r) / ry) ** 2


def _occlude(kind, pts, mask, albedo, lm_img, s, rng, identity, pix_to_xy):
    """Hand / glasses / hair in front of the face (Bosphorus-style occlusions), in place."""
    rows, cols = np.mgrid[0:mask.shape[0], 0:mask.shape[1]] + 0.5
    zmax = np.nanmax(pts[..., 2])
    holes = np.zeros(mask.shape, bool)
    if kind == "hand":
        # four fingers (capsules ≈17 mm thick) across the mouth or an eye, coming from one side
        target = lm_img[[48, 54, 51, 57]].mean(0) if rng.random() < 0.6 else lm_img[[36, 39]].mean(0)
        side = rng.choice([-1.0, 1.0])
        tip = target[0] + side * rng.uniform(15, 35) * s
        start = target[0] - side * 95 * s
        z_face = np.where(mask, pts[..., 2], zmax)
        height = np.zeros(mask.shape)
        region = np.zeros(mask.shape, bool)
        radius = 8.5 * s
        for i in range(4):
            r0 = target[1] + (i - 1.5) * 17 * s + rng.uniform(-2, 2) * s
            t_end = tip - side * abs(i - 1.5) * 6 * s                       # middle fingers reach further
            lo, hi = min(start, t_end), max(start, t_end)
            dc = np.clip(cols, lo, hi) - cols
            d = np.hypot(dc, rows - r0)
            inside = d < radius
            bulge = np.sqrt(np.clip(1 - (d / radius) ** 2, 0, 1)) * 8.0
            height = np.where(inside, np.maximum(height, bulge), height)
            region |= inside
        z = np.nanmax(np.where(region, z_face, -np.inf)) + 4.0 + height
        x, y = pix_to_xy(cols, rows)
        pts[region, 0], pts[region, 1], pts[region, 2] = x[region], y[region], z[region]
        mask |= region
        albedo[region] = skin_rgb(identity) * (0.85 + 0.15 * height[region] / 8.0)[:, None]
    elif kind == "glasses":
        z_frame = zmax - 2.0
        for k in (36, 42):
            c = lm_img[[k, k + 3]].mean(0)
            e = _ellipse(cols, rows, c[0], c[1], 24 * s, 17 * s)
            rim = (e < 1) & (e > 0.78)
            lens = e <= 0.78
            pts[rim & mask, 2] = z_frame
            albedo[rim] = (0.05, 0.05, 0.06)
            holes |= lens & mask & (rng.random(mask.shape) < 0.85)
            albedo[lens] *= 0.8
        a, b = lm_img[39], lm_img[42]
        bridge = (np.abs(rows - (a[1] + b[1]) / 2 + 3 * s) < 1.5 * s) & (cols > a[0]) & (cols < b[0])
        pts[bridge & mask, 2] = z_frame
        albedo[bridge] = (0.05, 0.05, 0.06)
    elif kind == "hair":
        top = lm_img[[19, 24]].mean(0)
        side = rng.choice([-1.0, 1.0])
        edge = top[1] - 10 * s + side * 0.35 * (cols - top[0]) + 4 * s * np.sin(cols / (6 * s))
        region = (rows < edge) & mask
        strands = 1.5 * np.sin(cols / (1.3 * s) + 3 * np.sin(rows / (9 * s)))
        pts[region, 2] += 4.0 + strands[region]
        albedo[region] = np.array([0.12, 0.08, 0.05]) * (1 + 0.3 * np.sin(cols / (1.3 * s)))[region][:, None]
    return holes


def draw_pose(rng: np.random.Generator, profile: ScannerProfile) -> tuple[float, float, float]:
    """Head pose (yaw, pitch, roll) in degrees: the first draws `render_scan` makes from its generator."""
    return (float(rng.uniform(-1, 1) * profile.max_yaw_deg), float(rng.uniform(-1, 1) * profile.max_pitch_deg),
            float(rng.uniform(-4, 4)))


def render_scan(face: SynthFace, profile: ScannerProfile, rng: np.random.Generator,
                occlusion: str | None = None) -> RenderedScan:
    """Simulate one capture of `face` by `profile`; all randomness comes from `rng`."""
    t = template()
    lm = t.landmark_index
    anchor = face.vertices[lm[[30, 36, 39, 42, 45]]].mean(0)
    yaw, pitch, roll = draw_pose(rng, profile)
    R = rotation_from_angles(yaw, pitch, roll)
    shift = np.array([rng.uniform(-15, 15), rng.uniform(-10, 10), -profile.camera_distance_mm + rng.uniform(-60, 60)])
    verts = (face.vertices - anchor) @ R.T + shift
    normals = trimesh.Trimesh(face.vertices, face.faces, process=False).vertex_normals @ R.T
    center = np.array([shift[0], shift[1] - 20.0])            # frame the face (its centre is ≈20 mm below the eyes)

    s = profile.px_per_mm
    pts, _, pq, mask, mole = _surface(face, verts, normals, s, profile.height, profile.width, center)
    alb = np.zeros(mask.shape + (3,))
    alb[mask] = albedo_at(pq[mask], face.identity, face.actions)
    alb *= (1.0 - 0.55 * mole)[..., None]
    lm_img = _to_image(verts[lm], s, profile.height, profile.width, center)[:, :2]

    holes = np.zeros(mask.shape, bool)
    occ_seed = int(rng.integers(2**31))          # one occluder, drawn alike for the range grid and the photo
    if occlusion:
        holes |= _occlude(occlusion, pts, mask, alb, lm_img, s, np.random.default_rng(occ_seed), face.identity,
                          _pixel_to_xy(s, profile.height, profile.width, center))

    # range validity: grazing angles, eyes (specular), part of the brows (dark hair), random dropouts
    n_det = _grid_normals(pts)
    valid = mask & np.isfinite(n_det[..., 2]) & (n_det[..., 2] > 0.2)
    ap, q = np.abs(pq[..., 0]), pq[..., 1]
    if profile.eye_holes:
        eye = ((ap - 0.45) / 0.2) ** 2 + ((q - 0.225) / 0.045) ** 2 < 1.0
        holes |= eye & mask & ~(alb.sum(-1) < 0.2)
    brow = (np.abs(q - (0.375 - 0.05 * ap**2)) < 0.025) & (ap > 0.12) & (ap < 0.64)
    holes |= brow & (_blob_noise(rng, mask.shape, 4) < profile.brow_dropout)
    holes |= _blob_noise(rng, mask.shape, 6) < 0.01
    valid &= ~holes

    grid = pts.copy()
    noise = rng.normal(0.0, profile.depth_noise_mm, mask.shape)
    grid[..., 2] += noise
    if profile.spike_fraction:
        spikes = valid & (rng.random(mask.shape) < profile.spike_fraction)
        grid[spikes, 2] += rng.choice([-1, 1], spikes.sum()) * rng.uniform(3, 15, spikes.sum())
    grid[~valid] = np.nan

    # photo: Lambertian + ambient under a random light, with the detailed surface's normals
    ps = profile.photo_scale
    if ps == 1:
        photo_pts, photo_mask, photo_alb = pts, mask, alb
    else:
        photo_pts, _, ppq, photo_mask, pmole = _surface(face, verts, normals, s * ps, profile.height * ps,
                                                        profile.width * ps, center)
        photo_alb = np.zeros(photo_mask.shape + (3,))
        photo_alb[photo_mask] = albedo_at(ppq[photo_mask], face.identity, face.actions)
        photo_alb *= (1.0 - 0.55 * pmole)[..., None]
        if occlusion:   # the same occluder at photo resolution
            _occlude(occlusion, photo_pts, photo_mask, photo_alb, lm_img * ps, s * ps,
                     np.random.default_rng(occ_seed), face.identity,
                     _pixel_to_xy(s * ps, profile.height * ps, profile.width * ps, center))
    photo, light = _shade(photo_pts, photo_mask, photo_alb, rng)

    extra_idx = list(t.extra_index.items())
    extra_img = _to_image(verts[[i for _, i in extra_idx]], s, profile.height, profile.width, center)
    return RenderedScan(
        grid=grid, valid=valid, photo=photo,
        landmarks_2d=lm_img * ps, landmarks_3d=verts[lm].copy(),
        extra_2d={k: extra_img[j, :2] * ps for j, (k, _) in enumerate(extra_idx)},
        extra_3d={k: verts[i].copy() for k, i in extra_idx},
        subject_id=face.subject_id, expression=face.expression,
        meta={"profile": profile.name, "yaw": yaw, "pitch": pitch, "roll": roll, "light": light.tolist(),
              "occlusion": occlusion, "intensity": face.intensity, "age": face.identity.age})


def _blob_noise(rng, shape, sigma):
    from scipy.ndimage import gaussian_filter
    n = gaussian_filter(rng.standard_normal(shape), sigma)
    from scipy.stats import norm
    return norm.cdf(n / max(n.std(), 1e-12))      # uniform-ish in [0, 1], spatially correlated


def _shade(pts, mask, albedo, rng):
    n = _grid_normals(pts)
    az, el = np.deg2rad(rng.uniform(-60, 60)), np.deg2rad(rng.uniform(5, 45))
    light = np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])
    ambient = rng.uniform(0.25, 0.4)
    lam = np.clip(np.nan_to_num(n @ light, nan=0.0), 0.0, 1.0)
    colour = np.array([1.0, rng.uniform(0.93, 1.0), rng.uniform(0.85, 1.0)])
    img = albedo * (ambient + (1 - ambient) * lam)[..., None] * colour * 1.1
    h, w = mask.shape
    bg = np.linspace(0.18, 0.3, h)[:, None, None] * np.array([0.9, 0.95, 1.0])
    img = np.where(mask[..., None], img, bg)
    img = np.clip(img, 0, 1) ** (1 / 2.2) + rng.normal(0, 0.01, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), light
