"""2D landmark providers behind one interface (`make_provider(name, **cfg).landmarks_for(scan, photo)`).

`formats` (the dataset file formats) is imported on its own so scan readers need no provider code.
"""
from __future__ import annotations

import inspect

from refine_ray.landmarks.base import LandmarkError, LandmarkProvider, PhotoLandmarks
from refine_ray.landmarks.dlib_provider import DlibLandmarks
from refine_ray.landmarks.face_alignment_provider import FaceAlignmentLandmarks
from refine_ray.landmarks.file_provider import FileLandmarks

PROVIDERS = ("file", "given", "face_alignment", "dlib")


def make_provider(name: str, **cfg) -> LandmarkProvider:
    """'file'/'given': landmarks shipped with the data (optional noise_px, seed, folder);
    'face_alignment': the face-alignment detector (device, batch_size, detector, flip_input, allow_download);
    'dlib': dlib's 68-point predictor, weights installed with the package (upsample, min_score, max_side)."""
    if name in ("file", "given"):
        cls = FileLandmarks
    elif name == "face_alignment":
        cls = FaceAlignmentLandmarks
    elif name == "dlib":
        cls = DlibLandmarks
    else:
        raise ValueError(f"unknown landmark provider {name!r} (choose from {', '.join(PROVIDERS)})")
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ValueError(f"landmark provider {name!r}: unknown setting(s) {unknown} (allowed: {sorted(allowed)})")
    return cls(**cfg)


__all__ = ["LandmarkError", "LandmarkProvider", "PROVIDERS", "PhotoLandmarks", "make_provider"]
