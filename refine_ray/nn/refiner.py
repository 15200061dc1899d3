"""The networks of a configuration, and the trained generator as one callable (`Refiner`).

Both sides of a checkpoint use these: training builds fresh networks, inference rebuilds them to load weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from refine_ray.nn.config import ModelConfig
from refine_ray.nn.pix2pix import PatchDiscriminator, UnetGenerator
from refine_ray.nn.progressive import ProgressiveCritic, ProgressiveGenerator
from refine_ray.nn.residual import ResidualOverInput


def build_networks(config: dict[str, Any]):
    """(generator, critic) for a TrainConfig dict, freshly initialised."""
    m = ModelConfig.model_validate(config["model"])
    ch = m.channels
    if m.kind == "pix2pix":
        generator = UnetGenerator(ch.generator_in, 3, m.max_resolution, ngf=m.pix2pix_ngf)
        critic = PatchDiscriminator(ch.critic_in, ndf=m.pix2pix_ngf)
    else:
        out = 3 + int(m.footprint_head)  # D, C, E (+ the keep logit)
        generator = ProgressiveGenerator(ch.generator_in, out, m.max_resolution, m.max_channels, m.equalized_lr)
        critic = ProgressiveCritic(ch.critic_in, m.max_resolution, m.max_channels, m.equalized_lr)
    return (ResidualOverInput(generator, footprint=m.footprint_head) if m.residual else generator), critic


@dataclass
class Refiner:
    """A trained generator ready for inference: `refiner(batch (B,C,H,W) in [-1,1]) -> (B,3,r,r)`.

    `batch` holds the dataset's input channels (D,C,E[,R,G,B]); the refiner picks the ones its
    generator was trained on and mean-pools an image larger than `resolution` down to it.
    `input_channels` is the number of dataset channels it needs (1 for D, 3 for DCE, 6 for DCE+RGB).
    """

    generator: torch.nn.Module
    resolution: int
    stage: int
    input_channels: int
    generator_channels: tuple[int, ...]
    config: dict[str, Any]
    normalization: dict[str, Any] | None
    code_version: str
    source: str

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.ndim != 4 or batch.shape[1] < self.input_channels:
            raise ValueError(f"{self.source}: refiner needs (B, >={self.input_channels}, H, W), got {tuple(batch.shape)}")
        x = batch[:, list(self.generator_channels)].float()
        h = x.shape[-1]
        if h != self.resolution:
            if h % self.resolution:
                raise ValueError(f"{self.source}: image side {h} is not a multiple of the model's {self.resolution}")
            x = F.avg_pool2d(x, h // self.resolution)
        p = next(self.generator.parameters())
        return self.generator(x.to(p.device), self.stage, 1.0)

    def to(self, device) -> "Refiner":
        self.generator.to(device)
        return self
