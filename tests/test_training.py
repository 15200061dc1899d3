"""The Ray Train job end to end on a tiny analytic dataset: 2 CPU workers through 3 progressive
stages, a worker killed mid-stage (FailureConfig restart), a failed run re-run under the same name,
identical weights on both workers inside fade-in stages, and the refiner loaded from the run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from refine_ray.test_hooks import ENV
from refine_ray.training import checkpoints as ckpt
from refine_ray.training.analytic_data import write_analytic_dataset
from refine_ray.training.config import TrainConfig


def _config(**workers) -> TrainConfig:
    return TrainConfig.model_validate({
        "model": {"max_resolution": 16, "max_channels": 16},
        "optim": {"lr_g": 1e-3, "lr_d": 1e-3},
        "schedule": {"iterations_per_stage": 4, "batch_size": 2, "checkpoint_every": 2, "log_every": 2,
                     "val_samples": 4, "fade_fraction": 1.0},
        "workers": {"num_workers": 2, "cpus_per_worker": 0.5, **workers},
    })


def _hooks(monkeypatch, **hooks):
    """Test hooks for the next job (refine_ray.test_hooks): every worker dumps its weights at checkpoints."""
    monkeypatch.setenv(ENV, json.dumps({"debug_dump_params": True, **hooks}))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_analytic_dataset(str(tmp_path_factory.mktemp("data")), n_train=8, n_test=4, size=32)


def _records(run_dir):
    with open(f"{run_dir}/metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def _params_equal(run_dir, step):
    a = torch.load(f"{run_dir}/debug/params-step{step}-rank0.pt", weights_only=True)
    b = torch.load(f"{run_dir}/debug/params-step{step}-rank1.pt", weights_only=True)
    return all(torch.equal(a[net][k], b[net][k]) for net in a for k in a[net])


@pytest.mark.slow
def test_two_workers_three_stages_survive_a_killed_worker(ray_session, dataset, tmp_path, monkeypatch):
    from refine_ray.training.trainer import train

    _hooks(monkeypatch, fail_at_step=7)
    cfg = _config(max_failures=1)
    result = train(cfg, data=dataset, storage_uri=str(tmp_path), name="run")
    run_dir = result.run_dir

    # One checkpoint per stage, 4×4 → 8×8 → 16×16, all kept.
    names = [c.rsplit("/", 1)[-1] for c in result.stage_checkpoints]
    assert names == ["stage-0-4x4.pt", "stage-1-8x8.pt", "stage-2-16x16.pt"]
    # Worker 0 was killed at global step 7 (stage 1, iteration 3); the restart resumed from the
    # periodic checkpoint at stage 1 iteration 2 (step 6), not from scratch nor the stage start.
    recs = _records(run_dir)
    resumes = [r for r in recs if r["kind"] == "resume"]
    assert [(r["stage"], r["iteration"], r["step"]) for r in resumes] == [(1, 2, 6)]
    last = ckpt.load_checkpoint(result.stage_checkpoints[-1])
    assert last["global_step"] == 12 and last["stage"] == 2 and last["iteration"] == 4
    assert {"generator", "critic", "ema", "opt_g", "opt_d", "rng", "config", "code_version"} <= set(last)
    # Inside fade-in stages (α = 0.5 at steps 6 and 10), both workers hold bitwise-identical weights,
    # although each saw different samples: gradients were averaged, including the GP's.
    assert _params_equal(run_dir, 6) and _params_equal(run_dir, 10)
    # What a person looks at.
    for stage, r in enumerate((4, 8, 16)):
        png = f"{run_dir}/samples/stage-{stage}-{r}x{r}.png"
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert open(f"{run_dir}/curves.png", "rb").read(4) == b"\x89PNG"
    vals = [r for r in recs if r["kind"] == "val"]
    assert [v["resolution"] for v in vals] == [4, 8, 16]
    assert all(np.isfinite(v["mae_norm"]) and np.isfinite(v["coarse_mae_mm"]) for v in vals)

    # Ray Train saw every checkpoint: the last is its Result.checkpoint, the run directory holds only the
    # newest keep_checkpoints (2) of the 2 periodic + 3 stage-end ones, the stage files are all kept.
    import os

    assert result.checkpoint is not None and os.path.dirname(result.checkpoint.path) == run_dir
    with result.checkpoint.as_directory() as folder:
        state = ckpt.load_checkpoint(os.path.join(folder, ckpt.RAY_CHECKPOINT_FILE))
    assert state["global_step"] == 12 and state["stage"] == 2
    assert sorted(d for d in os.listdir(run_dir) if d.startswith("checkpoint-")) == [
        "checkpoint-step00000010", "checkpoint-step00000012-stage2"]
    # TensorBoard's own reader finds the scalars metrics.jsonl holds and a sample grid per stage; the
    # resume at step 6 hid what the killed attempt logged after its checkpoint.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(f"{run_dir}/tensorboard", size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("val/mae_norm")] == [
        (v["step"], pytest.approx(v["mae_norm"], rel=1e-6)) for v in vals]
    trains = [r for r in recs if r["kind"] == "train"]
    assert [r["step"] for r in trains] == [2, 4, 6, 8, 10, 12]
    loss = next(k for k in trains[0] if k not in ("kind", "step", "stage", "resolution", "iteration", "alpha", "time"))
    assert [(e.step, e.value) for e in events.Scalars(f"train/{loss}")] == [
        (r["step"], pytest.approx(r[loss], rel=1e-6)) for r in trains]
    assert {f"samples/stage-{s}-{r}x{r}" for s, r in enumerate((4, 8, 16))} <= set(events.Tags()["images"])

    # The inference side: the EMA generator of the last stage, from the run directory.
    refiner = ckpt.load_refiner(run_dir)
    assert refiner.resolution == 16 and refiner.input_channels == 3
    out = refiner(torch.zeros(2, 3, 32, 32) - 1)
    assert out.shape == (2, 3, 16, 16)


@pytest.mark.slow
def test_rerun_with_the_same_name_resumes_where_the_failed_run_stopped(ray_session, dataset, tmp_path, monkeypatch):
    from refine_ray.training.trainer import train

    _hooks(monkeypatch, fail_at_step=3)
    cfg = _config(max_failures=0)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"max_resolution": 8})})
    with pytest.raises(Exception):
        train(cfg, data=dataset, storage_uri=str(tmp_path), name="again")
    assert ckpt.stage_checkpoints(f"{tmp_path}/again") == []
    result = train(cfg, data=dataset, storage_uri=str(tmp_path), name="again")
    recs = _records(result.run_dir)
    assert [(r["stage"], r["iteration"]) for r in recs if r["kind"] == "resume"] == [(0, 2)]
    assert len(result.stage_checkpoints) == 2
    assert ckpt.load_checkpoint(result.stage_checkpoints[-1])["global_step"] == 8


def test_checkpoints_load_with_weights_only_and_bad_files_are_named(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="x.pt"):
        ckpt.load_checkpoint(str(bad))
    with pytest.raises(ckpt.CheckpointError, match="no stage checkpoint"):
        ckpt.load_refiner(str(tmp_path))


def test_cli_names_missing_paths_and_bad_values(capsys):
    from refine_ray.cli import train as job

    assert job.main(["--config", "configs/train/dce_d_dce.yaml"]) == 2
    assert "data, storage, name" in capsys.readouterr().err
    assert job.main(["--config", "configs/train/dce_d_dce.yaml", "--data", "d", "--storage", "s", "--name", "n",
                     "--max-resolution", "48"]) == 2
    assert "max_resolution" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        job.main(["--help"])
    assert "--iterations-per-stage" in capsys.readouterr().out


@pytest.mark.slow
def test_init_from_starts_from_the_checkpoint_weights(ray_session, dataset, tmp_path):
    from refine_ray.training.trainer import train

    base = _config(max_failures=0)
    base = base.model_copy(update={"model": base.model.model_copy(update={"max_resolution": 4}),
                                   "workers": base.workers.model_copy(update={"num_workers": 1, "cpus_per_worker": 1.0})})
    first = train(base, data=dataset, storage_uri=str(tmp_path), name="first")
    trained = ckpt.load_checkpoint(first.stage_checkpoints[0])["generator"]

    # Fine-tune with a vanishing learning rate: the weights it ends with are the ones it started from.
    frozen = base.model_copy(update={"optim": base.optim.model_copy(update={"lr_g": 1e-12, "lr_d": 1e-12}),
                                     "init_from": first.stage_checkpoints[0]})
    tuned = train(frozen, data=dataset, storage_uri=str(tmp_path), name="tuned")
    got = ckpt.load_checkpoint(tuned.stage_checkpoints[0])["generator"]
    assert all(torch.allclose(got[k], trained[k], atol=1e-6) for k in trained)

    # Without --init-from a worker starts from the seed's fresh initialisation, which the trained weights
    # are not (so the equality above came from the checkpoint, not from a run that never moved).
    from refine_ray.training.gan import ConditionalGan

    torch.manual_seed(frozen.schedule.seed)
    fresh = ConditionalGan(frozen, "cpu", 1).generator.state_dict()
    assert not all(torch.allclose(fresh[k], trained[k], atol=1e-6) for k in trained)


def test_data_and_run_storage_on_s3(ray_session, s3_bucket):
    """Shards read from and the run (checkpoints, metrics) written to an S3-compatible store; the refiner
    loads back from there. The shared Ray was started without the AWS settings the test sets."""
    from refine_ray import storage
    from refine_ray.training.trainer import train

    data = write_analytic_dataset(f"{s3_bucket}/data", n_train=4, n_test=2, size=8)
    cfg = TrainConfig.model_validate({
        "model": {"max_resolution": 8, "max_channels": 8},
        "schedule": {"iterations_per_stage": 2, "batch_size": 2, "checkpoint_every": 2, "log_every": 1, "val_samples": 2},
        "workers": {"num_workers": 1, "cpus_per_worker": 0.5},
    })
    result = train(cfg, data=data, storage_uri=f"{s3_bucket}/runs", name="s3run")
    assert result.run_dir == f"{s3_bucket}/runs/s3run"
    assert [u.rsplit("/", 1)[-1] for u in result.stage_checkpoints] == ["stage-0-4x4.pt", "stage-1-8x8.pt"]
    records = [json.loads(line) for line in storage.read_text(result.metrics_uri).splitlines()]
    assert {r["stage"] for r in records if r["kind"] == "stage_end"} == {0, 1}
    refiner = ckpt.load_refiner(result.run_dir)
    assert refiner.resolution == 8
    assert refiner(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 8, 8)
    import os

    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    for name in ("config.yaml", "metrics.jsonl"):
        assert secret not in storage.read_text(f"{result.run_dir}/{name}")   # no credentials in files
    import refine_support as rf

    assert rf.files_holding(rf.ray_session_dir(), secret.encode()) == []   # nor in Ray's logs and files
