"""Overlapped refinement: the read-ahead and writer threads keep order, raise failures, stop early, and a
unit refined with overlap writes exactly what the plain step-by-step loop writes."""
from __future__ import annotations

import glob
import os
import threading

import pyarrow.parquet as pq
import pytest

from refine_ray.inference.model import Predictor
from refine_ray.inference.overlap import OrderedWriter, read_ahead
from refine_ray.inference.inputs import find_input_shards
from refine_ray.inference.units import plan_units, process_unit

import refine_support as rf


def test_read_ahead_yields_in_order_and_raises_in_the_consumer():
    assert list(read_ahead(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise KeyError("bad batch")

    got = []
    with pytest.raises(KeyError, match="bad batch"):
        for x in read_ahead(failing(), depth=1):
            got.append(x)
    assert got == [1]


def test_read_ahead_stops_its_thread_when_the_consumer_stops():
    produced = []

    def numbers():
        for i in range(1000):
            produced.append(i)
            yield i

    before = threading.active_count()
    gen = read_ahead(numbers(), depth=1)
    assert [next(gen), next(gen)] == [0, 1]
    gen.close()
    assert threading.active_count() == before
    assert len(produced) <= 4   # at most depth ahead (+ the item being put), never the whole input


def test_ordered_writer_keeps_order_bounds_pending_and_raises_the_first_failure():
    w = OrderedWriter(depth=2)
    for i in range(20):
        w.submit(lambda k: k * k, i)
        assert len(w.pending) <= 2
    assert w.drain() == [i * i for i in range(20)]
    w.close()

    def boom(k):
        if k == 3:
            raise OSError("disk full")
        return k

    with OrderedWriter(depth=1) as w:
        with pytest.raises(OSError, match="disk full"):
            for i in range(10):
                w.submit(boom, i)
            w.drain()
    assert w.results[:3] == [0, 1, 2]


def test_overlapped_unit_writes_what_the_plain_loop_writes(tmp_path):
    truth = rf.write_dataset(str(tmp_path / "data"), n_files=1, per_file=7, rows_per_group=7)
    units, _ = plan_units(find_input_shards(str(tmp_path / "data"), "test")[0])
    pred = Predictor(rf.shift_refiner())
    depth = tuple(rf.NORMALIZATION["depth_mm"])
    markers = {}
    for overlap in (False, True):
        out = str(tmp_path / f"out-{overlap}")
        markers[overlap] = [process_unit(u, pred, depth, out, batch_size=2, overlap=overlap) for u in units]
    assert [m["samples_refined"] for m in markers[True]] == [7] == [m["samples_refined"] for m in markers[False]]
    for sub in ("refined/*.parquet", "parts/*.metrics.parquet"):
        a = [pq.read_table(f) for f in sorted(glob.glob(os.path.join(tmp_path, "out-False", sub)))]
        b = [pq.read_table(f) for f in sorted(glob.glob(os.path.join(tmp_path, "out-True", sub)))]
        assert len(a) == len(b) == 1 and a[0].to_pandas().equals(b[0].to_pandas())   # NaN-aware
    ids = pq.read_table(glob.glob(os.path.join(tmp_path, "out-True", "refined", "*.parquet"))[0]).column("sample_id")
    assert sorted(ids.to_pylist()) == sorted(truth)     # every sample once, in 4 batches of ≤ 2
    assert not glob.glob(os.path.join(tmp_path, "out-True", "**", ".tmp-*"), recursive=True)


class _CountingShift(rf.ShiftRefiner):
    """ShiftRefiner that records how many images each forward pass saw."""

    def __init__(self):
        super().__init__()
        self.passes: list[int] = []

    def forward(self, x):
        self.passes.append(int(x.shape[0]))
        return super().forward(x)


@pytest.mark.parametrize("requested, size, expected_passes", [
    (3, 16, [3, 3, 3, 1]),     # asked for: 10 images, 3 per pass
    (0, 64, [2, 2, 2, 2, 2]),  # CPU default: 8,192 pixels per pass = two 64² images
    (0, 128, [1] * 10),        # larger images: one per pass
    (0, 16, [10]),             # small images: the whole batch in one pass
])
def test_predictor_runs_a_batch_in_forward_passes_of_the_requested_size(requested, size, expected_passes):
    import numpy as np

    net = _CountingShift()
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.5, 0.5, (10, size, size, 3)).astype(np.float32)
    mask = rng.uniform(size=(10, size, size)) > 0.3
    out = Predictor(net, forward_batch=requested)(x, mask)
    assert net.passes == expected_passes
    # the known output: depth + DEPTH_SHIFT on the input footprint, background (-1) elsewhere, in input order
    want = np.where(mask[..., None], x + np.array([rf.DEPTH_SHIFT, 0, 0], np.float32), -1.0)
    np.testing.assert_allclose(out, want, atol=1e-6)
