"""Landmark files of the face datasets: iBUG .pts, Bosphorus .lm2/.lm3, menpo .ljson, and a plain JSON.

Readers and writers share one in-memory convention (docs/INTERFACES.md): 2D points are photo pixels
(col, row) with the centre of pixel (r, c) at (c + 0.5, r + 0.5); 3D points are mm; a missing
landmark is a NaN row. Each file format's own origin convention is converted here, in one place:
- iBUG .pts (300-W): 1-based, pixel centres on integers (Matlab)  → ours = pts − 0.5
- menpo .ljson: (y, x) order, 0-based, pixel centres on integers  → ours = (x, y) + 0.5
- Bosphorus .lm2: (x, y) pixels, 0-based, pixel centres on integers → ours = lm2 + 0.5
Bosphorus labels are mapped to iBUG-68 indices where the anatomical point is the same.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

from refine_ray import storage

N_IBUG = 68


class LandmarkFormatError(ValueError):
    """A landmark file that cannot be read; the message names the file and the problem."""

    def __init__(self, source: str, problem: str):
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


# Bosphorus labels (as spelled in the .lm2/.lm3 files). "Left"/"right" are the subject's.
BOSPHORUS_LABELS = (
    "Outer left eyebrow", "Middle left eyebrow", "Inner left eyebrow",
    "Inner right eyebrow", "Middle right eyebrow", "Outer right eyebrow",
    "Outer left eye corner", "Inner left eye corner", "Inner right eye corner", "Outer right eye corner",
    "Nose saddle left", "Nose saddle right", "Left nose peak", "Nose tip", "Right nose peak",
    "Left mouth corner", "Upper lip outer middle", "Right mouth corner",
    "Upper lip inner middle", "Lower lip inner middle", "Lower lip outer middle",
    "Chin middle", "Ear lobe left", "Ear lobe right",
)

# Bosphorus label → 0-based iBUG-68 index, only where both name the same anatomical point.
# iBUG numbers the subject's right side first (image left). Nose saddles, nose peaks (alare)
# and ear lobes have no iBUG-68 counterpart and are left out on purpose.
BOSPHORUS_TO_IBUG68 = {
    "Outer right eyebrow": 17, "Middle right eyebrow": 19, "Inner right eyebrow": 21,
    "Inner left eyebrow": 22, "Middle left eyebrow": 24, "Outer left eyebrow": 26,
    "Outer right eye corner": 36, "Inner right eye corner": 39,
    "Inner left eye corner": 42, "Outer left eye corner": 45,
    "Nose tip": 30,
    "Right mouth corner": 48, "Upper lip outer middle": 51, "Left mouth corner": 54,
    "Lower lip outer middle": 57, "Upper lip inner middle": 62, "Lower lip inner middle": 66,
    "Chin middle": 8,
}


@dataclass
class LandmarkSet:
    """What a landmark file holds, in the in-memory convention: (68,2) pixels and/or (68,3) mm."""

    points_2d: np.ndarray | None = None
    points_3d: np.ndarray | None = None


def _err(uri: str, problem: str) -> LandmarkFormatError:
    return LandmarkFormatError(str(uri), problem)


def _read_text(uri: str) -> str:
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise _err(uri, "file not found") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _err(uri, "not a text file (invalid UTF-8)") from None


def _fmt(v: float) -> str:
    return "nan" if not math.isfinite(v) else repr(float(v))


def _as_points(points, dims: tuple[int, ...], what: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] not in dims:
        raise ValueError(f"{what}: expected an (N, {'|'.join(map(str, dims))}) array, got shape {arr.shape}")
    return arr


# ---------------------------------------------------------------- iBUG .pts

def parse_pts(text: str, source: str = "<pts>") -> np.ndarray:
    """iBUG/300-W .pts text → (N, 2) pixel (col, row), pixel centres at +0.5."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    n = None
    body_start = body_end = None
    for i, ln in enumerate(lines):
        low = ln.lower()
        if low.startswith("n_points"):
            try:
                n = int(ln.split(":", 1)[1])
            except (IndexError, ValueError):
                raise _err(source, f"bad n_points line {ln!r}") from None
        elif ln == "{":
            body_start = i + 1
        elif ln == "}":
            body_end = i
            break
    if n is None or body_start is None or body_end is None:
        raise _err(source, "not an iBUG .pts file (needs 'n_points:' and a { … } block)")
    rows = lines[body_start:body_end]
    if len(rows) != n:
        raise _err(source, f"n_points says {n} but the block has {len(rows)} rows (truncated?)")
    try:
        pts = np.array([[float(v) for v in r.split()] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise _err(source, f"non-numeric coordinate ({exc})") from None
    if pts.shape != (n, 2):
        raise _err(source, f"every row must hold 2 numbers, got shape {pts.shape}")
    return pts - 0.5


def format_pts(points_2d) -> str:
    pts = _as_points(points_2d, (2,), "pts points") + 0.5
    body = "\n".join(f"{_fmt(x)} {_fmt(y)}" for x, y in pts)
    return f"version: 1\nn_points: {len(pts)}\n{{\n{body}\n}}\n"


def read_pts(uri: str) -> np.ndarray:
    return parse_pts(_read_text(uri), str(uri))


def write_pts(uri: str, points_2d) -> None:
    storage.atomic_write_text(uri, format_pts(points_2d))


# ---------------------------------------------------------------- Bosphorus .lm2 / .lm3

def parse_bosphorus_landmarks(text: str, dims: int, source: str = "<lm>") -> dict[str, np.ndarray]:
    """Bosphorus .lm2 (dims=2) / .lm3 (dims=3): a header, 'N landmarks:', then label line + coordinate line pairs."""
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    declared = None
    start = 0
    for i, ln in enumerate(lines):
        if ln.lower().endswith("landmarks:"):
            try:
                declared = int(ln.split()[0])
            except ValueError:
                raise _err(source, f"bad landmark count line {ln!r}") from None
            start = i + 1
            break
    if declared is None:
        raise _err(source, "not a Bosphorus landmark file (no 'N landmarks:' line)")
    body = lines[start:]
    if len(body) != 2 * declared:
        raise _err(source, f"declares {declared} landmarks but holds {len(body)} lines "
                           f"(expected label/coordinate pairs: {2 * declared})")
    out: dict[str, np.ndarray] = {}
    for k in range(declared):
        label, coords = body[2 * k], body[2 * k + 1]
        try:
            values = np.array([float(v) for v in coords.split()], dtype=np.float64)
        except ValueError:
            raise _err(source, f"landmark {label!r}: non-numeric coordinates {coords!r}") from None
        if values.shape != (dims,):
            raise _err(source, f"landmark {label!r}: expected {dims} numbers, got {values.size}")
        out[label] = values
    return out


def format_bosphorus_landmarks(points: dict[str, np.ndarray], dims: int) -> str:
    kind = "2D" if dims == 2 else "3D"
    lines = [f"# Bosphorus Database - {kind} landmark file (written by refine-ray)", "#",
             f"{len(points)} landmarks:"]
    for label, p in points.items():
        p = np.asarray(p, dtype=np.float64).reshape(-1)
        if p.shape != (dims,):
            raise ValueError(f"landmark {label!r}: expected {dims} numbers, got {p.size}")
        if "\n" in label:
            raise ValueError(f"landmark label {label!r} contains a newline")
        lines += [label, " ".join(_fmt(v) for v in p)]
    return "\n".join(lines) + "\n"


def read_lm2(uri: str) -> dict[str, np.ndarray]:
    """Bosphorus .lm2 → {label: (col, row)} in our pixel convention (+0.5)."""
    return {k: v + 0.5 for k, v in parse_bosphorus_landmarks(_read_text(uri), 2, str(uri)).items()}


def write_lm2(uri: str, points: dict[str, np.ndarray]) -> None:
    shifted = {k: np.asarray(v, dtype=np.float64) - 0.5 for k, v in points.items()}
    storage.atomic_write_text(uri, format_bosphorus_landmarks(shifted, 2))


def read_lm3(uri: str) -> dict[str, np.ndarray]:
    """Bosphorus .lm3 → {label: (x, y, z) mm}."""
    return parse_bosphorus_landmarks(_read_text(uri), 3, str(uri))


def write_lm3(uri: str, points: dict[str, np.ndarray]) -> None:
    storage.atomic_write_text(uri, format_bosphorus_landmarks(points, 3))


def bosphorus_to_ibug68(points: dict[str, np.ndarray]) -> np.ndarray:
    """{Bosphorus label: point} → (68, D) in iBUG order, NaN where Bosphorus has no such point."""
    dims = len(next(iter(points.values()))) if points else 2
    out = np.full((N_IBUG, dims), np.nan)
    for label, idx in BOSPHORUS_TO_IBUG68.items():
        if label in points:
            out[idx] = points[label]
    return out


def ibug68_to_bosphorus(points68, extra: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """(68, D) iBUG points → {Bosphorus label: point} for the corresponding labels (plus `extra` ones), file order."""
    pts = np.asarray(points68, dtype=np.float64)
    if pts.shape[0] != N_IBUG:
        raise ValueError(f"expected 68 iBUG points, got {pts.shape[0]}")
    merged = {label: pts[idx] for label, idx in BOSPHORUS_TO_IBUG68.items() if np.all(np.isfinite(pts[idx]))}
    merged.update(extra or {})
    return {label: merged[label] for label in BOSPHORUS_LABELS if label in merged}


# ---------------------------------------------------------------- menpo .ljson

def parse_ljson(text: str, source: str = "<ljson>") -> np.ndarray:
    """menpo .ljson (v1, v2, v3) → (N, 2) pixels (col, row) or (N, 3) as stored; null → NaN."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _err(source, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    pts = None
    if isinstance(doc, dict):
        lm = doc.get("landmarks")
        if isinstance(lm, dict) and "points" in lm:                       # v2
            pts = lm["points"]
        elif isinstance(lm, dict) and isinstance(lm.get("groups"), dict):  # v3: first group
            groups = list(lm["groups"].values())
            if groups and isinstance(groups[0], dict):
                pts = groups[0].get("landmarks", {}).get("points")
        elif isinstance(doc.get("groups"), list):                          # v1
            pts = [p["point"] for g in doc["groups"] for p in g.get("landmarks", [])]
    if not isinstance(pts, list):
        raise _err(source, "no landmark points found (expected menpo ljson 'landmarks.points')")
    try:
        arr = np.array([[np.nan if v is None else float(v) for v in p] for p in pts], dtype=np.float64)
    except (TypeError, ValueError):
        raise _err(source, "landmark points must be lists of numbers or null") from None
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise _err(source, f"points must be 2D or 3D, got shape {arr.shape}")
    if arr.shape[1] == 2:
        arr = arr[:, ::-1] + 0.5        # menpo (y, x), centres on integers → (col, row)
    return arr


def format_ljson(points) -> str:
    pts = _as_points(points, (2, 3), "ljson points")
    if pts.shape[1] == 2:
        pts = pts[:, ::-1] - 0.5
    rows = [[None if not math.isfinite(v) else float(v) for v in p] for p in pts]
    doc = {"version": 2, "labels": [{"label": "all", "mask": list(range(len(rows)))}],
           "landmarks": {"points": rows, "connectivity": []}}
    return json.dumps(doc)


def read_ljson(uri: str) -> np.ndarray:
    return parse_ljson(_read_text(uri), str(uri))


def write_ljson(uri: str, points) -> None:
    storage.atomic_write_text(uri, format_ljson(points))


# ---------------------------------------------------------------- plain JSON

def parse_json(text: str, source: str = "<json>") -> LandmarkSet:
    """{"landmarks_2d": [[col,row]…], "landmarks_3d": [[x,y,z]…]} (either may be absent; null → NaN),
    or a bare list of points (2D or 3D by width). Pixel convention is ours (no shift)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _err(source, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None

    def to_arr(rows, dims):
        try:
            arr = np.array([[np.nan if v is None else float(v) for v in p] for p in rows], dtype=np.float64)
        except (TypeError, ValueError):
            raise _err(source, "landmarks must be lists of numbers or null") from None
        if arr.ndim != 2 or (dims and arr.shape[1] != dims) or arr.shape[1] not in (2, 3):
            raise _err(source, f"bad landmark array shape {arr.shape}")
        return arr

    if isinstance(doc, list):
        arr = to_arr(doc, None)
        return LandmarkSet(points_2d=arr if arr.shape[1] == 2 else None, points_3d=arr if arr.shape[1] == 3 else None)
    if not isinstance(doc, dict) or not ({"landmarks_2d", "landmarks_3d"} & set(doc)):
        raise _err(source, "expected a list of points or an object with 'landmarks_2d'/'landmarks_3d'")
    p2 = to_arr(doc["landmarks_2d"], 2) if doc.get("landmarks_2d") is not None else None
    p3 = to_arr(doc["landmarks_3d"], 3) if doc.get("landmarks_3d") is not None else None
    return LandmarkSet(points_2d=p2, points_3d=p3)


def format_json(points_2d=None, points_3d=None) -> str:
    doc: dict = {"convention": "refine-ray: 2D = pixel (col,row), pixel centre at +0.5; 3D = mm; null = missing"}
    for key, pts, d in (("landmarks_2d", points_2d, (2,)), ("landmarks_3d", points_3d, (3,))):
        if pts is not None:
            arr = _as_points(pts, d, key)
            doc[key] = [[None if not math.isfinite(v) else float(v) for v in p] for p in arr]
    return json.dumps(doc)


def read_json(uri: str) -> LandmarkSet:
    return parse_json(_read_text(uri), str(uri))


def write_json(uri: str, points_2d=None, points_3d=None) -> None:
    storage.atomic_write_text(uri, format_json(points_2d, points_3d))


# ---------------------------------------------------------------- dispatch

LANDMARK_SUFFIXES = (".pts", ".lm2", ".lm3", ".ljson", ".json")


def read_landmarks(uri: str) -> LandmarkSet:
    """Any supported landmark file → LandmarkSet in iBUG-68 order (Bosphorus labels mapped, others NaN)."""
    suffix = os.path.splitext(str(uri))[1].lower()
    if suffix == ".pts":
        return LandmarkSet(points_2d=read_pts(uri))
    if suffix == ".lm2":
        return LandmarkSet(points_2d=bosphorus_to_ibug68(read_lm2(uri)))
    if suffix == ".lm3":
        return LandmarkSet(points_3d=bosphorus_to_ibug68(read_lm3(uri)))
    if suffix == ".ljson":
        arr = read_ljson(uri)
        return LandmarkSet(points_2d=arr) if arr.shape[1] == 2 else LandmarkSet(points_3d=arr)
    if suffix == ".json":
        return read_json(uri)
    raise _err(uri, f"unknown landmark file type {suffix!r} (supported: {', '.join(LANDMARK_SUFFIXES)})")
