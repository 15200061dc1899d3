"""2D landmarks from dlib's 68-point shape predictor, with weights installed from the package registry.

Why this provider: its weights come with the code (`pip install dlib-bin face_recognition_models`), so
a machine or a cluster without internet detects landmarks on real photos — no download at run time.
dlib's HOG face detector finds the faces; the largest one is used and the count is reported.

Licences (see docs/refine.md): dlib code Boost Software License 1.0; face_recognition_models MIT
(packaging); the 68-point predictor was trained by dlib's author on the iBUG 300-W data set, whose
images are for research use only — the trained model is commonly taken to be usable commercially only
with a licence of your own from the 300-W rights holders. Check before commercial use.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

from refine_ray.landmarks.base import LandmarkError, LandmarkProvider, PhotoLandmarks

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


class DlibUnavailable(RuntimeError):
    """dlib or its 68-point predictor is not installed."""


def predictor_path() -> str:
    """The 68-point predictor shipped by the face_recognition_models package (located without importing
    the package: its __init__ needs pkg_resources, which recent setuptools no longer has)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DlibUnavailable("the dlib landmark provider needs the face_recognition_models package "
                              "(pip install face_recognition_models), which ships the 68-point predictor")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", PREDICTOR_FILE)
    if not os.path.exists(path):
        raise DlibUnavailable(f"{path}: the 68-point predictor is missing from face_recognition_models")
    return path


class DlibLandmarks(LandmarkProvider):
    """dlib HOG face detector + 68-point shape predictor (iBUG-68 order, as the 3DMM fit expects).

    upsample: times the photo is doubled before detection (1 finds faces down to ~40 px wide).
    min_score: detections scoring below this are ignored (dlib's HOG score; 0 = its default threshold).
    max_side: photos larger than this are shrunk for the detector only (landmarks run on the full photo).
    """

    name = "dlib"

    def __init__(self, upsample: int = 1, min_score: float = 0.0, max_side: int = 1024):
        if upsample < 0 or max_side < 64:
            raise ValueError("upsample must be >= 0 and max_side >= 64")
        self.upsample, self.min_score, self.max_side = int(upsample), float(min_score), int(max_side)
        self._detector = self._predictor = None

    def _models(self):
        if self._predictor is None:
            try:
                import dlib
            except ImportError as exc:
                raise DlibUnavailable("the dlib landmark provider needs dlib (pip install dlib-bin)") from exc
            self._detector = dlib.get_frontal_face_detector()
            self._predictor = dlib.shape_predictor(predictor_path())
        return self._detector, self._predictor

    def detect(self, photo: np.ndarray, source: str) -> PhotoLandmarks:
        import dlib

        photo = _checked_photo(photo, source)
        detector, predictor = self._models()
        h, w = photo.shape[:2]
        f = min(1.0, self.max_side / max(h, w))
        small = photo if f == 1.0 else _shrink(photo, f)
        boxes, scores, _ = detector.run(small, self.upsample, self.min_score)
        if len(boxes) == 0:
            raise LandmarkError(source, "no face found in the photo")
        areas = [b.width() * b.height() for b in boxes]
        k = int(np.argmax(areas))
        b = boxes[k]
        box = dlib.rectangle(int(b.left() / f), int(b.top() / f), int(b.right() / f), int(b.bottom() / f))
        shape = predictor(np.ascontiguousarray(photo), box)
        # dlib's pixel (x, y) is the pixel's centre on integer coordinates; ours puts centres at +0.5
        pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64) + 0.5
        return PhotoLandmarks(pts, faces_found=len(boxes),
                              box=(box.left(), box.top(), box.right(), box.bottom()), provider=self.name)

    def landmarks_for(self, scan, photo: np.ndarray | None = None) -> np.ndarray:
        photo = photo if photo is not None else getattr(scan, "photo", None)
        if photo is None:
            raise LandmarkError(scan.source, "no photo to detect landmarks on")
        return self.detect(photo, scan.source).points


def _checked_photo(photo: np.ndarray, source: str) -> np.ndarray:
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise LandmarkError(source, f"photo must be (H, W, 3) uint8 RGB, got {photo.shape} {photo.dtype}")
    return photo


def _shrink(photo: np.ndarray, f: float) -> np.ndarray:
    from PIL import Image

    h, w = photo.shape[:2]
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.asarray(Image.fromarray(photo).resize(size, Image.BILINEAR))
