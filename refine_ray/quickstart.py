"""The whole chain in one process on a laptop: synthesize → preprocess → train → refine → report.

Each step calls the same library function as its job (jobs/synthesize.py, preprocess.py, train.py,
refine.py), on a deliberately small problem: a few synthetic FRGC-format subjects, 64² images,
a short progressive schedule (4² → 64²) on the CPU. It demonstrates that the parts fit together
and what the outputs look like; it is far too short a training to reproduce the paper's numbers.
Re-running with the same --out resumes/skips every finished step.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

from pydantic import Field

from refine_ray import storage
from refine_ray.config import StrictModel
from refine_ray.data.pipeline import run_preprocess
from refine_ray.data.settings import PreprocessSettings
from refine_ray.inference.batch import run_refine
from refine_ray.inference.config import RefineConfig
from refine_ray.synth.dataset import synthesize_dataset
from refine_ray.training.config import load_train_config
from refine_ray.training.trainer import train


class QuickstartConfig(StrictModel):
    out: str = Field("quickstart-out", description="folder (or s3:// prefix) for every step's output")
    subjects: int = Field(9, ge=2, description="synthetic subjects (2/3 train, 1/3 test)")
    scans_per_subject: int = Field(2, ge=1, description="scans per synthetic subject")
    poses: int = Field(2, ge=0, description="augmented poses per scan besides the original")
    image_size: int = Field(64, ge=16, description="image side (px); the paper uses 256")
    scale_px_per_mm: float = Field(0.3, gt=0, description="frames the face at 64² (1.2 at 256²)")
    max_resolution: int = Field(64, ge=4, description="last progressive stage")
    iterations_per_stage: int = Field(400, ge=1, description="paper: 10,000")
    batch_size: int = Field(4, ge=1, description="training images per step")
    max_channels: int = Field(32, ge=4, description="feature-width cap (paper 128)")
    lr: float = Field(2e-4, gt=0, description="Adam learning rate of G and D (paper 1e-5 over far longer training)")
    train_config: str = Field("configs/train/dce_d_dce.yaml", description="Table-3 configuration to shorten")
    residual: bool = Field(True, description="generator adds detail to the coarse input (a short schedule then "
                                             "starts from the coarse model; refine_ray/nn/residual.py)")
    ignore_scan_holes: bool = Field(True, description="scan holes don't count in the pixel loss")
    footprint_head: bool = Field(True, description="with residual: a head decides which coarse pixels the face keeps "
                                                   "(crop border, holes); refine_ray/nn/residual.py")
    seed: int = Field(0, description="seeds the synthetic data, the split and the training")


def _say(msg: str) -> None:
    print(f"[quickstart] {msg}", file=sys.stderr, flush=True)


def _timed(name: str, fn: Callable[[], Any], times: dict[str, float]) -> Any:
    t0 = time.perf_counter()
    _say(f"{name} …")
    result = fn()
    times[name] = round(time.perf_counter() - t0, 1)
    _say(f"{name} done in {times[name]:.0f} s")
    return result


def run_quickstart(cfg: QuickstartConfig, project_root: str | None = None) -> dict[str, Any]:
    """Run every step; returns where things are and how long each step took."""
    import os

    out = cfg.out if storage.is_remote(cfg.out) else os.path.abspath(cfg.out)
    scans, data, runs, refined = (storage.join(out, p) for p in ("scans", "data", "runs", "refined"))
    times: dict[str, float] = {}

    if not storage.exists(storage.join(scans, "synthesis.json")):
        _timed("synthesize FRGC-format scans", lambda: synthesize_dataset(
            "frgc", cfg.subjects, cfg.scans_per_subject, scans, seed=cfg.seed), times)

    prep = PreprocessSettings(input=scans, output=data, poses={"count": cfg.poses}, image_size=cfg.image_size,
                              scale_px_per_mm=cfg.scale_px_per_mm, textured=True, seed=cfg.seed,
                              scans_per_shard=2, max_error_fraction=0.5)
    summary = _timed("preprocess (3DMM fit, poses, DCE+RGB images)", lambda: run_preprocess(prep), times)
    if not summary.get("ok", True):
        raise RuntimeError(f"preprocessing failed for too many scans; see {data}/errors.parquet")

    root = project_root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    train_cfg = load_train_config(os.path.join(root, cfg.train_config), {
        "model.max_resolution": cfg.max_resolution, "model.max_channels": cfg.max_channels,
        "schedule.iterations_per_stage": cfg.iterations_per_stage, "schedule.batch_size": cfg.batch_size,
        "schedule.checkpoint_every": cfg.iterations_per_stage, "schedule.val_samples": 8,
        "schedule.log_every": max(1, cfg.iterations_per_stage // 2), "schedule.seed": cfg.seed,
        "optim.lr_g": cfg.lr, "optim.lr_d": cfg.lr, "workers.cpus_per_worker": 1.0,
        "model.residual": cfg.residual, "optim.ignore_scan_holes": cfg.ignore_scan_holes,
        "model.footprint_head": cfg.footprint_head and cfg.residual,
    })
    result = _timed("train (progressive, CPU)", lambda: train(train_cfg, data=data, storage_uri=runs,
                                                              name="quickstart"), times)

    refine_cfg = RefineConfig(checkpoint=result.run_dir, input=data, output=refined, split="test", batch_size=16,
                              meshes=True, cpus_per_actor=1.0)
    refine_cfg.report.title = "refine-ray quickstart: refinement of the synthetic test split"
    res = _timed("refine the test split + report", lambda: run_refine(refine_cfg), times)
    return {"report": storage.join(res.report_dir, "report.html"), "run_dir": result.run_dir,
            "refined": refined, "samples_refined": res.samples_refined, "errors": res.errors, "seconds": times}
