"""DCE encoding and its fixed normalization against analytic spheres and planes."""
import json

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from refine_ray.geometry import (
    IBUG_ANCHOR,
    DceNormalization,
    ImageView,
    anchor_from_landmarks,
    encode_dce,
)


def _pixel_grid(view):
    rows, cols = np.mgrid[0:view.height, 0:view.width]
    x = (cols + 0.5 - view.width / 2 - view.translation_px[0]) / view.scale_px_per_mm
    y = (view.height / 2 - rows - 0.5 - view.translation_px[1]) / view.scale_px_per_mm
    return x, y


def test_sphere_dce_channels_match_analytic_values():
    R = 40.0
    s = trimesh.creation.icosphere(subdivisions=6, radius=R)
    view = ImageView(scale_px_per_mm=1.5, height=128, width=128)
    img = encode_dce(s.vertices, s.faces, view)
    x, y = _pixel_grid(view)
    rho = np.sqrt(x**2 + y**2)
    inner = rho < 0.8 * R
    assert img.mask[inner].all() and img.rgb is None
    assert np.abs(img.dce[..., 0][inner] - np.sqrt(R**2 - rho[inner] ** 2)).max() < 0.01
    assert np.abs(img.dce[..., 1][inner] * R - 1).max() < 0.02
    assert np.abs(img.dce[..., 2][inner] - np.arcsin(rho[inner] / R)).max() < 0.01
    assert img.dce.dtype == np.float32 and img.dce.shape == (128, 128, 3)


def test_rotated_view_with_anchor_moves_depth_by_the_known_amount():
    R, centre, anchor = 30.0, np.array([5.0, -3.0, 2.0]), np.array([1.0, 1.0, 1.0])
    s = trimesh.creation.icosphere(subdivisions=6, radius=R)
    rot = Rotation.from_euler("yx", [30, -10], degrees=True).as_matrix()
    view = ImageView(rotation=rot, anchor=anchor, scale_px_per_mm=1.2, height=96, width=96, translation_px=(3, -2))
    img = encode_dce(s.vertices + centre, s.faces, view)
    c = rot @ (centre - anchor)  # sphere centre in the camera frame
    x, y = _pixel_grid(view)
    rho2 = (x - c[0]) ** 2 + (y - c[1]) ** 2
    inner = rho2 < (0.8 * R) ** 2
    assert np.abs(img.dce[..., 0][inner] - (c[2] + np.sqrt(R**2 - rho2[inner]))).max() < 0.01


def test_tilted_plane_elevation_and_vertex_colours():
    angle = np.radians(35)
    g = np.linspace(-40, 40, 41)
    x, y = np.meshgrid(g, g)
    verts = np.stack([x.ravel(), y.ravel(), np.tan(angle) * x.ravel()], axis=1)
    idx = np.arange(41 * 41).reshape(41, 41)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    colors = np.stack([(x.ravel() + 40) / 80, np.full(x.size, 0.25), (y.ravel() + 40) / 80], axis=1)
    view = ImageView(scale_px_per_mm=1.0, height=64, width=64)
    img = encode_dce(verts, faces, view, vertex_colors=colors)
    px, py = _pixel_grid(view)
    m = img.mask
    assert m[4:60, 4:60].all()
    assert np.allclose(img.dce[..., 2][m], angle, atol=1e-5)
    assert np.abs(img.dce[..., 1][m]).max() < 1e-6
    assert np.allclose(img.rgb[..., 0][m], (px[m] + 40) / 80, atol=1e-5)
    assert np.allclose(img.rgb[..., 2][m], (py[m] + 40) / 80, atol=1e-5)


def test_normalization_fixed_affine_map_and_background():
    norm = DceNormalization()
    dce = np.zeros((2, 3, 3))
    dce[0, 0] = [-100.0, -0.3, 0.0]
    dce[0, 1] = [50.0, 0.3, np.pi / 2]
    dce[0, 2] = [-25.0, 0.0, np.pi / 4]
    dce[1, 0] = [500.0, -9.0, 3.0]  # out of range → clipped
    mask = np.array([[1, 1, 1], [1, 0, 0]], dtype=bool)
    rgb = np.full((2, 3, 3), 0.75)
    out = norm.normalize(dce, mask, rgb=rgb)
    assert out.dtype == np.float32 and out.shape == (2, 3, 6)
    assert np.allclose(out[0, 0, :3], -1) and np.allclose(out[0, 1, :3], 1) and np.allclose(out[0, 2, :3], 0)
    assert np.allclose(out[1, 0, :3], [1, -1, 1])
    assert np.allclose(out[0, :, 3:], 0.5)
    assert (out[1, 1:] == -1).all()  # background
    assert np.allclose(norm.denormalize_depth(out[0, :, 0]), [-100, 50, -25], atol=1e-4)
    assert np.allclose(norm.denormalize(out[0, 2, :3]), [-25, 0, np.pi / 4], atol=1e-5)


def test_normalization_precision_and_manifest_round_trip():
    norm = DceNormalization(depth_mm=(-80, 40))
    depth = np.linspace(-80, 40, 10001).reshape(1, -1, 1) * np.ones((1, 1, 3))
    net = norm.normalize(depth, np.ones(depth.shape[:2], bool))
    assert np.abs(norm.denormalize_depth(net[..., 0]) - depth[..., 0]).max() <= 0.05 / 100  # far below 0.05 mm
    again = DceNormalization.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert again == norm
    with pytest.raises(ValueError, match="lo < hi"):
        DceNormalization(curvature_per_mm=(0.3, -0.3))
    with pytest.raises(ValueError, match="unknown"):
        DceNormalization.from_dict({"depth": [0, 1]})


def test_anchor_is_mean_of_nose_tip_and_eye_corners():
    lm = np.full((68, 3), np.nan)
    lm[list(IBUG_ANCHOR)] = [[0, 0, 30], [-40, 35, 0], [-10, 35, 5], [10, 35, 5], [40, 35, 0]]
    assert np.allclose(anchor_from_landmarks(lm), [0, 28, 8])
    lm[30] = np.nan  # a missing landmark is ignored
    assert np.allclose(anchor_from_landmarks(lm), [0, 35, 2.5])
    with pytest.raises(ValueError):
        anchor_from_landmarks(np.full((68, 3), np.nan))


def test_pose_independent_surface_renders_each_view_and_smoothed_elevation():
    from refine_ray.geometry import DceSurface

    R = 40.0
    s = trimesh.creation.icosphere(subdivisions=6, radius=R)
    surface = DceSurface(s.vertices, s.faces, normal_radius_mm=2.0)
    for yaw in (0.0, 40.0):
        rot = Rotation.from_euler("y", yaw, degrees=True).as_matrix()
        view = ImageView(rotation=rot, scale_px_per_mm=1.5, height=128, width=128)
        img = surface.render(view)
        x, y = _pixel_grid(view)
        rho = np.sqrt(x**2 + y**2)
        inner = rho < 0.8 * R
        assert np.abs(img.dce[..., 0][inner] - np.sqrt(R**2 - rho[inner] ** 2)).max() < 0.01
        assert np.abs(img.dce[..., 2][inner] - np.arcsin(rho[inner] / R)).max() < 0.01
        assert np.abs(img.dce[..., 1][inner] * R - 1).max() < 0.02
