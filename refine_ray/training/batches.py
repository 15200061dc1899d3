"""From Parquet rows to training tensors: decode, reduce to the stage's resolution, random crop-and-pad.

The reduction is the same 2× mean pooling the networks use inside (nn.layers.downsample), so a stage's
data is exactly what the previous stage's fade-in path sees.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from refine_ray import storage
from refine_ray.data.schema import decode_images
from refine_ray.geometry import scan_holes

COLUMNS = ["sample_id", "height", "width", "input_channels", "input", "target", "input_mask", "target_mask"]


def decode_for_training(batch: dict[str, Any], with_scan_holes: bool = True) -> dict[str, np.ndarray]:
    """Ray Data map_batches function: bytes columns → channel-first float32 images and uint8 masks
    (+ `scan_holes` when `with_scan_holes`: a hole fill per image, only worth it for optim.ignore_scan_holes)."""
    img = decode_images(batch, require_target=True)
    out = {
        "input": np.ascontiguousarray(img["input"].transpose(0, 3, 1, 2)),
        "target": np.ascontiguousarray(img["target"].transpose(0, 3, 1, 2)),
        "input_mask": img["input_mask"].astype(np.uint8),
        "target_mask": img["target_mask"].astype(np.uint8),
    }
    if with_scan_holes:
        # computed here, on the data side, once per row: the training step only reads it
        out["scan_holes"] = scan_holes(img["input_mask"], img["target_mask"]).astype(np.uint8)
    return out


def reduce_images(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B,C,H,W) → (B,C,r,r) by mean pooling (H must be a multiple of r)."""
    h = x.shape[-1]
    if h == resolution:
        return x
    if h % resolution or x.shape[-2] != h:
        raise ValueError(f"images of {tuple(x.shape[-2:])} cannot be reduced to {resolution}²")
    return F.avg_pool2d(x, h // resolution)


def reduce_mask(m: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B,H,W) bool → (B,r,r): a reduced pixel is valid only when every pixel it covers is."""
    h = m.shape[-1]
    if h == resolution:
        return m.bool()
    return F.avg_pool2d(m.float().unsqueeze(1), h // resolution).squeeze(1) > 0.999


def crop_and_pad(tensors: list[torch.Tensor], max_shift: int, generator: torch.Generator,
                 fills: list[float]) -> list[torch.Tensor]:
    """Shift each sample by a random (dy, dx) in [-max_shift, max_shift], the same shift for all
    tensors of that sample; uncovered pixels get `fill` (-1 = background for images, 0 for masks)."""
    if max_shift <= 0:
        return tensors
    b = tensors[0].shape[0]
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator)
    out = []
    for t, fill in zip(tensors, fills):
        squeeze = t.ndim == 3
        t4 = t.unsqueeze(1) if squeeze else t
        h, w = t4.shape[-2:]
        padded = F.pad(t4.float() if squeeze else t4, (max_shift,) * 4, value=fill)
        res = torch.stack([padded[i, :, max_shift - dy: max_shift - dy + h, max_shift - dx: max_shift - dx + w]
                           for i, (dy, dx) in enumerate(shifts.tolist())])
        if squeeze:
            res = res.squeeze(1).to(t.dtype)
        out.append(res)
    return out


def read_validation(data_uri: str, limit: int) -> dict[str, np.ndarray] | None:
    """Up to `limit` held-out samples (split test/) decoded, channel-first; None when there are none."""
    folder = storage.join(data_uri, "test")
    if limit <= 0 or not storage.exists(folder):
        return None
    files = storage.list_files(folder, suffixes=[".parquet"])
    tables, n = [], 0
    for uri in files:
        fs, path = storage.arrow_filesystem(uri)
        t = pq.read_table(path, filesystem=fs, columns=COLUMNS)
        tables.append(t.slice(0, limit - n))
        n += tables[-1].num_rows
        if n >= limit:
            break
    if n == 0:
        return None
    import pyarrow as pa

    table = pa.concat_tables(tables)
    out = decode_for_training(table, with_scan_holes=False)  # validation scores images, it has no pixel loss
    out["sample_id"] = np.asarray(table.column("sample_id").to_pylist())
    return out
