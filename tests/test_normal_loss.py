"""The normal loss: normals of depth images in physical units, masked per pixel, and its wiring into a step."""
import numpy as np
import pytest
import torch

from refine_ray.nn.losses import normal_l1
from refine_ray.training.config import TrainConfig

PX_PER_MM, MM_PER_UNIT, N = 0.3, 75.0, 12


def _plane_units(a: float, b: float) -> torch.Tensor:
    """Depth image (1,N,N) in normalized units of the plane z = a·x + b·y (mm; x right, y up)."""
    rows, cols = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    z_mm = a * cols / PX_PER_MM + b * (-rows / PX_PER_MM)
    return torch.tensor(z_mm / MM_PER_UNIT, dtype=torch.float32)[None]


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def test_normal_l1_of_two_planes_is_the_distance_of_their_analytic_normals():
    pred, target = _plane_units(0.5, -0.3), _plane_units(-0.2, 0.1)
    want = np.abs(_unit([-0.5, 0.3, 1]) - _unit([0.2, -0.1, 1])).sum()
    got = normal_l1(pred, target, torch.ones(1, N, N), MM_PER_UNIT * PX_PER_MM)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_pixels_next_to_a_zero_weight_pixel_are_left_out():
    pred, target = _plane_units(0.4, 0.0), _plane_units(0.0, 0.0)
    weight = torch.ones(1, N, N)
    weight[0, 5, 5] = 0.0
    pred[0, 5, 5] += 3.0                      # a spike where the loss does not apply
    want = np.abs(_unit([-0.4, 0, 1]) - _unit([0, 0, 1])).sum()
    got = normal_l1(pred, target, weight, MM_PER_UNIT * PX_PER_MM)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_a_step_with_a_normal_weight_logs_the_normal_loss_and_needs_the_slope_scale():
    from refine_ray.training.gan import ConditionalGan

    torch.manual_seed(0)
    cfg = TrainConfig.model_validate({"model": {"max_resolution": 8, "max_channels": 8, "residual": True},
                                      "optim": {"normal_weight": 0.5}})
    gan = ConditionalGan(cfg)
    x = torch.rand(2, 3, 8, 8) * 0.5
    y = x + 0.05 * torch.rand(2, 3, 8, 8)
    stats = gan.step(x, y, 1, 1.0, slope_per_unit=MM_PER_UNIT * PX_PER_MM * 8 / 64)
    assert stats["normal_l1"] > 0
    assert stats["g_loss"] == pytest.approx(stats["l1"] + gan.kappa * stats["g_adv"] + 0.5 * stats["normal_l1"], rel=1e-4)
    with pytest.raises(ValueError, match="slope_per_unit"):
        gan.step(x, y, 1, 1.0)
