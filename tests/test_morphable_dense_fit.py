"""Dense 3DMM fit: a model face under a known similarity, with known coefficients, is recovered."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from refine_ray.geometry import vertex_normals
from refine_ray.morphable.default import build_default_model
from refine_ray.morphable.dense_fit import fit_to_points, similarity_from_points


@pytest.fixture(scope="module")
def model():
    return build_default_model(30, 12)


def test_similarity_from_points_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.normal(0, 50, (20, 3))
    R = Rotation.from_euler("xyz", [30, -10, 70], degrees=True).as_matrix()
    dst = 1.3 * src @ R.T + np.array([1.0, 2.0, -3.0])
    dst[5] = np.nan                                        # a missing correspondence is skipped
    s, R2, t = similarity_from_points(src, dst)
    assert s == pytest.approx(1.3, rel=1e-9)
    np.testing.assert_allclose(R2, R, atol=1e-9)
    np.testing.assert_allclose(t, [1.0, 2.0, -3.0], atol=1e-7)
    with pytest.raises(ValueError, match="at least 3"):
        similarity_from_points(src[:2], dst[:2])


def test_dense_fit_recovers_a_model_face_and_ignores_far_points(model):
    rng = np.random.default_rng(1)
    P = model.n_shape + model.n_expr
    c_true = rng.normal(0, 1, P)
    v = model.instance(c_true[: model.n_shape], c_true[model.n_shape:])
    R = Rotation.from_euler("xyz", [10, -20, 5], degrees=True).as_matrix()
    target = 1.1 * v @ R.T + np.array([5.0, -3.0, 1000.0])
    normals = vertex_normals(target, model.faces)
    far = target[:500] + np.array([0.0, 0.0, -80.0])        # clutter well behind the face
    pts = np.concatenate([target, far])
    nrm = np.concatenate([normals, normals[:500]])
    lm = model.landmarks_3d(target) + rng.normal(0, 2.0, (68, 3))   # a rough start only
    fit = fit_to_points(model, pts, nrm, lm, max_points=8000)
    assert np.abs(fit.vertices - target).max() < 0.1        # mm, over the whole face
    np.testing.assert_allclose(fit.coeffs, c_true, atol=0.02)
    assert fit.scale == pytest.approx(1.1, rel=1e-3)
    with pytest.raises(ValueError, match="100 surface points"):
        fit_to_points(model, target[:50], normals[:50], lm)
