"""A run's records without Ray: metrics.jsonl appended in place (a resume cuts the redone steps off),
TensorBoard event files that TensorBoard's own reader opens, uploaded to object storage."""
from __future__ import annotations

import io
import json
import os

import numpy as np
from PIL import Image

from refine_ray.training.tracking import MetricsLog, TensorBoardLog


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((6, 9, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _lines(path):
    with open(path) as f:
        return [json.loads(x) for x in f]


def test_metrics_are_appended_and_a_resume_cuts_off_the_steps_it_redoes(tmp_path):
    run = str(tmp_path)
    log = MetricsLog(run, resume_step=None)
    inode = os.stat(f"{run}/metrics.jsonl").st_ino
    sizes = []
    for step in (1, 2, 3):
        log.add({"kind": "train", "step": step})
        sizes.append(os.path.getsize(f"{run}/metrics.jsonl"))
        assert os.stat(f"{run}/metrics.jsonl").st_ino == inode        # the same file, grown, not replaced
    assert sizes[0] < sizes[1] < sizes[2]
    assert [r["step"] for r in _lines(f"{run}/metrics.jsonl")] == [1, 2, 3]
    with open(f"{run}/metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "st')                               # a line torn by a killed worker

    resumed = MetricsLog(run, resume_step=2)          # step 3 came after the checkpoint: trained again
    assert os.stat(f"{run}/metrics.jsonl").st_ino == inode
    resumed.add({"kind": "resume", "step": 2})
    resumed.add({"kind": "train", "step": 3})
    assert [(r["kind"], r["step"]) for r in _lines(f"{run}/metrics.jsonl")] == [
        ("train", 1), ("train", 2), ("resume", 2), ("train", 3)]

    MetricsLog(run, resume_step=None)                 # a fresh run under the same name starts empty
    assert open(f"{run}/metrics.jsonl").read() == ""


def _read_events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(folder, size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_tensorboard_scalars_and_images_read_back_with_tensorboard(tmp_path):
    tb = TensorBoardLog(str(tmp_path), purge_step=None)
    for step in range(1, 5):
        tb.scalars("train", {"loss_g": 0.5 * step, "skipped": float("nan"), "flag": True}, step)
    tb.image_png("samples/stage-0-4x4", _png(200), 4)
    tb.close()
    acc = _read_events(str(tmp_path / "tensorboard"))
    assert acc.Tags()["scalars"] == ["train/loss_g"]              # NaN and booleans left out
    assert [(e.step, e.value) for e in acc.Scalars("train/loss_g")] == [(1, 0.5), (2, 1.0), (3, 1.5), (4, 2.0)]
    (img,) = acc.Images("samples/stage-0-4x4")
    assert (img.step, img.width, img.height) == (4, 9, 6)
    assert np.all(np.asarray(Image.open(io.BytesIO(img.encoded_image_string))) == 200)

    # a resume from step 2's checkpoint hides what the lost attempt logged from step 3 on
    tb = TensorBoardLog(str(tmp_path), purge_step=3)
    tb.scalars("train", {"loss_g": 9.0}, 3)
    tb.close()
    assert [(e.step, e.value) for e in _read_events(str(tmp_path / "tensorboard")).Scalars("train/loss_g")] == [
        (1, 0.5), (2, 1.0), (3, 9.0)]


def test_remote_runs_upload_their_metrics_and_event_files(s3_bucket, tmp_path):
    from refine_ray import storage

    log = MetricsLog(f"{s3_bucket}/run", resume_step=None, upload_every_s=0)
    log.add({"kind": "val", "step": 7, "mae_norm": 0.25})
    assert [json.loads(x) for x in storage.read_text(f"{s3_bucket}/run/metrics.jsonl").splitlines()] == [
        {"kind": "val", "step": 7, "mae_norm": 0.25}]
    log.close()

    tb = TensorBoardLog(f"{s3_bucket}/run", purge_step=None)
    tb.scalars("val", {"mae_norm": 0.25}, 7)
    tb.close()
    files = storage.list_files(f"{s3_bucket}/run/tensorboard")
    assert files and all(os.path.basename(f).startswith("events.out.tfevents") for f in files)
    for f in files:
        (tmp_path / os.path.basename(f)).write_bytes(storage.read_bytes(f))
    assert [(e.step, e.value) for e in _read_events(str(tmp_path)).Scalars("val/mae_norm")] == [(7, 0.25)]
