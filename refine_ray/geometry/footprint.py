"""Which pixels of a sample's image belong to the face: scan holes versus the crop outline, and the
footprint of a refined image. Pure numpy.

The coarse 3DMM and the cropped ground truth never cover exactly the same pixels. Two different
things hide in "the coarse model has depth here, the scan has none":
- a **scan hole** (eyes, brows, hair, an occluding hand) inside the scan's outline: unpredictable
  from the coarse shape, so training may leave it out of the pixel loss;
- the coarse model reaching **past the ground truth's crop** (sphere ∩ landmark contour, paper §5.2):
  the generator must learn to clear it, as the paper's does, or the paper's Eq. 4 counts every such
  pixel at full depth.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["scan_holes", "refined_footprint"]


def scan_holes(input_mask: np.ndarray, target_mask: np.ndarray) -> np.ndarray:
    """Pixels covered by the coarse model that are holes *enclosed* by the ground truth's outline.

    `input_mask`, `target_mask`: (H, W) or (B, H, W) bool. A gap in the scan that opens onto the
    outside of its outline counts as outside the crop, not as a hole.
    """
    inp = np.asarray(input_mask, bool)
    tgt = np.asarray(target_mask, bool)
    if inp.shape != tgt.shape or inp.ndim not in (2, 3):
        raise ValueError(f"scan_holes: masks must share one (H, W) or (B, H, W) shape, got {inp.shape} and {tgt.shape}")
    batch = tgt if tgt.ndim == 3 else tgt[None]
    filled = np.stack([ndimage.binary_fill_holes(m) for m in batch]).reshape(tgt.shape)
    return inp & filled & ~tgt


def refined_footprint(coarse_depth: np.ndarray, refined_depth: np.ndarray, input_mask: np.ndarray) -> np.ndarray:
    """The pixels a refined image keeps: inside the input's footprint and closer to the coarse depth
    than to the background (-1 in network units), i.e. refined > (coarse - 1) / 2.

    A generator trained on cropped ground truth clears the coarse model's surplus border by driving it
    to the background value; those pixels must not become spikes at the far depth limit of a mesh.
    """
    c = np.asarray(coarse_depth, np.float64)
    r = np.asarray(refined_depth, np.float64)
    m = np.asarray(input_mask, bool)
    if not (c.shape == r.shape == m.shape):
        raise ValueError(f"refined_footprint: shapes differ: coarse {c.shape}, refined {r.shape}, mask {m.shape}")
    return m & (r > (c - 1.0) / 2.0)
