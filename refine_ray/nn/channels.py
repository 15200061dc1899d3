"""Which image channels each component sees (paper Table 3: Generator | Discriminator | Pixel loss)."""
from __future__ import annotations

from dataclasses import dataclass

# Channel order in the Parquet `input` column: coarse D, C, E then R, G, B (docs/INTERFACES.md).
GENERATOR_INPUTS = {"D": (0,), "DCE": (0, 1, 2), "DCE+RGB": (0, 1, 2, 3, 4, 5)}
# Critic / pixel-loss channels index both the condition's D,C,E and the 3-channel output/target.
DCE_SUBSETS = {"D": (0,), "DCE": (0, 1, 2)}
OUTPUT_CHANNELS = 3


@dataclass(frozen=True)
class ChannelConfig:
    """One row of Table 3, e.g. ChannelConfig("DCE", "D", "DCE") = the paper's proposed setting."""

    generator: str = "DCE"
    critic: str = "D"
    pixel_loss: str = "DCE"

    def __post_init__(self):
        if self.generator not in GENERATOR_INPUTS:
            raise ValueError(f"generator input must be one of {sorted(GENERATOR_INPUTS)}, got {self.generator!r}")
        for name in ("critic", "pixel_loss"):
            if getattr(self, name) not in DCE_SUBSETS:
                raise ValueError(f"{name} channels must be one of {sorted(DCE_SUBSETS)}, got {getattr(self, name)!r}")

    @property
    def generator_channels(self) -> tuple[int, ...]:
        return GENERATOR_INPUTS[self.generator]

    @property
    def critic_channels(self) -> tuple[int, ...]:
        return DCE_SUBSETS[self.critic]

    @property
    def loss_channels(self) -> tuple[int, ...]:
        return DCE_SUBSETS[self.pixel_loss]

    @property
    def generator_in(self) -> int:
        return len(self.generator_channels)

    @property
    def critic_in(self) -> int:
        """Condition channels + image channels: the critic judges the pair (x, y)."""
        return 2 * len(self.critic_channels)

    @property
    def kappa(self) -> float:
        """κ = C·1e-5 with C the channels of the pixel loss (paper §4.3)."""
        return len(self.loss_channels) * 1e-5

    def required_input_channels(self) -> int:
        return max(self.generator_channels) + 1
