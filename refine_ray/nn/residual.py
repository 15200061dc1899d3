"""Residual refinement: the generator predicts the detail to add to the coarse D, C, E channels.

Why: the paper's generator regenerates the whole image, so until it has trained long (7 × 10,000
iterations) its output is worse than the coarse input it was given — a short CPU schedule then
"refines" a 1.5 mm-accurate coarse model into a 15 mm one. Adding the coarse channels to the output
makes the untrained network start from the coarse model and spend its capacity on the detail. Off by
default in the Table-3 configurations (paper-faithful); `model.residual: true` turns it on.
"""
from __future__ import annotations

import torch
from torch import nn


class ResidualOverInput(nn.Module):
    """`net(x) + x` on the leading channels both share (D, C, E are the first channels of every input)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        # Output layers start at zero, so the untrained generator returns exactly the coarse input;
        # their weight gradients are the (non-zero) features, so they still learn from step one.
        # (pix2pix's U-Net has no per-resolution output layers; it keeps its own initialisation.)
        if hasattr(net, "to_rgb"):
            for p in net.to_rgb.parameters():
                nn.init.zeros_(p)

    def forward(self, x: torch.Tensor, stage: int = 0, alpha: float = 1.0) -> torch.Tensor:
        out = self.net(x, stage, alpha)
        k = min(3, x.shape[1], out.shape[1])
        return torch.cat([out[:, :k] + x[:, :k], out[:, k:]], dim=1)
