"""Settings of the 3DMM-building job: each field is a flag of `refine-ray build-3dmm` (refine_ray.cli)."""
from __future__ import annotations

from pydantic import Field

from refine_ray.config import StrictModel


class Build3dmmConfig(StrictModel):
    registered: str | None = Field(None, description="registered meshes: .npz (vertices, faces, landmark_index) or a "
                                                     "folder of meshes; none = a synthetic population")
    landmarks: str | None = Field(None, description="iBUG-68 → vertex mapping (eos TOML ibug_to_*.txt) for a mesh folder")
    components: int = Field(60, ge=1, description="principal components to keep")
    out: str = Field("model.npz", description="output model .npz, local path or s3:// URI")
    synthetic_subjects: int = Field(200, ge=2, description="subjects of the synthetic registered population used "
                                                           "when --registered is absent")
    seed: int = Field(0, description="seed of the synthetic population")
    align: bool = Field(True, description="Procrustes-align the meshes first (--no-align: they already share one frame)")
