"""End to end: synthetic scans in both scanner formats → scan reader → file landmarks → coarse fit, with a
PCA model built here and the same model re-loaded from BFM2017 .h5 / BFM2009 .mat files written here."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io

from refine_ray import storage
from refine_ray.landmarks import make_provider
from refine_ray.morphable import fit_landmarks, load_model
from refine_ray.morphable.pca import build_pca_model
from test_fitting import angle_between

import refine_ray.scans as scans
import refine_ray.synth.dataset as synth_dataset
import refine_ray.synth.face as synth_face


def _render_rotation(yaw, pitch, roll):
    """The synthetic renderer's head rotation (documented there as Rz·Rx·Ry), written out here."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


@pytest.fixture(scope="module")
def model():
    V, F, L = synth_face.registered_population(60, 0, expressions=True)
    return build_pca_model(V, F, L, 25)


@pytest.fixture(scope="module")
def synthetic_scans(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("scans"))
    found = []
    for fmt, n in (("frgc", 2), ("bosphorus", 2)):          # bosphorus: a neutral and a happy scan
        folder = storage.join(out, fmt)
        for row in synth_dataset.synthesize_subject(fmt, 0, n, 0, folder):
            found.append((fmt, scans.read_scan(storage.join(folder, *row["path"].split("/"))), row))
    return found


# 68 landmarks (FRGC .pts) vs the ~18 a Bosphorus .lm2 maps to iBUG, on expressive faces a 25-component
# model of 60 synthetic people does not represent exactly: measured 0.43-0.46° (FRGC) and 1.57° (neutral) /
# 3.53° (happy) for Bosphorus with λ = 2.
MAX_DEG = {"frgc": 2.5, "bosphorus": 5.0}


def _check_fits(m, synthetic_scans):
    provider = make_provider("file")
    for fmt, scan, row in synthetic_scans:
        lm = provider.landmarks_for(scan)
        fit = fit_landmarks(m, lm)
        R = _render_rotation(row["yaw"], row["pitch"], row["roll"])
        err = angle_between(fit.projection.rotation, R)
        assert err < MAX_DEG[fmt], (fmt, row["path"], err)
        assert fit.rms_px < 4.0, (fmt, fit.rms_px)
        assert fit.vertices.shape == m.mean.shape and np.isfinite(fit.vertices).all()
        if fmt == "bosphorus":
            assert fit.n_landmarks < 68                      # .lm2 gives a subset of the iBUG points


def test_fit_synthetic_scans_of_both_profiles(model, synthetic_scans):
    assert {f for f, _, _ in synthetic_scans} == {"frgc", "bosphorus"}
    _check_fits(model, synthetic_scans)


def test_same_model_from_bfm_files_fits_alike(model, synthetic_scans, tmp_path):
    V = model.n_vertices
    mapping = tmp_path / "ibug_to_model.txt"
    mapping.write_text("[landmark_mappings]\n" + "".join(f"{i + 1} = {v}\n" for i, v in enumerate(model.landmark_index)))
    basis = model.shape_basis.reshape(model.n_shape, -1).T                  # (3V, K), orthonormal columns
    with h5py.File(tmp_path / "model2017.h5", "w") as f:
        f["shape/model/mean"] = model.mean.reshape(-1).astype(np.float32)
        f["shape/model/pcaBasis"] = basis.astype(np.float32)
        f["shape/model/pcaVariance"] = (model.shape_std ** 2).astype(np.float32)
        f["shape/representer/cells"] = model.faces.T.astype(np.uint32)
    scipy.io.savemat(tmp_path / "01_MorphableModel.mat", {
        "shapeMU": (model.mean.reshape(-1, 1) * 1000).astype(np.float32), "shapePC": basis.astype(np.float32),
        "shapeEV": (model.shape_std[:, None] * 1000).astype(np.float32), "tl": model.faces[:, [0, 2, 1]] + 1.0})
    for name in ("model2017.h5", "01_MorphableModel.mat"):
        loaded = load_model(str(tmp_path / name), landmarks=str(mapping))
        assert loaded.n_vertices == V and np.array_equal(loaded.landmark_index, model.landmark_index)
        _check_fits(loaded, synthetic_scans)
