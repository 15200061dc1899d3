"""Landmark fitting against independent truth: a face drawn from a known model in a known pose."""
from __future__ import annotations

import numpy as np
import pytest

from refine_ray.geometry import ScaledOrthographic, plane_to_pixels
from refine_ray.morphable import FittingError, MorphableModel, fit_landmarks
from refine_ray.morphable.contour import contour_candidates

# ----------------------------------------------------------------------------- a known analytic face model

def _ibug_template() -> np.ndarray:
    """68 iBUG-ordered (x, y) mm positions on a frontal face (y up), mirror-symmetric like the real layout."""
    pts = []
    for phi in np.linspace(np.pi, 2 * np.pi, 17):                      # 0-16 jaw, ear level → chin → ear
        pts.append((65 * np.cos(phi), 10 + 95 * np.sin(phi)))
    for x in np.linspace(-50, -12, 5):                                  # 17-21 right brow (image left)
        pts.append((x, 42 - 0.004 * (x + 31) ** 2 * 10))
    for x in np.linspace(12, 50, 5):                                    # 22-26
        pts.append((x, 42 - 0.004 * (x - 31) ** 2 * 10))
    for y in (30, 20, 10, 0):                                           # 27-30 nose bridge
        pts.append((0.0, y))
    for x in np.linspace(-12, 12, 5):                                   # 31-35 nostrils
        pts.append((x, -8 + 0.02 * x * x))
    for cx in (-30, 30):                                                # 36-41, 42-47 eyes
        for a in np.radians([180, 135, 45, 0, -45, -135]):
            pts.append((cx + 12 * np.cos(a), 28 + 5 * np.sin(a)))
    for a in np.radians([180, 150, 120, 90, 60, 30, 0, -30, -60, -90, -120, -150]):   # 48-59 outer lip
        pts.append((25 * np.cos(a), -35 + 12 * np.sin(a)))
    for a in np.radians([180, 135, 90, 45, 0, -45, -90, -135]):                       # 60-67 inner lip
        pts.append((15 * np.cos(a), -35 + 5 * np.sin(a)))
    return np.array(pts, dtype=np.float64)


def _surface_z(x, y):
    base = 90 * np.sqrt(np.maximum(1 - (x / 75) ** 2 - ((y + 10) / 110) ** 2, 0.02))
    nose = 22 * np.exp(-(x ** 2 / (2 * 7 ** 2) + (y - 5) ** 2 / (2 * 14 ** 2)))
    return base + nose


def analytic_face_model(seed: int = 0, n_shape: int = 15, n_expr: int = 5, spacing: float = 2.5) -> MorphableModel:
    """A face-like height field cut at the jaw line, a smooth orthonormal shape basis (polynomial fields)
    and a mouth-local expression basis; stds in mm-scale like a real model's."""
    rng = np.random.default_rng(seed)
    xs = np.arange(-66, 66.01, spacing)
    ys = np.arange(-86, 62.01, spacing)
    gx, gy = np.meshgrid(xs, ys)
    inside = np.where(gy <= 10, (gx / 65) ** 2 + ((gy - 10) / 95) ** 2 <= 1.0 + 1e-9, np.abs(gx) <= 65)
    index = -np.ones(gx.shape, dtype=np.int64)
    index[inside] = np.arange(inside.sum())
    V = np.stack([gx[inside], gy[inside], _surface_z(gx[inside], gy[inside])], axis=1)
    faces = []
    for r in range(gx.shape[0] - 1):
        for c in range(gx.shape[1] - 1):
            a, b, d, e = index[r, c], index[r, c + 1], index[r + 1, c], index[r + 1, c + 1]
            if min(a, b, e) >= 0:
                faces.append((a, b, e))     # counter-clockwise seen from +z (y grows with r)
            if min(a, e, d) >= 0:
                faces.append((a, e, d))
    faces = np.array(faces)
    tpl = _ibug_template()
    lmk = np.array([np.argmin(np.hypot(V[:, 0] - px, V[:, 1] - py)) for px, py in tpl])

    u, w = V[:, 0] / 70, V[:, 1] / 90
    # degree 2-3 fields only: constant and linear fields are similarity transforms, which a real
    # (Procrustes-aligned) PCA model does not contain and which would make pose and shape ambiguous
    feats = np.stack([u * u, u * w, w * w, u ** 3, u * u * w, u * w * w, w ** 3], axis=1)
    fields = []
    for f in feats.T:
        for axis in range(3):
            disp = np.zeros_like(V)
            disp[:, axis] = f
            fields.append(disp.reshape(-1))
    F = np.array(fields).T                                            # (3V, 30)
    q, _ = np.linalg.qr(F @ rng.standard_normal((F.shape[1], n_shape)))
    shape_basis = q.T.reshape(n_shape, -1, 3)
    shape_std = np.sqrt(len(V)) * 4.0 * 0.85 ** np.arange(n_shape)   # component k moves vertices ~4·0.85^k mm RMS

    mouth = np.exp(-((V[:, 0] / 30) ** 2 + ((V[:, 1] + 35) / 20) ** 2))
    efields = []
    for k in range(n_expr):
        disp = mouth[:, None] * rng.standard_normal(3) * (1 + (k % 3) * u[:, None] + (k // 3) * w[:, None])
        efields.append(disp.reshape(-1))
    qe, _ = np.linalg.qr(np.array(efields).T)
    expr_basis = qe.T.reshape(n_expr, -1, 3)
    expr_std = np.sqrt(len(V)) * 1.0 * np.ones(n_expr)
    return MorphableModel(mean=V, shape_basis=shape_basis, shape_std=shape_std, faces=faces, landmark_index=lmk,
                          expr_basis=expr_basis, expr_std=expr_std, name="analytic-test-face")


def rotation_ypr(yaw, pitch, roll) -> np.ndarray:
    """R = Rz(roll) Ry(yaw) Rx(pitch), degrees."""
    y, p, r = np.radians([yaw, pitch, roll])
    Ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    Rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def observed_landmarks(model: MorphableModel, vertices: np.ndarray, camera: ScaledOrthographic) -> np.ndarray:
    """What an annotator marks: inner landmarks at their vertices; jaw landmarks on the visible outline,
    i.e. the outermost point, under the true pose, of the true surface's grid row (the face's horizontal
    line) through the landmark, on its side of the face. Uses the grid rows of this test's mesh, not the
    model's contour candidates."""
    lm3 = vertices[model.landmark_index].copy()
    cam = vertices @ camera.rotation.T
    grid_y, grid_x = model.mean[:, 1], model.mean[:, 0]
    for j in range(17):
        if j == 8:
            continue
        v0 = model.landmark_index[j]
        band = (np.abs(grid_y - grid_y[v0]) < 1e-6) & (np.sign(grid_x) == np.sign(grid_x[v0]))
        idx = np.flatnonzero(band)
        pick = idx[np.argmin(cam[idx, 0])] if j < 8 else idx[np.argmax(cam[idx, 0])]
        lm3[j] = vertices[pick]
    return plane_to_pixels(camera.project(lm3))


def angle_between(Ra, Rb) -> float:
    c = (np.trace(Ra.T @ Rb) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(c, -1, 1))))


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=1))))


@pytest.fixture(scope="module")
def model():
    return analytic_face_model()


def _truth(model, seed, yaw, pitch, roll, expr=True):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(model.n_shape) * 1.0
    b = rng.standard_normal(model.n_expr) * 0.8 if expr else np.zeros(model.n_expr)
    verts = model.instance(a, b)
    cam = ScaledOrthographic(3.1, rotation_ypr(yaw, pitch, roll), np.array([250.0, -260.0]))
    return verts, cam, observed_landmarks(model, verts, cam)


# ----------------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (25, -10, 5), (-40, 8, -3)])
def test_noiseless_fit_recovers_rotation_and_beats_the_mean(model, yaw, pitch, roll):
    verts, cam, lm = _truth(model, seed=abs(yaw) + 7, yaw=yaw, pitch=pitch, roll=roll)
    fit = fit_landmarks(model, lm, prior_weight=0.1)
    err_deg = angle_between(fit.projection.rotation, cam.rotation)
    assert err_deg < 1.0, err_deg
    assert fit.projection.scale == pytest.approx(cam.scale, rel=0.02)
    mean_err = rmse(model.mean, verts)
    fit_err = rmse(fit.vertices, verts)
    assert fit_err < 0.5 * mean_err, (fit_err, mean_err)
    assert fit.vertices.shape == model.mean.shape and fit.faces is model.faces
    assert fit.rms_px < 1.0


def test_following_the_contour_removes_the_yaw_bias(model):
    verts, cam, lm = _truth(model, seed=3, yaw=50, pitch=0, roll=0, expr=False)
    with_contour = fit_landmarks(model, lm, prior_weight=0.1)
    fixed_jaw = fit_landmarks(model, lm, prior_weight=0.1, follow_contour=False)
    assert angle_between(with_contour.projection.rotation, cam.rotation) < 1.0
    assert angle_between(fixed_jaw.projection.rotation, cam.rotation) > 2.0   # the bias the contour removes
    assert rmse(with_contour.vertices, verts) < 0.5 * rmse(fixed_jaw.vertices, verts)


def test_fit_degrades_gracefully_with_landmark_noise(model):
    yaws = [-35, -15, 0, 10, 25, 40]
    errors = {}
    for sigma in (0.0, 1.0, 2.0, 4.0):
        rot, err, mean_err = [], [], []
        for seed, yaw in enumerate(yaws):
            verts, cam, lm = _truth(model, seed=seed, yaw=yaw, pitch=5, roll=2)
            noisy = lm + np.random.default_rng(100 + seed).normal(0, sigma, lm.shape)
            fit = fit_landmarks(model, noisy)                      # default prior weight
            rot.append(angle_between(fit.projection.rotation, cam.rotation))
            err.append(rmse(fit.vertices, verts))
            mean_err.append(rmse(model.mean, verts))
        errors[sigma] = (np.mean(rot), np.mean(err), np.mean(mean_err))
    for sigma, (rot, err, mean_err) in errors.items():
        assert rot < 1.5 + 0.6 * sigma, (sigma, rot)            # 4 px at 3.1 px/mm: still a few degrees
        assert err < 0.45 * mean_err, (sigma, err, mean_err)
    assert errors[4.0][1] > errors[0.0][1]                      # noise does cost accuracy ...
    assert errors[4.0][1] < 2.5 * errors[0.0][1]                # ... but not catastrophically


BOSPHORUS_LIKE = [8, 17, 21, 22, 26, 30, 31, 33, 35, 36, 39, 42, 45, 48, 51, 54, 57]


def test_fit_from_a_bosphorus_like_subset(model):
    verts, cam, lm = _truth(model, seed=11, yaw=20, pitch=-5, roll=0)
    subset = np.full_like(lm, np.nan)
    subset[BOSPHORUS_LIKE] = lm[BOSPHORUS_LIKE]
    fit = fit_landmarks(model, subset, prior_weight=0.1)
    assert fit.n_landmarks == len(BOSPHORUS_LIKE)
    assert angle_between(fit.projection.rotation, cam.rotation) < 2.0
    assert rmse(fit.vertices, verts) < 0.5 * rmse(model.mean, verts)
    assert np.isfinite(fit.landmarks_3d).all()        # every landmark the model has, observed or not


def test_expression_is_fitted_when_the_model_has_one(model):
    rng = np.random.default_rng(5)
    expr = rng.standard_normal(model.n_expr) * 1.5
    verts = model.instance(np.zeros(model.n_shape), expr)
    cam = ScaledOrthographic(3.0, rotation_ypr(10, 0, 0), np.array([200.0, -220.0]))
    lm = observed_landmarks(model, verts, cam)
    with_expr = fit_landmarks(model, lm, prior_weight=0.1)
    without = fit_landmarks(model, lm, prior_weight=0.1, fit_expression=False)
    assert rmse(with_expr.vertices, verts) < 0.6 * rmse(without.vertices, verts)
    assert np.corrcoef(with_expr.expr_coeffs, expr)[0, 1] > 0.9


def test_unusable_landmarks_give_clear_errors(model):
    lm = np.full((68, 2), np.nan)
    lm[:5] = 100.0
    with pytest.raises(FittingError, match="at least 6"):
        fit_landmarks(model, lm)
    with pytest.raises(FittingError, match=r"\(68, 2\)"):
        fit_landmarks(model, np.zeros((5, 2)))


def test_contour_candidates_start_at_the_landmark_and_stay_on_its_side(model):
    cand = contour_candidates(model.mean, model.faces, model.landmark_index)
    assert cand.shape[0] == 17
    assert np.array_equal(cand[:, 0], model.landmark_index[:17])
    for j in range(17):
        row = cand[j][cand[j] >= 0]
        if j == 8:
            assert len(row) == 1
            continue
        side = np.sign(model.mean[model.landmark_index[j], 0])
        assert len(row) >= 3 and np.all(model.mean[row, 0] * side >= -2.5)   # up to the midline (one grid step)


def test_coplanar_landmarks_fail_with_a_fitting_error(model):
    """Six landmarks whose model points lie on one line/plane cannot fix a 3D pose: a clear error, no crash."""
    verts, cam, lm = _truth(model, seed=1, yaw=10, pitch=0, roll=0)
    only_nose_bridge = np.full_like(lm, np.nan)
    only_nose_bridge[[27, 28, 29, 30, 8, 57]] = lm[[27, 28, 29, 30, 8, 57]]   # all on the midline plane x≈0
    with pytest.raises(FittingError, match="pose"):
        fit_landmarks(model, only_nose_bridge)
