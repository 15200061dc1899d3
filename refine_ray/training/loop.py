"""The per-worker training function run by Ray Train's TorchTrainer.

Resume is driven by the run directory, not by Ray's checkpoint manager: every worker (re)starting
reads `<run>/checkpoints/latest.pt` if it exists. That one rule covers a worker killed mid-run
(FailureConfig restarts the function) and a re-run of the same command with the same name, and lets
the stage-end checkpoints be kept forever while the periodic one is overwritten.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Iterator

import numpy as np
import torch

from refine_ray import storage
from refine_ray.data.encoding import data_settings
from refine_ray.data.schema import read_manifest
from refine_ray.geometry import DceNormalization
from refine_ray.metrics import mae_mm, mae_norm
from refine_ray.nn.progressive import resolutions
from refine_ray.test_hooks import TestHooks
from refine_ray.training import checkpoints as ckpt
from refine_ray.training.batches import crop_and_pad, read_validation, reduce_images, reduce_mask
from refine_ray.training.config import TrainConfig
from refine_ray.training.gan import ConditionalGan
from refine_ray.training.visuals import curves_png, sample_grid
from refine_ray.version import code_version

METRICS_FILE = "metrics.jsonl"


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


def depth_to_mm(depth: np.ndarray, normalization: DceNormalization) -> np.ndarray:
    """Network-unit depth → mm with the dataset's fixed affine map (docs/design.md: never per image)."""
    return normalization.denormalize_depth(depth)


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


class RunLog:
    """metrics.jsonl (rewritten atomically, so it also works on object storage) and curves.png."""

    def __init__(self, run_dir: str, resume_step: int | None):
        self.run_dir = run_dir
        self.uri = storage.join(run_dir, METRICS_FILE)
        self.records: list[dict[str, Any]] = []
        if resume_step is not None and storage.exists(self.uri):
            for line in storage.read_text(self.uri).splitlines():
                rec = json.loads(line)
                if rec.get("step", 0) <= resume_step:
                    self.records.append(rec)

    def add(self, record: dict[str, Any], plot: bool = False) -> None:
        self.records.append(record)
        storage.atomic_write_text(self.uri, "".join(json.dumps(r) + "\n" for r in self.records))
        if plot:
            storage.atomic_write_bytes(storage.join(self.run_dir, "curves.png"), curves_png(self.records))


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
        t_mm = depth_to_mm(y[i, 0], normalization)
        out["mae_mm"].append(mae_mm(depth_to_mm(pred[i, 0], normalization), t_mm, both))
        out["coarse_mae_mm"].append(mae_mm(depth_to_mm(coarse[i], normalization), t_mm, both))
    stats: dict[str, float] = {}
    for k, v in out.items():
        arr = np.asarray(v, np.float64)
        stats[k] = float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")
        stats[k + "_std"] = float(np.nanstd(arr)) if np.isfinite(arr).any() else float("nan")
    stats["val_samples"] = int(len(pred))
    scale = scale_px_per_mm * resolution / val["input"].shape[-1]
    n = min(grid_samples, len(pred))
    rows = [(depth_to_mm(coarse[i], normalization), depth_to_mm(pred[i, 0], normalization),
             depth_to_mm(y[i, 0], normalization)) for i in range(n)]
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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker entry point: resume or start, then run every stage of the schedule."""
    import ray.train
    import ray.train.torch

    config = dict(config)
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
    start_stage, start_it, global_step, fading_first = 0, 0, 0, True
    latest = ckpt.latest_checkpoint(run_dir)
    resumed_from = None
    if latest:
        state = ckpt.load_checkpoint(latest)
        gan.load_state_dict(state)
        start_stage, start_it, global_step = int(state["stage"]), int(state["iteration"]), int(state["global_step"])
        fading_first = bool(state.get("fading", True))
        resumed_from = {"stage": start_stage, "iteration": start_it, "global_step": global_step}
        if start_it >= n_iter:
            start_stage, start_it, fading_first = start_stage + 1, 0, True
    elif cfg.init_from:
        src = ckpt.resolve_checkpoint(cfg.init_from)
        state = ckpt.load_checkpoint(src)
        if state["config"]["model"] != cfg.model.model_dump(mode="json"):
            raise ckpt.CheckpointError(f"{src}: --init-from checkpoint has a different model config "
                                       f"({state['config']['model']}) than this run ({cfg.model.model_dump(mode='json')})")
        gan.load_state_dict(state, weights_only=True)
        start_stage, fading_first = int(state["stage"]), False  # fine-tune its stage at α=1, then grow
    gan.broadcast()

    log = RunLog(run_dir, global_step if resumed_from else None) if rank == 0 else None
    if log and resumed_from:
        log.add({"kind": "resume", "step": global_step, **{k: v for k, v in resumed_from.items() if k != "global_step"}})
        print(f"[train] resuming {run_dir} at stage {resumed_from['stage']} iteration {resumed_from['iteration']}", flush=True)

    torch.manual_seed(sch.seed * 1_000_003 + rank * 7919 + global_step)
    augment = torch.Generator().manual_seed(sch.seed * 1_000_003 + rank * 7919 + global_step + 1)
    batches = _batches(ray.train.get_dataset_shard("train"), sch.batch_size, device, sch.shuffle_buffer,
                       sch.cache_mb)
    val = read_validation(cfg.data, sch.val_samples) if rank == 0 else None
    scale = float(manifest["scale_px_per_mm"])
    normalization = DceNormalization.from_dict(manifest["normalization"])

    for stage in range(start_stage, len(plan)):
        r = plan[stage]
        fading = fading_first if stage == start_stage else True
        first = start_it if stage == start_stage else 0
        t0, alpha, stats = time.perf_counter(), 1.0, {}
        for it in range(first, n_iter):
            batch = next(batches)
            x = reduce_images(batch["input"].float(), r)
            y = reduce_images(batch["target"].float(), r)
            tensors, fills = [x, y], [-1.0, -1.0]
            if cfg.optim.ignore_scan_holes:
                # 1 where the pixel loss applies, 0 in scan holes; fractional on pooled border pixels.
                # Only holes enclosed by the scan's outline: beyond the crop the generator must learn
                # to output background (geometry.footprint).
                hole = batch["scan_holes"].bool()
                tensors.append(reduce_images((~hole).float().unsqueeze(1), r).squeeze(1))
                fills.append(1.0)
            if cfg.model.footprint_head:
                # input and target coverage (0..1 on pooled pixels) for the footprint head
                masks = torch.stack([batch["input_mask"], batch["target_mask"]], 1).float()
                tensors.append(reduce_images(masks, r))
                fills.append(0.0)
            tensors = crop_and_pad(tensors, int(round(sch.crop_pad * r)), augment, fills=fills)
            x, y = tensors[0], tensors[1]
            weight = tensors[2] if cfg.optim.ignore_scan_holes else None
            coverage = tensors[-1] if cfg.model.footprint_head else None
            alpha = fade_alpha(stage, it, cfg, fading)
            stats = gan.step(x, y, stage, alpha, weight, coverage)
            global_step += 1
            if hooks.fail_at_step == global_step and rank == 0:
                marker = storage.join(run_dir, f".failed-at-{global_step}")
                if not storage.exists(marker):
                    storage.atomic_write_text(marker, "fault injected for testing\n")
                    print(f"[train] fault injection: killing worker 0 at step {global_step}", flush=True)
                    os._exit(1)
            if log and ((it + 1) % sch.log_every == 0 or it + 1 == n_iter):
                rec = {"kind": "train", "step": global_step, "stage": stage, "resolution": r,
                       "iteration": it + 1, "alpha": alpha, "time": time.time(), **stats}
                log.add(rec)
                print(f"[train] stage {stage} ({r}x{r}) it {it + 1}/{n_iter} α={alpha:.2f} "
                      + " ".join(f"{k}={v:.4g}" for k, v in stats.items()), flush=True)
            if (it + 1) % sch.checkpoint_every == 0 and it + 1 < n_iter:
                if rank == 0:
                    ckpt.save_checkpoint(storage.join(ckpt.checkpoint_dir(run_dir), ckpt.LATEST),
                                         _checkpoint_state(gan, cfg, stage, r, it + 1, alpha, global_step,
                                                           fading, manifest, augment))
                if hooks.debug_dump_params:
                    _dump_params(gan, run_dir, rank, global_step)
        elapsed = time.perf_counter() - t0
        done = n_iter - first
        metrics: dict[str, Any] = {"stage": stage, "resolution": r, "step": global_step,
                                   "samples_per_s": done * sch.batch_size * world / max(elapsed, 1e-9), **stats}
        if rank == 0:
            state = _checkpoint_state(gan, cfg, stage, r, n_iter, alpha, global_step, fading, manifest, augment)
            stage_uri = storage.join(ckpt.checkpoint_dir(run_dir), ckpt.stage_checkpoint_name(stage, r))
            ckpt.save_checkpoint(stage_uri, state)
            ckpt.save_checkpoint(storage.join(ckpt.checkpoint_dir(run_dir), ckpt.LATEST), state)
            if val is not None:
                vstats, grid = validate(gan, val, stage, r, normalization, scale, sch.grid_samples)
                storage.atomic_write_bytes(storage.join(run_dir, "samples", f"stage-{stage}-{r}x{r}.png"), grid)
                log.add({"kind": "val", "step": global_step, "stage": stage, "resolution": r, **vstats})
                metrics.update({k: v for k, v in vstats.items() if isinstance(v, float) and math.isfinite(v)})
                print(f"[train] stage {stage} ({r}x{r}) validation: mae_norm {vstats['mae_norm']:.4f} "
                      f"(coarse {vstats['coarse_mae_norm']:.4f}), mae_mm {vstats['mae_mm']:.3f} "
                      f"(coarse {vstats['coarse_mae_mm']:.3f})", flush=True)
            log.add({"kind": "stage_end", "step": global_step, "stage": stage, "resolution": r,
                     "samples_per_s": metrics["samples_per_s"], "checkpoint": stage_uri}, plot=True)
            print(f"[train] stage {stage} ({r}x{r}) done: {metrics['samples_per_s']:.1f} samples/s, "
                  f"checkpoint {stage_uri}", flush=True)
        if hooks.debug_dump_params:
            _dump_params(gan, run_dir, rank, global_step)
        ray.train.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})


def _dump_params(gan: ConditionalGan, run_dir: str, rank: int, step: int) -> None:
    """Testing aid: this worker's weights, to check that data-parallel workers stay identical."""
    import io

    buf = io.BytesIO()
    torch.save({"generator": gan.generator.state_dict(), "critic": gan.critic.state_dict()}, buf)
    storage.atomic_write_bytes(storage.join(run_dir, "debug", f"params-step{step}-rank{rank}.pt"), buf.getvalue())
