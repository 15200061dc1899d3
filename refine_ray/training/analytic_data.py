"""A tiny paired dataset with a known answer, in the real Parquet schema, for tests and benchmarks.

"Coarse" = a smooth ellipsoidal cap; "target" = the same cap plus fine ripples (the detail a refiner
must add). Curvature and elevation channels are computed from each depth map the same way for input
and target, so every Table-3 configuration has meaningful channels. Not faces: a controlled problem
where "the loss falls when overfitting" and "refined beats coarse" are unambiguous.
"""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from refine_ray import storage
from refine_ray.data import schema
from refine_ray.geometry import DceNormalization

NORMALIZATION = DceNormalization()
SCALE_PX_PER_MM = 1.2


def _dce(z_mm: np.ndarray, mask: np.ndarray, px_mm: float) -> np.ndarray:
    """Depth, mean curvature (small-slope Laplacian/2, 1/mm) and elevation (rad) of a height field."""
    gy, gx = np.gradient(z_mm, 1.0 / px_mm)
    gyy, _ = np.gradient(gy, 1.0 / px_mm)
    _, gxx = np.gradient(gx, 1.0 / px_mm)
    curv = 0.5 * (gxx + gyy)
    elev = np.arccos(1.0 / np.sqrt(1.0 + gx**2 + gy**2))
    return np.stack([z_mm, np.where(mask, curv, 0.0), elev], axis=-1)


def analytic_pair(size: int, rng: np.random.Generator, textured: bool = False):
    """(input (H,W,C), target (H,W,3), mask (H,W)) in network units for one random sample."""
    px_mm = SCALE_PX_PER_MM * size / 256.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cx, cy = size / 2 + rng.uniform(-0.05, 0.05) * size, size / 2 + rng.uniform(-0.05, 0.05) * size
    ax, ay = size * rng.uniform(0.30, 0.36), size * rng.uniform(0.36, 0.42)
    u = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2
    mask = u < 1.0
    height = rng.uniform(25.0, 40.0)
    coarse = np.where(mask, height * np.sqrt(np.clip(1.0 - u, 0, 1)), 0.0) - 20.0
    freq, phase = rng.uniform(3.0, 5.0), rng.uniform(0, 2 * np.pi)
    ripples = 3.0 * np.sin(2 * np.pi * freq * xx / size + phase) * np.cos(2 * np.pi * freq * yy / size)
    target = coarse + np.where(mask, ripples * np.clip(1.0 - u, 0, 1), 0.0)
    inp = NORMALIZATION.normalize(_dce(coarse, mask, px_mm), mask,
                                  rgb=np.clip(0.5 + ripples[..., None] / 8.0 * np.ones(3), 0, 1) if textured else None)
    tgt = NORMALIZATION.normalize(_dce(target, mask, px_mm), mask)
    return inp.astype(np.float32), tgt.astype(np.float32), mask


def write_analytic_dataset(out_uri: str, n_train: int = 8, n_test: int = 4, size: int = 32,
                           textured: bool = False, seed: int = 0, rows_per_shard: int = 4) -> str:
    """Write `<out>/train/*.parquet`, `<out>/test/*.parquet` and `manifest.json`; returns out_uri."""
    rng = np.random.default_rng(seed)
    rows = {"train": [], "test": []}
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        inp, tgt, mask = analytic_pair(size, rng, textured)
        rows[split].append(schema.build_row(
            dataset="analytic", subject_id=f"s{i:03d}", scan_id=f"scan{i:03d}", expression=None, pose=0,
            yaw=0.0, pitch=0.0, roll=0.0, split=split, input_image=inp, target_image=tgt, input_mask=mask,
            target_mask=mask, scale_px_per_mm=SCALE_PX_PER_MM * size / 256.0, rotation=np.eye(3),
            translation_px=(0.0, 0.0), anchor_input=np.zeros(3), anchor_target=np.zeros(3),
            landmarks_2d=np.full(136, np.nan), landmarks_image=np.full(136, np.nan),
            source_uri=f"analytic://{i}"))
    for split, split_rows in rows.items():
        for k in range(0, len(split_rows), rows_per_shard):
            table = schema.rows_to_table(split_rows[k:k + rows_per_shard])
            uri = storage.join(out_uri, split, f"part-{k // rows_per_shard:05d}.parquet")
            storage.makedirs(storage.join(out_uri, split))
            fs, path = storage.arrow_filesystem(uri)
            pq.write_table(table, path, filesystem=fs)
    channels = list(schema.DCE_CHANNELS) + (list(schema.RGB_CHANNELS) if textured else [])
    schema.write_manifest(out_uri, {
        "image_size": [size, size], "scale_px_per_mm": SCALE_PX_PER_MM * size / 256.0,
        "normalization": NORMALIZATION.to_dict(), "input_channels": channels,
        "counts": {"train": n_train, "test": n_test}, "config": {"analytic": True, "seed": seed},
        "inputs": {"generator": "refine_ray.training.analytic_data"},
    })
    return out_uri
