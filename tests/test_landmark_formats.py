"""Landmark files: hand-written files in each format's own convention → our pixel/mm convention, and back."""
import json

import numpy as np
import pytest

from refine_ray.landmarks import formats


def test_pts_is_one_based_pixel_centres(tmp_path):
    # 300-W convention: the centre of the top-left pixel is (1, 1) → ours (0.5, 0.5)
    body = "\n".join(["1 1", "10.5 20.25"] + ["3 4"] * 66)
    (tmp_path / "a.pts").write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    pts = formats.read_pts(str(tmp_path / "a.pts"))
    assert pts.shape == (68, 2)
    assert np.allclose(pts[0], [0.5, 0.5]) and np.allclose(pts[1], [10.0, 19.75])


def test_pts_round_trip_keeps_nan(tmp_path):
    p = np.random.default_rng(0).uniform(0, 600, (68, 2))
    p[5] = np.nan
    formats.write_pts(str(tmp_path / "b.pts"), p)
    assert np.array_equal(formats.read_pts(str(tmp_path / "b.pts")), p, equal_nan=True)


@pytest.mark.parametrize("text,needle", [
    ("version: 1\nn_points: 68\n{\n1 2\n}\n", "68"),                 # truncated block
    ("version: 1\nn_points: 2\n{\n1 2\n3 x\n}\n", "non-numeric"),
    ("hello", "not an iBUG .pts"),
])
def test_pts_errors_name_file_and_problem(tmp_path, text, needle):
    f = tmp_path / "bad.pts"
    f.write_text(text)
    with pytest.raises(formats.LandmarkFormatError) as e:
        formats.read_pts(str(f))
    assert "bad.pts" in str(e.value) and needle in str(e.value)


def test_bosphorus_lm3_labels_map_to_ibug(tmp_path):
    text = ("# Bosphorus 3D landmarks\n\n3 landmarks:\nNose tip\n1.5 -2.0 30.25\n"
            "Outer left eye corner\n45 0 -5\nNose saddle left\n10 20 5\n")
    (tmp_path / "x.lm3").write_text(text)
    ls = formats.read_landmarks(str(tmp_path / "x.lm3"))
    assert ls.points_2d is None and ls.points_3d.shape == (68, 3)
    assert np.allclose(ls.points_3d[30], [1.5, -2.0, 30.25])     # nose tip
    assert np.allclose(ls.points_3d[45], [45, 0, -5])            # subject's left outer canthus = iBUG 45
    assert np.isfinite(ls.points_3d).all(1).sum() == 2           # the nose saddle has no iBUG point


def test_bosphorus_lm2_round_trip_and_convention(tmp_path):
    (tmp_path / "y.lm2").write_text("2 landmarks:\nNose tip\n100 200\nChin middle\n101 300\n")
    d = formats.read_lm2(str(tmp_path / "y.lm2"))
    assert np.allclose(d["Nose tip"], [100.5, 200.5])            # 0-based integer centres → +0.5
    formats.write_lm2(str(tmp_path / "z.lm2"), d)
    assert all(np.array_equal(formats.read_lm2(str(tmp_path / "z.lm2"))[k], v) for k, v in d.items())


def test_bosphorus_truncated(tmp_path):
    (tmp_path / "t.lm3").write_text("3 landmarks:\nNose tip\n1 2 3\nChin middle\n")
    with pytest.raises(formats.LandmarkFormatError, match="t.lm3.*declares 3"):
        formats.read_lm3(str(tmp_path / "t.lm3"))


def test_ljson_menpo_yx_order(tmp_path):
    doc = {"version": 2, "landmarks": {"points": [[10.0, 20.0], [None, None]] + [[1, 2]] * 66, "connectivity": []}}
    (tmp_path / "m.ljson").write_text(json.dumps(doc))
    pts = formats.read_ljson(str(tmp_path / "m.ljson"))
    assert np.allclose(pts[0], [20.5, 10.5])                     # (y, x) → (col, row), +0.5
    assert np.isnan(pts[1]).all()
    formats.write_ljson(str(tmp_path / "n.ljson"), pts)
    assert np.array_equal(formats.read_ljson(str(tmp_path / "n.ljson")), pts, equal_nan=True)


def test_json_2d_and_3d(tmp_path):
    p2 = np.arange(136, dtype=float).reshape(68, 2)
    p3 = np.arange(204, dtype=float).reshape(68, 3)
    formats.write_json(str(tmp_path / "j.json"), p2, p3)
    ls = formats.read_landmarks(str(tmp_path / "j.json"))
    assert np.array_equal(ls.points_2d, p2) and np.array_equal(ls.points_3d, p3)
    (tmp_path / "g.json").write_text("{not json")
    with pytest.raises(formats.LandmarkFormatError, match="g.json.*not valid JSON"):
        formats.read_json(str(tmp_path / "g.json"))


def test_bosphorus_header_with_info_text(tmp_path):
    # the layout read_lm3file.m accepts: header, '*', free text up to an empty line, then 'N landmarks:'
    (tmp_path / "h.lm3").write_text("Bosphorus 3D landmarks\n*\nsome info\nmore info\n\n1 landmarks:\nNose tip\n1 2 3\n")
    assert np.allclose(formats.read_lm3(str(tmp_path / "h.lm3"))["Nose tip"], [1, 2, 3])
