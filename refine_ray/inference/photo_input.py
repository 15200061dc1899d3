"""Photos as a refine input kind: units of a few photos, each encoded on the fly by data.photos.PhotoEncoder
(landmarks → 3DMM fit → DCE(+RGB) in the model's encoding, the same step as jobs/preprocess.py's photo input)
and refined by the unit machinery of inference.units.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from refine_ray import storage
from refine_ray.data.photos import discover_photos, PhotoEncoder, PhotoSample, photo_id, sample_id_of
from refine_ray.inference.units import raw_batches, Unit

KIND = "photos"
THUMBNAIL = 256   # the photo kept for the gallery tile, at most this many pixels a side


def thumbnail(photo: np.ndarray, side: int = THUMBNAIL) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(photo)
    im.thumbnail((side, side))
    return np.asarray(im)


def extras_of(sample: PhotoSample, photo: np.ndarray, uri: str) -> dict[str, Any]:
    """What the output writer needs beyond the sample row: the full coarse mesh, the fit, the photo."""
    return {"coarse_mesh": (sample.vertices, sample.faces, sample.colors), "fit": sample.fit,
            "photo": thumbnail(photo), "file": uri}


def plan_photo_units(root: str, per_unit: int) -> tuple[list[Unit], list[dict[str, str]]]:
    """Units of `per_unit` photos in sorted order, named by their contents (a re-run finds the same units)."""

    errors = [{"file": storage.printable(u), "sample_id": "", "stage": "read", "reason": storage.name_problem(u)}
              for u in discover_photos(root) if storage.name_problem(u)]
    photos = [u for u in discover_photos(root) if not storage.name_problem(u)]
    units = []
    for k in range(0, len(photos), per_unit):
        items = tuple(photos[k:k + per_unit])
        digest = hashlib.sha1("\n".join(items).encode("utf-8")).hexdigest()[:10]
        units.append(Unit(str(root), k // per_unit, f"photos-{digest}-u{k // per_unit:05d}", KIND, items))
    return units, errors


def photo_batches(encoder: PhotoEncoder, unit: Unit, batch_size: int, counts: dict[str, int],
                  errors: list[dict[str, str]]) -> Iterator[tuple[pa.Table, dict[str, dict]]]:
    """Sample tables of a photo unit; a photo that cannot be encoded is an error row naming it."""

    def encode(uri: str) -> tuple[dict, dict]:
        sample, photo = encoder.encode_uri(uri, unit.file)
        return sample.row, extras_of(sample, photo, uri)

    return raw_batches(unit, batch_size, counts, errors, encode, lambda uri: sample_id_of(photo_id(uri, unit.file)))
