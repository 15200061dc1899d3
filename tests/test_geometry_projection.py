"""Projection estimation and the ImageView camera against known poses."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from refine_ray.geometry import (
    ImageView,
    ScaledOrthographic,
    estimate_scaled_orthographic,
    pixels_to_plane,
    plane_to_pixels,
)


def _known_camera(seed=0):
    rng = np.random.default_rng(seed)
    R = Rotation.from_euler("yxz", [25, -12, 8], degrees=True).as_matrix()
    s, t = 1.7, np.array([130.0, -95.0])
    X = rng.normal(scale=[40, 50, 25], size=(68, 3))
    x = s * (X @ R.T)[:, :2] + t  # independent of the class under test
    return R, s, t, X, x, rng


def _angle_deg(Ra, Rb):
    return np.degrees(Rotation.from_matrix(Ra @ Rb.T).magnitude())


def test_recovers_known_pose_from_noisy_landmarks():
    R, s, t, X, x, rng = _known_camera()
    noisy = x + rng.normal(scale=0.5, size=x.shape)  # 0.5 px landmark noise
    est = estimate_scaled_orthographic(noisy, X)
    assert abs(est.scale - s) / s < 0.01
    assert _angle_deg(est.rotation, R) < 1.0
    assert np.allclose(est.translation, t, atol=1.0)
    assert np.isclose(np.linalg.det(est.rotation), 1.0)
    assert np.allclose(est.rotation @ est.rotation.T, np.eye(3), atol=1e-9)


def test_exact_with_four_points_and_nan_rows_ignored():
    R, s, t, X, x, _ = _known_camera(1)
    x = x.copy()
    x[4:] = np.nan  # only the first four correspondences are usable
    est = estimate_scaled_orthographic(x, X)
    assert np.isclose(est.scale, s, rtol=1e-9)
    assert _angle_deg(est.rotation, R) < 1e-6
    assert np.allclose(est.project(X[:4]), x[:4], atol=1e-8)


def test_too_few_or_degenerate_points_raise():
    R, s, t, X, x, _ = _known_camera(2)
    with pytest.raises(ValueError, match="at least 4"):
        estimate_scaled_orthographic(x[:3], X[:3])
    flat = X.copy()
    flat[:, 2] = 0.0  # coplanar 3D points cannot fix an affine camera
    with pytest.raises(ValueError, match="degenerate"):
        estimate_scaled_orthographic(s * (flat @ R.T)[:, :2] + t, flat)


def test_plane_pixel_conventions():
    px = np.array([[10.5, 20.25], [0.0, 0.0]])
    assert np.allclose(pixels_to_plane(px), [[10.5, -20.25], [0.0, 0.0]])
    assert np.allclose(plane_to_pixels(pixels_to_plane(px)), px)


def test_image_view_maps_known_points():
    view = ImageView(anchor=[1.0, 2.0, 3.0], scale_px_per_mm=2.0, height=100, width=80, translation_px=(4.0, -6.0))
    # A point 10 mm right of and 5 mm above the anchor, 7 mm in front of it.
    col_row_depth = view.to_image(np.array([[11.0, 7.0, 10.0]]))[0]
    assert np.allclose(col_row_depth, [40 + 20 + 4, 50 - 10 + 6, 7.0])
    back = view.camera_to_model(view.from_image(*col_row_depth))
    assert np.allclose(back, [[11.0, 7.0, 10.0]])


def test_image_view_rotation_and_plane_projection_agree():
    R = Rotation.from_euler("y", 90, degrees=True).as_matrix()  # model +z turns to camera +x
    view = ImageView(rotation=R, anchor=np.zeros(3), scale_px_per_mm=1.0, height=10, width=10)
    assert np.allclose(view.to_camera([[0.0, 0.0, 5.0]]), [[5.0, 0.0, 0.0]])
    X = np.random.default_rng(3).normal(size=(20, 3)) * 30
    proj = view.plane_projection()
    assert isinstance(proj, ScaledOrthographic)
    assert np.allclose(plane_to_pixels(proj.project(X)), view.to_image(X)[:, :2])
