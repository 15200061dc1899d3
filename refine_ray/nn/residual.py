"""Residual refinement: the generator predicts the detail to add to the coarse D, C, E channels,
optionally with a footprint head that decides which pixels of the coarse model the face keeps.

Why residual: the paper's generator regenerates the whole image, so until it has trained long
(7 × 10,000 iterations) its output is worse than the coarse input it was given — a short CPU
schedule then "refines" a 1.5 mm-accurate coarse model into a 15 mm one. Adding the coarse channels
to the output makes the untrained network start from the coarse model and spend its capacity on the
detail. Off by default in the Table-3 configurations (paper-faithful); `model.residual: true` turns it on.

Why a footprint head: the ground truth is cropped (sphere ∩ landmark contour) and has holes; the
coarse 3DMM is neither. One depth channel that must both add millimetres of detail and drop to the
background (-1, ~100 mm away) at the crop border blurs the two: the border ring comes out half-way,
wrong in depth and in footprint. With `model.footprint_head: true` an extra output channel is a
logit of "the ground truth has a surface here"; depth is learnt only where it does, the footprint by
a cross-entropy, and the image is composed from both (soft while training, so the critic's gradient
reaches the head; a hard 0.5 threshold in eval mode, so refined images have crisp borders).
"""
from __future__ import annotations

import torch
from torch import nn

KEEP_PRIOR_LOGIT = 4.0  # an untrained head keeps every coarse pixel (sigmoid(4) = 0.98)


class ResidualOverInput(nn.Module):
    """`net(x) + x` on the leading channels both share (D, C, E are the first channels of every input);
    with `footprint`, `net` has one more output channel: the keep logit (composition above)."""

    def __init__(self, net: nn.Module, footprint: bool = False):
        super().__init__()
        self.net = net
        self.footprint = footprint
        # Output layers start at zero, so the untrained generator returns exactly the coarse input;
        # their weight gradients are the (non-zero) features, so they still learn from step one.
        # (pix2pix's U-Net has no per-resolution output layers; it keeps its own initialisation.)
        if hasattr(net, "to_rgb"):
            for p in net.to_rgb.parameters():
                nn.init.zeros_(p)

    def detail_and_footprint(self, x: torch.Tensor, stage: int = 0,
                             alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(coarse + detail (B,C,H,W), keep logit (B,1,H,W) or None): the two parts before composition."""
        out = self.net(x, stage, alpha)
        logit = None
        if self.footprint:
            out, logit = out[:, :-1], out[:, -1:] + KEEP_PRIOR_LOGIT
        k = min(3, x.shape[1], out.shape[1])
        return torch.cat([out[:, :k] + x[:, :k], out[:, k:]], dim=1), logit

    @staticmethod
    def compose(image: torch.Tensor, logit: torch.Tensor | None, hard: bool) -> torch.Tensor:
        """Kept pixels show `image`, the others the background -1 (soft: blended by the keep probability)."""
        if logit is None:
            return image
        keep = (logit > 0).to(image.dtype) if hard else torch.sigmoid(logit)
        return keep * image + (keep - 1.0)

    def forward(self, x: torch.Tensor, stage: int = 0, alpha: float = 1.0) -> torch.Tensor:
        image, logit = self.detail_and_footprint(x, stage, alpha)
        return self.compose(image, logit, hard=not self.training)
