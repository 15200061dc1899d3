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


HALF_STEP_16 = 1.0 / 65535 + 1e-7      # compact D, C, E: half of 2/65535 network units (+ float32 rounding)
HALF_STEP_8 = 1.0 / 255 + 1e-7         # compact R, G, B: half of 2/255


def _close(got, want, channels_16):
    """Within half a quantization step of the written values: 16-bit for the first `channels_16`."""
    err = np.abs(got.astype(np.float64) - np.asarray(want, np.float64))
    assert err[..., :channels_16].max(initial=0) <= HALF_STEP_16
    assert err[..., channels_16:].max(initial=0) <= HALF_STEP_8


def test_compact_row_roundtrips_through_parquet_within_the_stated_step():
    rng = np.random.default_rng(0)
    # values the test chooses: the ends of the range, background, and values between quantization levels
    special = np.array([-1.0, 1.0, 0.0, -1 + 1.0 / 65535, 0.123456789, -0.987654321])
    inp = rng.uniform(-1, 1, (8, 6, 6))
    inp[0, :, :] = special[:, None]
    args0, r0 = _row(rng, pose=0, input_image=inp)
    args1, r1 = _row(rng, pose=1)
    assert len(r0["input"]) == 8 * 6 * (3 * 2 + 3) and len(r0["input_mask"]) == 6     # uint16 DCE, uint8 RGB, bits
    buf = io.BytesIO()
    pq.write_table(schema.rows_to_table([r0, r1]), buf, compression="zstd")
    table = pq.read_table(io.BytesIO(buf.getvalue()))
    for batch in (table, table.to_pandas(), {k: np.asarray(v) for k, v in table.to_pydict().items()}):
        imgs = schema.decode_images(batch)
        _close(imgs["input"][0], args0["input_image"], 3)
        _close(imgs["input"][1], args1["input_image"], 3)
        _close(imgs["target"][0], args0["target_image"], 3)
        _close(imgs["target_rgb"][1], args1["target_rgb"], 0)
        np.testing.assert_array_equal(imgs["input_mask"][0], args0["input_mask"])
        np.testing.assert_array_equal(imgs["target_mask"][1], args1["target_mask"])
        assert imgs["input"].dtype == np.float32 and imgs["input_mask"].dtype == bool
        # background and the range ends come back exactly; depth 0.123456789 within 0.0023 mm / 2 at 150 mm
        assert imgs["input"][0, 0, 0, 0] == -1.0 and imgs["input"][0, 0, 1, 0] == 1.0 and imgs["input"][0, 0, 0, 3] == -1.0
        assert abs((imgs["input"][0, 0, 4, 0] - 0.123456789) * 75.0) <= 150.0 / 65535 / 2 + 1e-5


def test_compact_cells_hold_the_documented_levels_for_strided_views():
    """The encoder reads views of a larger render (no copy) and stores q = rint((x + 1)·L/2) as the
    module docstring states: checked against that formula evaluated here, values next to a half-level
    boundary included (float32 inputs cannot fall exactly on one)."""
    from refine_ray.data import codec

    rng = np.random.default_rng(3)
    big = rng.uniform(-1, 1, (5, 7, 8)).astype(np.float32)
    big[0, :4, 0] = np.array([0.5 / 32767.5 - 1, 1.5 / 32767.5 - 1, -1.0, 1.0], np.float32)  # next to half-level boundaries
    view = big[:, :, 1:7]                                   # 6 channels, not C-contiguous
    assert not view.flags.c_contiguous
    cell = np.frombuffer(codec.encode_image(view), dtype=np.uint8)
    x = np.ascontiguousarray(view).astype(np.float64)
    q16 = np.clip(np.rint((x[..., :3] + 1) * 32767.5), 0, 65535).astype(np.uint16)   # (H, W, 3)
    q8 = np.clip(np.rint((x[..., 3:] + 1) * 127.5), 0, 255).astype(np.uint8)
    planes = cell[: 2 * 3 * 35].reshape(3, 2, 5, 7)
    deltas = planes[:, 0].astype(np.uint16) | (planes[:, 1].astype(np.uint16) << 8)
    np.testing.assert_array_equal(np.cumsum(deltas, axis=-1, dtype=np.uint16), np.moveaxis(q16, -1, 0))
    np.testing.assert_array_equal(cell[2 * 3 * 35:].reshape(3, 5, 7), np.moveaxis(q8, -1, 0))
    assert codec.encode_image(view) == codec.encode_image(np.ascontiguousarray(view))


def test_float32_shards_written_before_the_compact_encoding_still_decode_exactly():
    rng = np.random.default_rng(5)
    h, w = 8, 6
    inp, tgt = rng.uniform(-1, 1, (h, w, 6)).astype("<f4"), rng.uniform(-1, 1, (h, w, 3)).astype("<f4")
    im, tm = rng.random((h, w)) > 0.5, rng.random((h, w)) > 0.5
    _, compact = _row(rng)
    # a row as the float32 writer laid it out: raw little-endian float32, one byte per mask pixel
    legacy = dict(compact, input=inp.tobytes(), target=tgt.tobytes(), target_rgb=inp[..., 3:].copy().tobytes(),
                  input_mask=im.astype("u1").tobytes(), target_mask=tm.astype("u1").tobytes())
    buf = io.BytesIO()
    pq.write_table(schema.rows_to_table([legacy, compact]), buf)   # both encodings in one file and one batch
    imgs = schema.decode_images(pq.read_table(io.BytesIO(buf.getvalue())))
    np.testing.assert_array_equal(imgs["input"][0], inp)
    np.testing.assert_array_equal(imgs["target"][0], tgt)
    np.testing.assert_array_equal(imgs["target_rgb"][0], inp[..., 3:])
    np.testing.assert_array_equal(imgs["input_mask"][0], im)
    np.testing.assert_array_equal(imgs["target_mask"][0], tm)
    _, f32 = _row(rng, encoding="float32")
    assert len(f32["input"]) == h * w * 6 * 4 and len(f32["input_mask"]) == h * w


def test_a_cell_of_neither_length_is_refused_with_the_column():
    _, row = _row(np.random.default_rng(6))
    with pytest.raises(ValueError, match="column target holds 5 bytes"):
        schema.decode_images(schema.rows_to_table([dict(row, target=b"12345")]))


def test_stated_steps_follow_the_normalization_and_the_depth_step_is_bounded():
    from refine_ray.data import codec
    from refine_ray.data.settings import PreprocessSettings

    steps = codec.steps({"depth_mm": [-100, 50]})
    assert steps["depth"]["step"] == pytest.approx(150 / 65535) and steps["depth"]["step"] <= 0.01
    assert steps["red"]["step"] == pytest.approx(1 / 255) and steps["masks"]["dtype"] == "bit-packed"
    with pytest.raises(ValueError, match="0.0153 mm step"):
        PreprocessSettings(normalization={"depth_mm": [-500, 500]})
    PreprocessSettings(normalization={"depth_mm": [-500, 500]}, encoding="float32")


def test_float32_row_roundtrips_through_parquet_and_decodes_to_the_written_arrays():
    rng = np.random.default_rng(0)
    args0, r0 = _row(rng, pose=0, encoding="float32")
    args1, r1 = _row(rng, pose=1, encoding="float32")
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


def test_metrics_on_compact_cells_differ_from_float32_by_at_most_the_depth_step():
    """A known surface (a paraboloid, mm) scored as written in float32 and as decoded from compact cells."""
    from refine_ray.geometry import DceNormalization
    from refine_ray import metrics as M

    norm, h = DceNormalization(), 32
    yy, xx = np.mgrid[0:h, 0:h] - h / 2
    mask = (xx ** 2 + yy ** 2) < (h / 2.2) ** 2
    coarse_mm = 40.0 - 0.08 * (xx ** 2 + yy ** 2)
    target_mm = coarse_mm + 0.7 * np.sin(xx / 2.0)            # the detail a refiner should add
    units = lambda mm: np.where(mask, 2 * (mm + 100.0) / 150.0 - 1, -1.0)  # noqa: E731  docs/design.md's depth map
    dce = lambda mm: np.stack([units(mm), np.where(mask, 0.1, -1), np.where(mask, 0.2, -1)], -1)  # noqa: E731
    scores = []
    for enc in ("float32", "compact"):
        _, row = _row(np.random.default_rng(7), h=h, w=h, c=3, input_image=dce(coarse_mm), target_image=dce(target_mm),
                      input_mask=mask, target_mask=mask, target_rgb=None, encoding=enc)
        imgs = schema.decode_images(schema.rows_to_table([row]))
        c_mm, t_mm = norm.denormalize_depth(imgs["input"][0, ..., 0]), norm.denormalize_depth(imgs["target"][0, ..., 0])
        scores.append((M.mae_mm(c_mm, t_mm, mask), M.mae_norm(imgs["input"][0, ..., 0], imgs["target"][0, ..., 0], mask, mask),
                       M.normal_angle_error_deg(c_mm, t_mm, mask, 1.2)))
    step_mm = 150.0 / 65535
    assert abs(scores[0][0] - scores[1][0]) <= step_mm                 # two values each off by ≤ half a step
    assert abs(scores[0][1] - scores[1][1]) <= 1.0 / 65535 + 1e-7      # Eq. 4 works in [0, 1]: the step is 1/65535
    assert abs(scores[0][2] - scores[1][2]) < 0.05                     # normals from slopes of ±step/px: < 0.05°
    assert abs(scores[0][0] - np.abs(target_mm - coarse_mm)[mask].mean()) < 1e-3  # float32 scores the truth


def test_a_sample_without_ground_truth_decodes_as_background_and_an_empty_mask():
    rng = np.random.default_rng(8)
    args, row = _row(rng)
    batch = {k: np.asarray([row[k], None if k in ("target", "target_mask") else row[k]], dtype=object)
             for k in ("height", "width", "input_channels", "input", "target", "input_mask", "target_mask")}
    imgs = schema.decode_images(batch)
    assert (imgs["target"][1] == -1.0).all() and not imgs["target_mask"][1].any()
    np.testing.assert_array_equal(imgs["target_mask"][0], args["target_mask"])
    with pytest.raises(ValueError, match="column input is empty in row 1"):
        schema.decode_images(dict(batch, input=np.asarray([row["input"], None], dtype=object)))
