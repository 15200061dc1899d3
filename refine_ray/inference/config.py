"""Configuration of the refinement job (jobs/refine.py): every CLI flag has a key here."""
from __future__ import annotations

from pydantic import Field, field_validator

from refine_ray.config import StrictModel


class FaultInjection(StrictModel):
    """Testing hook: kill one refinement actor once, to prove the job's exactly-once output.

    `kill_once_marker` is a path; the first actor that finds it absent creates it and exits hard
    in the middle of a work unit (after the model ran, before the shard is committed).
    """

    kill_once_marker: str | None = None


class ReportSettings(StrictModel):
    enabled: bool = True
    heatmap_max_mm: float = Field(default=5.0, gt=0, description="colour scale limit of the error heat maps")
    title: str | None = None


class RefineConfig(StrictModel):
    """Batch refinement: which model, which data, where the outputs go and how the work is spread."""

    checkpoint: str | None = Field(default=None, description="stage checkpoint or run dir (its last stage)")
    input: str | None = Field(default=None, description="folder/bucket of Parquet shards, or of raw scans")
    output: str | None = Field(default=None, description="output folder/bucket")
    split: str | None = Field(default="test", description="only samples of this split; null = every sample")
    batch_size: int = Field(default=32, ge=1)
    gpu: bool = False
    num_actors: int = Field(default=1, ge=1, description="model replicas (one per actor; one GPU each with gpu)")
    cpus_per_actor: float = Field(default=1.0, gt=0)
    meshes: bool = False
    precision: str = Field(default="fp32", description="fp32 or bf16 (bf16 only on GPU)")
    channels_last: bool = False
    overwrite: bool = Field(default=False, description="redo finished work units instead of skipping them")
    prepare: dict = Field(default_factory=dict, description=(
        "raw-scan input only: preprocessing settings (image_size, scale_px_per_mm, textured, normalization, "
        "landmarks, model, …) — the ones the model was trained with"))
    report: ReportSettings = ReportSettings()
    fault_injection: FaultInjection = FaultInjection()

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
