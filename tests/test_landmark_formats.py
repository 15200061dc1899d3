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
    ls = formats.read_landmarks(str(tmp_path / "j.json"), check=False)   # parsing only: not a face layout
    assert np.array_equal(ls.points_2d, p2) and np.array_equal(ls.points_3d, p3)
    (tmp_path / "g.json").write_text("{not json")
    with pytest.raises(formats.LandmarkFormatError, match="g.json.*not valid JSON"):
        formats.read_json(str(tmp_path / "g.json"))


def test_bosphorus_header_with_info_text(tmp_path):
    # the layout read_lm3file.m accepts: header, '*', free text up to an empty line, then 'N landmarks:'
    (tmp_path / "h.lm3").write_text("Bosphorus 3D landmarks\n*\nsome info\nmore info\n\n1 landmarks:\nNose tip\n1 2 3\n")
    assert np.allclose(formats.read_lm3(str(tmp_path / "h.lm3"))["Nose tip"], [1, 2, 3])


# ------------------------------------------------------------- files as other tools write them

def _face_landmarks():
    """68 iBUG points of a synthetic face (3D mm, frontal) and their frontal image pixels (col, row)."""
    from refine_ray.synth.face import Identity, make_face

    lm3 = make_face(Identity.sample(np.random.default_rng(7)), "s").landmarks_3d
    lm2 = np.stack([320 + 2 * lm3[:, 0], 240 - 2 * lm3[:, 1]], axis=1)
    return lm3, lm2


# iBUG index of each point's mirror image (subject's right <-> left)
MIRROR = ([16 - i for i in range(17)] + [26 - i for i in range(10)] + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
          + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
          + [64, 63, 62, 61, 60, 67, 66, 65])


def test_ljson_v1_groups_are_labels_of_one_set(tmp_path):
    lm3, lm2 = _face_landmarks()
    yx = (lm2 - 0.5)[:, ::-1]
    doc = {"version": 1, "groups": [
        {"label": "jaw", "connectivity": [], "landmarks": [{"point": list(p)} for p in yx[:17]]},
        {"label": "rest", "connectivity": [], "landmarks": [{"point": list(p)} for p in yx[17:]]}]}
    (tmp_path / "a.ljson").write_text(json.dumps(doc))
    np.testing.assert_allclose(formats.read_landmarks(str(tmp_path / "a.ljson")).points_2d, lm2)


def test_ljson_named_groups_pick_only_first68_or_named(tmp_path):
    lm3, lm2 = _face_landmarks()
    one = {"version": 2, "groups": {"face_3d": {"landmarks": {"points": lm3.tolist(), "connectivity": []}}}}
    (tmp_path / "one.ljson").write_text(json.dumps(one))
    np.testing.assert_allclose(formats.read_landmarks(str(tmp_path / "one.ljson")).points_3d, lm3)
    several = {"version": 3, "groups": {
        "eyes": {"landmarks": {"points": lm3[36:48].tolist()}},
        "ibug68": {"landmarks": {"points": lm3.tolist()}},
        "moved": {"landmarks": {"points": (lm3 + 5).tolist()}}}}
    (tmp_path / "many.ljson").write_text(json.dumps(several))
    np.testing.assert_allclose(formats.read_landmarks(str(tmp_path / "many.ljson")).points_3d, lm3)
    np.testing.assert_allclose(formats.read_landmarks(str(tmp_path / "many.ljson"), group="moved").points_3d, lm3 + 5)
    with pytest.raises(formats.LandmarkFormatError, match=r"many.ljson: no landmark group 'nose'.*'ibug68' \(68 points\)"):
        formats.read_landmarks(str(tmp_path / "many.ljson"), group="nose")
    (tmp_path / "eyes.ljson").write_text(json.dumps({"groups": {"a": several["groups"]["eyes"],
                                                                  "b": several["groups"]["eyes"]}}))
    with pytest.raises(formats.LandmarkFormatError, match="none has 68 points"):
        formats.read_landmarks(str(tmp_path / "eyes.ljson"))


@pytest.mark.parametrize("name,text_of", [
    ("a.txt", lambda p: "\n".join(" ".join(repr(float(v)) for v in r) for r in p)),
    ("b.csv", lambda p: ("x,y,z\n" if p.shape[1] == 3 else "x,y\n") + "\n".join(",".join(repr(float(v)) for v in r) for r in p)),
])
def test_plain_tables(tmp_path, name, text_of):
    lm3, lm2 = _face_landmarks()
    (tmp_path / ("3d_" + name)).write_text(text_of(lm3))
    np.testing.assert_allclose(formats.read_landmarks(str(tmp_path / ("3d_" + name))).points_3d, lm3)
    (tmp_path / ("2d_" + name)).write_text(text_of(lm2 - 0.5))         # OpenCV: pixel centres on integers
    np.testing.assert_allclose(formats.read_landmarks(str(tmp_path / ("2d_" + name))).points_2d, lm2)


def test_plain_npy_and_bad_tables(tmp_path):
    lm3, _ = _face_landmarks()
    np.save(tmp_path / "c.npy", lm3)
    np.testing.assert_allclose(formats.read_landmarks(str(tmp_path / "c.npy")).points_3d, lm3)
    np.save(tmp_path / "d.npy", np.zeros((68, 4)))
    with pytest.raises(formats.LandmarkFormatError, match=r"d.npy: expected an N×2 .* or N×3"):
        formats.read_landmarks(str(tmp_path / "d.npy"))
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(formats.LandmarkFormatError, match="o.npy: not a readable .npy"):
        formats.read_landmarks(str(tmp_path / "o.npy"))
    (tmp_path / "e.txt").write_text("1 2\n3 4 5\n")
    with pytest.raises(formats.LandmarkFormatError, match="e.txt: rows hold different numbers"):
        formats.read_landmarks(str(tmp_path / "e.txt"))
    (tmp_path / "f.csv").write_text("x,y\n1,2\n3,oops\n")
    with pytest.raises(formats.LandmarkFormatError, match="f.csv: line 3: non-numeric"):
        formats.read_landmarks(str(tmp_path / "f.csv"))


def test_ibug68_count_and_layout_checked(tmp_path):
    from refine_ray.geometry import rotation_from_angles

    lm3, lm2 = _face_landmarks()
    rng = np.random.default_rng(0)
    for _ in range(20):   # any orientation and unit passes
        R = rotation_from_angles(*rng.uniform(-180, 180, 3))
        formats.check_ibug68(lm3 @ R.T * rng.choice([0.001, 0.1, 1.0]) + rng.normal(0, 100, 3))
    formats.write_pts(str(tmp_path / "ok.pts"), lm2)
    assert formats.read_landmarks(str(tmp_path / "ok.pts")).points_2d.shape == (68, 2)
    cases = [("short.pts", lm2[:51], "expected 68 landmarks in iBUG order, got 51"),
             ("mirror.pts", lm2[MIRROR], "mirrored"),
             ("shuffled.pts", lm2[np.random.default_rng(1).permutation(68)], "not 68 landmarks in iBUG order")]
    for name, pts, needle in cases:
        formats.write_pts(str(tmp_path / name), pts)
        with pytest.raises(formats.LandmarkFormatError, match=needle) as e:
            formats.read_landmarks(str(tmp_path / name))
        assert str(e.value).startswith(str(tmp_path / name)) and "\n" not in str(e.value)
    formats.write_json(str(tmp_path / "m3.json"), points_3d=lm3[MIRROR])
    with pytest.raises(formats.LandmarkFormatError, match="m3.json: .*mirrored"):
        formats.read_landmarks(str(tmp_path / "m3.json"))
