"""Configuration of the refinement job: each field is a flag of `refine-ray refine` (refine_ray.cli)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator

from refine_ray.config import StrictModel, flag
from refine_ray.data.settings import PreprocessSettings

PREPARE_FIXED = ("input", "output", "poses", "split")   # decided by the refine job for raw-scan input


class ReportSettings(StrictModel):
    enabled: bool = Field(True, description="write report/ (summary.json, report.md, report.html)",
                          json_schema_extra=flag("--report"))
    heatmap_max_mm: float = Field(default=5.0, gt=0, description="colour scale limit of the error heat maps")
    title: str | None = Field(None, description="report title")


class PhotoSettings(StrictModel):
    """Photo inputs: where landmarks come from when no landmark file is beside a photo, and the 3DMM."""

    landmarks: Literal["dlib", "face_alignment"] = Field(
        default="dlib", description="landmark detector for photos without a landmark file (dlib: weights "
                                    "installed with the package, works offline; face_alignment: torch hub weights)")
    landmark_options: dict = Field(default_factory=dict, description="detector settings, e.g. {upsample: 2} (dlib)")
    allow_download: bool = Field(default=False, description="face_alignment: may download its weights (off: "
                                                            "pre-cache them, see docs/refine.md)")
    model: str | None = Field(default=None, description="3DMM for the photo fits; default: the one the model's "
                                                        "training data was fitted with")
    per_unit: int = Field(default=16, ge=1, le=4096, description="photos per work unit (one commit each)",
                          json_schema_extra=flag("--photos-per-unit"))
    max_pixels: int = Field(default=64_000_000, ge=1, description="larger images are refused unread",
                            json_schema_extra=flag("--max-photo-pixels"))


class CoarseMeshSettings(StrictModel):
    """Coarse meshes made by other tools (input_kind meshes)."""

    units: Literal["mm", "cm", "m"] = Field("mm", description="unit of the coarse meshes' coordinates",
                                            json_schema_extra=flag("--mesh-units"))
    landmark_index: str | None = Field(None, description="landmark-vertex-index file (68 vertex indices) of the meshes' "
                                                         "topology, when no landmark file is beside a mesh",
                                       json_schema_extra=flag("--mesh-landmark-index"))
    landmark_group: str | None = Field(None, description="group of a multi-group .ljson landmark file",
                                       json_schema_extra=flag(None))
    model: str | None = Field(None, description="3DMM whose mean landmarks define the frame; default: the model's "
                                                "training data's", json_schema_extra=flag(None))
    per_unit: int = Field(8, ge=1, le=4096, description="meshes per work unit (one commit each)",
                          json_schema_extra=flag("--meshes-per-unit"))


class RefineConfig(StrictModel):
    """Batch refinement: which model, which data, where the outputs go and how the work is spread."""

    checkpoint: str | None = Field(default=None, description="stage checkpoint, or a training run dir (its last stage); local or s3://")
    input: str | None = Field(default=None, description="sample shards (the preprocess output), raw scans or face photos; local or s3://")
    input_kind: Literal["auto", "shards", "meshes", "scans", "photos"] = Field(
        default="auto", description="what --input holds (auto: shards, else coarse meshes with <name>.landmark_index.txt "
                                    "files, else scans, else photos)")
    output: str | None = Field(default=None, description="output folder or s3:// prefix")
    split: str | None = Field(default="test", description="only samples of this split; null = every sample")
    batch_size: int = Field(default=32, ge=1, description="images read, scored and written together")
    forward_batch: int = Field(default=0, ge=0, description=(
        "images per forward pass of the network (0: the whole batch on GPU; on CPU as many as make 8,192 "
        "pixels, at least one: two 64² images, one 256² image — faster and a worker's memory stays low)"))
    gpu: bool = Field(False, description="one GPU per actor")
    num_actors: int | None = Field(default=None, ge=1, description=(
        "most model replicas (one per actor, one GPU each with --gpu): the pool grows to it while units wait and "
        "the cluster has room (an autoscaler adds nodes up to its max_workers); default: one per work unit"))
    min_actors: int = Field(default=1, ge=1, description="replicas the pool starts with and keeps; work starts as "
                                                         "soon as this many are up")
    cpus_per_actor: float = Field(default=1.0, gt=0, description="CPUs reserved per actor")
    meshes: bool | None = Field(default=None, description=(
        "write meshes, 16-bit depth/normal maps, fit JSON and gallery tiles per sample (default: on for photos, "
        "coarse meshes and shards without ground truth (the preprocess job's photo output), off for the others)"))
    mesh_format: Literal["ply", "obj"] = Field("ply", description="mesh file format")
    precision: str = Field(default="fp32", description="fp32 or bf16 (bf16 only on GPU)")
    channels_last: bool = Field(False, description="NHWC memory format (faster convolutions on GPU)")
    overwrite: bool = Field(default=False, description="redo finished work units instead of skipping them")
    prepare: dict = Field(default_factory=dict, description=(
        "raw-scan input only: preprocessing settings beyond those read from the checkpoint (e.g. landmarks, "
        "model); image_size, scale_px_per_mm, textured, normalization and the crop come from the checkpoint, "
        "and a value that contradicts it is refused"))
    photos: PhotoSettings = PhotoSettings()
    coarse_meshes: CoarseMeshSettings = CoarseMeshSettings()
    report: ReportSettings = ReportSettings()

    @field_validator("prepare")
    @classmethod
    def _prepare(cls, value: dict) -> dict:
        """Checked as preprocessing settings now, so a typo fails before anything runs, named by its
        full key path (prepare.<key>)."""
        try:
            PreprocessSettings.model_validate({k: v for k, v in value.items() if k not in PREPARE_FIXED})
        except ValidationError as exc:
            raise ValueError("; ".join(f"prepare.{'.'.join(str(p) for p in e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}"
                                       for e in exc.errors())) from None
        return value

    @field_validator("precision")
    @classmethod
    def _precision(cls, v: str) -> str:
        if v not in ("fp32", "bf16"):
            raise ValueError("precision must be 'fp32' or 'bf16'")
        return v

    @field_validator("split")
    @classmethod
    def _split(cls, v: str | None) -> str | None:
        if v is not None and v not in ("train", "test"):
            raise ValueError("split must be 'train', 'test' or null")
        return v


class CompareConfig(StrictModel):
    """The report job: one comparison table over several refinement outputs."""

    runs: list[str] = Field(default_factory=list, description="output folders (or s3:// prefixes) of the refine job")
    labels: list[str] | None = Field(None, description="row label per run (default: each folder's name)")
    out: str | None = Field(None, description="folder or s3:// prefix for summary.json, report.md, report.html")
    title: str | None = Field(None, description="report title")
    heatmap_max_mm: float = Field(5.0, gt=0, description="single run: colour-scale limit of the heat maps (mm)")
