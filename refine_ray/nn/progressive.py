"""The progressive encoder-decoder generator and critic of the paper (Tables 1 and 2, Fig. 2).

Both networks hold the blocks of every resolution 4…max from the start; `stage` selects how many are
active and `alpha` blends the newest block in (Karras et al. 2017, §A.1): the encoder's new input
block is blended with the old input path on the 2× mean-pooled image, the decoder's new output with
the 2× upsampled old output, and the critic like the encoder. Keeping all blocks in one module makes
checkpoints and optimizers independent of the stage: inactive parameters simply get no gradient.

Channel widths follow the tables at 256² (32 at 256, 64 at 128, 128 below); `max_channels` caps them
for tiny test networks. Interpretations of the tables (docs/training.md):
- Table 1's first 3×3 conv (864 params = 3·32·9) is the 256² input layer; Table 2's last 3×3 conv
  (32→3) the 256² output layer; other resolutions use 1×1 input/output layers (Fig. 2).
- The generator's 4×4 convs keep 4×4 spatially ("same" padding), as the tables' output shapes say;
  the critic's 4×4 conv is "valid" (→1×1×128) so that its final FC has the table's 128 weights.
- No skip connections: the paper describes none.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from refine_ray.nn.layers import Conv, ConvAct, Linear, downsample, upsample

TABLE_RESOLUTION = 256


def resolutions(max_resolution: int) -> list[int]:
    """[4, 8, …, max_resolution]; one training stage per entry."""
    if max_resolution < 4 or max_resolution & (max_resolution - 1):
        raise ValueError(f"max_resolution must be a power of two >= 4, got {max_resolution}")
    return [4 * 2**i for i in range(int(math.log2(max_resolution)) - 1)]


def _width(r: int, cap: int) -> int:
    """Features at resolution r: 32 at 256², 64 at 128², 128 from 64² down (Tables 1–2)."""
    return int(min(cap, 32 * TABLE_RESOLUTION // r))


class ProgressiveGenerator(nn.Module):
    """Encoder-decoder G: (B, in_channels, r, r) → (B, out_channels, r, r) at stage resolution r."""

    def __init__(self, in_channels: int, out_channels: int = 3, max_resolution: int = 256,
                 max_channels: int = 128, equalized_lr: bool = False):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.max_resolution = max_resolution
        self.resolutions = resolutions(max_resolution)
        eq = dict(equalized=equalized_lr)
        w = lambda r: _width(r, max_channels)  # noqa: E731
        self.from_rgb = nn.ModuleDict()
        self.encoder = nn.ModuleDict()
        self.decoder = nn.ModuleDict()
        self.to_rgb = nn.ModuleDict()
        for r in self.resolutions:
            k_io = 3 if r == TABLE_RESOLUTION else 1
            self.from_rgb[str(r)] = ConvAct(in_channels, w(r), k_io, pixel_norm=True, **eq)
            if r == 4:
                self.encoder[str(r)] = nn.Sequential(ConvAct(w(4), w(4), 3, pixel_norm=True, **eq),
                                                     ConvAct(w(4), w(4), 4, pixel_norm=True, **eq))
                self.decoder[str(r)] = nn.Sequential(ConvAct(w(4), w(4), 4, pixel_norm=True, **eq),
                                                     ConvAct(w(4), w(4), 3, pixel_norm=True, **eq))
            else:
                self.encoder[str(r)] = nn.Sequential(ConvAct(w(r), w(r), 3, pixel_norm=True, **eq),
                                                     ConvAct(w(r), w(r // 2), 3, pixel_norm=True, **eq))
                self.decoder[str(r)] = nn.Sequential(ConvAct(w(r // 2), w(r), 3, pixel_norm=True, **eq),
                                                     ConvAct(w(r), w(r), 3, pixel_norm=True, **eq))
            # Output layer: linear (no activation, no normalization), as PGGAN's toRGB.
            self.to_rgb[str(r)] = Conv(w(r), out_channels, k_io, equalized=equalized_lr, gain=1.0)

    def forward(self, x: torch.Tensor, stage: int, alpha: float = 1.0) -> torch.Tensor:
        res = self.resolutions
        if not 0 <= stage < len(res):
            raise ValueError(f"stage {stage} outside 0..{len(res) - 1}")
        r = res[stage]
        if x.shape[-1] != r or x.shape[-2] != r or x.shape[1] != self.in_channels:
            raise ValueError(f"generator at stage {stage} expects (B, {self.in_channels}, {r}, {r}), got {tuple(x.shape)}")
        fading = stage > 0 and alpha < 1.0
        h = self.encoder[str(r)](self.from_rgb[str(r)](x))
        if stage > 0:
            h = downsample(h)
            if fading:
                old = self.from_rgb[str(r // 2)](downsample(x))
                h = alpha * h + (1.0 - alpha) * old
            for s in range(stage - 1, 0, -1):
                h = downsample(self.encoder[str(res[s])](h))
            h = self.encoder["4"](h)
        f = self.decoder["4"](h)
        if stage == 0:
            return self.to_rgb["4"](f)
        for s in range(1, stage):
            f = self.decoder[str(res[s])](upsample(f))
        new = self.to_rgb[str(r)](self.decoder[str(r)](upsample(f)))
        if not fading:
            return new
        old = upsample(self.to_rgb[str(r // 2)](f))
        return alpha * new + (1.0 - alpha) * old


class ProgressiveCritic(nn.Module):
    """WGAN critic D(condition, image) → (B,) score; Table 1 without pixel norm, plus the FC."""

    def __init__(self, in_channels: int, max_resolution: int = 256, max_channels: int = 128,
                 equalized_lr: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.max_resolution = max_resolution
        self.resolutions = resolutions(max_resolution)
        eq = dict(equalized=equalized_lr, pixel_norm=False)
        w = lambda r: _width(r, max_channels)  # noqa: E731
        self.from_rgb = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        for r in self.resolutions:
            k_io = 3 if r == TABLE_RESOLUTION else 1
            self.from_rgb[str(r)] = ConvAct(in_channels, w(r), k_io, **eq)
            if r == 4:
                self.blocks[str(r)] = nn.Sequential(ConvAct(w(4), w(4), 3, **eq),
                                                    ConvAct(w(4), w(4), 4, padding=0, **eq))
            else:
                self.blocks[str(r)] = nn.Sequential(ConvAct(w(r), w(r), 3, **eq),
                                                    ConvAct(w(r), w(r // 2), 3, **eq))
        self.fc = Linear(w(4), 1, equalized=equalized_lr)

    def forward(self, condition: torch.Tensor, image: torch.Tensor, stage: int, alpha: float = 1.0) -> torch.Tensor:
        x = torch.cat([condition, image], dim=1)
        res = self.resolutions
        r = res[stage]
        if x.shape[-1] != r or x.shape[1] != self.in_channels:
            raise ValueError(f"critic at stage {stage} expects (B, {self.in_channels}, {r}, {r}) after "
                             f"concatenating condition and image, got {tuple(x.shape)}")
        h = self.blocks[str(r)](self.from_rgb[str(r)](x))
        if stage > 0:
            h = downsample(h)
            if alpha < 1.0:
                h = alpha * h + (1.0 - alpha) * self.from_rgb[str(r // 2)](downsample(x))
            for s in range(stage - 1, 0, -1):
                h = downsample(self.blocks[str(res[s])](h))
            h = self.blocks["4"](h)
        return self.fc(h.flatten(1)).squeeze(1)
