"""Photos as a refine input kind: units of a few photos, each encoded on the fly (landmarks → 3DMM fit →
DCE(+RGB) in the model's encoding) and refined by the unit machinery of inference.units.

`PhotoEncoder` is the one photo → sample step of both the batch job and the Python API
(refine_ray.Refiner.refine_photo): landmarks from the argument, else a landmark file next to the photo,
else the configured detector (largest face; the count goes into the fit record).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from refine_ray import storage
from refine_ray.data.encoding import Encoding
from refine_ray.data.pipeline import load_fit_model
from refine_ray.data.schema import sample_id
from refine_ray.data.settings import PreprocessSettings
from refine_ray.inference.units import raw_batches, Unit
from refine_ray.landmarks import LandmarkError, make_provider
from refine_ray.landmarks.dlib_provider import DlibUnavailable, predictor_path
from refine_ray.landmarks.face_alignment_provider import _missing_weights_message, required_weights
from refine_ray.data.photos import (DATASET, MAX_PHOTO_PIXELS, PhotoError, PhotoSample, build_photo_sample,
                                    discover_photos, photo_id, read_photo, sibling_landmarks)

KIND = "photos"
THUMBNAIL = 256   # the photo kept for the gallery tile, at most this many pixels a side


@dataclass
class PhotoOptions:
    """Settings of photo inputs (RefineConfig.photos)."""

    landmarks: str = "dlib"                       # detector when no landmark file is beside a photo
    landmark_options: dict = field(default_factory=dict)
    allow_download: bool = False                  # face_alignment only: may fetch its weights
    model: str | None = None                      # 3DMM; None = the one the training data was fitted with
    max_pixels: int = MAX_PHOTO_PIXELS

    def to_dict(self) -> dict[str, Any]:
        return dict(landmarks=self.landmarks, landmark_options=dict(self.landmark_options),
                    allow_download=self.allow_download, model=self.model, max_pixels=self.max_pixels)


def make_detector(options: PhotoOptions):
    kw = dict(options.landmark_options)
    if options.landmarks == "face_alignment":
        kw.setdefault("detector", "sfd")       # photos are not face crops
        kw.setdefault("allow_download", options.allow_download)
    return make_provider(options.landmarks, **kw)


def check_detector(options: PhotoOptions) -> str | None:
    """Why the configured detector cannot run on this machine (not installed, weights not cached and no
    download allowed), or None when it can — asked on the driver, before Ray starts."""
    if options.landmarks == "dlib":
        try:
            import dlib  # noqa: F401
        except ImportError:
            return "the dlib landmark detector is not installed: pip install 'refine-ray[landmarks]' (dlib-bin, face_recognition_models)"
        try:
            predictor_path()
        except DlibUnavailable as exc:
            return f"{exc}; pip install 'refine-ray[landmarks]'"
        return None
    if options.landmarks == "face_alignment" and not options.allow_download:
        import os


        detector = options.landmark_options.get("detector", "sfd")
        missing = [(u, p) for u, p in required_weights(detector) if not os.path.exists(p)]
        if missing:
            return _missing_weights_message(missing, "downloading is off: photos.allow_download / --allow-download")
    return None


def load_morphable(uri: str | None):
    """The 3DMM, loaded as the preprocessing job loads it (so photos are fitted like the training data)."""

    return load_fit_model(PreprocessSettings(model=uri))


def sample_id_of(scan_id: str) -> str:
    return sample_id(DATASET, scan_id, 0)


class PhotoEncoder:
    """Photo (array or URI) → PhotoSample in the model's encoding; the detector is created on first use."""

    def __init__(self, encoding: Encoding, options: PhotoOptions | None = None, morphable=None):
        self.encoding = encoding
        self.options = options or PhotoOptions()
        model_uri = self.options.model if self.options.model is not None else encoding.preprocess.get("model")
        self.morphable = morphable if morphable is not None else load_morphable(model_uri)
        self._detector = None

    @property
    def detector(self):
        if self._detector is None:
            self._detector = make_detector(self.options)
        return self._detector

    def encode(self, photo: np.ndarray, source: str, scan_id: str, landmarks: np.ndarray | None = None,
               landmark_source: str = "") -> PhotoSample:

        photo = np.asarray(photo)
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=-1)
        if photo.ndim != 3 or photo.shape[2] not in (3, 4):
            raise PhotoError(source, "read", f"image must be (H, W, 3) RGB, got shape {photo.shape}")
        photo = np.ascontiguousarray(photo[..., :3], dtype=np.uint8)
        faces = None
        if landmarks is None:
            try:
                found = self.detector.detect(photo, source)
            except LandmarkError as exc:
                raise PhotoError(source, "landmarks", exc.problem) from None
            landmarks, faces = found.points, found.faces_found
            landmark_source = f"detector {found.provider}"
        return build_photo_sample(photo, landmarks, self.morphable, self.encoding, source, scan_id,
                                  landmark_source=landmark_source or "given", faces_found=faces)

    def encode_uri(self, uri: str, root: str) -> tuple[PhotoSample, np.ndarray]:
        photo = read_photo(uri, self.options.max_pixels)
        given = sibling_landmarks(uri)
        lm, lm_src = (given[0], f"file {given[1]}") if given else (None, "")
        return self.encode(photo, uri, photo_id(uri, root), lm, lm_src), photo


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
