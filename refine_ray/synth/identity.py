"""Who a synthetic subject is: identity shape parameters plus what drives skin and detail."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# name: (mean, sd) — physical units (mm unless noted); sampled as mean + sd·z, z ~ N(0,1) clipped to ±2.5
IDENTITY_PARAMS: dict[str, tuple[float, float]] = {
    "cheek_half_width": (68.5, 3.2),      # bizygomatic width ≈ 2×: 121–153 mm at ±2.5σ, 124–150 at ±2σ
    "forehead_half_width": (56.0, 3.0),
    "jaw_half_width": (57.0, 3.5),
    "chin_half_width": (38.0, 3.0),
    "chin_y": (-118.0, 6.0),              # menton height below the eye-corner line
    "forehead_top_y": (75.0, 6.0),
    "brow_y": (15.0, 2.0),
    "nose_tip_y": (-35.0, 3.0),
    "subnasale_drop": (12.0, 1.5),
    "mouth_y": (-68.0, 3.5),
    "eye_spacing": (0.0, 2.0),            # lateral shift of the eye region
    "nose_protrusion": (20.0, 2.0),       # nose tip in front of the eye-corner plane: 15–25 at ±2.5σ
    "nose_width": (1.0, 0.1),             # relative alar width
    "nose_bridge": (0.12, 0.05),          # nasion height as a fraction of the protrusion
    "nose_tip_round": (1.0, 0.12),        # relative tip width
    "nose_hump": (0.5, 0.8),
    "alar_fullness": (5.0, 1.0),
    "brow_ridge": (4.0, 1.3),
    "eye_socket_depth": (9.0, 1.5),
    "eye_opening": (1.0, 0.12),           # relative palpebral height
    "cheekbone": (5.0, 1.4),
    "cheek_fullness": (2.0, 1.3),
    "nasolabial_depth": (1.5, 0.6),
    "upper_lip": (3.5, 0.9),
    "lower_lip": (4.0, 0.9),
    "mouth_half_width": (1.0, 0.07),      # relative mouth width
    "lip_protrusion": (3.0, 1.5),
    "chin_prominence": (4.0, 1.4),
    "lower_face_recession": (8.0, 2.5),
    "forehead_slope": (16.0, 4.0),
    "face_roundness": (50.0, 5.0),        # transverse curvature: how far the sides fall back (mm at p=±1)
    "temple_hollow": (2.0, 1.0),
    "asymmetry_x": (0.0, 1.2),
    "asymmetry_z": (0.0, 1.0),
    "asymmetry_phase": (0.0, 1.0),        # rad
}


@dataclass
class Identity:
    """One subject: identity shape parameters plus what drives skin and detail (age, sex, skin tone)."""

    shape: dict[str, float]
    age: float                 # years
    male: bool
    skin_tone: float           # 0 = very light … 1 = very dark
    seed: int                  # drives the subject's pores, moles, wrinkle layout

    @staticmethod
    def sample(rng: np.random.Generator) -> "Identity":
        z = np.clip(rng.standard_normal(len(IDENTITY_PARAMS)), -2.5, 2.5)
        shape = {k: m + s * zi for (k, (m, s)), zi in zip(IDENTITY_PARAMS.items(), z)}
        return Identity(shape=shape, age=float(rng.uniform(18, 75)), male=bool(rng.random() < 0.5),
                        skin_tone=float(rng.beta(2.0, 2.5)), seed=int(rng.integers(2**31)))
