"""Landmark files as they exist: iBUG .pts, Bosphorus .lm2/.lm3, menpo .ljson (v1, v2, v3), our JSON, and plain
N×2 / N×3 tables (.txt, .csv, .npy).

Readers and writers share one in-memory convention (docs/INTERFACES.md): 2D points are photo pixels
(col, row) with the centre of pixel (r, c) at (c + 0.5, r + 0.5); 3D points are mm; a missing
landmark is a NaN row. Each file format's own origin convention is converted here, in one place:
- iBUG .pts (300-W): 1-based, pixel centres on integers (Matlab)  → ours = pts − 0.5
- menpo .ljson: (y, x) order, 0-based, pixel centres on integers  → ours = (x, y) + 0.5
- Bosphorus .lm2: (x, y) pixels, 0-based, pixel centres on integers → ours = lm2 + 0.5
- plain tables: (x, y) = (col, row), 0-based, pixel centres on integers (OpenCV, dlib) → ours = + 0.5
Bosphorus labels are mapped to iBUG-68 indices where the anatomical point is the same. Every 68-point set
read through `read_landmarks` passes `check_ibug68` (count and anatomical layout), so a file in another
point order fails with a message instead of giving a silently wrong fit.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from refine_ray import storage
from refine_ray.errors import FileProblem

N_IBUG = 68
MAX_LANDMARK_FILE_BYTES = 16 * 1024 * 1024   # a landmark file is kilobytes; refuse to read a huge one into memory


class LandmarkFormatError(FileProblem):
    """A landmark file that cannot be read; the message names the file and the problem."""


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


def _read_bytes(uri: str) -> bytes:
    try:
        fs, path = storage.filesystem(str(uri))
        size = fs.size(path)
        if size is not None and size > MAX_LANDMARK_FILE_BYTES:
            raise _err(uri, f"{size} bytes is too large for a landmark file (limit {MAX_LANDMARK_FILE_BYTES})")
        return storage.read_bytes(uri)
    except FileNotFoundError:
        raise _err(uri, "file not found") from None


def _read_text(uri: str) -> str:
    data = _read_bytes(uri)
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
    """iBUG/300-W .pts text → (N, 2) pixel (col, row), pixel centres at +0.5; rows of 3 numbers → (N, 3) 3D points."""
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
    if pts.ndim != 2 or pts.shape[0] != n or pts.shape[1] not in (2, 3):
        raise _err(source, f"every row must hold 2 numbers (or 3 for 3D points), got shape {pts.shape}")
    return pts - 0.5 if pts.shape[1] == 2 else pts     # 3D .pts (x y z per row): stored as is


def format_pts(points) -> str:
    pts = _as_points(points, (2, 3), "pts points")
    pts = pts + 0.5 if pts.shape[1] == 2 else pts
    body = "\n".join(" ".join(_fmt(v) for v in p) for p in pts)
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

def _ljson_groups(doc) -> dict[str, list]:
    """{group name: point rows} of a menpo .ljson document, in file order.

    v1: {"groups": [{"label", "landmarks": [{"point": …}]}]} — the groups are labels of ONE point set
        (jaw, eyes, …) that partition it in order, so they are concatenated into one group "all";
    v2: {"landmarks": {"points": …}, "labels": […]} — one point set;
    v3 (and the layout some tools write with "version": 2): {"groups": {"<name>": {"landmarks": {"points": …}}}}.
    """
    if not isinstance(doc, dict):
        return {}
    groups = doc.get("groups")
    if isinstance(groups, list):                                          # v1
        pts = []
        for g in groups:
            for p in (g.get("landmarks") or []) if isinstance(g, dict) else []:
                pts.append(p.get("point") if isinstance(p, dict) else None)
        return {"all": pts} if pts else {}
    if isinstance(groups, dict):                                          # v3 layout
        return {str(k): g["landmarks"]["points"] for k, g in groups.items()
                if isinstance(g, dict) and isinstance(g.get("landmarks"), dict)
                and isinstance(g["landmarks"].get("points"), list)}
    lm = doc.get("landmarks")
    if isinstance(lm, dict) and isinstance(lm.get("points"), list):       # v2
        return {"all": lm["points"]}
    if isinstance(lm, dict) and isinstance(lm.get("groups"), dict):       # v3 nested under "landmarks"
        return _ljson_groups({"groups": lm["groups"]})
    return {}


def _pick_group(groups: dict[str, list], group: str | None, source: str) -> list:
    """The named group; else the only one; else the first with 68 points."""
    listing = ", ".join(f"{k!r} ({len(v)} points)" for k, v in groups.items())
    if group is not None:
        if group not in groups:
            raise _err(source, f"no landmark group {group!r} (groups in the file: {listing})")
        return groups[group]
    if len(groups) == 1:
        return next(iter(groups.values()))
    for pts in groups.values():
        if len(pts) == N_IBUG:
            return pts
    raise _err(source, f"several landmark groups and none has 68 points ({listing}); choose one with landmark_group")


def parse_ljson(text: str, source: str = "<ljson>", group: str | None = None) -> np.ndarray:
    """menpo .ljson (v1, v2, v3) → (N, 2) pixels (col, row) or (N, 3) as stored; null → NaN.

    `group` picks a named group (v3 files hold several); by default the only group, else the first of 68 points.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _err(source, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    groups = _ljson_groups(doc)
    if not groups:
        raise _err(source, "no landmark points found (expected a menpo ljson file: 'landmarks.points' (v2), "
                           "'groups': {name: {'landmarks': {'points'}}} (v3) or 'groups': [...] (v1))")
    pts = _pick_group(groups, group, source)
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


def read_ljson(uri: str, group: str | None = None) -> np.ndarray:
    return parse_ljson(_read_text(uri), str(uri), group)


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


# ---------------------------------------------------------------- plain N×2 / N×3 tables

PLAIN_SUFFIXES = (".txt", ".csv", ".npy")
_SEPARATORS = re.compile(r"[,;\s]+")


def _plain_array(arr: np.ndarray, source: str) -> np.ndarray:
    if arr.ndim != 2 or arr.shape[1] not in (2, 3) or len(arr) == 0:
        raise _err(source, f"expected an N×2 (pixels) or N×3 (3D) table of landmarks, got shape {arr.shape}")
    if arr.shape[1] == 2:
        arr = arr + 0.5                  # (x, y) pixels with centres on integers (OpenCV / dlib) → ours
    return arr


def parse_plain(text: str, source: str = "<txt>") -> np.ndarray:
    """Rows of 2 or 3 numbers separated by commas, semicolons or spaces; one header line and # comments allowed;
    'nan' = missing."""
    rows: list[list[float]] = []
    header_seen = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        fields = [f for f in _SEPARATORS.split(body) if f]
        try:
            rows.append([float(f) for f in fields])
        except ValueError:
            if not rows and not header_seen:
                header_seen = True       # e.g. "x,y,z"
                continue
            raise _err(source, f"line {lineno}: non-numeric value in {body[:40]!r}") from None
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise _err(source, f"rows hold different numbers of values ({sorted(widths)})")
    return _plain_array(np.array(rows, dtype=np.float64).reshape(len(rows), -1), source)


def read_plain(uri: str) -> np.ndarray:
    """A plain table file: .txt / .csv text, or a NumPy .npy array (no pickles)."""
    if str(uri).lower().endswith(".npy"):
        try:
            arr = np.load(io.BytesIO(_read_bytes(uri)), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise _err(uri, f"not a readable .npy array ({exc})") from None
        if not np.issubdtype(arr.dtype, np.number):
            raise _err(uri, f"expected a numeric array, got dtype {arr.dtype}")
        return _plain_array(np.asarray(arr, dtype=np.float64), str(uri))
    return parse_plain(_read_text(uri), str(uri))


# ---------------------------------------------------------------- iBUG-68 layout check

_RIGHT_EYE, _LEFT_EYE = range(36, 42), range(42, 48)
_MOUTH, _BROWS = range(48, 68), range(17, 27)
_LEFT_RIGHT_PAIRS = ((36, 45), (39, 42), (48, 54), (17, 26), (0, 16), (31, 35))   # (subject's right, left)


def check_ibug68(points, source: str = "<landmarks>") -> None:
    """Raise LandmarkFormatError unless `points` look like 68 landmarks in iBUG order.

    Count, then an anatomical layout that holds in any pose (tested on the face's own axes, not the image's):
    brows above the eyes, nose tip between eyes and mouth, chin below the mouth, each subject-right point on
    the same side as the right eye, and — the check a mirrored point order fails — the subject's left on the
    image right (2D), or the nose in front of the eye/mouth plane (3D). Missing (NaN) points are skipped.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3):
        raise _err(source, f"landmarks must be (68, 2) or (68, 3), got shape {pts.shape}")
    if len(pts) != N_IBUG:
        raise _err(source, f"expected 68 landmarks in iBUG order, got {len(pts)}")
    ok = np.isfinite(pts).all(axis=1)
    P = np.stack([pts[:, 0], -pts[:, 1]], axis=1) if pts.shape[1] == 2 else pts   # 2D: y up

    def centre(idx):
        idx = [i for i in idx if ok[i]]
        return P[idx].mean(axis=0) if idx else None

    r_eye, l_eye, mouth = centre(_RIGHT_EYE), centre(_LEFT_EYE), centre(_MOUTH)
    if r_eye is None or l_eye is None or mouth is None:
        return                                     # too sparse to judge (e.g. a few Bosphorus points)
    up = (r_eye + l_eye) / 2 - mouth
    d = float(np.linalg.norm(up))
    if not d > 0:
        raise _err(source, "landmark layout is degenerate (eyes and mouth coincide)")
    u = up / d

    def bad(problem):
        return _err(source, f"not 68 landmarks in iBUG order: {problem}")

    brows = centre(_BROWS)
    if brows is not None and float((brows - (r_eye + l_eye) / 2) @ u) <= 0:
        raise bad("the eyebrows (17-26) are not above the eyes (36-47)")
    if ok[30] and not 0 < float((P[30] - mouth) @ u) < d:
        raise bad("the nose tip (30) is not between the eyes and the mouth")
    if ok[8] and float((P[8] - mouth) @ u) >= 0:
        raise bad("the chin (8) is not below the mouth (48-67)")
    across = l_eye - r_eye
    across = across - (across @ u) * u
    if np.linalg.norm(across) < 0.15 * d:
        return                                     # near-profile view: left and right overlap
    x = across / np.linalg.norm(across)
    for right, left in _LEFT_RIGHT_PAIRS:
        if ok[right] and ok[left] and float((P[left] - P[right]) @ x) <= 0:
            raise bad(f"points {right} and {left} are on the wrong sides of the face (left/right mixed up)")
    if pts.shape[1] == 2:
        if x[0] * u[1] - x[1] * u[0] <= 0:
            raise bad("the subject's left eye (42-47) is on the image left: the point order is mirrored")
    else:
        forward = np.cross(x, u)
        plane = [i for i in (36, 45, 48, 54) if ok[i]]
        if ok[30] and len(plane) >= 3 and float((P[30] - P[plane].mean(axis=0)) @ forward) <= 0:
            raise bad("the nose tip points away from the viewer in a right-handed frame: the point order is "
                      "mirrored (or the coordinates are left-handed)")


# ---------------------------------------------------------------- dispatch

LANDMARK_SUFFIXES = (".pts", ".lm2", ".lm3", ".ljson", ".json") + PLAIN_SUFFIXES


def read_landmarks(uri: str, group: str | None = None, check: bool = True) -> LandmarkSet:
    """Any supported landmark file → LandmarkSet in iBUG-68 order (Bosphorus labels mapped, others NaN).

    group: the .ljson group to use (default: the only one, else the first of 68 points).
    check: 68-point sets must pass `check_ibug68` (point count and layout).
    """
    suffix = os.path.splitext(str(uri))[1].lower()
    if suffix == ".pts":
        arr = read_pts(uri)
        out = LandmarkSet(points_2d=arr) if arr.shape[1] == 2 else LandmarkSet(points_3d=arr)
    elif suffix == ".lm2":
        return LandmarkSet(points_2d=bosphorus_to_ibug68(read_lm2(uri)))
    elif suffix == ".lm3":
        return LandmarkSet(points_3d=bosphorus_to_ibug68(read_lm3(uri)))
    elif suffix in (".ljson",) or suffix in PLAIN_SUFFIXES:
        arr = read_ljson(uri, group) if suffix == ".ljson" else read_plain(uri)
        out = LandmarkSet(points_2d=arr) if arr.shape[1] == 2 else LandmarkSet(points_3d=arr)
    elif suffix == ".json":
        out = read_json(uri)
    else:
        raise _err(uri, f"unknown landmark file type {suffix!r} (supported: {', '.join(LANDMARK_SUFFIXES)})")
    if check:
        for arr in (out.points_2d, out.points_3d):
            if arr is not None:
                check_ibug68(arr, str(uri))
    return out
