"""`read_scan(uri)` and `discover_scans(root)`: one entry point for every scan format, local or s3://.

A scan is a primary file (`.abs`, `.abs.gz`, `.bnt`, `.obj`, `.ply`, `.wrl`) plus siblings that
share its base name: a photo (`.ppm`/`.png`/`.jpg`) and landmarks (`.pts`, `.lm2`, `.lm3`, `.ljson`,
`.json`). FRGC has no expression in its file names; a folder-level `scans.csv` (written by the
synthesizer, or by a user from the FRGC metadata) supplies `scan_id,subject_id,expression`.
"""
from __future__ import annotations

import csv
import glob as _glob
import io
import posixpath
from functools import lru_cache

import numpy as np
from PIL import Image, UnidentifiedImageError

from refine_ray import storage
from refine_ray.landmarks import formats
from refine_ray.scans import bosphorus, frgc, generic, limits
from refine_ray.scans.record import Scan, ScanFormatError

PRIMARY_SUFFIXES = (".abs.gz", ".abs", ".bnt", ".obj", ".ply", ".wrl", ".glb", ".gltf")
PHOTO_SUFFIXES = (".ppm", ".png", ".jpg", ".jpeg")            # range grids: the scanner's registered photo
MESH_PHOTO_SUFFIXES = tuple(".photo" + s for s in PHOTO_SUFFIXES)   # meshes: only `<name>.photo.<ext>`
UNITS_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
LANDMARK_2D_ORDER = (".pts", ".ljson", ".json", ".lm2", ".txt", ".csv", ".npy")
LANDMARK_3D_ORDER = (".lm3", ".json", ".ljson", ".pts", ".txt", ".csv", ".npy")
METADATA_NAME = "scans.csv"


def split_name(uri: str) -> tuple[str, str, str]:
    """(folder, base name, primary suffix) of a scan URI; suffix '' if not a scan file."""
    uri = str(uri)
    folder, name = uri.rsplit("/", 1) if "/" in uri else (".", uri)
    low = name.lower()
    for sfx in PRIMARY_SUFFIXES:
        if low.endswith(sfx):
            return folder, name[: -len(sfx)], sfx
    return folder, name, ""


def discover_scans(root_uri: str) -> list[str]:
    """Primary file URI of every scan under a folder or bucket prefix, sorted (an .abs next to its .abs.gz counts once)."""
    found = storage.list_files(root_uri, suffixes=PRIMARY_SUFFIXES)
    chosen: dict[tuple[str, str], str] = {}
    for uri in found:
        folder, base, sfx = split_name(uri)
        if sfx == ".abs.gz" and (folder, base) in chosen:
            continue
        chosen[(folder, base)] = uri
    return sorted(chosen.values())


def _siblings(folder: str, base: str) -> dict[str, str]:
    """suffix (lower case) → URI of files `base.*` in `folder` (one prefix listing, also on S3)."""
    fs, path = storage.filesystem(storage.join(folder, base))
    out = {}
    # Locally the standard glob (one scandir, names only): fsspec's glob stats every file of the folder,
    # ~150 stat calls per scan here and O(folder size) per scan in a folder of thousands of scans.
    matches = fs.glob(_glob.escape(path) + ".*") if storage.is_remote(folder) else _glob.glob(_glob.escape(path) + ".*")
    for p in matches:
        name = posixpath.basename(p)
        sfx = name[len(base):].lower()
        out[sfx] = storage._as_uri(folder, p) if storage.is_remote(folder) else p
    return out


@lru_cache(maxsize=64)
def _folder_metadata(folder: str) -> dict[str, dict[str, str]]:
    uri = storage.join(folder, METADATA_NAME)
    try:
        text = storage.read_text(uri)
    except (FileNotFoundError, UnicodeDecodeError):
        return {}
    return {row["scan_id"]: row for row in csv.DictReader(io.StringIO(text)) if row.get("scan_id")}


def _read_capped(uri: str) -> bytes:
    """The bytes of a scan file, refused unread when it is larger than limits.MAX_FILE_BYTES."""
    fs, path = storage.filesystem(uri)
    limits.check_file_size(int(fs.size(path) or 0), uri)
    return storage.read_bytes(uri)


def _read_photo(uri: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(_read_capped(uri))) as im:   # reads the header only
            if im.width * im.height > limits.MAX_PHOTO_PIXELS:
                raise ScanFormatError(uri, f"photo of {im.width}×{im.height} pixels exceeds the limit of "
                                           f"{limits.MAX_PHOTO_PIXELS} (refine_ray.scans.limits.MAX_PHOTO_PIXELS)")
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ScanFormatError(uri, f"unreadable photo ({exc})") from None


def _landmarks(sibs: dict[str, str], group: str | None = None):
    """(2D (68,2) or None, 3D (68,3) or None) from the first sibling landmark file that has each."""
    found = {2: None, 3: None}
    for dims, order in ((2, LANDMARK_2D_ORDER), (3, LANDMARK_3D_ORDER)):
        for sfx in order:
            if found[dims] is not None or sfx not in sibs:
                continue
            try:
                ls = formats.read_landmarks(sibs[sfx], group=group)
            except formats.LandmarkFormatError as exc:
                raise ScanFormatError(exc.source, exc.problem) from None
            arr = ls.points_2d if dims == 2 else ls.points_3d
            if arr is not None and arr.shape[0] != 68:
                raise ScanFormatError(sibs[sfx], f"expected 68 landmarks (iBUG order), got {arr.shape[0]}")
            found[dims] = arr
    return found[2], found[3]


def read_scan(uri: str, landmark_group: str | None = None, units: str = "mm") -> Scan:
    """Read one scan (any supported format, local or s3://) into a Scan record in mm; bad files → ScanFormatError.

    landmark_group: the group of a multi-group menpo .ljson to use (default: the only one / first of 68 points).
    units: the unit of the file's coordinates and 3D landmarks ('mm', 'cm' or 'm').
    Registered photo: a range grid's same-name image (FRGC .ppm, Bosphorus .png); for a mesh only
    `<name>.photo.{png,jpg,jpeg,ppm}`, and never an image the mesh itself references (its texture atlas).
    """
    uri = str(uri)
    if units not in UNITS_MM:
        raise ValueError(f"units must be one of {sorted(UNITS_MM)}, got {units!r}")
    mm = UNITS_MM[units]
    folder, base, sfx = split_name(uri)
    if not sfx:
        raise ScanFormatError(uri, f"not a scan file (supported: {', '.join(PRIMARY_SUFFIXES)})")
    try:
        data = _read_capped(uri)
    except FileNotFoundError:
        raise ScanFormatError(uri, "file not found") from None
    sibs = _siblings(folder, base)
    l2, l3 = _landmarks(sibs, landmark_group)
    l3 = None if l3 is None else l3 * mm
    extra: dict = {"units": units}

    if sfx not in (".abs", ".abs.gz", ".bnt"):
        m = generic.read_mesh_data(uri, data)
        photo_uri = next((sibs[s] for s in MESH_PHOTO_SUFFIXES
                          if s in sibs and posixpath.basename(sibs[s]) not in m.referenced), None)
        if photo_uri:
            extra["photo_uri"] = photo_uri
        if m.texture is not None:
            extra["texture_files"] = sorted(m.referenced)
        extra["referenced"] = sorted(m.referenced)   # never a photo of the face, whatever their names
        meta = _folder_metadata(folder).get(base, {})
        return Scan(scan_id=base, subject_id=meta.get("subject_id") or base, dataset=meta.get("dataset") or "mesh",
                    source=uri, vertices=m.vertices * mm, faces=m.faces,
                    photo=_read_photo(photo_uri) if photo_uri else None, vertex_colors=m.colors,
                    landmarks_2d=l2 if photo_uri else None, landmarks_3d=l3, uv=m.uv, texture=m.texture,
                    expression=meta.get("expression") or None, extra=extra)

    photo_uri = next((sibs[s] for s in PHOTO_SUFFIXES if s in sibs), None)
    photo = _read_photo(photo_uri) if photo_uri else None
    if photo_uri:
        extra["photo_uri"] = photo_uri
    if sfx in (".abs", ".abs.gz"):
        grid, valid = frgc.parse_abs(data, uri)
        meta = _folder_metadata(folder).get(base, {})
        dataset, subject, expression = "frgc", meta.get("subject_id") or base[:5], meta.get("expression") or None
        uv = None
    else:
        grid, valid, uv, stored_name = bosphorus.parse_bnt(data, uri)
        dataset = "bosphorus"
        subject, expression, occlusion = bosphorus.parse_name(base)
        extra["photo_name_in_file"] = stored_name          # informational only: never used as a path
        if occlusion:
            extra["occlusion"] = occlusion
    grid = grid * mm
    rows, cols = np.nonzero(valid)
    vertex_pixels = None
    colors = None
    if photo is not None:
        if uv is not None:
            vuv = uv[valid]
            vertex_pixels = np.stack([vuv[:, 0] * photo.shape[1], vuv[:, 1] * photo.shape[0]], axis=1)
        else:   # pixel-registered (FRGC): same grid, or a scaled copy of it
            sy, sx = photo.shape[0] / valid.shape[0], photo.shape[1] / valid.shape[1]
            vertex_pixels = np.stack([(cols + 0.5) * sx, (rows + 0.5) * sy], axis=1)
        ci = np.clip(vertex_pixels.astype(np.int64), 0, [photo.shape[1] - 1, photo.shape[0] - 1])
        colors = photo[ci[:, 1], ci[:, 0]].astype(np.float64) / 255.0
    return Scan(scan_id=base, subject_id=subject, dataset=dataset, source=uri, vertices=grid[valid],
                grid=grid, grid_valid=valid, photo=photo, vertex_pixels=vertex_pixels, vertex_colors=colors,
                landmarks_2d=l2, landmarks_3d=l3, expression=expression, extra=extra)
