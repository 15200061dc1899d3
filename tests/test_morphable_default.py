"""The PCA builder and the cached default model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from refine_ray.cli import build_3dmm as job
from refine_ray.morphable import MorphableModel
from refine_ray.morphable import default as default_mod
from refine_ray.morphable.pca import build_pca_model, procrustes_align, read_registered


def _rotation(deg):
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def test_pca_recovers_a_known_low_rank_population():
    rng = np.random.default_rng(0)
    V = 200
    mean = rng.normal(0, 40, (V, 3))
    q, _ = np.linalg.qr(rng.standard_normal((3 * V, 3)))
    std = np.array([30.0, 12.0, 5.0])
    coeffs = rng.standard_normal((400, 3))
    coeffs = (coeffs - coeffs.mean(0)) / coeffs.std(0, ddof=1)     # exactly unit sample std
    coeffs = np.linalg.qr(coeffs)[0] * np.sqrt(399)                 # and uncorrelated
    faces = (mean.reshape(-1) + (coeffs * std) @ q.T).reshape(400, V, 3)
    m = build_pca_model(faces, np.array([[0, 1, 2]]), np.full(68, -1), 5, align=False)
    np.testing.assert_allclose(m.shape_std[:3], std, rtol=1e-6)
    assert m.shape_std[3] < 1e-6
    for k in range(3):   # each component spans the planted direction (up to sign)
        assert abs(np.dot(m.shape_basis[k].reshape(-1), q[:, k])) > 0.999


def test_procrustes_removes_head_pose():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 50, (100, 3))
    posed = np.stack([base @ _rotation(a).T + rng.normal(0, 5, 3) for a in (-20, 0, 15, 30)])
    aligned = procrustes_align(posed)
    assert np.abs(aligned - aligned[0]).max() < 1e-6    # identical shapes coincide once aligned


def test_default_model_is_built_once_cached_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("REFINE_RAY_CACHE", str(tmp_path))
    monkeypatch.setattr(default_mod, "_memo", {})
    m1 = default_mod.default_model(n_subjects=12, n_components=6)
    files = list((tmp_path / "morphable").glob("*.npz"))
    assert len(files) == 1 and not list((tmp_path / "morphable").glob(".tmp-*"))
    assert default_mod.default_model(n_subjects=12, n_components=6) is m1          # memory
    monkeypatch.setattr(default_mod, "_memo", {})
    m2 = default_mod.default_model(n_subjects=12, n_components=6)                   # from disk
    np.testing.assert_array_equal(m1.mean, m2.mean)
    rebuilt = default_mod.build_default_model(n_subjects=12, n_components=6)       # deterministic
    np.testing.assert_allclose(rebuilt.mean, m1.mean, atol=1e-3)
    np.testing.assert_allclose(np.abs(rebuilt.shape_basis[0]), np.abs(m1.shape_basis[0]), atol=1e-4)
    assert m1.n_shape == 6 and (m1.landmark_index >= 0).all() and m1.contour_candidates.shape[0] == 17
    files[0].write_bytes(b"damaged")                                                # corrupt cache → rebuilt
    monkeypatch.setattr(default_mod, "_memo", {})
    np.testing.assert_allclose(default_mod.default_model(n_subjects=12, n_components=6).mean, m1.mean, atol=1e-3)


def test_read_registered_meshes_from_a_folder(tmp_path):
    import trimesh

    rng = np.random.default_rng(2)
    faces = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4]])
    for i in range(3):
        v = rng.normal(0, 30, (5, 3))
        trimesh.Trimesh(v, faces, process=False).export(tmp_path / f"face_{i}.ply")
    V, F, L = read_registered(str(tmp_path))
    assert V.shape == (3, 5, 3) and np.array_equal(F, faces) and (L == -1).all()
    trimesh.Trimesh(rng.normal(0, 30, (6, 3)), faces, process=False).export(tmp_path / "face_9.ply")
    with pytest.raises(ValueError, match="face_9.ply: topology differs"):
        read_registered(str(tmp_path))


def test_build_3dmm_job_end_to_end(tmp_path, capsys):
    """The CLI on an .npz of registered meshes written here; the written model reproduces the data."""

    rng = np.random.default_rng(5)
    base = rng.normal(0, 40, (50, 3))
    dirs = rng.normal(0, 1, (2, 50, 3))
    verts = np.stack([base + a * dirs[0] + b * dirs[1] for a, b in rng.normal(0, 3, (30, 2))])
    lmk = np.arange(68) % 50
    np.savez(tmp_path / "registered.npz", vertices=verts, faces=np.array([[0, 1, 2]]), landmark_index=lmk)
    assert job.main(["--registered", str(tmp_path / "registered.npz"), "--components", "4",
                     "--out", str(tmp_path / "m.npz"), "--no-align"]) == 0
    summary = json.loads(capsys.readouterr().out)
    m = MorphableModel.load_npz(str(tmp_path / "m.npz"))
    assert summary["components"] == m.n_shape == 4 and summary["training_meshes"] == 30
    assert m.shape_std[2] < 1e-3 * m.shape_std[1]          # two planted directions, nothing else
    assert np.array_equal(m.landmark_index, lmk)
    np.testing.assert_allclose(m.mean, verts.mean(axis=0), atol=1e-3)


def test_procrustes_keeps_the_datas_frame():
    rng = np.random.default_rng(3)
    base = rng.normal(0, 50, (100, 3))
    posed = np.stack([base @ _rotation(a).T for a in (-10, 10, 12, -12)])   # poses average out to frontal
    aligned = procrustes_align(posed)
    np.testing.assert_allclose(aligned.mean(axis=0), base - base.mean(axis=0), atol=0.5)  # frontal, not mesh 0's 10°
