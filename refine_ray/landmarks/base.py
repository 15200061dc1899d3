"""One interface for every source of 2D landmarks: `landmarks_for(scan, photo) -> (68, 2)` pixels (col, row)."""
from __future__ import annotations

import numpy as np


class LandmarkError(ValueError):
    """No usable landmarks for a scan; the message names the scan's file and the reason."""

    def __init__(self, source: str, problem: str):
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class LandmarkProvider:
    """Base of the providers. Batch jobs call `landmarks_for_batch`, which never raises for one bad item:
    it returns the LandmarkError in that item's place so the job can record it and go on."""

    name = "base"

    def landmarks_for(self, scan, photo: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def landmarks_for_batch(self, scans, photos=None) -> list:
        photos = photos if photos is not None else [None] * len(scans)
        out = []
        for scan, photo in zip(scans, photos):
            try:
                out.append(self.landmarks_for(scan, photo))
            except LandmarkError as exc:
                out.append(exc)
        return out
