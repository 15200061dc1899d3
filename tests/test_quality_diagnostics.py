"""The per-sample photometric fit (bench/quality_photometric.py) and the placement split (bench/quality_rigid.py) against analytic surfaces and lights."""
import numpy as np
import torch

from bench.quality_photometric import light_fit, photometric_fit
from refine_ray.metrics import depth_normals, normal_angle_error_deg
from refine_ray.nn.losses import depth_image_normals

N, SCALE = 48, 0.3                      # 48 px at 0.3 px/mm: a 160 mm wide image, as the 64² benchmark's pixels
LIGHT = np.array([0.35, 0.45, 0.82]) / np.linalg.norm([0.35, 0.45, 0.82])


def _sphere_and_bumps():
    yy, xx = np.mgrid[0:N, 0:N]
    x, y = (xx - N / 2 + 0.5) / SCALE, -(yy - N / 2 + 0.5) / SCALE
    mask = x ** 2 + y ** 2 < 70 ** 2
    sphere = np.sqrt(np.clip(90.0 ** 2 - x ** 2 - y ** 2, 0, None))
    bumps = sum(a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * w ** 2))
                for a, cx, cy, w in [(4, 20, 10, 8), (-3, -25, -5, 10), (3, 0, -35, 7), (2.5, -10, 30, 9)])
    return sphere, sphere + bumps, mask


def _photo(depth, mask, albedo=0.6, ambient=0.3):
    """The synthetic scanner's photo model: albedo × (ambient + (1 − ambient)·max(0, n·l)), gamma 1/2.2."""
    n, _ = depth_normals(depth, mask, SCALE)
    lin = albedo * (ambient + (1 - ambient) * np.clip(n @ LIGHT, 0, 1))
    return np.where(mask, lin ** (1 / 2.2), 0.0)


def test_light_fit_recovers_the_light_of_a_lambertian_sphere():
    sphere, _, mask = _sphere_and_bumps()
    n = depth_image_normals(torch.as_tensor(sphere[None], dtype=torch.float32), SCALE)
    lin = torch.as_tensor((_photo(sphere, mask) ** 2.2)[None, 1:-1, 1:-1], dtype=torch.float32)
    m = torch.as_tensor(mask[None, 1:-1, 1:-1] & (sphere[None, 1:-1, 1:-1] > 30))
    coef = light_fit(lin, n, m)[0].numpy()
    np.testing.assert_allclose(coef[0], 0.6 * 0.3, atol=2e-3)                # ambient × albedo
    np.testing.assert_allclose(coef[1:], 0.6 * 0.7 * LIGHT, atol=2e-3)       # light × albedo


def test_fit_recovers_much_of_the_detail_the_start_lacks():
    sphere, truth, mask = _sphere_and_bumps()
    fitted = photometric_fit(sphere[None], _photo(truth, mask)[None], mask[None], SCALE, smoothness=0.003)[0]
    before = normal_angle_error_deg(sphere, truth, mask, SCALE)
    after = normal_angle_error_deg(fitted, truth, mask, SCALE)
    assert after < 0.75 * before, (before, after)


def test_a_surface_that_explains_its_photo_stays_put():
    _, truth, mask = _sphere_and_bumps()
    fitted = photometric_fit(truth[None], _photo(truth, mask)[None], mask[None], SCALE, smoothness=0.003)[0]
    assert normal_angle_error_deg(fitted, truth, mask, SCALE) < 0.3
    np.testing.assert_array_equal(fitted[~mask], truth[~mask])


def test_placement_residuals_split_a_known_plane_from_a_known_bump():
    from bench.quality_rigid import placement_residuals

    yy, xx = np.mgrid[0:N, 0:N]
    x, y = (xx - N / 2 + 0.5) / SCALE, -(yy - N / 2 + 0.5) / SCALE
    mask = x ** 2 + y ** 2 < 70 ** 2
    plane = 1.5 + 0.02 * x - 0.03 * y                  # a 1.5 mm shift and a tilt of about 2°
    checker = 0.4 * np.sign(np.sin(x / 9.0) * np.sin(y / 9.0))   # ±0.4 mm, no offset, tilt or quadric part to speak of
    out = placement_residuals(plane + checker, mask, SCALE)
    assert abs(out["error"] - np.abs(plane + checker)[mask].mean()) < 1e-9
    assert abs(out["less plane"] - 0.4) < 0.02 and abs(out["less quadric"] - 0.4) < 0.02
    assert out["less offset"] > 0.6                    # the tilt is still in it
    pure = placement_residuals(plane, mask, SCALE)
    assert pure["less plane"] < 1e-9
    assert abs(pure["plane alone"] - np.abs(plane)[mask].mean()) < 1e-9
    assert abs(pure["offset mm"] - 1.5) < 1e-9                  # the disk is centred, so x and y average to 0
    assert abs(pure["tilt x deg"] - np.degrees(np.arctan(0.02))) < 1e-9
    assert abs(pure["tilt y deg"] - np.degrees(np.arctan(-0.03))) < 1e-9
