"""Face photos as refinement inputs: read a photo, find its landmarks, fit the 3DMM, encode the coarse face.

One photo → one target-less sample row (data.schema, null target) encoded exactly like the training
data of the model (data.encoding: image size, px/mm, translation, RGB, normalization), plus what the
user gets back about the fit (pose, scale, coefficients, landmark error). Landmarks come from a file
next to the photo (`<name>.pts|.ljson|.json`, pixels of the photo as displayed, i.e. after its EXIF
orientation) or else from a detector (landmarks.make_provider). `PhotoEncoder` is the one photo → sample step
of jobs/preprocess.py's photo input, jobs/refine.py's and refine_ray.Refiner.refine_photo. No Ray.
"""
from __future__ import annotations

import io
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refine_ray import geometry as geo
from refine_ray import storage
from refine_ray.data import schema
from refine_ray.data.encoding import Encoding
from refine_ray.data.fit_model import load_fit_model
from refine_ray.data.samples import SampleBuildError, landmark_anchor, sample_photo
from refine_ray.data.settings import PreprocessSettings
from refine_ray.landmarks import formats, LandmarkError, make_provider
from refine_ray.landmarks.dlib_provider import DlibUnavailable, predictor_path
from refine_ray.landmarks.face_alignment_provider import _missing_weights_message, required_weights
from refine_ray.morphable import fit_landmarks

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
LANDMARK_SUFFIXES = (".pts", ".ljson", ".json")
MAX_PHOTO_PIXELS = 64_000_000     # a bigger image is refused before it is decoded (decompression bombs)
DATASET = "photo"


class PhotoError(SampleBuildError):
    """A photo that cannot become a sample; names the file, the stage and the reason (an errors-table row)."""


def is_photo(uri: str) -> bool:
    return str(uri).lower().endswith(PHOTO_SUFFIXES)


def discover_photos(root: str) -> list[str]:
    """Photos under a folder or s3:// prefix (sorted), or the one photo `root` names."""
    if is_photo(root) and storage.exists(root):
        return [str(root)]
    return sorted(u for u in storage.list_files(root) if is_photo(u))


def photo_id(uri: str, root: str) -> str:
    """A stable id from the photo's path below the input root (`sub/img_001.jpg` → `sub_img_001`)."""
    u, r = str(uri).replace("\\", "/"), str(root).replace("\\", "/").rstrip("/")
    rel = u[len(r) + 1:] if u.startswith(r + "/") else posixpath.basename(u)
    stem = rel.rsplit(".", 1)[0]
    try:
        return storage.bounded_stem(stem.replace("/", "_"))
    except ValueError:
        return "photo"


def decode_photo(data: bytes, source: str, max_pixels: int = MAX_PHOTO_PIXELS) -> np.ndarray:
    """JPEG/PNG bytes → (H, W, 3) uint8 RGB as displayed (EXIF orientation applied)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise PhotoError(source, "read", f"image is {w}x{h} px, more than the {max_pixels} px allowed")
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))
    except PhotoError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise PhotoError(source, "read", f"unreadable image ({type(exc).__name__}: {exc})") from None


def read_photo(uri: str, max_pixels: int = MAX_PHOTO_PIXELS) -> np.ndarray:
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise PhotoError(uri, "read", "file not found") from None
    return decode_photo(data, uri, max_pixels)


def sibling_landmarks(uri: str) -> tuple[np.ndarray, str] | None:
    """((68, 2) pixels, landmark file) from `<photo name>.pts|.ljson|.json` next to the photo, else None."""

    base = str(uri).rsplit(".", 1)[0]
    for sfx in LANDMARK_SUFFIXES:
        cand = base + sfx
        if not storage.exists(cand):
            continue
        try:
            pts = formats.read_landmarks(cand).points_2d
        except formats.LandmarkFormatError as exc:
            raise PhotoError(exc.source, "landmarks", exc.problem) from None
        if pts is None:
            raise PhotoError(cand, "landmarks", "the landmark file holds no 2D landmarks")
        return np.asarray(pts, np.float64), cand
    return None


@dataclass
class PhotoSample:
    """A photo encoded for the model: its sample row, the coarse mesh (model frame, mm, photo colours),
    the view it was rendered in, and the fit record the user gets as JSON."""

    row: dict[str, Any]
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    view: Any
    fit: dict[str, Any] = field(default_factory=dict)


def pose_angles_deg(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) degrees of a model → camera rotation, in geometry.rotation_from_angles' convention."""
    from scipy.spatial.transform import Rotation

    yaw, pitch, roll = Rotation.from_matrix(np.asarray(rotation, np.float64)).as_euler("yxz", degrees=True)
    return float(yaw), float(pitch), float(roll)


def check_landmarks(lm: np.ndarray, photo_shape: tuple[int, ...], source: str) -> np.ndarray:
    lm = np.asarray(lm, np.float64)
    if lm.shape != (68, 2):
        raise PhotoError(source, "landmarks", f"expected 68 iBUG landmarks (68, 2), got {lm.shape}")
    ok = np.isfinite(lm).all(axis=1)
    if ok.sum() < 6:
        raise PhotoError(source, "landmarks", "fewer than 6 usable landmarks")
    h, w = photo_shape[:2]
    inside = ok & (lm[:, 0] >= 0) & (lm[:, 0] <= w) & (lm[:, 1] >= 0) & (lm[:, 1] <= h)
    if inside.sum() < 0.9 * ok.sum():
        raise PhotoError(source, "landmarks", f"{int(ok.sum() - inside.sum())} landmarks lie outside the {w}x{h} px "
                         "photo: photo and landmark file do not belong together")
    return lm


def build_photo_sample(photo: np.ndarray, landmarks: np.ndarray, model, encoding, source: str, scan_id: str,
                       landmark_source: str = "", faces_found: int | None = None) -> PhotoSample:
    """Fit `model` to the landmarks and encode the coarse face as the model's training data was encoded."""

    lm = check_landmarks(landmarks, photo.shape, source)
    try:
        fit = fit_landmarks(model, lm)
    except ValueError as exc:
        raise PhotoError(source, "fit", str(exc)) from None
    try:
        anchor = landmark_anchor(fit.landmarks_3d, source)
    except ValueError as exc:
        raise PhotoError(source, "fit", str(exc)) from None
    colors = sample_photo(photo, geo.plane_to_pixels(fit.projection.project(fit.vertices)))
    n, s, t = encoding.image_size, encoding.scale_px_per_mm, encoding.translation_px
    view = geo.ImageView(fit.projection.rotation, anchor, s, n, n, t)
    img = geo.DceSurface(fit.vertices, fit.faces, colors if encoding.textured else None).render(view)
    if not img.mask.any():
        raise PhotoError(source, "render", "the coarse face covers no pixel of the model's image")
    norm = geo.DceNormalization.from_dict(encoding.normalization)
    inp = norm.normalize(img.dce, img.mask, rgb=img.rgb if encoding.textured else None)
    yaw, pitch, roll = pose_angles_deg(fit.projection.rotation)
    try:
        row = schema.build_row(
            dataset=DATASET, subject_id=scan_id, scan_id=scan_id, expression=None, pose=0, yaw=yaw, pitch=pitch,
            roll=roll, split="test", input_image=inp, target_image=None, input_mask=img.mask, target_mask=None,
            scale_px_per_mm=s, rotation=np.eye(3), translation_px=t, anchor_input=anchor, anchor_target=anchor,
            landmarks_2d=lm, landmarks_image=view.to_image(fit.landmarks_3d)[:, :2], source_uri=source,
            rotation_input=view.rotation, landmarks_input_image=view.to_image(fit.landmarks_3d)[:, :2],
            fit_rms_px=fit.rms_px)
    except schema.SampleError as exc:
        raise PhotoError(source, "schema", str(exc)) from None
    record = {
        "source": source, "photo_size": [int(photo.shape[1]), int(photo.shape[0])],
        "faces_found": faces_found, "landmarks": landmark_source,
        "pose": {"rotation": fit.projection.rotation.tolist(), "yaw_deg": yaw, "pitch_deg": pitch, "roll_deg": roll,
                 "scale_px_per_mm": float(fit.projection.scale), "translation_px": fit.projection.translation.tolist()},
        "shape_coeffs": fit.shape_coeffs.tolist(), "expression_coeffs": fit.expr_coeffs.tolist(),
        "landmark_rms_px": float(fit.rms_px), "landmarks_used": int(fit.n_landmarks),
        "landmarks_2d": np.where(np.isfinite(lm), lm, None).tolist(),
        "frame": "meshes are in the 3DMM's frame (mm); pose.rotation maps it to the photo's camera (x right, y up)",
    }
    return PhotoSample(row=row, vertices=fit.vertices, faces=fit.faces, colors=colors, view=view, fit=record)


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
        detector = options.landmark_options.get("detector", "sfd")
        missing = [(u, p) for u, p in required_weights(detector) if not os.path.exists(p)]
        if missing:
            return _missing_weights_message(missing, "downloading is off: photos.allow_download / --allow-download")
    return None


def has_landmark_file(uri: str) -> bool:
    return any(storage.exists(str(uri).rsplit(".", 1)[0] + s) for s in LANDMARK_SUFFIXES)


def detector_problem(photos: list[str], options: PhotoOptions) -> str | None:
    """Why these photos cannot be encoded here: some have no landmark file beside them and the configured
    detector cannot run on this machine (check_detector); None when they can. Asked before any work starts."""
    problem = check_detector(options)
    if not problem:
        return None
    bare = [u for u in photos if not has_landmark_file(u)]
    if not bare:
        return None
    return (f"{len(bare)} photo(s) without a landmark file (e.g. {bare[0]}) need the '{options.landmarks}' "
            f"detector, which cannot run here: {problem}")


def load_morphable(uri: str | None):
    """The 3DMM, loaded as the preprocessing job loads it (so photos are fitted like the training data)."""

    return load_fit_model(PreprocessSettings(model=uri))


def sample_id_of(scan_id: str) -> str:
    return schema.sample_id(DATASET, scan_id, 0)


class PhotoEncoder:
    """Photo (array or URI) → PhotoSample in the model's encoding; the detector is created on first use."""

    def __init__(self, encoding: Encoding, options: PhotoOptions | None = None, morphable=None, detector=None):
        self.encoding = encoding
        self.options = options or PhotoOptions()
        model_uri = self.options.model if self.options.model is not None else encoding.preprocess.get("model")
        self.morphable = morphable if morphable is not None else load_morphable(model_uri)
        self._detector = detector

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
