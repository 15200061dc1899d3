"""Typed training configuration (configs/train/*.yaml); each field is a flag of `refine-ray train` (refine_ray.cli)."""
from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from refine_ray import storage
from refine_ray.config import StrictModel, flag, load_config
from refine_ray.nn.config import ModelConfig


class OptimConfig(StrictModel):
    """Adam and the loss weights of §4.3 (kappa None = C·1e-5, C = pixel-loss channels)."""

    lr_g: float = Field(1e-5, gt=0)
    lr_d: float = Field(1e-5, gt=0)
    betas: tuple[float, float] = (0.0, 0.99)
    gp_lambda: float = Field(10.0, ge=0)
    drift: float = Field(1e-3, ge=0)
    kappa: float | None = Field(None, ge=0)
    l1_weight: float = Field(100.0, ge=0, description="pix2pix only")
    ema_decay: float = Field(0.999, ge=0, lt=1)
    footprint_weight: float = Field(1.0, ge=0, description="weight of the footprint head's cross-entropy "
                                                          "(model.footprint_head) against the pixel loss")
    normal_weight: float = Field(0.0, ge=0, description="weight of an L1 loss on the surface normals of the output's "
                                                     "depth against the target's (on pixels wholly inside both), "
                                                     "beside the pixel loss; 0 = off (the paper's loss)")
    ignore_scan_holes: bool = Field(False, description="leave scan holes (pixels the coarse model covers inside the "
                                                       "scan's outline where the scan has no data) out of the pixel loss; "
                                                       "beyond the scan's crop the generator still learns background")


class ScheduleConfig(StrictModel):
    """Progressive schedule: every resolution trains `iterations_per_stage` steps, the first
    `fade_fraction` of them fading the new blocks in (α linear 0→1)."""

    iterations_per_stage: int = Field(10_000, ge=1, description="steps per resolution (paper: 10000)")
    batch_size: int = Field(4, ge=1, description="images per step and worker (paper: 4)")
    fade_fraction: float = Field(0.5, gt=0, le=1)
    shuffle_buffer: int = Field(64, ge=0, description="rows in each worker's local shuffle buffer (0 = file order)")
    cache_mb: float = Field(512.0, ge=0, description="keep a worker's shard in memory after the first pass when "
                                                     "it fits (skips Ray Data's per-pass restart); 0 = always stream")
    crop_pad: float = Field(0.0625, ge=0, lt=0.5, description="max random shift, fraction of the side")
    checkpoint_every: int = Field(1000, ge=1, description="iterations between periodic checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="Ray Train checkpoints kept for resuming (the newest); "
                                                       "stage-end checkpoints are kept regardless")
    log_every: int = Field(50, ge=1, description="iterations between metric lines")
    val_samples: int = Field(32, ge=0)
    grid_samples: int = Field(4, ge=1)
    seed: int = 0


class WorkersConfig(StrictModel):
    """Ray Train scaling: N workers, GPU or CPU (gloo), fractional CPUs on small machines."""

    num_workers: int = Field(1, ge=1, description="data-parallel training workers")
    use_gpu: bool = Field(False, description="one GPU per worker (NCCL)", json_schema_extra=flag("--gpu"))
    cpus_per_worker: float | None = Field(None, gt=0, description="CPUs reserved per worker (may be fractional); "
                                          "default 1, or the share that leaves Ray Data one CPU of the cluster")
    max_failures: int = Field(2, ge=-1, description="worker failures survived by restarting from the last checkpoint (-1 = always)")
    bf16: bool = Field(False, description="bf16 autocast on GPU")
    stall_timeout_s: float = Field(900.0, ge=0, description="stop with a diagnosis (exit 2) when the run reports no "
                                                           "progress for this long; 0 = wait forever")


class TrainConfig(StrictModel):
    data: str | None = Field(None, description="preprocessed dataset folder/URI with train/, test/ and manifest.json")
    storage: str | None = Field(None, description="folder/URI holding run directories")
    name: str | None = Field(None, description="run name; the same name resumes from the last checkpoint")
    init_from: str | None = Field(None, description="stage checkpoint (file or run dir) to fine-tune from")
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    workers: WorkersConfig = WorkersConfig()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        """A run name is a folder name: refused when it is not one already (never silently changed,
        so 'a b' and 'a_b' cannot share a run)."""
        if value is None:
            return value
        try:
            plain = storage.safe_name(value)
        except ValueError:
            plain = None
        if plain != value:
            hint = f" (e.g. {plain!r})" if plain else ""
            raise ValueError(f"run name {value!r} is not a plain folder name: use letters, digits, '-', '_', '.'{hint}")
        return value

    def require_paths(self) -> None:
        missing = [k for k in ("data", "storage", "name") if not getattr(self, k)]
        if missing:
            raise ValueError(f"training needs {', '.join(missing)} (config keys or --{' --'.join(missing)})")


def load_train_config(path: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    return load_config(TrainConfig, path, overrides)
