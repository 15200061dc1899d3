"""The per-worker training function run by Ray Train's TorchTrainer.

Checkpoints are Ray Train's: every periodic and stage-end state is reported with
`ray.train.report(..., checkpoint=...)`, and a (re)starting worker resumes from `get_checkpoint()`.
That covers a worker killed mid-run (FailureConfig restarts the function) and a re-run of the same
command with the same name (Ray Train finds the run's snapshot in its storage). Ray keeps the newest
`schedule.keep_checkpoints` of them (CheckpointConfig); each stage-end state is also written to
`<run>/checkpoints/stage-*.pt` and kept for good (refinement and --init-from read those).
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from refine_ray import storage
from refine_ray.data.encoding import data_settings
from refine_ray.data.schema import manifest_image_side, read_manifest
from refine_ray.geometry import DceNormalization
from refine_ray.logs import configure_logging
from refine_ray.metrics import mae_mm, mae_norm
from refine_ray.nn.progressive import resolutions
from refine_ray.test_hooks import TestHooks
from refine_ray.training import checkpoints as ckpt
from refine_ray.training.batches import crop_and_pad, read_validation, reduce_images, reduce_mask
from refine_ray.training.config import TrainConfig
from refine_ray.training.gan import ConditionalGan
from refine_ray.training.tracking import METRICS_FILE, TENSORBOARD_DIR, MetricsLog, TensorBoardLog
from refine_ray.training.visuals import sample_grid
from refine_ray.version import code_version

__all__ = ["CREDENTIALS_KEY", "LOG_LEVEL_KEY", "METRICS_FILE", "TENSORBOARD_DIR", "TEST_HOOKS_KEY", "fade_alpha",
           "stage_plan", "train_loop_per_worker"]

log = logging.getLogger(__name__)


def stage_plan(cfg: TrainConfig) -> list[int]:
    """Resolution of each stage: 4…max for the progressive GAN, one stage at max for pix2pix."""
    if cfg.model.kind == "pix2pix":
        return [cfg.model.max_resolution]
    return resolutions(cfg.model.max_resolution)


def fade_alpha(stage: int, iteration: int, cfg: TrainConfig, fading: bool = True) -> float:
    """α after `iteration` (0-based) of a stage: linear 0→1 over the fade-in part, 1 afterwards."""
    if stage == 0 or not fading or cfg.model.kind == "pix2pix":
        return 1.0
    fade_iters = max(1, int(round(cfg.schedule.fade_fraction * cfg.schedule.iterations_per_stage)))
    return min(1.0, (iteration + 1) / fade_iters)


def _batches(shard, batch_size: int, device, shuffle_buffer: int,
             cache_mb: float = 0.0) -> Iterator[dict[str, torch.Tensor]]:
    """Endless training batches from this worker's Ray Data shard.

    Every pass restarts Ray Data's stream, which costs seconds; on a small dataset (the quickstart,
    tests, a fine-tune set) that start-up dominates the steps. So when a whole first pass fits in
    `cache_mb`, later passes come from memory, reshuffled each pass; larger shards keep streaming.
    """
    cached: list[dict[str, torch.Tensor]] | None = [] if cache_mb > 0 else None
    size = 0
    got = 0
    for batch in shard.iter_torch_batches(batch_size=batch_size, device=device, drop_last=False,
                                          local_shuffle_buffer_size=shuffle_buffer or None):
        got += 1
        if cached is not None:
            size += sum(t.numel() * t.element_size() for t in batch.values())
            if size <= cache_mb * 2**20:
                cached.append(batch)
            else:
                cached = None
        yield batch
    if got == 0:
        raise RuntimeError("this worker's data shard is empty: fewer training samples than workers?")
    if cached is not None:
        rows = {k: torch.cat([b[k] for b in cached]) for k in cached[0]}
        n = len(next(iter(rows.values())))
        while True:
            order = torch.randperm(n)
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size]
                yield {k: v[idx] for k, v in rows.items()}
    while True:
        for batch in shard.iter_torch_batches(batch_size=batch_size, device=device, drop_last=False,
                                              local_shuffle_buffer_size=shuffle_buffer or None):
            yield batch


def validate(gan: ConditionalGan, val: dict[str, np.ndarray], stage: int, resolution: int,
             normalization: DceNormalization, scale_px_per_mm: float, grid_samples: int) -> tuple[dict[str, float], bytes]:
    """mae_norm / mae_mm of the EMA generator and of the coarse input on held-out samples, and the PNG grid."""
    dev = gan.device
    x = reduce_images(torch.from_numpy(val["input"]), resolution)
    y = reduce_images(torch.from_numpy(val["target"]), resolution).numpy()
    imask = reduce_mask(torch.from_numpy(val["input_mask"]), resolution).numpy()
    tmask = reduce_mask(torch.from_numpy(val["target_mask"]), resolution).numpy()
    preds = []
    with torch.no_grad():
        for i in range(0, len(x), 16):
            xb = x[i:i + 16, list(gan.channels.generator_channels)].to(dev)
            preds.append(gan.ema(xb, stage, 1.0).float().cpu())
    pred = torch.cat(preds).numpy()
    coarse = x.numpy()[:, 0]
    out: dict[str, list[float]] = {k: [] for k in ("mae_norm", "coarse_mae_norm", "mae_mm", "coarse_mae_mm")}
    for i in range(len(pred)):
        both = imask[i] & tmask[i]
        out["mae_norm"].append(mae_norm(pred[i, 0], y[i, 0], imask[i], tmask[i]))
        out["coarse_mae_norm"].append(mae_norm(coarse[i], y[i, 0], imask[i], tmask[i]))
        t_mm = normalization.denormalize_depth(y[i, 0])
        out["mae_mm"].append(mae_mm(normalization.denormalize_depth(pred[i, 0]), t_mm, both))
        out["coarse_mae_mm"].append(mae_mm(normalization.denormalize_depth(coarse[i]), t_mm, both))
    stats: dict[str, float] = {}
    for k, v in out.items():
        arr = np.asarray(v, np.float64)
        stats[k] = float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")
        stats[k + "_std"] = float(np.nanstd(arr)) if np.isfinite(arr).any() else float("nan")
    stats["val_samples"] = int(len(pred))
    scale = scale_px_per_mm * resolution / val["input"].shape[-1]
    n = min(grid_samples, len(pred))
    rows = [(normalization.denormalize_depth(coarse[i]), normalization.denormalize_depth(pred[i, 0]),
             normalization.denormalize_depth(y[i, 0])) for i in range(n)]
    grid = sample_grid(rows, [imask[i] | tmask[i] for i in range(n)], scale)
    return stats, grid


def _checkpoint_state(gan: ConditionalGan, cfg: TrainConfig, stage: int, resolution: int, iteration: int,
                      alpha: float, global_step: int, fading: bool, manifest: dict[str, Any],
                      augment_rng: torch.Generator) -> dict[str, Any]:
    state = gan.state_dict()
    state.update({
        "format": ckpt.FORMAT, "kind": cfg.model.kind, "stage": stage, "resolution": resolution,
        "iteration": iteration, "alpha": float(alpha), "global_step": global_step, "fading": fading,
        "rng": {"seed": cfg.schedule.seed, "torch": torch.get_rng_state(), "augment": augment_rng.get_state()},
        "config": cfg.model_dump(mode="json"), "code_version": code_version(),
        "normalization": manifest.get("normalization"), "input_channels": list(manifest.get("input_channels", [])),
        "data": data_settings(manifest),  # how inputs must be encoded for this model (refinement reads it)
    })
    return state


CREDENTIALS_KEY = "_worker_credentials"   # train_loop_config key, beside the TrainConfig keys
TEST_HOOKS_KEY = "_test_hooks"             # train_loop_config key: refine_ray.test_hooks, read on the driver
LOG_LEVEL_KEY = "_log_level"               # train_loop_config key: the driver's log level
RAY_CHECKPOINT_PREFIX = "checkpoint-step"  # Ray Train checkpoint folders in the run directory


@dataclass
class Start:
    """Where a worker (re)starts: stage, iteration inside it, global step, whether that stage fades in."""

    stage: int = 0
    iteration: int = 0
    global_step: int = 0
    fading: bool = True
    resumed: bool = False


def restore(gan: ConditionalGan, cfg: TrainConfig) -> Start:
    """Resume from Ray's latest checkpoint of this run, else fine-tune from `init_from`, else start fresh.

    Ray hands the latest reported checkpoint to workers restarted after a failure (FailureConfig)
    and to a new run with the same name and storage (Ray Train restores the run from its snapshot).
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = ckpt.load_checkpoint(os.path.join(folder, ckpt.RAY_CHECKPOINT_FILE))
        gan.load_state_dict(state)
        start = Start(int(state["stage"]), int(state["iteration"]), int(state["global_step"]),
                      bool(state.get("fading", True)), resumed=True)
        if start.iteration >= cfg.schedule.iterations_per_stage:   # saved at a stage end: the next stage
            start = Start(start.stage + 1, 0, start.global_step, True, resumed=True)
        return start
    if cfg.init_from:
        src = ckpt.resolve_checkpoint(cfg.init_from)
        state = ckpt.load_checkpoint(src)
        if state["config"]["model"] != cfg.model.model_dump(mode="json"):
            raise ckpt.CheckpointError(f"{src}: --init-from checkpoint has a different model config "
                                       f"({state['config']['model']}) than this run ({cfg.model.model_dump(mode='json')})")
        gan.load_state_dict(state, weights_only=True)
        return Start(int(state["stage"]), 0, 0, fading=False)   # fine-tune its stage at α=1, then grow
    return Start()


def training_inputs(batch: dict[str, torch.Tensor], resolution: int, cfg: TrainConfig, augment: torch.Generator):
    """(input, target, pixel-loss weight or None, coverage or None) at `resolution`, randomly shifted alike."""
    x = reduce_images(batch["input"].float(), resolution)
    y = reduce_images(batch["target"].float(), resolution)
    tensors, fills = [x, y], [-1.0, -1.0]
    if cfg.optim.ignore_scan_holes:
        # 1 where the pixel loss applies, 0 in scan holes; fractional on pooled border pixels.
        # Only holes enclosed by the scan's outline: beyond the crop the generator must learn
        # to output background (geometry.footprint).
        hole = batch["scan_holes"].bool()
        tensors.append(reduce_images((~hole).float().unsqueeze(1), resolution).squeeze(1))
        fills.append(1.0)
    if cfg.model.footprint_head:
        # input and target coverage (0..1 on pooled pixels) for the footprint head
        masks = torch.stack([batch["input_mask"], batch["target_mask"]], 1).float()
        tensors.append(reduce_images(masks, resolution))
        fills.append(0.0)
    tensors = crop_and_pad(tensors, int(round(cfg.schedule.crop_pad * resolution)), augment, fills=fills)
    weight = tensors[2] if cfg.optim.ignore_scan_holes else None
    coverage = tensors[-1] if cfg.model.footprint_head else None
    return tensors[0], tensors[1], weight, coverage


class RunRecorder:
    """Rank 0's record of the run: metrics.jsonl, curves.png, TensorBoard, sample grids, log lines."""

    def __init__(self, run_dir: str, start: Start):
        self.run_dir = run_dir
        resume_step = start.global_step if start.resumed else None
        self.metrics = MetricsLog(run_dir, resume_step)
        # steps after the checkpoint's are trained again: TensorBoard hides what the lost attempt logged there
        self.tensorboard = TensorBoardLog(run_dir, None if resume_step is None else resume_step + 1)
        if start.resumed:
            self.metrics.add({"kind": "resume", "step": start.global_step, "stage": start.stage,
                              "iteration": start.iteration})
            log.info("resuming %s at stage %d iteration %d", run_dir, start.stage, start.iteration)

    def train(self, record: dict[str, Any], n_iter: int) -> None:
        self.metrics.add(record)
        self.tensorboard.scalars("train", {k: v for k, v in record.items()
                                           if k not in ("kind", "step", "stage", "iteration", "time")}, record["step"])
        stats = {k: v for k, v in record.items()
                 if k not in ("kind", "step", "stage", "resolution", "iteration", "alpha", "time")}
        r = record["resolution"]
        log.info("stage %d (%dx%d) it %d/%d α=%.2f %s", record["stage"], r, r, record["iteration"], n_iter,
                 record["alpha"], " ".join(f"{k}={v:.4g}" for k, v in stats.items()))

    def validation(self, stage: int, r: int, step: int, stats: dict[str, Any], grid: bytes) -> None:
        name = f"stage-{stage}-{r}x{r}"
        storage.atomic_write_bytes(storage.join(self.run_dir, "samples", f"{name}.png"), grid)
        self.metrics.add({"kind": "val", "step": step, "stage": stage, "resolution": r, **stats})
        self.tensorboard.scalars("val", stats, step)
        self.tensorboard.image_png(f"samples/{name}", grid, step)
        log.info("stage %d (%dx%d) validation: mae_norm %.4f (coarse %.4f), mae_mm %.3f (coarse %.3f)", stage, r, r,
                 stats["mae_norm"], stats["coarse_mae_norm"], stats["mae_mm"], stats["coarse_mae_mm"])

    def stage_end(self, stage: int, r: int, step: int, samples_per_s: float, checkpoint: str) -> None:
        self.metrics.add({"kind": "stage_end", "step": step, "stage": stage, "resolution": r,
                          "samples_per_s": samples_per_s, "checkpoint": checkpoint})
        self.tensorboard.scalars("train", {"samples_per_s": samples_per_s}, step)
        self.flush(plot=True)
        log.info("stage %d (%dx%d) done: %.1f samples/s, checkpoint %s", stage, r, r, samples_per_s, checkpoint)

    def flush(self, plot: bool = False) -> None:
        self.metrics.flush(plot)
        self.tensorboard.flush()

    def close(self) -> None:
        self.metrics.close()
        self.tensorboard.close()


def report(metrics: dict[str, Any], state: dict[str, Any] | None, dir_name: str) -> None:
    """Every worker reports (Ray Train's barrier); rank 0 hands `state` over as the run's checkpoint.

    Ray Train then owns it: Result.checkpoint, get_checkpoint() on a restart, CheckpointConfig's pruning.
    """
    import ray.train

    numbers = {k: v for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    if state is None:
        ray.train.report(numbers, checkpoint_dir_name=dir_name)
        return
    with tempfile.TemporaryDirectory(prefix="refine-ray-ckpt-") as folder:
        ckpt.save_checkpoint(os.path.join(folder, ckpt.RAY_CHECKPOINT_FILE), state)
        ray.train.report(numbers, checkpoint=ray.train.Checkpoint.from_directory(folder),
                         checkpoint_dir_name=dir_name)


def _inject_fault(hooks: TestHooks, run_dir: str, rank: int, global_step: int, last_checkpoint: str | None) -> None:
    """Testing aid (test hook fail_at_step): worker 0 dies once at that step, as a lost node would.

    It first waits (bounded) until Ray Train has registered the last reported checkpoint (its run
    snapshot names it): the controller collects reports asynchronously, so a worker dying right after
    one may lose it, and the tests mean to check the resume from it, not that race.
    """
    if hooks.fail_at_step != global_step or rank != 0:
        return
    marker = storage.join(run_dir, f".failed-at-{global_step}")
    if storage.exists(marker):
        return
    snapshot = storage.join(run_dir, "checkpoint_manager_snapshot.json")
    for _ in range(600):
        if last_checkpoint is None or (storage.exists(snapshot) and f'"{last_checkpoint}"' in storage.read_text(snapshot)):
            break
        time.sleep(0.2)
    storage.atomic_write_text(marker, "fault injected for testing\n")
    log.warning("fault injection: killing worker 0 at step %d", global_step)
    logging.shutdown()
    os._exit(1)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker entry point: resume or start, then run every stage of the schedule.

    `config`: a TrainConfig as JSON plus the driver's store settings, test hooks and log level.
    """
    import ray.train
    import ray.train.torch

    config = dict(config)
    configure_logging(config.pop(LOG_LEVEL_KEY, logging.INFO))
    credentials = config.pop(CREDENTIALS_KEY, None)
    if credentials:
        credentials.apply()   # store settings from the driver (storage.worker_credentials)
    hooks = TestHooks(**config.pop(TEST_HOOKS_KEY, {}))
    cfg = TrainConfig.model_validate(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    run_dir = storage.join(cfg.storage, cfg.name)
    manifest = read_manifest(cfg.data)
    plan = stage_plan(cfg)
    n_iter = cfg.schedule.iterations_per_stage
    sch = cfg.schedule

    torch.manual_seed(sch.seed)  # same initial weights on every worker (then broadcast to be sure)
    gan = ConditionalGan(cfg, device, world)
    start = restore(gan, cfg)
    gan.broadcast()
    recorder = RunRecorder(run_dir, start) if rank == 0 else None

    global_step = start.global_step
    last_checkpoint: str | None = None
    torch.manual_seed(sch.seed * 1_000_003 + rank * 7919 + global_step)
    augment = torch.Generator().manual_seed(sch.seed * 1_000_003 + rank * 7919 + global_step + 1)
    batches = _batches(ray.train.get_dataset_shard("train"), sch.batch_size, device, sch.shuffle_buffer,
                       sch.cache_mb)
    val = read_validation(cfg.data, sch.val_samples) if rank == 0 else None
    scale = float(manifest["scale_px_per_mm"])
    normalization = DceNormalization.from_dict(manifest["normalization"])
    size = manifest_image_side(manifest)
    depth_mm_per_unit = 0.5 * (normalization.depth_mm[1] - normalization.depth_mm[0])

    for stage in range(start.stage, len(plan)):
        r = plan[stage]
        fading = start.fading if stage == start.stage else True
        first = start.iteration if stage == start.stage else 0
        t0, alpha, stats = time.perf_counter(), 1.0, {}
        for it in range(first, n_iter):
            x, y, weight, coverage = training_inputs(next(batches), r, cfg, augment)
            alpha = fade_alpha(stage, it, cfg, fading)
            slope = depth_mm_per_unit * scale * r / size   # mm of depth per mm across, for one unit per pixel
            stats = gan.step(x, y, stage, alpha, weight, coverage, slope)
            global_step += 1
            _inject_fault(hooks, run_dir, rank, global_step, last_checkpoint)
            if recorder and ((it + 1) % sch.log_every == 0 or it + 1 == n_iter):
                recorder.train({"kind": "train", "step": global_step, "stage": stage, "resolution": r,
                                "iteration": it + 1, "alpha": alpha, "time": time.time(), **stats}, n_iter)
            if (it + 1) % sch.checkpoint_every == 0 and it + 1 < n_iter:
                state = None
                if rank == 0:
                    state = _checkpoint_state(gan, cfg, stage, r, it + 1, alpha, global_step, fading, manifest, augment)
                    recorder.flush()
                last_checkpoint = f"{RAY_CHECKPOINT_PREFIX}{global_step:08d}"
                report({"stage": stage, "resolution": r, "step": global_step, **stats}, state, last_checkpoint)
                if hooks.debug_dump_params:
                    _dump_params(gan, run_dir, rank, global_step)
        elapsed = time.perf_counter() - t0
        metrics: dict[str, Any] = {"stage": stage, "resolution": r, "step": global_step,
                                   "samples_per_s": (n_iter - first) * sch.batch_size * world / max(elapsed, 1e-9),
                                   **stats}
        state = None
        if rank == 0:
            state = _checkpoint_state(gan, cfg, stage, r, n_iter, alpha, global_step, fading, manifest, augment)
            stage_uri = storage.join(ckpt.checkpoint_dir(run_dir), ckpt.stage_checkpoint_name(stage, r))
            ckpt.save_checkpoint(stage_uri, state)   # kept for good: what refinement and --init-from read
            if val is not None:
                vstats, grid = validate(gan, val, stage, r, normalization, scale, sch.grid_samples)
                recorder.validation(stage, r, global_step, vstats, grid)
                metrics.update({k: v for k, v in vstats.items() if isinstance(v, float) and math.isfinite(v)})
            recorder.stage_end(stage, r, global_step, metrics["samples_per_s"], stage_uri)
        if hooks.debug_dump_params:
            _dump_params(gan, run_dir, rank, global_step)
        last_checkpoint = f"{RAY_CHECKPOINT_PREFIX}{global_step:08d}-stage{stage}"
        report(metrics, state, last_checkpoint)
    if recorder:
        recorder.close()

def _dump_params(gan: ConditionalGan, run_dir: str, rank: int, step: int) -> None:
    """Testing aid: this worker's weights, to check that data-parallel workers stay identical."""
    import io

    buf = io.BytesIO()
    torch.save({"generator": gan.generator.state_dict(), "critic": gan.critic.state_dict()}, buf)
    storage.atomic_write_bytes(storage.join(run_dir, "debug", f"params-step{step}-rank{rank}.pt"), buf.getvalue())
