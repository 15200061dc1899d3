"""MorphableModel I/O and the loaders, on small model files this test writes in each format."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io

from refine_ray.morphable import ModelFormatError, MorphableModel
from refine_ray.morphable.loaders import load_bfm2009, load_bfm2017, load_eos, load_model, read_landmark_mapping

V = 40


def _tiny_face(rng):
    """A 40-vertex 'face' ~150 mm wide (so it is plausibly mm), a fan of triangles, orthonormal basis."""
    ang = np.linspace(0, 2 * np.pi, V - 1, endpoint=False)
    ring = np.stack([75 * np.cos(ang), 95 * np.sin(ang), 20 * np.ones_like(ang)], axis=1)
    mean = np.vstack([[0, 0, 60], ring])                   # vertex 0: nose tip in front
    faces_ccw = np.array([[0, 1 + i, 1 + (i + 1) % (V - 1)] for i in range(V - 1)])
    q, _ = np.linalg.qr(rng.standard_normal((3 * V, 6)))
    return mean, faces_ccw, q                              # q: (3V, 6) orthonormal columns


def _normals(vertices, faces):
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    return np.cross(b - a, c - a)


def test_npz_roundtrip_and_instance(tmp_path):
    rng = np.random.default_rng(0)
    mean, faces, q = _tiny_face(rng)
    lmk = np.full(68, -1)
    lmk[30] = 0
    m = MorphableModel(mean=mean, shape_basis=q.T[:4].reshape(4, V, 3), shape_std=[5, 4, 3, 2], faces=faces,
                       landmark_index=lmk, expr_basis=q.T[4:].reshape(2, V, 3), expr_std=[1, 1])
    m.save_npz(str(tmp_path / "m.npz"))
    back = MorphableModel.load_npz(str(tmp_path / "m.npz"))
    coeffs = np.array([1.0, -0.5, 0, 2])
    expected = mean.reshape(-1) + (coeffs * [5, 4, 3, 2]) @ q.T[:4]        # by hand: μ + Σ c_k σ_k b_k
    np.testing.assert_allclose(back.instance(coeffs), expected.reshape(V, 3), atol=1e-4)
    assert back.n_expr == 2 and back.landmark_index[30] == 0
    np.testing.assert_allclose(back.landmarks_3d()[30], mean[0], atol=1e-4)
    assert np.isnan(back.landmarks_3d()[0]).all()
    small = back.truncated(n_shape=2, n_expr=0)
    assert small.n_shape == 2 and small.n_expr == 0
    np.testing.assert_allclose(small.instance([1.0, -0.5]), back.instance([1.0, -0.5]), atol=1e-9)


def test_npz_over_s3(s3_bucket):
    rng = np.random.default_rng(1)
    mean, faces, q = _tiny_face(rng)
    m = MorphableModel(mean=mean, shape_basis=q.T[:2].reshape(2, V, 3), shape_std=[1, 1], faces=faces,
                       landmark_index=np.full(68, -1))
    m.save_npz(f"{s3_bucket}/models/m.npz")
    np.testing.assert_allclose(MorphableModel.load_npz(f"{s3_bucket}/models/m.npz").mean, mean, atol=1e-4)


def test_bad_model_files_name_the_file_and_problem(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"not a zip")
    with pytest.raises(ModelFormatError, match="junk.npz"):
        MorphableModel.load_npz(str(p))
    np.savez(tmp_path / "partial.npz", mean=np.zeros((3, 3)))
    with pytest.raises(ModelFormatError, match="missing arrays"):
        MorphableModel.load_npz(str(tmp_path / "partial.npz"))
    with pytest.raises(ModelFormatError, match="landmark_index"):
        MorphableModel(mean=np.zeros((3, 3)), shape_basis=np.zeros((1, 3, 3)), shape_std=[1],
                       faces=[[0, 1, 2]], landmark_index=np.zeros(10, int))
    with pytest.raises(ModelFormatError, match="unknown model format"):
        load_model(str(tmp_path / "model.obj"))


def test_bfm2017_h5(tmp_path):
    rng = np.random.default_rng(2)
    mean, faces, q = _tiny_face(rng)
    expr_mean = rng.normal(0, 0.1, 3 * V)
    path = tmp_path / "model2017-1_bfm_nomouth.h5"
    with h5py.File(path, "w") as f:                               # statismo layout, values in mm
        f["shape/model/mean"] = mean.reshape(-1).astype(np.float32)
        f["shape/model/pcaBasis"] = q[:, :4].astype(np.float32)
        f["shape/model/pcaVariance"] = np.array([16.0, 9.0, 4.0, 1.0], np.float32)
        f["shape/representer/cells"] = faces.T.astype(np.uint32)
        f["shape/representer/points"] = mean.T.astype(np.float32)
        f["expression/model/mean"] = expr_mean.astype(np.float32)
        f["expression/model/pcaBasis"] = q[:, 4:].astype(np.float32)
        f["expression/model/pcaVariance"] = np.array([4.0, 0.25], np.float32)
    lmk = np.arange(68) % V
    m = load_model(str(path), landmarks=lmk)
    np.testing.assert_allclose(m.shape_std, [4, 3, 2, 1], rtol=1e-6)           # variances → std
    np.testing.assert_allclose(m.expr_std, [2, 0.5], rtol=1e-6)
    np.testing.assert_allclose(m.mean, mean + expr_mean.reshape(V, 3), atol=1e-4)  # mm, expression mean folded in
    np.testing.assert_array_equal(m.faces, faces)
    np.testing.assert_allclose(m.instance([1, 0, 0, 0]) - m.mean, 4 * q[:, 0].reshape(V, 3), atol=1e-5)
    assert load_bfm2017(str(path), n_shape=2, n_expr=1).n_shape == 2
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ModelFormatError, match="missing dataset shape/model/mean"):
        load_bfm2017(str(tmp_path / "other.h5"))


def test_bfm2009_mat_micrometres_one_based_clockwise(tmp_path):
    rng = np.random.default_rng(3)
    mean, faces_ccw, q = _tiny_face(rng)
    tl = faces_ccw[:, [0, 2, 1]] + 1                     # BFM2009: 1-based, clockwise seen from the front
    path = tmp_path / "01_MorphableModel.mat"
    scipy.io.savemat(path, {"shapeMU": (mean.reshape(-1, 1) * 1000).astype(np.float32),      # µm
                            "shapePC": q[:, :3].astype(np.float32),
                            "shapeEV": np.array([[3000.0], [2000.0], [1000.0]], np.float32),  # std, µm
                            "tl": tl.astype(np.float64), "texMU": np.zeros((3 * V, 1))})
    m = load_model(str(path), landmarks=np.zeros(68, int))
    np.testing.assert_allclose(m.mean, mean, atol=1e-3)                   # → mm
    np.testing.assert_allclose(m.shape_std, [3, 2, 1], rtol=1e-6)         # std, → mm
    np.testing.assert_array_equal(np.sort(m.faces, axis=1), np.sort(faces_ccw, axis=1))
    assert (_normals(m.mean, m.faces)[:, 2] > 0).all()                    # front faces now face the camera (+z)
    with pytest.raises(ModelFormatError, match="mm across"):
        load_bfm2009(str(path), unit_scale=1.0)                           # µm taken as mm: caught, not silent


def test_eos_landmark_mapping(tmp_path):
    p = tmp_path / "ibug_to_test.txt"
    p.write_text("# Mapping from the 68-point ibug annotations to vertex indices.\n"
                 "[landmark_mappings] # ibug (1-based, lhs) -> vertex (rhs)\n"
                 " 9 =    33  # chin bottom\n31 = 114  # nose-tip\n68 = 404\n\n"
                 "[contour_landmarks]\nright = [ 1, 2, 3 ]\nleft = [ 10, 11 ]\n")
    idx = read_landmark_mapping(str(p))
    assert idx[8] == 33 and idx[30] == 114 and idx[67] == 404
    assert (np.delete(idx, [8, 30, 67]) == -1).all()
    p.write_text("[landmark_mappings]\n70 = 3\n")
    with pytest.raises(ModelFormatError, match="outside 1..68"):
        read_landmark_mapping(str(p))
    p.write_text("landmarkMappings\n{\n 9 33\n}\n")                      # the old boost-info format
    with pytest.raises(ModelFormatError, match="TOML"):
        read_landmark_mapping(str(p))


def test_eos_bin_through_eos_py(tmp_path):
    rng = np.random.default_rng(4)
    mean, faces, q = _tiny_face(rng)
    try:
        import eos
    except ImportError:
        with pytest.raises(ModelFormatError, match="eos-py"):
            load_eos(str(tmp_path / "sfm_shape_3448.bin"))
        pytest.skip("eos-py is not installed: only the missing-package error is tested")
    mm = eos.morphablemodel
    shape = mm.PcaModel(mean.reshape(-1, 1).astype(np.float32), q[:, :3].astype(np.float32),
                        np.array([[9.0], [4.0], [1.0]], np.float32), faces.tolist())
    expr = mm.PcaModel(np.zeros((3 * V, 1), np.float32), q[:, 3:5].astype(np.float32),
                       np.array([[4.0], [1.0]], np.float32), faces.tolist())
    path = tmp_path / "test_model.bin"
    mm.save_model(mm.MorphableModel(shape, expr, mm.PcaModel()), str(path))   # written by eos itself
    mapping = tmp_path / "ibug_to_test.txt"
    mapping.write_text("[landmark_mappings]\n31 = 0\n")
    m = load_model(str(path), landmarks=str(mapping))
    np.testing.assert_allclose(m.mean, mean, atol=1e-4)
    np.testing.assert_allclose(m.shape_std, [3, 2, 1], rtol=1e-5)
    np.testing.assert_allclose(m.expr_std, [2, 1], rtol=1e-5)
    np.testing.assert_array_equal(m.faces, faces)
    assert m.landmark_index[30] == 0 and m.landmark_index[0] == -1
    (tmp_path / "broken.bin").write_bytes(b"nope")
    with pytest.raises(ModelFormatError, match="broken.bin"):
        load_eos(str(tmp_path / "broken.bin"))
