"""Procedural faces in millimetres on the fixed template: identity, expression, albedo.

Every quantity is a smooth function of the template coordinates (p, q), so vertex i is the same
anatomical point for every subject and expression. The smooth surface here is what a morphable
model can span; fine detail (wrinkles, pores, moles) lives in `synth.detail` and is added at
scanner resolution, outside that span.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import PchipInterpolator

from refine_ray.synth.albedo import albedo_at
from refine_ray.synth.identity import Identity
from refine_ray.synth.template import mouth_opening_weight, template

# Bumped whenever the geometry of a face for a given seed changes, so caches built from synthetic faces
# (e.g. the default morphable model) can include it in their key.
GENERATOR_VERSION = 2

# Facial action fields (≈ FACS action units) in mm at activation 1; expressions are mixtures.
EXPRESSIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happiness": {"lip_corner_pull": 1.0, "cheek_raise": 1.0, "jaw_drop": 0.2},
    "surprise": {"inner_brow_raise": 1.0, "outer_brow_raise": 1.0, "jaw_drop": 1.0},
    "disgust": {"nose_wrinkle": 1.0, "upper_lip_raise": 1.0, "brow_lower": 0.6, "lip_corner_depress": 0.3},
    "sadness": {"inner_brow_raise": 0.9, "brow_lower": 0.3, "lip_corner_depress": 1.0},
    "anger": {"brow_lower": 1.0, "lip_press": 1.0, "upper_lip_raise": 0.2},
    "fear": {"inner_brow_raise": 1.0, "outer_brow_raise": 0.5, "brow_lower": 0.4, "lip_stretch": 1.0, "jaw_drop": 0.4},
}
FRGC_EXPRESSIONS = ("neutral", "happiness", "surprise", "disgust", "sadness")
BOSPHORUS_EXPRESSIONS = ("neutral", "happiness", "surprise", "disgust", "sadness", "anger", "fear")


def _g(p, q, p0, q0, sp, sq):
    return np.exp(-0.5 * (((p - p0) / sp) ** 2 + ((q - q0) / sq) ** 2))


def _g2(p, q, p0, q0, sp, sq):
    """Symmetric pair of Gaussians at ±p0."""
    return _g(p, q, p0, q0, sp, sq) + _g(p, q, -p0, q0, sp, sq)


def _seg_dist(p, q, a, b):
    """Distance in (p, q) from points to the segment a–b."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    t = np.clip(((p - a[0]) * d[0] + (q - a[1]) * d[1]) / (d @ d), 0.0, 1.0)
    return np.hypot(p - a[0] - t * d[0], q - a[1] - t * d[1])


def expression_actions(expression: str, intensity: float) -> dict[str, float]:
    if expression not in EXPRESSIONS:
        raise ValueError(f"unknown expression {expression!r}; known: {', '.join(EXPRESSIONS)}")
    return {k: v * float(intensity) for k, v in EXPRESSIONS[expression].items()}


def _identity_surface(pq: np.ndarray, s: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X, Y, Z (mm) of the neutral face, without the nose (added by `_nose`)."""
    p, q = pq[:, 0], pq[:, 1]
    ys = PchipInterpolator(
        [-1.0, -0.48, -0.265, -0.13, 0.22, 0.39, 1.0],
        [s["chin_y"], s["mouth_y"], s["nose_tip_y"] - s["subnasale_drop"], s["nose_tip_y"], 0.0, s["brow_y"],
         s["forehead_top_y"]])
    hw = PchipInterpolator(
        [-1.0, -0.8, -0.48, -0.05, 0.22, 0.45, 1.0],
        [s["chin_half_width"] * 0.95, s["chin_half_width"] * 1.05, s["jaw_half_width"], s["cheek_half_width"],
         s["cheek_half_width"] - 2.0, 0.5 * (s["cheek_half_width"] + s["forehead_half_width"]) + 1.0,
         s["forehead_half_width"]])
    # across = p relative to the disc's width at this q, so the outline is hw(q)·e(q): an egg, not a diamond
    across = p / np.maximum(np.sqrt(np.clip(1.0 - q * q, 0.0, None)), 1e-6)
    across = np.clip(across, -1.0, 1.0)
    egg = np.clip(1.0 - np.abs(q) ** np.where(q > 0, 3.0, 2.3), 0.0, None) ** np.where(q > 0, 1 / 3.0, 1 / 2.3)
    x = across * hw(q) * egg + s["eye_spacing"] * np.exp(-(((q - 0.22) / 0.2) ** 2)) * np.sin(np.pi * p)
    y = ys(q)
    mid = PchipInterpolator([-1.0, -0.82, -0.68, -0.48, -0.3, -0.13, 0.22, 0.34, 0.5, 0.75, 1.0],
                            [-18.0, -8.4, -12.0, -8.0, -5.6, -5.6, 0.0, -3.0, 0.0, -5.0, -10.0])
    # eye corners: medial ≈ 12 mm ahead of lateral; fades out before the outline so the temples stay round
    flat_eyes = 1.0 - 0.5 * np.exp(-(((q - 0.22) / 0.3) ** 2)) * np.exp(-((p / 0.75) ** 4))
    z = mid(q) - s["face_roundness"] * p**2 * flat_eyes - 15.0 * p**4
    z -= s["lower_face_recession"] * np.clip((-q - 0.3) / 0.7, 0, None)
    z -= s["forehead_slope"] * np.clip((q - 0.45) / 0.55, 0, None) ** 2
    z -= s["eye_socket_depth"] * _g2(p, q, 0.45, 0.23, 0.16, 0.09)
    z += 0.45 * s["eye_socket_depth"] * _g2(p, q, 0.45, 0.22, 0.10, 0.05)      # eyeballs under the lids
    z += s["brow_ridge"] * np.exp(-0.5 * ((q - 0.36) / 0.06) ** 2) * np.exp(-((p / 0.55) ** 4))
    z += s["cheekbone"] * _g2(p, q, 0.55, -0.02, 0.16, 0.12)
    z += s["cheek_fullness"] * _g2(p, q, 0.45, -0.35, 0.2, 0.15)
    z -= s["temple_hollow"] * _g2(p, q, 0.85, 0.35, 0.1, 0.15)
    for side in (-1.0, 1.0):
        d = _seg_dist(p, q, (side * 0.25, -0.22), (side * 0.42, -0.50))
        z -= s["nasolabial_depth"] * np.exp(-0.5 * (d / 0.04) ** 2)
    mw = s["mouth_half_width"]
    z += s["lip_protrusion"] * _g(p, q, 0.0, -0.49, 0.3 * mw, 0.1)
    z += s["upper_lip"] * _g(p, q, 0.0, -0.445, 0.22 * mw, 0.035)
    z += s["lower_lip"] * _g(p, q, 0.0, -0.53, 0.2 * mw, 0.04)
    z -= 1.5 * _g(p, q, 0.0, -0.48, 0.3 * mw, 0.012)                          # lip contact line
    z -= 1.0 * _g(p, q, 0.0, -0.36, 0.025, 0.05)                              # philtrum groove
    z += s["chin_prominence"] * _g(p, q, 0.0, -0.82, 0.22, 0.1)
    phase = s["asymmetry_phase"]
    x += s["asymmetry_x"] * np.sin(np.pi * q + phase) * (1 - p**2)
    z += s["asymmetry_z"] * np.sin(np.pi * p + phase) * np.cos(0.5 * np.pi * q)
    return x, y, z


def _nose_shape(pq: np.ndarray, s: dict[str, float]) -> np.ndarray:
    """Nose height field with its tip at 1 (multiplied by the amplitude that gives the protrusion)."""
    p, q = pq[:, 0], pq[:, 1]
    b = s["nose_bridge"]
    ridge = PchipInterpolator([-0.4, -0.29, -0.25, -0.2, -0.13, -0.05, 0.1, 0.24, 0.32],
                              [0.0, 0.0, 0.25, 0.78, 1.0, 0.84, 0.5 + 0.3 * b, b, 0.0])(np.clip(q, -0.4, 0.32))
    ridge = np.where(q > 0.32, 0.0, ridge)
    width = PchipInterpolator([-0.25, -0.13, 0.0, 0.3], [0.13, 0.085, 0.06, 0.045])(np.clip(q, -0.25, 0.3))
    width = width * np.where(q < -0.05, s["nose_tip_round"], 1.0)
    h = ridge * np.exp(-0.5 * (p / width) ** 2)
    h += 0.02 * s["nose_hump"] * _g(p, q, 0.0, 0.06, 0.05, 0.06)
    return h


def _expression_displacement(pq, acts: dict[str, float]) -> np.ndarray:
    p, q = pq[:, 0], pq[:, 1]
    d = np.zeros((len(pq), 3))
    sgn = np.sign(p)
    a = acts.get
    d[:, 1] += 6.0 * a("inner_brow_raise", 0) * _g2(p, q, 0.2, 0.38, 0.15, 0.12)
    d[:, 1] += 6.0 * a("outer_brow_raise", 0) * _g2(p, q, 0.5, 0.38, 0.18, 0.12)
    bl = a("brow_lower", 0)
    d[:, 1] -= 4.0 * bl * _g2(p, q, 0.25, 0.37, 0.2, 0.1)
    d[:, 0] -= 3.0 * bl * sgn * _g2(p, q, 0.2, 0.37, 0.15, 0.1)
    d[:, 2] += 1.5 * bl * _g(p, q, 0.0, 0.36, 0.1, 0.08)
    cr = a("cheek_raise", 0)
    d[:, 1] += 4.0 * cr * _g2(p, q, 0.5, -0.1, 0.18, 0.15)
    d[:, 2] += 3.0 * cr * _g2(p, q, 0.5, -0.12, 0.18, 0.12)
    nw = a("nose_wrinkle", 0)
    d[:, 2] += 1.5 * nw * _g(p, q, 0.0, 0.12, 0.08, 0.06)
    d[:, 1] += 2.0 * nw * _g2(p, q, 0.22, -0.2, 0.08, 0.08)
    ul = a("upper_lip_raise", 0)
    d[:, 1] += 4.0 * ul * _g(p, q, 0.0, -0.44, 0.25, 0.06)
    d[:, 2] += 2.0 * ul * _g(p, q, 0.0, -0.44, 0.25, 0.05)
    sm = a("lip_corner_pull", 0)
    d[:, 0] += 6.0 * sm * sgn * _g2(p, q, 0.38, -0.48, 0.14, 0.1)
    d[:, 1] += 7.0 * sm * _g2(p, q, 0.38, -0.48, 0.14, 0.1)
    d[:, 2] -= 3.0 * sm * _g2(p, q, 0.4, -0.48, 0.1, 0.08)
    d[:, 2] += 3.0 * sm * _g2(p, q, 0.45, -0.3, 0.15, 0.1)
    sd = a("lip_corner_depress", 0)
    d[:, 1] -= 5.0 * sd * _g2(p, q, 0.38, -0.5, 0.14, 0.1)
    d[:, 2] += 2.0 * sd * _g(p, q, 0.0, -0.78, 0.2, 0.1)
    ls = a("lip_stretch", 0)
    d[:, 0] += 5.0 * ls * sgn * _g2(p, q, 0.35, -0.48, 0.16, 0.12)
    d[:, 1] -= 1.5 * ls * _g2(p, q, 0.35, -0.48, 0.16, 0.12)
    lp = a("lip_press", 0)
    d[:, 2] -= 2.0 * lp * _g(p, q, 0.0, -0.48, 0.25, 0.05)
    jd = a("jaw_drop", 0)
    if jd:
        jaw = 1.0 / (1.0 + np.exp((q + 0.48) / 0.012))           # 1 below the lip line, 0 above
        taper = np.exp(-((p / 0.75) ** 4))
        d[:, 1] -= 16.0 * jd * jaw * taper
        d[:, 2] -= 4.0 * jd * jaw * taper
        d[:, 2] -= 14.0 * jd * mouth_opening_weight(pq)          # the stretched band is the mouth cavity
    return d


def smooth_vertices(identity: Identity, expression: str = "neutral", intensity: float = 1.0,
                    pq: np.ndarray | None = None) -> np.ndarray:
    """(V, 3) mm of the smooth face: identity + expression, no fine detail.

    The nose amplitude is solved so that the tip sits `nose_protrusion` mm in front of the mean
    z of the four eye corners (the eye-corner plane), before the expression moves anything.
    """
    t = template()
    pq = t.pq if pq is None else pq
    s = identity.shape
    x, y, z = _identity_surface(t.pq, s)
    nose = _nose_shape(t.pq, s)
    lm = t.landmark_index
    eye_plane = z[lm[[36, 39, 42, 45]]].mean()
    tip = lm[30]
    amp = (eye_plane + s["nose_protrusion"] - z[tip]) / nose[tip]
    if pq is not t.pq:
        x, y, z = _identity_surface(pq, s)
        nose = _nose_shape(pq, s)
    z = z + amp * nose
    alae = s["alar_fullness"] * _g2(pq[:, 0], pq[:, 1], 0.2 * s["nose_width"], -0.2, 0.06 * s["nose_width"], 0.05)
    z = z + alae * (1 - np.clip(nose, 0, 1))
    z = z - eye_plane
    v = np.stack([x, y, z], axis=1)
    return v + _expression_displacement(pq, expression_actions(expression, intensity))


@dataclass
class SynthFace:
    """One synthetic face: smooth template mesh + what the renderer needs for detail and colour."""

    vertices: np.ndarray          # (V, 3) mm, smooth (no fine detail)
    faces: np.ndarray             # (F, 3)
    landmark_index: np.ndarray    # (68,)
    albedo: np.ndarray            # (V, 3) in [0, 1]
    subject_id: str
    expression: str
    intensity: float
    identity: Identity
    actions: dict = field(default_factory=dict)

    @property
    def landmarks_3d(self) -> np.ndarray:
        return self.vertices[self.landmark_index]


def make_face(identity: Identity, subject_id: str, expression: str = "neutral", intensity: float = 1.0) -> SynthFace:
    t = template()
    acts = expression_actions(expression, intensity)
    return SynthFace(vertices=smooth_vertices(identity, expression, intensity), faces=t.faces,
                     landmark_index=t.landmark_index, albedo=albedo_at(t.pq, identity, acts),
                     subject_id=subject_id, expression=expression, intensity=float(intensity),
                     identity=identity, actions=acts)


REGISTERED_SEED_SALT = 0x5EED_3D33  # separate seed stream: registered subjects never coincide with scan subjects


def registered_population(n: int, seed: int = 0, expressions: bool = False):
    """(vertices (n, V, 3) mm, faces (F, 3), landmark_index (68,)): smooth registered faces on one topology.

    No fine detail, no scanner noise — the input for a PCA morphable model. The subjects come from
    their own seed stream, disjoint from the subjects of synthetic scans. With `expressions=True`
    every other face carries a random expression (for models with an expression basis).
    """
    rng = np.random.default_rng([REGISTERED_SEED_SALT, int(seed)])
    t = template()
    out = np.empty((int(n), len(t.pq), 3))
    names = list(EXPRESSIONS)
    for i in range(int(n)):
        ident = Identity.sample(rng)
        expr, inten = "neutral", 0.0
        if expressions and i % 2 == 1:
            expr, inten = names[int(rng.integers(1, len(names)))], float(rng.uniform(0.3, 1.0))
        out[i] = smooth_vertices(ident, expr, inten)
    return out, t.faces.copy(), t.landmark_index.copy()
