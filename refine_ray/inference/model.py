"""The model side of refinement: load a refiner once per actor and turn input images into refined ones.

Kept free of Ray so that the plain-PyTorch baseline of bench/refine.py and the Ray actor run the
exact same code (the benchmark then measures Ray Data's overhead, nothing else).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from refine_ray.data.encoding import checkpoint_encoding
from refine_ray.geometry import DceNormalization
from refine_ray.training.checkpoints import load_checkpoint, load_refiner, resolve_checkpoint


def refiner_from(checkpoint: str | Callable[[], Any]) -> Any:
    """A refiner from a checkpoint URI (training.checkpoints.load_refiner) or from a factory callable
    (tests and benchmarks build small models without a training run)."""
    if callable(checkpoint):
        return checkpoint()

    return load_refiner(checkpoint)


# On CPU a forward pass over this many pixels keeps a convolution's activations in cache: at paper widths,
# one 256² image per pass runs 1.7× faster than 32 and two 64² images 1.5× faster (BENCHMARKS.md,
# Refinement), and the activation memory of a pass stays a few tens of MB.
CPU_FORWARD_PIXELS = 8192


def forward_batch_for(device: torch.device, height: int, width: int, requested: int = 0) -> int | None:
    """Images per forward call: `requested` when > 0; else the whole batch on a GPU (None) and on CPU as
    many as make CPU_FORWARD_PIXELS (at least one)."""
    if requested > 0:
        return requested
    if device.type != "cpu":
        return None
    return max(1, CPU_FORWARD_PIXELS // max(1, height * width))


def _module(refiner: Any) -> torch.nn.Module | None:
    if isinstance(refiner, torch.nn.Module):
        return refiner
    gen = getattr(refiner, "generator", None)
    return gen if isinstance(gen, torch.nn.Module) else None


class Predictor:
    """Runs a refiner on (B, H, W, C) numpy batches in network units; returns (B, H, W, 3) refined DCE.

    The refiner may work at a lower resolution r than the data (an early progressive stage); its
    output is resized back to H×W so refined images stay aligned with the inputs and targets.
    Off the input footprint (input_mask false) the output is background (-1): the refiner refines
    the coarse surface, it does not invent face where there is none. A batch is run `forward_batch`
    images at a time (forward_batch_for): the batch size sets the I/O unit, this the compute unit.
    """

    def __init__(self, refiner: Any, device: str = "cpu", precision: str = "fp32", channels_last: bool = False,
                 forward_batch: int = 0):
        if precision == "bf16" and not str(device).startswith("cuda"):
            raise ValueError("precision bf16 needs a GPU (device cuda); use fp32 on CPU")
        self.refiner = refiner
        self.device = torch.device(device)
        self.autocast = precision == "bf16"
        self.channels_last = channels_last
        self.forward_batch = int(forward_batch)
        module = _module(refiner)
        if module is not None:
            module.to(self.device).eval()
            if channels_last:
                module.to(memory_format=torch.channels_last)
        self.input_channels = int(getattr(refiner, "input_channels", 0)) or None

    @torch.inference_mode()
    def __call__(self, inputs: np.ndarray, input_mask: np.ndarray | None = None) -> np.ndarray:
        if inputs.ndim != 4:
            raise ValueError(f"expected (B, H, W, C) inputs, got shape {inputs.shape}")
        if self.input_channels and inputs.shape[-1] < self.input_channels:
            raise ValueError(
                f"the model needs {self.input_channels} input channels, the data has {inputs.shape[-1]}"
                " (D = 1, DCE = 3, DCE+RGB = 6): refine with a model trained on this kind of input"
            )
        b, h, w, _ = inputs.shape
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2)
        x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()
        step = forward_batch_for(self.device, h, w, self.forward_batch) or b
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            parts = [self.refiner(x[i:i + step]).float() for i in range(0, b, step)]
        y = parts[0] if len(parts) == 1 else torch.cat(parts)
        if y.ndim != 4 or y.shape[0] != b or y.shape[1] < 1:
            raise ValueError(f"the refiner returned shape {tuple(y.shape)} for a batch of {b}")
        if y.shape[-2:] != (h, w):
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        out = y.clamp_(-1.0, 1.0).permute(0, 2, 3, 1).cpu().numpy()
        if input_mask is not None:
            out = np.where(np.asarray(input_mask, bool)[..., None], out, np.float32(-1.0))
        return np.ascontiguousarray(out, dtype=np.float32)


def normalization_of(refiner: Any) -> DceNormalization | None:
    """The channel normalization a refiner's checkpoint records (stored as a dict), or None."""
    stored = getattr(refiner, "normalization", None)
    return DceNormalization.from_dict(stored) if stored else None


def depth_range_mm(normalization: DceNormalization | None) -> tuple[float, float]:
    """(lo, hi) mm of the fixed depth map `units = 2*(mm-lo)/(hi-lo) - 1` (docs/design.md, manifest `normalization`)."""
    if normalization is None:
        raise ValueError("no channel normalization: the dataset manifest and the checkpoint both lack it")
    lo, hi = (float(v) for v in normalization.depth_mm)
    if not hi > lo:
        raise ValueError(f"normalization depth_mm range must have hi > lo, got ({lo}, {hi})")
    return lo, hi



def encoding_of_checkpoint(uri: str):
    """The input encoding a stage checkpoint or run directory records (data.encoding.checkpoint_encoding)."""
    path = resolve_checkpoint(uri)
    return checkpoint_encoding(load_checkpoint(path), path)
