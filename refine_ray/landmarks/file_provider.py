"""Landmarks that come with the data (iBUG .pts, Bosphorus .lm2, menpo .ljson, JSON), optionally perturbed.

The noise option simulates a detector for benchmarks: Gaussian σ px, seeded per scan so that a rerun
(or another worker) draws exactly the same perturbation for the same scan.
"""
from __future__ import annotations

import zlib

import numpy as np

from refine_ray import storage
from refine_ray.landmarks import formats
from refine_ray.landmarks.base import LandmarkError, LandmarkProvider

SUFFIXES_2D = (".pts", ".lm2", ".ljson", ".json", ".txt", ".csv", ".npy")


class FileLandmarks(LandmarkProvider):
    """The scan's own 2D landmarks (read by the scan reader from sibling files), or, with `folder`,
    `<folder>/<scan_id>.{pts,lm2,ljson,json,txt,csv,npy}` (the scan id is sanitized: never a path from data)."""

    name = "file"

    def __init__(self, folder: str | None = None, noise_px: float = 0.0, seed: int = 0):
        if noise_px < 0:
            raise ValueError(f"noise_px must be >= 0, got {noise_px}")
        self.folder, self.noise_px, self.seed = folder, float(noise_px), int(seed)

    def _from_folder(self, scan) -> np.ndarray:
        base = storage.safe_name(scan.scan_id)
        for sfx in SUFFIXES_2D:
            uri = storage.join(self.folder, base + sfx)
            if storage.exists(uri):
                try:
                    pts = formats.read_landmarks(uri).points_2d
                except formats.LandmarkFormatError as exc:
                    raise LandmarkError(exc.source, exc.problem) from None
                if pts is None:
                    raise LandmarkError(uri, "file holds no 2D landmarks")
                return pts
        raise LandmarkError(scan.source, f"no landmark file {base}{{{','.join(SUFFIXES_2D)}}} in {self.folder}")

    def landmarks_for(self, scan, photo: np.ndarray | None = None) -> np.ndarray:
        pts = self._from_folder(scan) if self.folder else scan.landmarks_2d
        if pts is None:
            raise LandmarkError(scan.source, "the scan has no 2D landmark file (.pts/.lm2/.ljson/.json next to it)")
        pts = np.array(pts, dtype=np.float64)
        if pts.shape != (68, 2):
            raise LandmarkError(scan.source, f"expected (68, 2) landmarks, got {pts.shape}")
        if not np.isfinite(pts).any():
            raise LandmarkError(scan.source, "all landmarks are missing")
        if self.noise_px > 0:
            rng = np.random.default_rng([self.seed, zlib.crc32(f"{scan.dataset}/{scan.scan_id}".encode())])
            pts = pts + rng.normal(0.0, self.noise_px, pts.shape)     # NaN rows stay NaN
        return pts
