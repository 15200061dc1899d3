"""Scan readers against files written by the test itself in each dataset's documented layout."""
import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from refine_ray.landmarks import formats

from refine_ray.scans import ScanFormatError, discover_scans, read_scan
from refine_ray.scans.bosphorus import format_bnt, parse_bnt
from refine_ray.scans.frgc import format_abs, parse_abs


def _abs_text(flags, x, y, z):
    rows, cols = flags.shape
    line = lambda a: " ".join(str(v) for v in a.ravel())
    return f"{rows} rows\n{cols} columns\npixels (flag X Y Z):\n{line(flags)}\n{line(x)}\n{line(y)}\n{line(z)}\n"


def _tiny_frgc():
    flags = np.array([[1, 1, 0, 1], [0, 1, 1, 1], [1, 1, 1, 0]])
    x = np.where(flags, np.arange(12).reshape(3, 4) * 0.5 - 1.0, -999999)
    y = np.where(flags, -np.arange(12).reshape(3, 4) * 0.25, -999999)
    z = np.where(flags, -1200.125 + np.arange(12).reshape(3, 4), -999999)
    return flags, x, y, z


def test_frgc_abs_layout_and_siblings(tmp_path):
    flags, x, y, z = _tiny_frgc()
    (tmp_path / "04201d486.abs").write_text(_abs_text(flags, x, y, z))
    Image.fromarray(np.full((3, 4, 3), 77, np.uint8)).save(tmp_path / "04201d486.ppm")
    scan = read_scan(str(tmp_path / "04201d486.abs"))
    assert scan.dataset == "frgc" and scan.subject_id == "04201" and scan.scan_id == "04201d486"
    assert np.array_equal(scan.grid_valid, flags == 1)
    assert np.array_equal(scan.grid[1, 2], [x[1, 2], y[1, 2], z[1, 2]])       # top row first, row-major
    assert np.isnan(scan.grid[0, 2]).all()
    assert np.array_equal(scan.vertices, np.stack([x, y, z], -1)[flags == 1])
    assert np.array_equal(scan.vertex_pixels[0], [0.5, 0.5])                  # pixel-registered photo
    assert scan.photo.shape == (3, 4, 3) and np.allclose(scan.vertex_colors, 77 / 255)


def test_frgc_gz_round_trip_to_micrometre():
    rng = np.random.default_rng(1)
    valid = rng.random((48, 64)) < 0.6
    grid = rng.normal(0, 50, (48, 64, 3))
    back, v = parse_abs(gzip.compress(format_abs(grid, valid)), "x.abs.gz")
    assert np.array_equal(v, valid)
    assert np.abs(back[valid] - grid[valid]).max() <= 0.0005 + 1e-9           # 3 decimals
    assert np.isnan(back[~valid]).all()


@pytest.mark.parametrize("mutate,needle", [
    (lambda t: t[: len(t) // 2], "4 data lines"),                             # truncated
    (lambda t: t.replace("-1200.125", "abc", 1), "non-numeric"),
    (lambda t: t.replace("1 1 0 1", "1 1 1 1", 1), "invalid marker"),          # flag says valid, value says not
    (lambda t: t.replace("1 1 0 1", "1 2 0 1", 1), "other than 0 and 1"),
    (lambda t: "garbage\n" + t, "not an FRGC .abs"),
])
def test_frgc_bad_files(tmp_path, mutate, needle):
    f = tmp_path / "02463d550.abs"
    f.write_text(mutate(_abs_text(*_tiny_frgc())))
    with pytest.raises(ScanFormatError) as e:
        read_scan(str(f))
    assert "02463d550.abs" in str(e.value) and needle in str(e.value)


def test_frgc_corrupt_gzip(tmp_path):
    data = gzip.compress(_abs_text(*_tiny_frgc()).encode())
    (tmp_path / "02463d551.abs.gz").write_bytes(data[: len(data) - 20])
    with pytest.raises(ScanFormatError, match="02463d551.abs.gz.*gzip"):
        read_scan(str(tmp_path / "02463d551.abs.gz"))


def _bnt_bytes(grid_top_down, uv_top_down, zmin=-1e9, name=b"../../evil.png"):
    """The Bosphorus layout, built by hand: rows stored bottom-up, five column arrays."""
    nrows, ncols = grid_top_down.shape[:2]
    cols5 = np.concatenate([grid_top_down, uv_top_down], -1)[::-1]           # bottom row first
    body = b"".join(cols5[..., k].astype("<f8").tobytes() for k in range(5))
    return struct.pack("<HHdH", nrows, ncols, zmin, len(name)) + name + struct.pack("<I", 5 * nrows * ncols) + body


def test_bosphorus_bnt_layout(tmp_path):
    grid = np.arange(2 * 3 * 3, dtype=float).reshape(2, 3, 3)
    grid[0, 1] = -1e9                                                         # background
    uv = np.stack(np.meshgrid(np.linspace(0.1, 0.9, 3), np.linspace(0.2, 0.8, 2)), -1)
    (tmp_path / "bs007").mkdir()
    (tmp_path / "bs007" / "bs007_E_FEAR_1.bnt").write_bytes(_bnt_bytes(grid, uv))
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "bs007" / "bs007_E_FEAR_1.png")
    scan = read_scan(str(tmp_path / "bs007" / "bs007_E_FEAR_1.bnt"))
    assert scan.dataset == "bosphorus" and scan.subject_id == "bs007" and scan.expression == "fear"
    assert np.array_equal(scan.grid[1, 2], grid[1, 2]) and not scan.grid_valid[0, 1]
    assert np.allclose(scan.vertex_pixels[0], [0.1 * 30, 0.2 * 20])          # u·width, v·height
    assert not (tmp_path / "evil.png").exists()                                # name in data never used as path
    back = parse_bnt(format_bnt(scan.grid, scan.grid_valid, np.nan_to_num(uv), "x.png"), "rt")
    assert np.array_equal(back[1], scan.grid_valid)
    assert np.array_equal(back[0][back[1]], scan.grid[scan.grid_valid])       # float64: exact


@pytest.mark.parametrize("cut,needle", [(16, "truncated inside the header"), (-8, "expected"), (3, "too short")])
def test_bosphorus_truncated(tmp_path, cut, needle):
    data = _bnt_bytes(np.ones((2, 2, 3)), np.zeros((2, 2, 2)), name=b"a.png")
    data = data[:cut] if cut > 0 else data[:cut]
    (tmp_path / "bs001_N_N_0.bnt").write_bytes(data)
    with pytest.raises(ScanFormatError, match=f"bs001_N_N_0.bnt.*{needle}"):
        read_scan(str(tmp_path / "bs001_N_N_0.bnt"))


def test_obj_texture_colours_vertices_and_names_stay_inside(tmp_path):
    tex = np.zeros((2, 2, 3), np.uint8)
    tex[:, 0] = (255, 0, 0)
    tex[:, 1] = (0, 0, 255)
    Image.fromarray(tex).save(tmp_path / "skin.png")
    (tmp_path / "face.mtl").write_text("newmtl skin\nmap_Kd ../../../skin.png\n")   # path → reduced to its base name
    (tmp_path / "face.obj").write_text(
        "mtllib face.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0.25 0.5\nvt 0.75 0.5\nvt 0.25 0.9\n"
        "usemtl skin\nf 1/1 2/2 3/3\n")
    from refine_ray.synth.face import Identity, make_face

    lm3 = make_face(Identity.sample(np.random.default_rng(0)), "s").landmarks_3d      # a real iBUG layout
    lm2 = np.stack([100 + lm3[:, 0], 100 - lm3[:, 1]], axis=1)
    lm2[0] = (1.5, 2.5)
    formats.write_pts(str(tmp_path / "face.pts"), lm2)
    scan = read_scan(str(tmp_path / "face.obj"))
    assert scan.faces.shape == (1, 3) and scan.vertices.shape == (3, 3)
    assert np.allclose(scan.vertex_colors[0], [1, 0, 0], atol=0.02)
    assert np.allclose(scan.vertex_colors[1], [0, 0, 1], atol=0.02)
    assert scan.photo is None and scan.texture.shape == (2, 2, 3) and scan.uv.shape == (3, 2)   # an atlas, not a photo
    assert scan.landmarks_2d is None         # 2D points belong to a photo, and a mesh has one only as <name>.photo.*
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "face.photo.png")
    scan = read_scan(str(tmp_path / "face.obj"))
    assert scan.photo.shape == (8, 8, 3) and np.allclose(scan.landmarks_2d[0], [1.5, 2.5])


def test_ply_and_wrl(tmp_path):
    (tmp_path / "p.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
        "element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 1.5\n2 0 0\n0 3 0\n3 0 1 2\n")
    s = read_scan(str(tmp_path / "p.ply"))
    assert np.allclose(s.vertices, [[0, 0, 1.5], [2, 0, 0], [0, 3, 0]]) and s.faces.tolist() == [[0, 1, 2]]
    (tmp_path / "w.wrl").write_text("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet {\n"
                                    "coord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0, 1 1 2 ] }\n"
                                    "coordIndex [ 0 1 2 -1, 1 3 2 -1 ] } }\n")
    w = read_scan(str(tmp_path / "w.wrl"))
    assert w.vertices.shape == (4, 3) and np.isclose(w.vertices[:, 2].max(), 2.0) and len(w.faces) == 2
    (tmp_path / "g.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99\n\x00\x01")
    with pytest.raises(ScanFormatError, match="g.ply"):
        read_scan(str(tmp_path / "g.ply"))


def test_discover_scans_layout(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/04201d486.abs.gz", "a/04201d486.ppm", "a/04201d486.pts", "bs000_N_N_0.bnt", "m.obj", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = discover_scans(str(tmp_path))
    assert [f.rsplit("/", 1)[1] for f in found] == ["04201d486.abs.gz", "bs000_N_N_0.bnt", "m.obj"]


def test_frgc_header_promising_more_than_the_file_holds(tmp_path):
    flags, x, y, z = _tiny_frgc()
    text = _abs_text(flags, x, y, z).replace("3 rows", "9000 rows", 1)
    (tmp_path / "02463d552.abs").write_text(text)
    with pytest.raises(ScanFormatError, match="02463d552.abs.*too short"):
        read_scan(str(tmp_path / "02463d552.abs"))


def test_corrupt_photo_is_named(tmp_path):
    flags, x, y, z = _tiny_frgc()
    (tmp_path / "04201d487.abs").write_text(_abs_text(flags, x, y, z))
    (tmp_path / "04201d487.ppm").write_bytes(b"P6\n4 3\n255\n\x00\x01")       # header promises 36 bytes
    with pytest.raises(ScanFormatError, match="04201d487.ppm"):
        read_scan(str(tmp_path / "04201d487.abs"))


def test_abs_number_parser_matches_python_float():
    from refine_ray.scans.frgc import _parse_numbers

    rng = np.random.default_rng(3)
    v = rng.normal(0, 400, 3000)
    tokens = [f"{x:.3f}" for x in v[:1000]] + [f"{x:.6f}" for x in v[1000:2000]] + [f"{x:.5e}" for x in v[2000:]]
    tokens += ["-999999", "0", "+2.5", "-0.0", "7.", "1E+02", "12345678901234567890", "nan"]   # last two: fallback path
    parsed = _parse_numbers(" ".join(tokens).encode(), "t.abs", "X", len(tokens))
    assert np.array_equal(parsed, np.array([float(t) for t in tokens]), equal_nan=True)
    with pytest.raises(ScanFormatError, match="t.abs.*non-numeric value in the X line"):
        _parse_numbers(b"1.0 2.0 x3", "t.abs", "X", 3)


def test_wrong_landmark_count_names_the_landmark_file(tmp_path):
    flags, x, y, z = _tiny_frgc()
    (tmp_path / "04201d488.abs").write_text(_abs_text(flags, x, y, z))
    (tmp_path / "04201d488.pts").write_text("version: 1\nn_points: 5\n{\n" + "1 1\n" * 5 + "}\n")
    with pytest.raises(ScanFormatError, match="04201d488.pts.*expected 68"):
        read_scan(str(tmp_path / "04201d488.abs"))
