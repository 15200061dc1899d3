"""The pix2pix baseline (Isola et al. 2017) the paper compares with: U-Net-256 generator and a
70×70 PatchGAN, vanilla GAN loss + 100·L1.

Instance norm instead of batch norm: Isola et al. train with batch size 1, where batch norm *is*
instance norm; and batch-norm running statistics would differ between data-parallel workers whose
parameters are otherwise kept identical.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from refine_ray.nn.losses import weighted_l1


def _norm(ch: int) -> nn.Module:
    return nn.InstanceNorm2d(ch, affine=True)


class _UnetBlock(nn.Module):
    """One skip level: down(x) → inner → up, concatenated with x (except the outermost level)."""

    def __init__(self, outer: int, inner: int, in_ch: int | None = None, sub: nn.Module | None = None,
                 outermost: bool = False, innermost: bool = False, dropout: bool = False, out_ch: int | None = None):
        super().__init__()
        self.outermost = outermost
        in_ch = in_ch or outer
        down = nn.Conv2d(in_ch, inner, 4, 2, 1, bias=False)
        if outermost:
            up = nn.ConvTranspose2d(inner * 2, out_ch or outer, 4, 2, 1)
            layers = [down, sub, nn.ReLU(True), up, nn.Tanh()]
        elif innermost:
            up = nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=False)
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, _norm(outer)]
        else:
            up = nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=False)
            layers = [nn.LeakyReLU(0.2, True), down, _norm(inner), sub, nn.ReLU(True), up, _norm(outer)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net with log2(resolution) down/up levels (8 at 256², "unet_256"), ngf=64, 3 dropout levels."""

    def __init__(self, in_channels: int, out_channels: int = 3, resolution: int = 256, ngf: int = 64):
        super().__init__()
        downs = int(math.log2(resolution))
        if 2**downs != resolution or downs < 5:
            raise ValueError(f"U-Net needs a power-of-two resolution >= 32, got {resolution}")
        block = _UnetBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(downs - 5):
            block = _UnetBlock(ngf * 8, ngf * 8, sub=block, dropout=True)
        block = _UnetBlock(ngf * 4, ngf * 8, sub=block)
        block = _UnetBlock(ngf * 2, ngf * 4, sub=block)
        block = _UnetBlock(ngf, ngf * 2, sub=block)
        self.model = _UnetBlock(ngf, ngf, in_ch=in_channels, sub=block, outermost=True, out_ch=out_channels)
        self.resolution = resolution
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor, stage: int = 0, alpha: float = 1.0) -> torch.Tensor:
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """70×70 PatchGAN (3 strided layers, ndf=64): one logit per overlapping 70×70 patch of (x, y)."""

    def __init__(self, in_channels: int, ndf: int = 64):
        super().__init__()
        self.in_channels = in_channels
        self.model = nn.Sequential(
            nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), _norm(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), _norm(ndf * 4), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 1, 1, bias=False), _norm(ndf * 8), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 1),
        )

    def forward(self, condition: torch.Tensor, image: torch.Tensor, stage: int = 0, alpha: float = 1.0) -> torch.Tensor:
        return self.model(torch.cat([condition, image], 1))


def patchgan_discriminator_loss(disc, condition, real, fake) -> tuple[torch.Tensor, dict[str, float]]:
    """Vanilla GAN (BCE-with-logits) on every patch, halved as in pix2pix."""
    d_real = disc(condition, real)
    d_fake = disc(condition, fake.detach())
    loss = 0.5 * (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                  + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
    return loss, {"d_loss": float(loss.detach())}


def pix2pix_generator_loss(disc, condition, fake_for_critic, fake_for_loss, target_for_loss,
                           l1_weight: float = 100.0, weight: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, dict[str, float]]:
    """GAN loss + λ_L1·‖y − G(x)‖₁ with λ_L1 = 100 (Isola et al.)."""
    logits = disc(condition, fake_for_critic)
    adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    l1 = weighted_l1(fake_for_loss, target_for_loss, weight)
    loss = adv + l1_weight * l1
    return loss, {"g_loss": float(loss.detach()), "l1": float(l1.detach()), "g_adv": float(adv.detach())}
