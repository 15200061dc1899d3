"""The exactly-once commit protocol shared by preprocessing and refinement (refine_ray.commits)."""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refine_ray.commits import CommitLog


def test_failed_attempt_publishes_nothing_and_a_commit_publishes_all(tmp_path):
    log = CommitLog(str(tmp_path), "_done")
    schema = pa.schema([("x", pa.int64())])
    with pytest.raises(RuntimeError):
        with log.begin("u1") as unit:
            unit.parquet(str(tmp_path / "out" / "u1.parquet"), schema).write(pa.table({"x": [1, 2]}))
            unit.put(str(tmp_path / "out" / "u1.bin"), b"abc")
            raise RuntimeError("killed mid-unit")
    assert log.committed() == set() and log.read("u1") is None
    assert os.listdir(tmp_path / "out") == []          # neither the files nor their temp copies remain

    with log.begin("u1") as unit:
        unit.parquet(str(tmp_path / "out" / "u1.parquet"), schema).write(pa.table({"x": [1, 2]}))
        unit.put(str(tmp_path / "out" / "u1.bin"), b"abc")
        unit.commit({"rows": 2})
    assert log.committed() == {"u1"} and log.read("u1") == {"rows": 2}
    assert json.load(open(tmp_path / "_done" / "u1.json")) == {"rows": 2}
    assert pq.read_table(tmp_path / "out" / "u1.parquet").column("x").to_pylist() == [1, 2]
    assert (tmp_path / "out" / "u1.bin").read_bytes() == b"abc"

    (tmp_path / "out" / "stray.bin").write_bytes(b"left by a killed attempt")
    assert log.remove_unnamed(["out"], {"out/u1.parquet", "out/u1.bin"}) == [str(tmp_path / "out" / "stray.bin")]
    assert sorted(os.listdir(tmp_path / "out")) == ["u1.bin", "u1.parquet"]


def test_unreadable_record_names_the_file(tmp_path):
    log = CommitLog(str(tmp_path), "parts", suffix=".done.json")
    os.makedirs(tmp_path / "parts")
    (tmp_path / "parts" / "u9.done.json").write_text("{half")
    assert log.committed() == {"u9"}
    with pytest.raises(ValueError, match="u9.done.json: unreadable commit record"):
        log.records()
