"""Which network a run trains and which channels each part sees (paper Table 3).

Lives with the networks because a checkpoint's `config["model"]` is all that is needed to rebuild them.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from refine_ray.config import StrictModel, flag
from refine_ray.nn.channels import ChannelConfig
from refine_ray.nn.progressive import resolutions


class ModelConfig(StrictModel):
    """Which network and which channels each component sees (paper Table 3)."""

    kind: Literal["progressive", "pix2pix"] = Field("progressive", description="network family",
                                                    json_schema_extra=flag("--model-kind"))
    generator_input: Literal["D", "DCE", "DCE+RGB"] = Field("DCE", description="channels the generator sees")
    critic_input: Literal["D", "DCE"] = Field("D", description="channels the critic sees")
    pixel_loss: Literal["D", "DCE"] = Field("DCE", description="channels of the pixel loss")
    max_resolution: int = Field(256, description="last stage's resolution (a power of two, 4..256)")
    max_channels: int = Field(128, ge=4, description="cap on feature widths (128 = paper; smaller for tests)")
    equalized_lr: bool = Field(False, description="PGGAN equalized learning rate (then use lr ~1e-3)")
    pix2pix_ngf: int = Field(64, ge=4, description="pix2pix U-Net / PatchGAN base width")
    residual: bool = Field(False, description="generator output = coarse D,C,E + predicted detail "
                                              "(not in the paper; refine_ray/nn/residual.py says why)")
    footprint_head: bool = Field(False, description="with residual: an extra output channel decides which coarse "
                                                    "pixels the face keeps (crop border, scan holes), so depth is "
                                                    "learnt only where the ground truth has a surface (nn/residual.py)")

    @model_validator(mode="after")
    def _check(self):
        resolutions(self.max_resolution)
        if self.max_resolution > 256:
            raise ValueError("max_resolution above 256 is not supported (the data is 256²)")
        if self.footprint_head and not (self.residual and self.kind == "progressive"):
            raise ValueError("model.footprint_head needs model.residual: true and kind: progressive")
        if self.kind == "pix2pix" and self.max_resolution < 32:
            raise ValueError("pix2pix needs max_resolution >= 32")
        return self

    @property
    def channels(self) -> ChannelConfig:
        return ChannelConfig(self.generator_input, self.critic_input, self.pixel_loss)
