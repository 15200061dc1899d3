"""Training never waits silently: the worker CPU share leaves Ray Data a CPU (2 workers on the 2-CPU
test Ray train), a plan no share can satisfy is refused up front, a run that cannot be scheduled stops
with a diagnosis, progress reaches the driver's console, and run names are never silently changed."""
from __future__ import annotations

import time

import pytest

from refine_ray.config import ConfigError, load_config
from refine_ray.training.analytic_data import write_analytic_dataset
from refine_ray.training.config import TrainConfig
from refine_ray.training.monitor import ResourcePlanError, TrainingStalled, plan_cpus_per_worker


def _config(**workers) -> TrainConfig:
    return TrainConfig.model_validate({
        "model": {"max_resolution": 8, "max_channels": 8},
        "schedule": {"iterations_per_stage": 2, "batch_size": 2, "checkpoint_every": 2, "log_every": 1,
                     "val_samples": 2},
        "workers": {"num_workers": 2, "max_failures": 0, **workers},
    })


def test_cpu_share_plan():
    said = []
    assert plan_cpus_per_worker(None, 2, 2.0, said.append) == 0.5 and "0.5 CPU" in said[-1]
    assert plan_cpus_per_worker(None, 3, 2.0, said.append) == pytest.approx(1 / 3, rel=1e-2)
    assert plan_cpus_per_worker(None, 2, 8.0, said.append) == 1.0
    assert plan_cpus_per_worker(None, 4, 0.0, said.append) == 1.0       # a head that only schedules: autoscaler
    n = len(said)
    assert plan_cpus_per_worker(1.0, 2, 2.0, said.append) == 1.0        # explicit: honoured, with a warning
    assert len(said) == n + 1 and "warning" in said[-1]
    with pytest.raises(ResourcePlanError, match="1 CPU.*ray start --num-cpus"):
        plan_cpus_per_worker(None, 2, 1.0, said.append)


@pytest.mark.parametrize("name", ["a b", "..", "a/b", "run\n1"])
def test_run_names_are_never_changed(name, tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("schedule:\n  log_every: 1\n")
    with pytest.raises(ConfigError, match=r"(?s)t\.yaml.*name.*not a plain folder name"):
        load_config(TrainConfig, str(path), {"name": name})
    assert load_config(TrainConfig, str(path), {"name": "a_b-1.2"}).name == "a_b-1.2"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_analytic_dataset(str(tmp_path_factory.mktemp("data")), n_train=4, n_test=2, size=8)


def test_two_workers_train_on_two_cpus_with_progress_on_the_console(dataset, tmp_path, ray_session, capsys):
    from refine_ray.training.trainer import train

    result = train(_config(), data=dataset, storage_uri=str(tmp_path), name="two")
    assert [u.rsplit("/", 1)[-1] for u in result.stage_checkpoints] == ["stage-0-4x4.pt", "stage-1-8x8.pt"]
    err = capsys.readouterr()
    console = err.out + err.err
    assert "2 worker(s) × 0.5 CPU" in console
    assert "[train] stage 1 (8x8) it 2" in console and "samples/s" in console   # from the driver, not the workers
    assert "[train] stage 1 (8x8) validation: mae_norm" in console


def test_unschedulable_run_stops_with_a_diagnosis(dataset, tmp_path, ray_session):
    from refine_ray.training.trainer import train

    with pytest.raises(TrainingStalled, match=r"no progress for 20 s.*2 worker\(s\) × \{CPU: 1.*cluster has \{CPU: 2"):
        train(_config(cpus_per_worker=1.0, stall_timeout_s=20), data=dataset, storage_uri=str(tmp_path), name="stuck")
    # its workers are gone: the CPUs are free again for what runs next
    deadline = time.monotonic() + 120
    while ray_session.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    assert ray_session.available_resources().get("CPU", 0) == 2
