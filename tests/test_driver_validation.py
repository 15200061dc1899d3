"""Bad flags, configs and checkpoints are found on the driver before Ray starts: one line on stderr
naming the file (and the full key path), exit status 2, and no Ray started."""
from __future__ import annotations

import os
import pickle

import pytest

from refine_ray.cli import preprocess as preprocess_job
from refine_ray.cli import refine as refine_job
from refine_ray.cli import train as train_job

import refine_support as rf


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/refine-ray-pwned",))


@pytest.fixture(autouse=True)
def _ray_must_not_start(monkeypatch):
    """Every job here must fail on the driver: starting (or joining) Ray is itself a failure."""
    def refuse(**_):
        raise AssertionError("Ray was started before the bad input was found")
    for module in ("refine_ray.inference.batch", "refine_ray.training.trainer", "refine_ray.data.pipeline"):
        monkeypatch.setattr(f"{module}.ensure_ray", refuse)


def _one_line_exit_2(capsys, main, argv, *needles):
    import ray

    started = ray.is_initialized()       # another test's session Ray may be up already
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err
    assert ray.is_initialized() == started      # found before this job started Ray
    return err


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("shards"))
    rf.write_dataset(d, n_files=1, per_file=1)
    return d


def test_refine_checkpoint_missing(capsys, shards, tmp_path):
    missing = str(tmp_path / "nothing" / "stage-1-8x8.pt")
    _one_line_exit_2(capsys, refine_job.main, ["--checkpoint", missing, "--input", shards, "--output", str(tmp_path / "o")],
                     missing, "not found")


def test_refine_checkpoint_malicious(capsys, shards, tmp_path):
    evil = tmp_path / "stage-1-8x8.pt"
    evil.write_bytes(pickle.dumps({"format": "refine-ray-train/1", "ema": _Evil()}))
    _one_line_exit_2(capsys, refine_job.main, ["--checkpoint", str(evil), "--input", shards, "--output", str(tmp_path / "o")],
                     str(evil), "not a loadable checkpoint")
    assert not os.path.exists("/tmp/refine-ray-pwned")


def test_refine_prepare_typo_names_file_and_key_path(capsys, tmp_path):
    cfg = tmp_path / "refine.yaml"
    cfg.write_text("prepare:\n  image_sz: 64\n")
    _one_line_exit_2(capsys, refine_job.main, ["--config", str(cfg), "--checkpoint", "c.pt", "--input", "i", "--output", "o"],
                     str(cfg), "prepare.image_sz")


def test_preprocess_unknown_landmark_provider(capsys, tmp_path):
    _one_line_exit_2(capsys, preprocess_job.main, ["--landmarks", "bogus", "--input", str(tmp_path), "--output", str(tmp_path / "o")],
                     "landmarks", "bogus", "face_alignment")


def test_preprocess_missing_input_root(capsys, tmp_path):
    _one_line_exit_2(capsys, preprocess_job.main, ["--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o")],
                     str(tmp_path / "nope"))


@pytest.mark.parametrize("name", ["..", "a b"])
def test_train_unusable_run_name(capsys, tmp_path, name):
    _one_line_exit_2(capsys, train_job.main, ["--name", name, "--data", str(tmp_path), "--storage", str(tmp_path)],
                     "name", repr(name))


def test_train_init_from_missing(capsys, tmp_path):
    from refine_ray.training.analytic_data import write_analytic_dataset

    data = write_analytic_dataset(str(tmp_path / "data"), n_train=2, n_test=1, size=8)
    missing = str(tmp_path / "runs" / "old" / "stage-0-4x4.pt")
    _one_line_exit_2(capsys, train_job.main, ["--name", "r", "--data", data, "--storage", str(tmp_path / "runs"),
                                              "--max-resolution", "8", "--init-from", missing], missing, "not found")
