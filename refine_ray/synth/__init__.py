"""Synthetic face scans: procedural faces (identity, expression, detail, albedo), scanner simulation,
writers of the FRGC / Bosphorus / generic formats, and the dataset generator."""
from refine_ray.synth.face import (
    BOSPHORUS_EXPRESSIONS,
    EXPRESSIONS,
    FRGC_EXPRESSIONS,
    SynthFace,
    make_face,
    registered_population,
    smooth_vertices,
)
from refine_ray.synth.identity import IDENTITY_PARAMS, Identity
from refine_ray.synth.template import template

__all__ = [
    "BOSPHORUS_EXPRESSIONS", "EXPRESSIONS", "FRGC_EXPRESSIONS", "IDENTITY_PARAMS", "Identity", "SynthFace",
    "make_face", "registered_population", "smooth_vertices", "template",
]
