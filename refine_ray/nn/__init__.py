"""Networks of the paper (Tables 1–2): progressive encoder-decoder generator and critic, losses, pix2pix baseline."""
from refine_ray.nn.channels import ChannelConfig
from refine_ray.nn.progressive import ProgressiveCritic, ProgressiveGenerator, resolutions
from refine_ray.nn.losses import critic_wgan_gp_loss, generator_loss

__all__ = [
    "ChannelConfig",
    "ProgressiveCritic",
    "ProgressiveGenerator",
    "resolutions",
    "critic_wgan_gp_loss",
    "generator_loss",
]
