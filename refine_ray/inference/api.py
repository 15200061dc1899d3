"""The Python API for one face at a time: `from refine_ray import Refiner`.

    r = Refiner.load("runs/quickstart")                 # a run dir or a stage checkpoint, local or s3://
    face = r.refine_photo("me.jpg")                     # or an (H, W, 3) uint8 array / PIL image
    face.refined.export("me.refined.ply")               # trimesh.Trimesh, mm, coloured from the photo
    face.coarse, face.maps["refined_depth_mm"], face.fit["pose"]

It runs the batch job's steps (inference.photo_input.PhotoEncoder → units.refine_decoded →
outputs.assemble), so a face refined here is the face jobs/refine.py writes for the same photo.
Not to be confused with the network container of training checkpoints (`Refiner.network`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from refine_ray.data.encoding import Encoding
from refine_ray.data.photos import decode_photo, read_photo, sibling_landmarks
from refine_ray.data.schema import decode_images, rows_to_table
from refine_ray.geometry import DceNormalization
from refine_ray.inference.model import encoding_of_checkpoint, load_model, Predictor
from refine_ray.inference.outputs import assemble, OutputWriter, RefinedFace
from refine_ray.inference.photo_input import extras_of, PhotoEncoder, PhotoOptions
from refine_ray.inference.units import refine_decoded


class Refiner:
    """A trained refiner with the input encoding of its training data, ready for single faces."""

    def __init__(self, network: Any, encoding: Encoding, device: str = "cpu", landmarks: str = "dlib",
                 landmark_options: dict | None = None, allow_download: bool = False, model: str | None = None,
                 morphable: Any = None):

        self.network = network
        self.encoding = encoding
        self.predictor = Predictor(network, device=device)
        self.norm = DceNormalization.from_dict(encoding.normalization)
        self.photo_options = PhotoOptions(landmarks=landmarks, landmark_options=dict(landmark_options or {}),
                                          allow_download=allow_download, model=model)
        self._morphable = morphable
        self._photo_encoder = None

    @classmethod
    def load(cls, checkpoint_uri: str, device: str = "cpu", **options: Any) -> "Refiner":
        """Load a stage checkpoint (or a run directory's last stage) and the encoding it records.
        options: landmarks ("dlib" | "face_alignment"), landmark_options, allow_download, model (3DMM)."""

        return cls(load_model(checkpoint_uri), encoding_of_checkpoint(checkpoint_uri), device=device, **options)

    @property
    def photo_encoder(self):
        if self._photo_encoder is None:
            self._photo_encoder = PhotoEncoder(self.encoding, self.photo_options, self._morphable)
        return self._photo_encoder

    def refine_photo(self, image: Any, landmarks: np.ndarray | None = None, name: str | None = None) -> RefinedFace:
        """Refine the (largest) face of a photo: a path/URI (EXIF orientation applied; a landmark file beside
        it is used), encoded bytes, a PIL image or an (H, W, 3) uint8 array. `landmarks`: (68, 2) iBUG pixels
        (col, row) of the photo as displayed; without them the configured detector finds them.
        Raises data.photos.PhotoError (file, stage, reason) when the photo cannot be refined."""

        source, lm_source = "<array>", "given" if landmarks is not None else ""
        if isinstance(image, str):
            source = image
            photo = read_photo(image, self.photo_options.max_pixels)
            if landmarks is None:
                given = sibling_landmarks(image)
                if given is not None:
                    landmarks, lm_source = given[0], f"file {given[1]}"
        elif isinstance(image, (bytes, bytearray)):
            source, photo = "<bytes>", decode_photo(bytes(image), "<bytes>", self.photo_options.max_pixels)
        else:
            photo = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
        scan_id = name or (source.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0] if source[0] != "<" else "photo")
        sample = self.photo_encoder.encode(photo, source, scan_id, landmarks, lm_source)
        return self.refine_sample(sample.row, extras_of(sample, photo, source))

    # refine_mesh(mesh, landmarks_3d, photo=None) — coarse meshes made by other tools — builds the sample
    # row and extras of the mesh (brought to the model's frame by its landmarks) and calls refine_sample,
    # as refine_photo does; the result then goes back to the mesh's own frame and units.

    def refine_sample(self, row: dict[str, Any], extra: dict[str, Any] | None = None) -> RefinedFace:
        """Refine one encoded sample (a data.schema row) — the step every input kind ends in."""

        imgs = decode_images(rows_to_table([row]))
        refined, kept = refine_decoded(self.predictor, imgs)
        return assemble(row, imgs["input"][0], imgs["input_mask"][0], refined[0], kept[0], self.norm, extra)

    def save(self, face: RefinedFace, folder: str, mesh_format: str = "ply") -> list[str]:
        """Write the face's files as the batch job does (meshes/, maps/, fits/, gallery/ under `folder`)."""

        return OutputWriter(folder, self.encoding.normalization, mesh_format).write(face)
