"""Skin colour as a function of template (p, q): tone, lips, brows, eyes, nostrils, stubble, blush.

Evaluated per photo pixel (not per vertex) so edges such as the lip line and brows stay sharp at
scanner resolution; `SynthFace.albedo` evaluates the same function at the template vertices.
"""
from __future__ import annotations

import numpy as np

from refine_ray.synth.identity import Identity
from refine_ray.synth.template import mouth_opening_weight

_LIGHT = np.array([0.93, 0.76, 0.66])
_DARK = np.array([0.36, 0.23, 0.16])


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def skin_rgb(identity: Identity) -> np.ndarray:
    return _LIGHT + (_DARK - _LIGHT) * identity.skin_tone


def albedo_at(pq: np.ndarray, identity: Identity, actions: dict | None = None, noise: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) RGB albedo in [0, 1] at template coordinates `pq` (N, 2)."""
    actions = actions or {}
    p, q = pq[:, 0], pq[:, 1]
    ap = np.abs(p)
    rgb = np.tile(skin_rgb(identity), (len(pq), 1))
    # cheeks a little redder, forehead a little paler
    blush = np.exp(-0.5 * (((ap - 0.5) / 0.15) ** 2 + ((q + 0.15) / 0.15) ** 2))
    rgb *= 1.0 + 0.10 * blush[:, None] * np.array([0.6, -0.4, -0.4])
    # lips: the band between the outer lip contours
    upper = np.exp(-0.5 * ((q + 0.45) / 0.03) ** 2)
    lower = np.exp(-0.5 * ((q + 0.525) / 0.035) ** 2)
    lip = np.clip(upper + lower, 0, 1) * _smoothstep((0.38 - ap) / 0.08)
    lip_rgb = np.array([0.70, 0.33, 0.33]) * (1.0 - 0.45 * identity.skin_tone)
    rgb = rgb * (1 - lip[:, None]) + lip_rgb * lip[:, None]
    # open mouth: dark cavity
    jd = actions.get("jaw_drop", 0.0)
    if jd:
        cav = np.clip(mouth_opening_weight(pq) * 1.6 * min(1.0, jd * 2), 0, 1)
        rgb = rgb * (1 - cav[:, None]) + np.array([0.12, 0.05, 0.05]) * cav[:, None]
    # brows: a band above the eyes, thicker for men, moved with the brow actions
    brow_q = 0.375 - 0.05 * ap ** 2
    thick = 0.028 if identity.male else 0.02
    brow = np.exp(-0.5 * ((q - brow_q) / thick) ** 4) * _smoothstep((ap - 0.1) / 0.05) * _smoothstep((0.66 - ap) / 0.05)
    brow_rgb = np.array([0.16, 0.11, 0.08]) * (1.0 - 0.4 * identity.skin_tone)
    rgb = rgb * (1 - 0.85 * brow[:, None]) + 0.85 * brow_rgb * brow[:, None]
    # eyes: sclera and iris inside the palpebral ellipse
    open_ = identity.shape.get("eye_opening", 1.0) * (1.0 + 0.35 * actions.get("outer_brow_raise", 0.0)
                                                        - 0.3 * actions.get("cheek_raise", 0.0))
    e = ((ap - 0.45) / 0.2) ** 2 + ((q - 0.225) / (0.045 * open_)) ** 2
    eye = _smoothstep((1.0 - e) / 0.25)
    iris = _smoothstep((1.0 - (((ap - 0.45) / 0.06) ** 2 + ((q - 0.225) / 0.06) ** 2)) / 0.3) * eye
    rgb = rgb * (1 - eye[:, None]) + np.array([0.88, 0.86, 0.82]) * eye[:, None]
    rgb = rgb * (1 - iris[:, None]) + np.array([0.25, 0.17, 0.10]) * iris[:, None]
    # nostrils
    nost = np.exp(-0.5 * (((ap - 0.075) / 0.03) ** 2 + ((q + 0.25) / 0.012) ** 2))
    rgb *= (1 - 0.7 * nost)[:, None]
    # stubble (men, lower face)
    if identity.male:
        beard = _smoothstep((-0.1 - q) / 0.15) * _smoothstep((0.9 - ap) / 0.2) * (1 - lip)
        shade = 0.22 * (0.4 + 0.6 * ((identity.seed % 7) / 6.0))
        rgb *= (1 - shade * beard)[:, None]
    if noise is not None:
        rgb *= (1.0 + noise)[:, None]
    return np.clip(rgb, 0.0, 1.0)
