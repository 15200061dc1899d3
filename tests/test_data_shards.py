"""The shard ledger: commits, orphan removal after a kill, errors table, settings mismatch."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from refine_ray.data import schema
from refine_ray.data.shards import OutputMismatchError, ScanOutcome, ShardStore, batch_key


def _row(scan_id, split, pose=0):
    rng = np.random.default_rng(abs(hash((scan_id, pose))) % 2**32)
    return schema.build_row(
        dataset="frgc", subject_id=scan_id[:3], scan_id=scan_id, expression=None, pose=pose, yaw=0, pitch=0, roll=0,
        split=split, input_image=rng.uniform(-1, 1, (4, 4, 3)), target_image=rng.uniform(-1, 1, (4, 4, 3)),
        input_mask=np.ones((4, 4)), target_mask=np.ones((4, 4)), scale_px_per_mm=1.2, rotation=np.eye(3),
        translation_px=(0, 0), anchor_input=np.zeros(3), anchor_target=np.zeros(3),
        landmarks_2d=np.zeros((68, 2)), landmarks_image=np.zeros((68, 2)), source_uri=f"/in/{scan_id}.abs")


def test_commit_orphans_and_errors(tmp_path):
    out = str(tmp_path / "ds")
    store = ShardStore(out)
    uris = ["/in/a01.abs", "/in/b01.abs", "/in/c01.abs"]
    rows = [_row("a01", "train", 0), _row("a01", "train", 1), _row("b01", "test", 0)]
    outcomes = [ScanOutcome(uris[0], "ok", 2, "train", "a01"), ScanOutcome(uris[1], "ok", 1, "test", "b01"),
                ScanOutcome(uris[2], "failed", stage="read", reason="truncated file")]
    entry = store.commit_batch(uris, rows, outcomes, "fp1")
    assert entry.key == batch_key(reversed(uris))
    train = pq.read_table(os.path.join(out, "train", f"part-{entry.key}.parquet"))
    assert train.column("sample_id").to_pylist() == ["frgc/a01/p0", "frgc/a01/p1"]
    assert json.load(open(os.path.join(out, "_ledger", f"{entry.key}.json")))["shards"][0]["rows"] == 2

    # A killed run leaves a whole shard with no ledger entry: it is removed, committed ones stay.
    orphan = os.path.join(out, "test", "part-deadbeef.parquet")
    open(orphan, "wb").write(b"PAR1 not finished")
    entries = store.ledger()
    assert store.remove_orphans(entries) == [orphan]
    assert not os.path.exists(orphan)
    assert len(store.shard_uris(entries)) == 2 and all(os.path.exists(u) for u in store.shard_uris(entries))

    assert store.write_errors(entries) == 1
    errors = pq.read_table(os.path.join(out, "errors.parquet")).to_pylist()
    assert errors == [{"file": "/in/c01.abs", "stage": "read", "reason": "truncated file"}]

    store.check_fingerprint(entries, "fp1")
    with pytest.raises(OutputMismatchError, match="different settings"):
        store.check_fingerprint(entries, "fp2")


def test_ledger_and_orphan_cleanup_on_s3(s3_bucket):
    import s3fs

    out = f"{s3_bucket}/ds"
    store = ShardStore(out)
    store.commit_batch(["/in/a01.abs"], [_row("a01", "test")], [ScanOutcome("/in/a01.abs", "ok", 1, "test", "a01")], "fp")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)  # endpoint/keys from the env set by the fixture
    fs.pipe_file(f"{out[5:]}/train/part-orphan.parquet", b"unfinished")
    entries = store.ledger()
    assert [e.scans[0]["uri"] for e in entries] == ["/in/a01.abs"]
    assert store.remove_orphans(entries) == [f"{out}/train/part-orphan.parquet"]
    assert not fs.exists(f"{out[5:]}/train/part-orphan.parquet")
    assert store.write_errors(entries) == 0
    assert fs.exists(f"{out[5:]}/errors.parquet")
