"""Metrics against hand-computed values and analytic surfaces (planes, a sphere, a sinusoid)."""
import numpy as np
import pytest

from refine_ray.metrics import (
    depth_normals,
    detail_energy_error,
    high_frequency_energy,
    mae_mm,
    mae_norm,
    normal_angle_error_deg,
)

S = 1.2  # px/mm


def _plane_coords(h=64, w=64, s=S):
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    x = (cols + 0.5 - w / 2) / s
    y = (h / 2 - rows - 0.5) / s
    return x, y


def test_mae_norm_hand_computed():
    pred = np.array([[-1.0, 0.0], [1.0, -1.0]])    # -> [[0, .5], [1, 0]]
    target = np.array([[-1.0, -1.0], [0.0, 1.0]])  # -> [[0, 0], [.5, 1]]
    # pixel (0,0) is background in both and is left out; |.5|, |.5|, |1| over 3 pixels
    assert mae_norm(pred, target) == pytest.approx(2.0 / 3.0)


def test_mae_norm_masks_force_background():
    pred = np.array([[0.2, 0.0], [0.0, 0.0]])
    target = np.array([[-1.0, 0.0], [0.0, 0.0]])
    # without masks pixel (0,0): |0.6 - 0| over 4 pixels (others equal) -> 0.15
    assert mae_norm(pred, target) == pytest.approx(0.6 / 4)
    # the prediction off the input footprint becomes background: the pixel has no support any more
    mask = np.array([[False, True], [True, True]])
    assert mae_norm(pred, target, pred_mask=mask) == pytest.approx(0.0)


def test_mae_norm_empty_is_nan_and_shape_checked():
    bg = -np.ones((3, 3))
    assert np.isnan(mae_norm(bg, bg))
    with pytest.raises(ValueError, match="shape"):
        mae_norm(np.zeros((2, 2)), np.zeros((2, 3)))


def test_mae_mm_hand_computed():
    pred = np.array([[1.0, 2.0], [3.0, 100.0]])
    target = np.array([[0.0, 4.0], [3.0, 0.0]])
    mask = np.array([[True, True], [True, False]])
    assert mae_mm(pred, target, mask) == pytest.approx((1 + 2 + 0) / 3)
    assert np.isnan(mae_mm(pred, target, np.zeros((2, 2), bool)))


def test_depth_normals_of_a_tilted_plane_are_exact():
    x, y = _plane_coords()
    a, b = 0.3, -0.5
    z = a * x + b * y + 7.0
    n, valid = depth_normals(z, np.ones_like(z, bool), S)
    expected = np.array([-a, -b, 1.0]) / np.sqrt(a * a + b * b + 1)
    assert valid.sum() == (64 - 2) ** 2
    np.testing.assert_allclose(n[valid], np.broadcast_to(expected, n[valid].shape), atol=1e-6)


def test_depth_normals_of_a_sphere_point_outward():
    x, y = _plane_coords(96, 96)
    r = 60.0
    z = np.sqrt(np.maximum(r * r - x * x - y * y, 0.0))
    mask = (x * x + y * y) < (0.8 * r) ** 2
    n, valid = depth_normals(z, mask, S)
    truth = np.stack([x, y, z], -1) / r
    ang = np.degrees(np.arccos(np.clip(np.sum(n[valid] * truth[valid], -1), -1, 1)))
    assert ang.max() < 0.5


def test_normal_angle_error_between_two_planes():
    x, y = _plane_coords()
    z1 = 0.0 * x
    z2 = np.tan(np.radians(20.0)) * x  # tilted by 20 degrees about the y axis
    m = np.ones_like(z1, bool)
    assert normal_angle_error_deg(z2, z1, m, S) == pytest.approx(20.0, abs=1e-6)
    assert normal_angle_error_deg(z1, z1, m, S) == pytest.approx(0.0, abs=1e-6)


def test_high_frequency_energy_of_a_sinusoid_matches_the_gaussian_transfer():
    h = w = 128
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    amp, period, sigma = 0.4, 8.0, 2.0
    z = 0.2 * cols + amp * np.sin(2 * np.pi * cols / period)  # a plane plus fine ripples
    m = np.ones((h, w), bool)
    gain = np.exp(-2 * np.pi**2 * sigma**2 / period**2)  # Gaussian filter response at that frequency
    expected = amp**2 * (1 - gain) ** 2 / 2
    assert high_frequency_energy(z, m, sigma) == pytest.approx(expected, rel=0.02)
    assert high_frequency_energy(0.2 * cols, m, sigma) == pytest.approx(0.0, abs=1e-10)


def test_detail_energy_error_minus_one_when_detail_is_missing():
    h = w = 96
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 0.1 * rows - 0.05 * cols
    target = base + 0.3 * np.sin(2 * np.pi * cols / 6.0)
    m = np.zeros((h, w), bool)
    m[10:-10, 10:-10] = True  # a border that must not leak background into the smoothing
    assert detail_energy_error(base, target, m) == pytest.approx(-1.0, abs=1e-6)
    assert detail_energy_error(target, target, m) == pytest.approx(0.0, abs=1e-9)
    assert detail_energy_error(base + 2 * (target - base), target, m) == pytest.approx(3.0, rel=1e-6)


def test_mae_norm_parts_split_the_error_by_region_and_sum_to_it():
    from refine_ray.metrics import mae_norm, mae_norm_parts

    # 1×6 image; network units, so 0.0 ↦ 0.5 and -1 ↦ background
    pred = np.array([[0.0, 0.0, 0.0, 0.0, -1.0, -1.0]])
    target = np.array([[0.2, -1.0, -1.0, 0.4, -1.0, -1.0]])
    pmask = np.array([[1, 1, 1, 0, 0, 0]], bool)
    tmask = np.array([[1, 0, 0, 1, 0, 0]], bool)
    holes = np.array([[0, 1, 0, 0, 0, 0]], bool)
    parts = mae_norm_parts(pred, target, pmask, tmask, holes)
    # support = pixels 0..3; errors 0.1 (face), 0.5 (hole), 0.5 (outside), 0.7 (target only)
    assert parts == pytest.approx({"face": 0.1 / 4, "holes": 0.5 / 4, "outside_crop": 0.5 / 4, "target_only": 0.7 / 4})
    assert sum(parts.values()) == pytest.approx(mae_norm(pred, target, pmask, tmask))
