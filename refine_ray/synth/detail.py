"""Fine skin detail as a displacement (mm, + = outward) at template coordinates (p, q).

This is what a smooth, low-rank morphable model cannot express and what the refinement network must
recover: forehead furrows, glabellar lines, crow's feet, nasolabial folds, nose wrinkles, pores and
moles, with amplitudes ≈ 0.1–1.5 mm and widths ≈ 1–4 mm, driven by age and expression. It is
evaluated per scanner pixel, so it is not limited by the template's ≈1.2 mm vertex spacing.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

from refine_ray.synth.identity import Identity

P_MM = 68.0    # ≈ mm per unit p (half face width)
Q_MM = 96.0    # ≈ mm per unit q (half face height)
_TEX = 640     # pore texture size over the (p, q) square: ≈ 0.2 mm per texel


@dataclass(frozen=True)
class Detail:
    displacement: np.ndarray   # (N,) mm along the outward normal
    mole: np.ndarray           # (N,) 0..1, where the skin is a mole (for the albedo)


def _age(identity: Identity) -> float:
    return float(np.clip((identity.age - 18.0) / 55.0, 0.0, 1.0))


def _line(dist_mm: np.ndarray, width_mm: float) -> np.ndarray:
    """Groove profile with full width at half depth ≈ width_mm."""
    sigma = width_mm / 2.355
    return np.exp(-0.5 * (dist_mm / sigma) ** 2)


def _seg_dist_mm(p, q, a, b):
    ax, ay, bx, by = a[0] * P_MM, a[1] * Q_MM, b[0] * P_MM, b[1] * Q_MM
    x, y = p * P_MM, q * Q_MM
    dx, dy = bx - ax, by - ay
    t = np.clip(((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(x - ax - t * dx, y - ay - t * dy)


@lru_cache(maxsize=8)
def _pore_texture(seed: int) -> np.ndarray:
    """Band-pass noise (unit std) for pores and micro-relief; cached per subject."""
    rng = np.random.default_rng([seed, 0x9035])
    n = rng.standard_normal((_TEX, _TEX))
    band = gaussian_filter(n, 1.2) - gaussian_filter(n, 4.0)
    return (band / band.std()).astype(np.float32)


def detail_at(pq: np.ndarray, identity: Identity, actions: dict | None = None) -> Detail:
    """Displacement (mm) and mole mask at template coordinates `pq` (N, 2)."""
    actions = actions or {}
    a = actions.get
    p, q = pq[:, 0], pq[:, 1]
    ap = np.abs(p)
    age = _age(identity)
    rng = np.random.default_rng([identity.seed, 0xDE7A])
    d = np.zeros(len(pq))

    # forehead furrows: 3–5 wavy horizontal grooves, deeper with age and raised brows
    raise_ = max(a("inner_brow_raise", 0.0), a("outer_brow_raise", 0.0))
    amp = min(1.5, (0.12 + 0.7 * age) * (0.5 + 0.9 * raise_))
    n_lines = int(rng.integers(3, 6))
    taper = np.exp(-((p / 0.5) ** 4))
    for k in range(n_lines):
        q0 = 0.50 + 0.085 * k + rng.uniform(-0.015, 0.015)
        wav = 0.012 * np.sin(2 * np.pi * (rng.uniform(0.6, 1.4) * p) + rng.uniform(0, 2 * np.pi))
        depth = amp * rng.uniform(0.6, 1.0) * (1.0 - 0.15 * k)
        d -= depth * taper * _line((q - q0 - wav) * Q_MM, rng.uniform(1.5, 3.0))

    # glabellar lines: two short vertical grooves between the brows, with age and frowning
    frown = a("brow_lower", 0.0)
    amp = min(1.5, (0.08 + 0.5 * age) * (0.3 + 1.6 * frown))
    for side in (-1.0, 1.0):
        x0 = side * rng.uniform(0.04, 0.07)
        d -= amp * _line(_seg_dist_mm(p, q, (x0, 0.27), (x0 * 1.2, 0.41)), rng.uniform(1.2, 2.2))

    # crow's feet: 3–4 lines fanning out from each outer eye corner, with age and smiling
    smile = max(a("lip_corner_pull", 0.0), a("cheek_raise", 0.0))
    amp = min(1.0, (0.06 + 0.55 * age) * (0.35 + 1.4 * smile))
    angles = np.deg2rad(np.array([-35.0, -12.0, 10.0, 32.0]) + rng.uniform(-6, 6, 4))
    for side in (-1.0, 1.0):
        start = np.array([side * 0.72, 0.22])
        for ang in angles:
            length = rng.uniform(8.0, 14.0)
            end = start + np.array([side * np.cos(ang) * length / P_MM, np.sin(ang) * length / Q_MM])
            d -= amp * rng.uniform(0.6, 1.0) * _line(_seg_dist_mm(p, q, start, end), rng.uniform(1.0, 1.8))

    # nasolabial folds: from the nose wing to beside the mouth corner; deeper with age and smiling
    amp = min(1.5, (0.25 + 0.8 * age) * (0.6 + 0.9 * smile))
    for side in (-1.0, 1.0):
        pts = [(side * 0.24, -0.19), (side * 0.33, -0.33), (side * 0.40, -0.46), (side * 0.43, -0.58)]
        dist = np.min([_seg_dist_mm(p, q, pts[i], pts[i + 1]) for i in range(3)], axis=0)
        d -= amp * _line(dist, rng.uniform(2.5, 4.0))

    # nose wrinkles (disgust): short horizontal grooves across the bridge
    nw = a("nose_wrinkle", 0.0)
    if nw:
        for q0 in (0.06, 0.11, 0.16):
            d -= 0.6 * nw * np.exp(-((p / 0.12) ** 4)) * _line((q - q0) * Q_MM, 1.5)

    # under-eye lines with age
    for side in (-1.0, 1.0):
        d -= 0.35 * age * _line(_seg_dist_mm(p, q, (side * 0.33, 0.15), (side * 0.6, 0.14)), 2.0)

    # pores / micro-relief: band-pass noise, stronger on nose and cheeks, fading at the outline
    tex = _pore_texture(identity.seed)
    coords = np.stack([(q + 1) / 2 * (_TEX - 1), (p + 1) / 2 * (_TEX - 1)])
    region = 0.07 + 0.07 * np.exp(-0.5 * ((ap - 0.45) / 0.2) ** 2) * np.exp(-0.5 * ((q + 0.1) / 0.25) ** 2)
    region += 0.05 * np.exp(-0.5 * ((p / 0.12) ** 2 + ((q + 0.1) / 0.12) ** 2))
    d += region * (0.7 + 0.6 * age) * map_coordinates(tex, coords, order=1, mode="nearest")

    # moles: 1–5 raised round spots (0.2–0.8 mm high, 1.5–4 mm across), away from the eyes and lips
    mole = np.zeros(len(pq))
    for _ in range(int(rng.integers(1, 6))):
        while True:
            c = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8)])
            if np.hypot(*c) < 0.85 and abs(abs(c[0]) - 0.45) + abs(c[1] - 0.22) > 0.2 and abs(c[1] + 0.48) > 0.1:
                break
        r = rng.uniform(0.75, 2.0)
        dist = np.hypot((p - c[0]) * P_MM, (q - c[1]) * Q_MM)
        bump = np.exp(-0.5 * (dist / (r / 1.2)) ** 4)
        d += rng.uniform(0.2, 0.8) * bump
        mole = np.maximum(mole, bump)
    return Detail(displacement=d, mole=mole)
