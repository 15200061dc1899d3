"""Residual mode: an untrained generator starts at the coarse input, and checkpoints rebuild it."""
import torch

from refine_ray.nn.residual import ResidualOverInput
from refine_ray.training.checkpoints import build_networks
from refine_ray.training.config import TrainConfig


class _Zero(torch.nn.Module):
    def forward(self, x, stage=0, alpha=1.0):
        return torch.zeros(x.shape[0], 3, *x.shape[2:])


def test_zero_detail_returns_the_coarse_channels():
    x = torch.randn(2, 6, 8, 8)
    out = ResidualOverInput(_Zero())(x)
    assert out.shape == (2, 3, 8, 8)
    assert torch.equal(out, x[:, :3])


def test_depth_only_input_adds_to_depth_only():
    x = torch.randn(1, 1, 4, 4)
    out = ResidualOverInput(_Zero())(x)
    assert torch.equal(out[:, :1], x) and torch.count_nonzero(out[:, 1:]) == 0


def test_config_flag_wraps_the_generator_and_state_round_trips():
    cfg = TrainConfig.model_validate({"model": {"max_resolution": 8, "max_channels": 8, "residual": True}})
    g, _ = build_networks(cfg.model_dump(mode="json"))
    assert isinstance(g, ResidualOverInput)
    g2, _ = build_networks(cfg.model_dump(mode="json"))
    g2.load_state_dict(g.state_dict())
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(g(x, 1, 1.0), g2(x, 1, 1.0))
    plain, _ = build_networks(TrainConfig.model_validate({"model": {"max_resolution": 8, "max_channels": 8}}).model_dump(mode="json"))
    assert not isinstance(plain, ResidualOverInput)


def test_untrained_progressive_generator_returns_the_coarse_input_at_every_stage():
    cfg = TrainConfig.model_validate({"model": {"max_resolution": 16, "max_channels": 8, "residual": True,
                                                "generator_input": "DCE+RGB"}})
    g, _ = build_networks(cfg.model_dump(mode="json"))
    for stage, r in enumerate((4, 8, 16)):
        x = torch.rand(2, 6, r, r) * 2 - 1
        assert torch.allclose(g(x, stage, 0.5), x[:, :3])


def test_weighted_l1_leaves_zero_weight_pixels_out():
    from refine_ray.nn.losses import weighted_l1

    pred = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[[1.0, 1.0], [1.0, 9.0]], [[3.0, 3.0], [3.0, 9.0]]]])
    weight = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])       # the 9s sit in a "scan hole"
    assert torch.isclose(weighted_l1(pred, target, weight), torch.tensor(2.0))     # (1+1+1+3+3+3)/6
    assert torch.isclose(weighted_l1(pred, target), torch.tensor(30.0 / 8))
