"""Losses of paper §4.3: WGAN-GP critic (λ=10, drift ε=0.001) and L1 + κ·adversarial generator."""
from __future__ import annotations

from typing import Callable

import torch

Critic = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def gradient_penalty(critic: Critic, condition: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Gulrajani et al.: mean (‖∇_x̂ D(x, x̂)‖₂ − 1)² at x̂ uniformly between real and fake (per sample).

    Uses create_graph=True (a double backward): call it on a critic whose gradients are then averaged
    across workers explicitly — DDP's hooks do not reduce gradients of gradients.
    """
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    score = critic(condition, mixed)
    (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1.0).pow(2).mean()


def critic_wgan_gp_loss(critic: Critic, condition: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                        gp_lambda: float = 10.0, drift: float = 1e-3) -> tuple[torch.Tensor, dict[str, float]]:
    """L_D = D(x, G(x)) − D(x, y) + λ·GP + ε·D(x, y)² (paper Eq. 2 with PGGAN's drift term).

    Eq. 2 in the paper is printed with the opposite sign of the first two terms; this is the WGAN
    convention (the critic scores real samples high), the one Gulrajani et al. and Karras et al. use.
    """
    d_real = critic(condition, real)
    d_fake = critic(condition, fake.detach())
    gp = gradient_penalty(critic, condition, real, fake)
    loss = d_fake.mean() - d_real.mean() + gp_lambda * gp + drift * d_real.pow(2).mean()
    stats = {"d_loss": float(loss.detach()), "wasserstein": float((d_real.mean() - d_fake.mean()).detach()),
             "gp": float(gp.detach())}
    return loss, stats


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |pred − target| over (B,C,H,W); with weight (B,H,W), a per-pixel weighted mean."""
    diff = (pred - target).abs()
    if weight is None:
        return diff.mean()
    w = weight.to(diff.dtype).unsqueeze(1)
    return (diff * w).sum() / (w.sum() * diff.shape[1]).clamp_min(1e-8)


def generator_loss(critic: Critic, condition: torch.Tensor, fake_for_critic: torch.Tensor,
                   fake_for_loss: torch.Tensor, target_for_loss: torch.Tensor,
                   kappa: float, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """L_G = ‖y − G(x)‖₁ + κ·(−D(x, G(x))) (paper Eq. 3; the adversarial term pushes the critic score up)."""
    l1 = weighted_l1(fake_for_loss, target_for_loss, weight)
    adv = -critic(condition, fake_for_critic).mean()
    loss = l1 + kappa * adv
    return loss, {"g_loss": float(loss.detach()), "l1": float(l1.detach()), "g_adv": float(adv.detach())}


def footprint_loss(logit: torch.Tensor, target_coverage: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the keep logit (B,1,H,W) against the ground truth's coverage (B,H,W),
    0..1 (fractional on pooled border pixels), averaged with per-pixel `weight` (B,H,W): the pixels the
    coarse model covers, the only ones whose fate the footprint head decides."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        logit[:, 0].float(), target_coverage.float(), reduction="none")
    w = weight.float()
    return (bce * w).sum() / w.sum().clamp_min(1e-8)


def depth_image_normals(depth: torch.Tensor, slope_per_unit: float) -> torch.Tensor:
    """Unit normals (B,3,H-2,W-2) of depth images (B,H,W) by central differences on the interior pixels.

    `slope_per_unit` turns a depth step of one normalized unit per pixel into a surface slope
    (mm of depth per mm across the image at this resolution), so the normals are those of the physical surface.
    """
    zx = (depth[:, 1:-1, 2:] - depth[:, 1:-1, :-2]) * (0.5 * slope_per_unit)
    zy = (depth[:, :-2, 1:-1] - depth[:, 2:, 1:-1]) * (0.5 * slope_per_unit)  # rows grow downward, y upward
    n = torch.stack([-zx, -zy, torch.ones_like(zx)], 1)
    return n / n.norm(dim=1, keepdim=True)


def normal_support(weight: torch.Tensor) -> torch.Tensor:
    """Per-pixel weight (B,H-2,W-2) of the interior normals of depth_image_normals: a pixel's weight times
    those of its four neighbours, since its central differences need them all."""
    w = weight.float()
    return w[:, 1:-1, 1:-1] * w[:, :-2, 1:-1] * w[:, 2:, 1:-1] * w[:, 1:-1, :-2] * w[:, 1:-1, 2:]


def normal_l1(pred_depth: torch.Tensor, target_depth: torch.Tensor, weight: torch.Tensor,
              slope_per_unit: float) -> torch.Tensor:
    """Mean L1 distance of the unit normals of two depth images (B,H,W), weighted per pixel by `weight`
    (B,H,W) times that of the pixel's four neighbours (a normal needs them all).

    About the angle in radians for small errors, linear in it (unlike 1 − cos), so small ripples and
    missing slopes still have a gradient: the pixel L1 on depth barely sees them.
    """
    w = normal_support(weight).unsqueeze(1)
    diff = (depth_image_normals(pred_depth.float(), slope_per_unit)
            - depth_image_normals(target_depth.float(), slope_per_unit)).abs().sum(1, keepdim=True)
    return (diff * w).sum() / w.sum().clamp_min(1e-8)
