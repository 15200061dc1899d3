"""Deterministic pose draws and subject splits: pure functions of ids and a seed, so that re-runs,
resumed runs and different workers all agree without sharing state."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from refine_ray.geometry.projection import rotation_from_angles


def _stable_int(*parts: object) -> int:
    """A 64-bit integer from text that is the same in every process (Python's hash() is salted)."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "little")


@dataclass(frozen=True)
class Pose:
    index: int
    yaw: float    # degrees, about the camera y axis (up)
    pitch: float  # degrees, about the camera x axis (right)
    roll: float   # degrees, about the camera z axis (toward the camera)

    @property
    def rotation(self) -> np.ndarray:
        return rotation_from_angles(self.yaw, self.pitch, self.roll)


def sample_poses(scan_key: str, count: int, yaw_deg: float, pitch_deg: float, roll_deg: float, seed: int) -> list[Pose]:
    """Pose 0 (original) plus `count` uniform draws in ±ranges, determined by (seed, scan_key) alone."""
    rng = np.random.default_rng(_stable_int("poses", seed, scan_key))
    poses = [Pose(0, 0.0, 0.0, 0.0)]
    limits = np.array([yaw_deg, pitch_deg, roll_deg], dtype=float)
    for i in range(count):
        yaw, pitch, roll = rng.uniform(-limits, limits)
        poses.append(Pose(i + 1, float(yaw), float(pitch), float(roll)))
    return poses


def assign_split(subject_id: str, mode: str = "subject", train_fraction: float = 2.0 / 3.0, seed: int = 0) -> str:
    """'train' or 'test' for a subject: a seeded hash, so every scan of a subject lands on one side
    (subject-disjoint) and the answer never depends on which other scans exist or their order."""
    if mode == "all-test":
        return "test"
    if mode == "all-train":
        return "train"
    if mode != "subject":
        raise ValueError(f"unknown split mode {mode!r} (subject, all-test, all-train)")
    u = _stable_int("split", seed, subject_id) / 2.0**64
    return "train" if u < train_fraction else "test"


def noise_rng(scan_key: str, seed: int) -> np.random.Generator:
    """Per-scan generator for landmark noise, stable across runs and workers."""
    return np.random.default_rng(_stable_int("landmark-noise", seed, scan_key))
