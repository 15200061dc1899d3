"""One interface for every source of 2D landmarks: `landmarks_for(scan, photo) -> (68, 2)` pixels (col, row)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refine_ray.errors import FileProblem


class LandmarkError(FileProblem):
    """No usable landmarks for a scan; the message names the scan's file and the reason."""


@dataclass
class PhotoLandmarks:
    """Landmarks found on a photo: (68, 2) pixels (col, row) of the face used, how many faces the
    detector saw (the largest is used; None when the provider cannot tell), its box and the provider."""

    points: np.ndarray
    faces_found: int | None = None
    box: tuple | None = None
    provider: str = ""


class LandmarkProvider:
    """Base of the providers. Batch jobs call `landmarks_for_batch`, which never raises for one bad item:
    it returns the LandmarkError in that item's place so the job can record it and go on."""

    name = "base"

    def landmarks_for(self, scan, photo: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def detect(self, photo: np.ndarray, source: str) -> PhotoLandmarks:
        """Landmarks of the largest face on a photo (no scan); LandmarkError names `source` when none."""
        from types import SimpleNamespace

        scan = SimpleNamespace(source=source, scan_id=source, dataset="photo", photo=photo, landmarks_2d=None)
        return PhotoLandmarks(np.asarray(self.landmarks_for(scan, photo), dtype=np.float64), provider=self.name)

    def landmarks_for_batch(self, scans, photos=None) -> list:
        photos = photos if photos is not None else [None] * len(scans)
        out = []
        for scan, photo in zip(scans, photos):
            try:
                out.append(self.landmarks_for(scan, photo))
            except LandmarkError as exc:
                out.append(exc)
        return out
