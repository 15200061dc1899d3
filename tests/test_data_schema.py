"""The Parquet sample schema: rows round-trip through a real Parquet file and decode to the arrays written."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from refine_ray.data import schema


def _row(rng, h=8, w=6, c=6, pose=0, **kw):
    args = dict(
        dataset="frgc", subject_id="s1", scan_id="s1d1", expression=None, pose=pose,
        yaw=10.0, pitch=-5.0, roll=0.0, split="train",
        input_image=rng.uniform(-1, 1, (h, w, c)), target_image=rng.uniform(-1, 1, (h, w, 3)),
        input_mask=rng.random((h, w)) > 0.5, target_mask=rng.random((h, w)) > 0.5,
        scale_px_per_mm=1.2, rotation=np.eye(3), translation_px=(0, 0),
        anchor_input=np.zeros(3), anchor_target=np.ones(3),
        landmarks_2d=np.full((68, 2), np.nan), landmarks_image=rng.uniform(0, 8, (68, 2)),
        source_uri="/data/s1d1.abs", target_rgb=rng.uniform(-1, 1, (h, w, 3)),
    )
    args.update(kw)
    return args, schema.build_row(**args)


def test_row_roundtrips_through_parquet_and_decodes_to_the_written_arrays():
    rng = np.random.default_rng(0)
    args0, r0 = _row(rng, pose=0)
    args1, r1 = _row(rng, pose=1)
    buf = io.BytesIO()
    pq.write_table(schema.rows_to_table([r0, r1]), buf, compression="zstd")
    table = pq.read_table(io.BytesIO(buf.getvalue()))
    assert table.schema.equals(schema.SCHEMA, check_metadata=False)
    assert table.column("sample_id").to_pylist() == ["frgc/s1d1/p0", "frgc/s1d1/p1"]
    for batch in (table, table.to_pandas(), {k: np.asarray(v) for k, v in table.to_pydict().items()}):
        imgs = schema.decode_images(batch)
        np.testing.assert_array_equal(imgs["input"][1], args1["input_image"].astype(np.float32))
        np.testing.assert_array_equal(imgs["target"][0], args0["target_image"].astype(np.float32))
        np.testing.assert_array_equal(imgs["input_mask"][0], args0["input_mask"])
        np.testing.assert_array_equal(imgs["target_mask"][1], args1["target_mask"])
        np.testing.assert_array_equal(imgs["target_rgb"][1], args1["target_rgb"].astype(np.float32))
        assert imgs["input"].dtype == np.float32 and imgs["input_mask"].dtype == bool
    lm = np.asarray(table.column("landmarks_2d")[0].as_py())
    assert lm.shape == (136,) and np.isnan(lm).all()


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(split="val"), "split"),
        (dict(input_image=np.zeros((8, 6, 4))), "input"),
        (dict(target_image=np.zeros((8, 5, 3))), "target has shape"),
        (dict(input_image=np.full((8, 6, 3), 2.0)), "outside network units"),
        (dict(target_image=np.full((8, 6, 3), np.nan)), "NaN"),
        (dict(rotation=np.diag([1.0, 1.0, -1.0])), "rotation"),
        (dict(anchor_input=[np.nan, 0, 0]), "anchor_input"),
        (dict(scale_px_per_mm=0.0), "scale"),
    ],
)
def test_bad_values_are_refused_with_the_source_and_field(change, message):
    with pytest.raises(schema.SampleError, match=message) as info:
        _row(np.random.default_rng(1), **change)
    assert "/data/s1d1.abs" in str(info.value)


def test_decode_refuses_mixed_sizes():
    rng = np.random.default_rng(2)
    _, a = _row(rng, h=8, w=6)
    _, b = _row(rng, h=4, w=4)
    with pytest.raises(ValueError, match="differ"):
        schema.decode_images(pd.DataFrame([a, b]))


def test_manifest_roundtrip_and_missing_keys(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        schema.write_manifest(str(tmp_path), {"image_size": [64, 64]})
    schema.write_manifest(str(tmp_path), dict(
        image_size=[64, 64], scale_px_per_mm=np.float32(1.2), normalization={"depth_mm": [-100, 50]},
        input_channels=["depth", "curvature", "elevation"], counts={"train": 3}, config={}, inputs=["x"]))
    m = schema.read_manifest(str(tmp_path))
    assert m["image_size"] == [64, 64] and abs(m["scale_px_per_mm"] - 1.2) < 1e-6 and m["code_version"]
    with pytest.raises(FileNotFoundError, match="no manifest"):
        schema.read_manifest(str(tmp_path / "nothing"))
