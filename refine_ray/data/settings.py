"""Typed settings of the preprocessing job: each field is a flag of the preprocess job (refine_ray.cli)."""
from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, field_validator, model_validator

from refine_ray.config import StrictModel, flag
from refine_ray.data.codec import check_depth_step
from refine_ray.geometry import DceNormalization
from refine_ray.landmarks import PROVIDERS


class PoseSettings(StrictModel):
    """Pose augmentation (paper §5.4): `count` random rotations per scan on top of the original pose."""

    count: int = Field(5, ge=0, le=64, description="random poses per scan besides the original (pose 0)",
                       json_schema_extra=flag("--poses"))
    yaw_deg: float = Field(45.0, ge=0, le=90, description="yaw drawn uniformly in ±yaw_deg")
    pitch_deg: float = Field(20.0, ge=0, le=90, description="pitch drawn uniformly in ±pitch_deg")
    roll_deg: float = Field(20.0, ge=0, le=90, description="roll drawn uniformly in ±roll_deg")


class StorageSettings(StrictModel):
    """S3 settings; empty values fall back to the AWS_* environment variables. Never written to outputs."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = Field(None, repr=False)
    secret_access_key: str | None = Field(None, repr=False)


class PreprocessSettings(StrictModel):
    input: str | None = Field(None, description="folder or s3:// prefix with FRGC (.abs), Bosphorus (.bnt) or mesh scans, "
                                                "or face photos (.jpg/.jpeg/.png: samples without ground truth)")
    input_kind: Literal["auto", "scans", "photos"] = Field(
        "auto", description="what --input holds (auto: scans, else photos); photos become target-less test samples "
                            "of their original pose, for jobs/refine.py")
    output: str | None = Field(None, description="dataset folder or s3:// prefix: train/, test/, errors.parquet, manifest.json")
    model: str | None = Field(None, description="morphable model: .npz, BFM 2017 .h5, BFM 2009 .mat, eos .bin or an "
                                                "ICT-FaceKit folder, loaded and checked before anything runs; default: "
                                                "the built-in synthetic model")
    model_landmarks: str | None = Field(None, description="iBUG-68 vertices of the model: a file of 68 vertex indices "
                                                          "or an eos ibug_to_*.txt mapping (BFM and eos files carry none)")
    landmarks: str = Field("file", description="2D landmark provider: 'file' (landmarks shipped with each scan) or 'face_alignment'")
    @field_validator("landmarks")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        if value not in PROVIDERS:
            raise ValueError(f"unknown landmark provider {value!r} (choose from {', '.join(PROVIDERS)})")
        return value

    landmark_group: str | None = Field(None, description="group of a multi-group menpo .ljson landmark file to use "
                                       "(default: the only group, else the first with 68 points)")
    landmark_noise_px: float = Field(0.0, ge=0, description="σ of Gaussian noise (px) added to the 2D landmarks before the 3DMM fit")
    poses: PoseSettings = PoseSettings()
    split: Literal["subject", "all-test", "all-train"] = Field("subject", description="subject-disjoint split, or everything to one split")
    train_fraction: float = Field(2.0 / 3.0, gt=0, lt=1, description="share of subjects in train (paper: 2/3)")
    seed: int = Field(0, description="seeds the split and the pose draws")
    image_size: int = Field(256, ge=16, le=2048, description="square image side in pixels")
    scale_px_per_mm: float = Field(1.2, gt=0, description="fixed orthographic scale for coarse and ground truth")
    scan_units: Literal["mm", "cm", "m"] = Field("mm", description="unit of the scans' coordinates and 3D landmarks; "
                                                 "a face whose landmark distances do not fit it is an error row")
    render_px_per_mm: float | None = Field(None, gt=0, description="scale of the frontal render that serves as the "
                                           "photo of a mesh without one (default: scale_px_per_mm)")
    translation_px: tuple[float, float] = (0.0, 0.0)
    textured: bool = Field(True, description="add R,G,B of the photo to the input (DCE+RGB, 6 channels)")
    crop_radius_mm: float = Field(95.0, gt=0, description="sphere around the nose tip that crops the ground truth")
    crop_contour: bool = Field(True, description="also cut along the jaw contour landmarks (paper §5.2)")
    max_edge_mm: float | None = Field(None, gt=0, description="grid scans: no triangle edge longer than this; default adapts to the grid spacing")
    median_filter: bool = Field(True, description="median-filter outliers of the ground truth (paper §5.2)")
    normalization: dict = Field(default_factory=dict, description="DceNormalization overrides, e.g. {depth_mm: [-100, 50]}")
    scans_per_shard: int = Field(8, ge=1, le=10000, description="scans per shard: bounds shard size to scans×(poses+1) samples")
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    encoding: Literal["compact", "float32"] = Field(
        "compact", description="image cells: compact (uint16 D,C,E, uint8 RGB, bit-packed masks; ~1/3 the bytes) or float32")
    max_error_fraction: float = Field(0.2, ge=0, le=1, description="exit non-zero when more than this share of scans failed")
    preview: int = Field(0, ge=0, le=64, description="write preview.png with this many samples (0 = none)")
    num_workers: int | None = Field(None, ge=1, description=(
        "most parallel scan workers (one CPU each): the pool grows to it while batches wait and the cluster has "
        "room (an autoscaler adds CPU nodes); default: one per batch of scans, batches sized for the CPUs Ray sees"))
    min_workers: int = Field(1, ge=1, description="scan workers the pool starts with and keeps")
    limit: int | None = Field(None, ge=1, description="process only the first N scans (sorted)")
    local: bool = Field(False, description="run in this process without Ray (small jobs, debugging)")
    storage: StorageSettings = Field(StorageSettings(), json_schema_extra=flag(None))  # YAML or AWS_* env, never flags

    def dce_normalization(self) -> DceNormalization:
        """The channel normalization these settings write (their overrides of the defaults)."""
        return DceNormalization.from_dict(self.normalization)

    @model_validator(mode="after")
    def _normalization_is_valid(self):
        if self.normalization:
            DceNormalization.from_dict(self.normalization)  # unknown keys / lo >= hi → a clear error now
        if self.encoding == "compact":
            check_depth_step(DceNormalization.from_dict(self.normalization))
        return self

    @model_validator(mode="after")
    def _paths_differ(self):
        if self.input and self.output and self.input.rstrip("/") == self.output.rstrip("/"):
            raise ValueError("input and output must differ")
        return self

    def public_dict(self) -> dict:
        """The settings as written to the manifest: storage credentials removed."""
        data = self.model_dump(mode="json")
        data["storage"] = {"endpoint_url": self.storage.endpoint_url, "region": self.storage.region}
        return data

    def fingerprint(self) -> str:
        """Hash of every setting that changes sample content; a resumed run must match it."""
        data = self.model_dump(mode="json")
        for key in ("input", "input_kind", "output", "max_error_fraction", "preview", "num_workers", "min_workers", "limit", "local", "storage",
                    "scans_per_shard", "compression"):
            data.pop(key, None)
        if data.get("encoding") == "float32":
            data.pop("encoding")  # outputs written before the compact encoding existed resume with float32
        return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
