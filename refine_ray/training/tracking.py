"""What a training run records for people and tools: metrics.jsonl, curves.png and TensorBoard events.

metrics.jsonl gets one JSON line per record, appended; a resumed run first cuts the file back (in
place, `truncate`) to the records up to its checkpoint, since the steps after it are trained again.
Object stores have no append: there the rank-0 worker appends to a local copy and uploads it (at
most every `upload_every_s`, and at every checkpoint), so the driver's progress monitor keeps seeing
new records.
TensorBoard: `<run>/tensorboard/` holds the train/* and val/* scalars and each stage's sample grid;
`tensorboard --logdir <run>` opens it. A remote run writes its event files locally and uploads them
at every checkpoint; a resumed run starts a new event file whose `purge_step` hides what the killed
attempt logged after its checkpoint.
"""
from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from refine_ray import storage
from refine_ray.training.visuals import curves_png

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _kept_prefix(data: bytes, resume_step: int | None) -> tuple[int, list[dict[str, Any]]]:
    """(byte length, records) of the leading complete records whose step is at most `resume_step`
    (all complete records when None); a torn last line or a record of a later step ends it."""
    end, records = 0, []
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            rec = json.loads(line)
        except ValueError:
            break
        if resume_step is not None and rec.get("step", 0) > resume_step:
            break
        records.append(rec)
        end += len(line)
    return end, records


class MetricsLog:
    """metrics.jsonl of a run: one line appended per record (see the module docstring)."""

    def __init__(self, run_dir: str, resume_step: int | None, upload_every_s: float = 10.0):
        self.run_dir = run_dir
        self.uri = storage.join(run_dir, METRICS_FILE)
        self.remote = storage.is_remote(run_dir)
        self.upload_every_s = upload_every_s
        self._uploaded = 0.0
        old = b""
        if resume_step is not None and storage.exists(self.uri):
            old = storage.read_bytes(self.uri)
        keep, self.records = _kept_prefix(old, resume_step)
        if self.remote:
            self._spool = tempfile.NamedTemporaryFile(prefix="refine-ray-metrics-", suffix=".jsonl", delete=False)
            self._spool.close()
            self.path = self._spool.name
            with open(self.path, "wb") as f:
                f.write(old[:keep])
            self.flush()
        else:
            self.path = self.uri
            storage.makedirs(run_dir)
            with open(self.path, "ab") as f:   # a fresh run (resume_step None) starts empty
                f.truncate(keep)

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=storage.json_default) + "\n")
        if self.remote and time.monotonic() - self._uploaded >= self.upload_every_s:
            self.flush()

    def flush(self, plot: bool = False) -> None:
        """Upload the local copy (object storage); with `plot`, redraw curves.png."""
        if self.remote:
            with open(self.path, "rb") as f:
                storage.atomic_write_bytes(self.uri, f.read())
            self._uploaded = time.monotonic()
        if plot:
            storage.atomic_write_bytes(storage.join(self.run_dir, "curves.png"), curves_png(self.records))

    def close(self) -> None:
        self.flush()
        if self.remote:
            os.unlink(self.path)


def _finite_numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class TensorBoardLog:
    """A SummaryWriter on `<run>/tensorboard` (written locally and uploaded when the run is remote)."""

    def __init__(self, run_dir: str, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.target = storage.join(run_dir, TENSORBOARD_DIR)
        self.remote = storage.is_remote(run_dir)
        self.local = tempfile.mkdtemp(prefix="refine-ray-tb-") if self.remote else self.target
        self.writer = SummaryWriter(self.local, purge_step=purge_step, flush_secs=30)

    def scalars(self, prefix: str, values: dict[str, Any], step: int) -> None:
        """Every finite number of `values` as `<prefix>/<key>` (NaN and booleans left out)."""
        for key, value in _finite_numbers(values).items():
            self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def image_png(self, tag: str, png: bytes, step: int) -> None:
        from PIL import Image

        image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        self.writer.add_image(tag, image, step, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()
        if self.remote:
            for name in os.listdir(self.local):
                with open(os.path.join(self.local, name), "rb") as f:
                    storage.atomic_write_bytes(storage.join(self.target, name), f.read())

    def close(self) -> None:
        self.writer.close()
        self.flush()
        if self.remote:
            shutil.rmtree(self.local, ignore_errors=True)
