"""Raw scans as refinement input: run the preprocessing path on the fly (original pose only).

A folder/bucket of scans (FRGC .abs, Bosphorus .bnt, OBJ/PLY/WRL + photo + landmarks) is turned into
sample shards by the preprocessing job itself — the same code that made the training data, so the
refiner sees inputs encoded exactly as in training — with no pose augmentation and every scan in
one split. The shards land under `<output>/prepared` and are refined like any other shards.
"""
from __future__ import annotations

from typing import Any

from refine_ray import storage
from refine_ray.data.pipeline import run_preprocess
from refine_ray.data.schema import read_manifest
from refine_ray.data.settings import PreprocessSettings
from refine_ray.geometry import DceNormalization


def prepare_raw_input(input_uri: str, prepared_uri: str,
                      overrides: dict[str, Any] | None = None) -> tuple[str, DceNormalization]:
    """Preprocess the scans under `input_uri` into `prepared_uri`; returns (prepared_uri, its normalization).

    `overrides` are preprocessing settings (image_size, scale_px_per_mm, textured, normalization, …) that
    must match the ones the model was trained with; poses and split are fixed here.
    """
    data = dict(overrides or {})
    for key in ("input", "output", "poses", "split"):
        data.pop(key, None)
    settings = PreprocessSettings(input=str(input_uri), output=str(prepared_uri), poses={"count": 0},
                                  split="all-test", **data)
    summary = run_preprocess(settings, use_ray=not settings.local)
    if summary.get("samples", {}).get("test", 0) == 0 and not storage.exists(storage.join(prepared_uri, "test")):
        raise ValueError(f"{input_uri}: no scan could be prepared for refinement (see {prepared_uri}/errors.parquet)")
    return prepared_uri, DceNormalization.from_dict(read_manifest(prepared_uri)["normalization"])
