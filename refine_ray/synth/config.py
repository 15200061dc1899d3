"""Settings of the synthetic-dataset job: each field is a flag of `refine-ray synthesize` (refine_ray.cli)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from refine_ray.config import StrictModel


class SynthesizeConfig(StrictModel):
    format: Literal["frgc", "bosphorus", "registered"] = Field(
        "frgc", description="frgc: .abs.gz+.ppm+.pts; bosphorus: .bnt+.png+.lm2/.lm3; "
                            "registered: smooth .ply meshes + registered.npz")
    subjects: int = Field(10, ge=1, description="number of subjects")
    scans_per_subject: int = Field(4, ge=1, description="scans per subject (ignored for registered)")
    out: str = Field("data/synth", description="output folder or s3:// prefix")
    seed: int = Field(0, description="the same seed gives the same files")
    preview: bool = Field(False, description="also write <out>/preview.png (contact sheet)")
    serial: bool = Field(False, description="run in-process, without Ray")
