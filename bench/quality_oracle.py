"""An oracle input for the quality benchmark: the photo registered with the true surface.

The input's RGB channels are the photo sampled at the coarse surface (data/samples.py), so the shading the
true shape puts in the photo lands where the coarse surface, not the true one, places each photo pixel
(bench/quality_shading.py measures it). This copy of a preprocessed dataset replaces the input's RGB, wherever
the ground truth has a surface, by the photo sampled on the ground truth (the `target_rgb` column); elsewhere it
keeps the input's own. A generator trained and tested on it shows what a photo registered with the surface
would let the refinement do — an upper bound for a method that re-projects the photo, not something a user
without a ground truth can run.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refine_ray import storage
from refine_ray.data import codec
from refine_ray.data.schema import MANIFEST_NAME, decode_images, read_manifest

ORACLE_KEY = "oracle_input_rgb"


def photo_on_truth_table(table: pa.Table, encoding: str) -> pa.Table:
    """`table` with its `input` cells' RGB channels replaced by `target_rgb` where the target has a surface."""
    imgs = decode_images(table, require_target=True)
    if "target_rgb" not in imgs or imgs["input"].shape[-1] < 6:
        raise ValueError("the samples have no photo on the ground truth (preprocess with textured: true)")
    inp = imgs["input"]
    on_truth = imgs["target_mask"][..., None]
    inp[..., 3:6] = np.where(on_truth, imgs["target_rgb"], inp[..., 3:6])
    cells = pa.array([codec.encode_image(x, encoding) for x in inp], pa.binary())
    return table.set_column(table.schema.get_field_index("input"), "input", cells)


def photo_on_truth_copy(src: str, dst: str) -> str:
    """Copy the dataset folder `src` (manifest, train/ and test/ shards) to `dst` with the oracle input;
    done once (skipped when `dst` has its manifest). Returns `dst`."""
    if storage.exists(storage.join(dst, MANIFEST_NAME)):
        return dst
    manifest = read_manifest(src)
    encoding = manifest.get("config", {}).get("encoding", "compact")
    for split in ("train", "test"):
        folder = storage.join(src, split)
        if not storage.exists(folder):   # a test-only (cross-dataset) set has no train/
            continue
        for uri in storage.list_files(folder, suffixes=(".parquet",)):
            table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
            if table.num_rows:
                table = photo_on_truth_table(table, encoding)
            buf = io.BytesIO()
            pq.write_table(table, buf, compression=manifest.get("config", {}).get("compression", "zstd"))
            storage.atomic_write_bytes(storage.join(dst, split, uri.rsplit("/", 1)[-1]), buf.getvalue())
    manifest[ORACLE_KEY] = "photo sampled on the ground-truth surface wherever it exists (bench/quality_oracle.py)"
    storage.atomic_write_text(storage.join(dst, MANIFEST_NAME), json.dumps(manifest, indent=2, sort_keys=True))
    return dst
