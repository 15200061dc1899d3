"""Building blocks shared by the progressive networks: convolution with optional equalized learning
rate, pixel normalization, and the exact 2× resampling used both by the networks and the data path.

Resampling is mean-pool down / nearest up on purpose: the fade-in identity "at α = 0 the grown network
equals the previous one on a 2× downsampled input, upsampled" holds exactly only when the networks and
the data reduction use the same operators.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def downsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Mean pooling by `factor` (the data is reduced to a stage's resolution the same way)."""
    return F.avg_pool2d(x, factor) if factor > 1 else x


def upsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour upsampling (PGGAN's choice: no new values invented by the resampler)."""
    return F.interpolate(x, scale_factor=factor, mode="nearest") if factor > 1 else x


class PixelNorm(nn.Module):
    """Karras et al. pixelwise feature normalization: each pixel's feature vector to unit RMS."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


class Conv(nn.Module):
    """Conv2d with truncated-normal He init, or equalized learning rate (weights N(0,1) scaled at run time).

    Equalized lr changes the effective step size of Adam by the He constant (~1/sqrt(fan_in)), so a
    learning rate tuned for one setting is wrong for the other (docs/training.md).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, padding: int | str = "same",
                 equalized: bool = False, gain: float = math.sqrt(2.0)):
        super().__init__()
        fan_in = in_ch * kernel * kernel
        self.he_std = gain / math.sqrt(fan_in)
        self.equalized = equalized
        self.padding = padding
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        std = 1.0 if equalized else self.he_std
        nn.init.trunc_normal_(self.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
        self.scale = self.he_std if equalized else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.scale if self.equalized else self.weight
        return F.conv2d(x, w, self.bias, padding=self.padding)


class Linear(nn.Module):
    """Fully connected layer with the same initialisation choices as `Conv`."""

    def __init__(self, in_f: int, out_f: int, equalized: bool = False, gain: float = 1.0):
        super().__init__()
        self.he_std = gain / math.sqrt(in_f)
        self.equalized = equalized
        self.weight = nn.Parameter(torch.empty(out_f, in_f))
        self.bias = nn.Parameter(torch.zeros(out_f))
        std = 1.0 if equalized else self.he_std
        nn.init.trunc_normal_(self.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.he_std if self.equalized else self.weight
        return F.linear(x, w, self.bias)


class ConvAct(nn.Sequential):
    """Conv → LeakyReLU(0.2) → (PixelNorm in the generator)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, *, pixel_norm: bool, equalized: bool,
                 padding: int | str = "same"):
        layers: list[nn.Module] = [Conv(in_ch, out_ch, kernel, padding=padding, equalized=equalized),
                                   nn.LeakyReLU(0.2)]
        if pixel_norm:
            layers.append(PixelNorm())
        super().__init__(*layers)
