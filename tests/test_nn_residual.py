"""Residual mode: an untrained generator starts at the coarse input, and checkpoints rebuild it."""
import torch

from refine_ray.nn.residual import ResidualOverInput
from refine_ray.nn.refiner import build_networks
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


class _FixedLogit(torch.nn.Module):
    """Zero detail and a given keep logit (before the wrapper's prior) as the 4th channel."""

    def __init__(self, logit):
        super().__init__()
        self.logit = logit

    def forward(self, x, stage=0, alpha=1.0):
        return torch.cat([torch.zeros(x.shape[0], 3, *x.shape[2:]), self.logit.expand(x.shape[0], 1, -1, -1)], 1)


def test_footprint_head_composes_hard_in_eval_and_soft_in_training():
    from refine_ray.nn.residual import KEEP_PRIOR_LOGIT

    raw = torch.tensor([[[[0.0, -KEEP_PRIOR_LOGIT - 1.0], [-KEEP_PRIOR_LOGIT + 1.0, -10.0]]]])
    x = torch.full((1, 3, 2, 2), 0.4)
    g = ResidualOverInput(_FixedLogit(raw), footprint=True).eval()
    out = g(x)
    keep = torch.tensor([[True, False], [True, False]])     # logit = raw + prior: 4, -1, 1, -6
    assert torch.equal(out[0, :, keep], torch.full((3, 2), 0.4))
    assert torch.equal(out[0, :, ~keep], torch.full((3, 2), -1.0))
    p = torch.sigmoid(raw + KEEP_PRIOR_LOGIT)
    soft = g.train()(x)
    assert torch.allclose(soft, p * 0.4 + (1 - p) * -1.0)


def test_untrained_footprint_generator_keeps_every_coarse_pixel():
    cfg = TrainConfig.model_validate({"model": {"max_resolution": 16, "max_channels": 8, "residual": True,
                                                "footprint_head": True}})
    g, _ = build_networks(cfg.model_dump(mode="json"))
    g.eval()
    for stage, r in enumerate((4, 8, 16)):
        x = torch.rand(2, 3, r, r) * 2 - 1
        assert torch.allclose(g(x, stage, 0.5), x)


def test_footprint_head_needs_the_residual_progressive_generator():
    import pytest

    with pytest.raises(ValueError, match="footprint_head needs"):
        TrainConfig.model_validate({"model": {"max_resolution": 8, "footprint_head": True}})


def test_footprint_loss_is_the_weighted_binary_cross_entropy():
    import math

    from refine_ray.nn.losses import footprint_loss

    logit = torch.tensor([[[[0.0, 2.0], [-1.0, 5.0]]]])
    target = torch.tensor([[[1.0, 0.0], [0.5, 1.0]]])
    weight = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])
    bce = lambda z, t: -(t * math.log(1 / (1 + math.exp(-z))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-z))))  # noqa: E731
    want = (bce(0.0, 1.0) + bce(2.0, 0.0) + 2 * bce(-1.0, 0.5)) / 4.0
    assert footprint_loss(logit, target, weight).item() == __import__("pytest").approx(want, rel=1e-6)


def test_a_footprint_head_learns_the_crop_of_the_ground_truth():
    """Coarse disks of radius 3.5 px, ground truth cut to radius 2.5 px (the crop) with a detail bump:
    after a short training the eval-mode footprint follows the ground truth's crop, not the input's."""
    from refine_ray.training.gan import ConditionalGan

    torch.manual_seed(0)
    n = 8
    rows, cols = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")

    def batch(b):
        c = n / 2 + torch.rand(b, 2) - 0.5
        r2 = (rows - c[:, :1, None]) ** 2 + (cols - c[:, 1:, None]) ** 2
        im, tm = r2 <= 3.5 ** 2, r2 <= 2.5 ** 2
        depth = 0.5 - 0.02 * r2
        x = torch.where(im, depth, -1.0)[:, None].repeat(1, 3, 1, 1)
        y = torch.where(tm, depth + 0.05, -1.0)[:, None].repeat(1, 3, 1, 1)
        return x, y, torch.stack([im, tm], 1).float()

    cfg = TrainConfig.model_validate({"model": {"max_resolution": 8, "max_channels": 16, "residual": True,
                                                "footprint_head": True},
                                      "optim": {"lr_g": 2e-3, "lr_d": 2e-3}})
    gan = ConditionalGan(cfg)
    for _ in range(150):
        x, y, cov = batch(8)
        gan.step(x, y, 1, 1.0, coverage=cov)
    x, y, cov = batch(16)
    gen = gan.generator.eval()
    with torch.no_grad():
        kept = gen(x, 1, 1.0)[:, 0] > -1.0
    im, tm = cov[:, 0].bool(), cov[:, 1].bool()
    iou = lambda a, b: ((a & b).sum() / (a | b).sum()).item()  # noqa: E731
    assert iou(im, tm) < 0.6
    assert iou(kept, tm) > 0.85
