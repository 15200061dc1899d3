"""Assemble and run the TorchTrainer: Ray Data input, scaling, failure handling, run directory."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from refine_ray import storage
from refine_ray.cluster import ensure_ray
from refine_ray.data.schema import manifest_image_side, read_manifest
from refine_ray.logs import current_level
from refine_ray.test_hooks import read_test_hooks
from refine_ray.training import checkpoints as ckpt
from refine_ray.training.batches import COLUMNS, decode_for_training
from refine_ray.training.config import TrainConfig
from refine_ray.training.loop import CREDENTIALS_KEY, LOG_LEVEL_KEY, TEST_HOOKS_KEY, stage_plan, train_loop_per_worker
from refine_ray.training.monitor import RunMonitor, TrainingStalled, describe_resources, plan_cpus_per_worker
from refine_ray.training.tracking import METRICS_FILE, TENSORBOARD_DIR

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where everything is after a run."""

    run_dir: str
    stage_checkpoints: list[str]
    metrics_uri: str
    curves_uri: str
    samples_dir: str
    tensorboard_dir: str = ""
    last_metrics: dict[str, Any] = field(default_factory=dict)
    checkpoint: Any = None   # Ray Train's latest checkpoint of the run (Result.checkpoint, a ray.train.Checkpoint)

    def describe(self) -> str:
        lines = [f"run directory: {self.run_dir}", "stage checkpoints:"]
        lines += [f"  {c}" for c in self.stage_checkpoints]
        lines += [f"metrics: {self.metrics_uri}", f"curves:  {self.curves_uri}",
                  f"sample grids: {self.samples_dir}", f"TensorBoard: tensorboard --logdir {self.tensorboard_dir}"]
        if self.checkpoint is not None:
            lines.append(f"Ray Train checkpoint: {self.checkpoint.path}")
        if self.last_metrics:
            lines.append("last stage: " + json.dumps(self.last_metrics, sort_keys=True))
        return "\n".join(lines)


def _abs(uri: str) -> str:
    return uri if storage.is_remote(uri) else os.path.abspath(uri)


def train(config: TrainConfig, *, data: str | None = None, storage_uri: str | None = None,
          name: str | None = None) -> TrainResult:
    """Train (or resume) the run `<storage>/<name>` on the dataset `data`; callable in-process.

    Starts a local Ray when none is running. Re-running with the same name continues from the
    run's last checkpoint; worker failures are retried `workers.max_failures` times.
    """
    import ray
    import ray.data
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    updates = {k: v for k, v in (("data", data), ("storage", storage_uri), ("name", name)) if v is not None}
    cfg = config.model_copy(update=updates)
    cfg = TrainConfig.model_validate(cfg.model_dump())
    cfg.require_paths()
    cfg = cfg.model_copy(update={"data": _abs(cfg.data), "storage": _abs(cfg.storage), "name": storage.safe_name(cfg.name)})

    manifest = read_manifest(cfg.data)  # a clear error now beats one inside every worker
    size = manifest_image_side(manifest)
    if size < cfg.model.max_resolution:
        raise ValueError(f"{cfg.data}: images are {size}², smaller than max_resolution {cfg.model.max_resolution}")
    need = cfg.model.channels.required_input_channels()
    have = len(manifest.get("input_channels") or []) or need
    if have < need:
        raise ValueError(f"{cfg.data}: dataset has {have} input channels, generator input "
                         f"{cfg.model.generator_input} needs {need} (DCE+RGB needs a textured dataset)")

    if cfg.init_from:   # on the driver, before Ray: a missing, unsafe or other-model checkpoint fails here
        src = ckpt.resolve_checkpoint(cfg.init_from)
        if ckpt.load_checkpoint(src)["config"]["model"] != cfg.model.model_dump(mode="json"):
            raise ckpt.CheckpointError(f"{src}: --init-from checkpoint has a different model config than this run")

    run_dir = storage.join(cfg.storage, cfg.name)
    storage.makedirs(run_dir)
    storage.atomic_write_text(storage.join(run_dir, "config.yaml"), yaml.safe_dump(cfg.model_dump(mode="json")))

    ensure_ray()
    train_uri = storage.join(cfg.data, "train")
    files = storage.list_files(train_uri, suffixes=[".parquet"])  # skips in-flight .tmp- files
    if not files:
        raise FileNotFoundError(f"{train_uri}: no training shards (*.parquet)")
    # portable: Ray Data lists and reads the files in its own tasks, on a cluster maybe started
    # without this process's object-store settings
    fs, _ = storage.arrow_filesystem(train_uri, portable=True)
    paths = [storage.arrow_filesystem(f)[1] for f in files]
    ds = ray.data.read_parquet(paths, filesystem=fs).select_columns(COLUMNS)
    ds = ds.map_batches(decode_for_training, batch_size=64,
                        fn_kwargs={"with_scan_holes": cfg.optim.ignore_scan_holes})

    w = cfg.workers
    resources = {"CPU": plan_cpus_per_worker(w.cpus_per_worker, w.num_workers, ray.cluster_resources().get("CPU", 0.0),
                                             log=lambda m: print(m, flush=True))}
    if w.use_gpu:
        resources["GPU"] = 1
    run_kwargs: dict[str, Any] = {
        "name": cfg.name,
        "failure_config": FailureConfig(max_failures=w.max_failures),
        # Ray Train's run directory is the run directory: its checkpoints sit beside the stage files
        "checkpoint_config": CheckpointConfig(num_to_keep=cfg.schedule.keep_checkpoints),
    }
    if storage.worker_env():
        # The workers write stage checkpoints and logs through refine_ray.storage: they need this process's
        # object-store settings even on a Ray started without them (a shared or long-lived cluster);
        # the runtime_env takes the non-secret ones, the credentials go in train_loop_config.
        run_kwargs["worker_runtime_env"] = {"env_vars": storage.worker_env()}
    if storage.is_remote(cfg.storage):
        # Ray Train's controller and workers write and read its checkpoints through this filesystem; it
        # carries this process's store settings (inside Ray's actor arguments, never a runtime_env), so a
        # cluster started without them works too. Nodes with an instance profile need none.
        fs, path = storage.arrow_filesystem(cfg.storage, portable=True)
        run_kwargs.update(storage_path=path, storage_filesystem=fs)
    else:
        run_kwargs["storage_path"] = cfg.storage
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**cfg.model_dump(mode="json"), CREDENTIALS_KEY: storage.worker_credentials(),
                           TEST_HOOKS_KEY: read_test_hooks().to_dict(), LOG_LEVEL_KEY: current_level()},
        scaling_config=ScalingConfig(num_workers=w.num_workers, use_gpu=w.use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if w.use_gpu else "gloo"),
        run_config=RunConfig(**run_kwargs),
        datasets={"train": ds},
    )
    log.info("%s %s|%s|%s, stages %s, %d it/stage, %d worker(s) %s → %s", cfg.model.kind, cfg.model.generator_input,
             cfg.model.critic_input, cfg.model.pixel_loss, stage_plan(cfg), cfg.schedule.iterations_per_stage,
             w.num_workers, "GPU" if w.use_gpu else "CPU", run_dir)
    monitor = RunMonitor(storage.join(run_dir, METRICS_FILE), cfg.schedule.batch_size * w.num_workers,
                         w.stall_timeout_s, lambda: describe_resources(w.num_workers, resources))
    try:
        with monitor:
            result = trainer.fit()
    except BaseException:
        if monitor.stalled:
            raise TrainingStalled(monitor.stalled) from None
        raise
    if monitor.stalled:
        raise TrainingStalled(monitor.stalled)
    out = TrainResult(
        run_dir=run_dir,
        stage_checkpoints=[u for _, u in ckpt.stage_checkpoints(run_dir)],
        metrics_uri=storage.join(run_dir, METRICS_FILE),
        curves_uri=storage.join(run_dir, "curves.png"),
        samples_dir=storage.join(run_dir, "samples"),
        tensorboard_dir=storage.join(run_dir, TENSORBOARD_DIR),
        last_metrics=dict(result.metrics or {}),
        checkpoint=result.checkpoint,
    )
    return out
