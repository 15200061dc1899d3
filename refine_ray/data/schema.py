"""The Parquet sample schema (docs/INTERFACES.md): one row = one scan in one pose.

Images are bytes in `binary` columns so any Parquet reader (pyarrow, Ray Data, pandas, Spark) reads
them without a custom extension type: quantized and bit-packed by default (data.codec, about a third
of float32), or raw little-endian float32 (shards written before, or `encoding: float32`);
`decode_images` turns a batch of either back into numpy arrays. `build_row` is the single place where a row is assembled, so every writer validates
shapes, dtypes and ranges the same way before anything reaches a shard.
"""
from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from refine_ray import storage
from refine_ray.data import codec
from refine_ray.version import code_version

SPLITS = ("train", "test")
DCE_CHANNELS = ("depth", "curvature", "elevation")
RGB_CHANNELS = ("red", "green", "blue")

SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("subject_id", pa.string(), nullable=False),
        pa.field("scan_id", pa.string(), nullable=False),
        pa.field("expression", pa.string(), nullable=True),
        pa.field("pose", pa.int32(), nullable=False),
        pa.field("yaw", pa.float32(), nullable=False),
        pa.field("pitch", pa.float32(), nullable=False),
        pa.field("roll", pa.float32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("input_channels", pa.int32(), nullable=False),
        pa.field("input", pa.binary(), nullable=False),
        pa.field("target", pa.binary(), nullable=True),   # null: no ground truth (photos, foreign meshes)
        pa.field("target_rgb", pa.binary(), nullable=True),
        pa.field("input_mask", pa.binary(), nullable=False),
        pa.field("target_mask", pa.binary(), nullable=True),
        pa.field("scale_px_per_mm", pa.float32(), nullable=False),
        pa.field("rotation", pa.list_(pa.float32(), 9), nullable=False),
        pa.field("translation_px", pa.list_(pa.float32(), 2), nullable=False),
        pa.field("anchor_input", pa.list_(pa.float32(), 3), nullable=False),
        pa.field("anchor_target", pa.list_(pa.float32(), 3), nullable=False),
        pa.field("landmarks_2d", pa.list_(pa.float32(), 136), nullable=False),
        pa.field("landmarks_image", pa.list_(pa.float32(), 136), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        # Added columns (nullable): the full model→camera rotation of each image (photo pose then
        # augmentation), the coarse model's landmarks in its image, and the fit's landmark residual.
        pa.field("rotation_input", pa.list_(pa.float32(), 9), nullable=True),
        pa.field("rotation_target", pa.list_(pa.float32(), 9), nullable=True),
        pa.field("landmarks_input_image", pa.list_(pa.float32(), 136), nullable=True),
        pa.field("fit_rms_px", pa.float32(), nullable=True),
    ]
)

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)


class SampleError(ValueError):
    """A sample that would violate the schema; the message names the source file and the field."""


def sample_id(dataset: str, scan_id: str, pose: int) -> str:
    return f"{dataset}/{scan_id}/p{int(pose)}"


def _check_image(name: str, arr: np.ndarray, hw: tuple[int, int], channels: int | None, source: str) -> np.ndarray:
    arr = np.asarray(arr)
    want = hw + ((channels,) if channels is not None else ())
    if arr.shape != want:
        raise SampleError(f"{source}: {name} has shape {arr.shape}, expected {want}")
    if channels is None:
        return np.ascontiguousarray(arr, dtype=bool)
    arr = arr.astype("<f4", copy=False)  # a strided view stays a view: the encoders read it as it is
    # min/max propagate NaN and see ±inf, so two reductions check finiteness and range (no temporaries).
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if not (lo >= -1.0 - 1e-5 and hi <= 1.0 + 1e-5):
        if not np.all(np.isfinite(arr)):
            raise SampleError(f"{source}: {name} contains NaN or infinite values")
        raise SampleError(f"{source}: {name} is outside network units [-1, 1]")
    return arr


def _fixed_list(name: str, values: Any, n: int, source: str, allow_nan: bool = False) -> list[float]:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size != n:
        raise SampleError(f"{source}: {name} has {arr.size} values, expected {n}")
    if not allow_nan and not np.all(np.isfinite(arr)):
        raise SampleError(f"{source}: {name} contains NaN or infinite values")
    return [float(v) for v in arr.astype(np.float32)]


def build_row(
    *,
    dataset: str,
    subject_id: str,
    scan_id: str,
    expression: str | None,
    pose: int,
    yaw: float,
    pitch: float,
    roll: float,
    split: str,
    input_image: np.ndarray,
    target_image: np.ndarray | None,
    input_mask: np.ndarray,
    target_mask: np.ndarray | None,
    scale_px_per_mm: float,
    rotation: np.ndarray,
    translation_px: Any,
    anchor_input: np.ndarray,
    anchor_target: np.ndarray,
    landmarks_2d: np.ndarray,
    landmarks_image: np.ndarray,
    source_uri: str,
    target_rgb: np.ndarray | None = None,
    rotation_input: np.ndarray | None = None,
    rotation_target: np.ndarray | None = None,
    landmarks_input_image: np.ndarray | None = None,
    fit_rms_px: float | None = None,
    encoding: str = "compact",
) -> dict[str, Any]:
    """A validated row dict of SCHEMA from numpy images (network units) and metadata.

    Landmark lists may hold NaN (missing points); everything else must be finite. `encoding` is
    "compact" (data.codec) or "float32". A sample without ground truth (a photo, a foreign mesh)
    passes target_image = target_mask = None: its target columns are null and training refuses it;
    refinement refines it without error metrics.
    """
    src = source_uri or "<unknown source>"
    if encoding not in codec.ENCODINGS:
        raise SampleError(f"{src}: encoding must be one of {codec.ENCODINGS}, got {encoding!r}")
    if split not in SPLITS:
        raise SampleError(f"{src}: split must be one of {SPLITS}, got {split!r}")
    inp = np.asarray(input_image)
    if inp.ndim != 3 or inp.shape[2] not in (3, 6):
        raise SampleError(f"{src}: input must be (H, W, 3) or (H, W, 6), got shape {inp.shape}")
    hw = inp.shape[:2]
    if (target_image is None) != (target_mask is None):
        raise SampleError(f"{src}: target_image and target_mask must both be given or both be None")
    if target_image is None and target_rgb is not None:
        raise SampleError(f"{src}: target_rgb without a target")
    rot = _check_rotation("rotation", rotation, src)
    if not (np.isfinite(scale_px_per_mm) and scale_px_per_mm > 0):
        raise SampleError(f"{src}: scale_px_per_mm must be positive, got {scale_px_per_mm}")
    for name, val in (("dataset", dataset), ("subject_id", subject_id), ("scan_id", scan_id)):
        if not isinstance(val, str) or not val:
            raise SampleError(f"{src}: {name} must be a non-empty string, got {val!r}")
    return {
        "sample_id": sample_id(dataset, scan_id, pose),
        "dataset": dataset,
        "subject_id": subject_id,
        "scan_id": scan_id,
        "expression": expression,
        "pose": int(pose),
        "yaw": float(yaw),
        "pitch": float(pitch),
        "roll": float(roll),
        "split": split,
        "height": int(hw[0]),
        "width": int(hw[1]),
        "input_channels": int(inp.shape[2]),
        "input": codec.encode_image(_check_image("input", inp, hw, inp.shape[2], src), encoding),
        "target": None if target_image is None else codec.encode_image(
            _check_image("target", target_image, hw, 3, src), encoding),
        "target_rgb": None if target_rgb is None else codec.encode_image(
            _check_image("target_rgb", target_rgb, hw, 3, src), encoding, colour=True),
        "input_mask": codec.encode_mask(_check_image("input_mask", input_mask, hw, None, src), encoding),
        "target_mask": None if target_mask is None else codec.encode_mask(
            _check_image("target_mask", target_mask, hw, None, src), encoding),
        "scale_px_per_mm": float(scale_px_per_mm),
        "rotation": _fixed_list("rotation", rot, 9, src),
        "translation_px": _fixed_list("translation_px", translation_px, 2, src),
        "anchor_input": _fixed_list("anchor_input", anchor_input, 3, src),
        "anchor_target": _fixed_list("anchor_target", anchor_target, 3, src),
        "landmarks_2d": _fixed_list("landmarks_2d", landmarks_2d, 136, src, allow_nan=True),
        "landmarks_image": _fixed_list("landmarks_image", landmarks_image, 136, src, allow_nan=True),
        "source_uri": src,
        "rotation_input": None if rotation_input is None else _fixed_list("rotation_input", _check_rotation("rotation_input", rotation_input, src), 9, src),
        "rotation_target": None if rotation_target is None else _fixed_list("rotation_target", _check_rotation("rotation_target", rotation_target, src), 9, src),
        "landmarks_input_image": None if landmarks_input_image is None else _fixed_list("landmarks_input_image", landmarks_input_image, 136, src, allow_nan=True),
        "fit_rms_px": None if fit_rms_px is None else float(fit_rms_px),
    }


def _check_rotation(name: str, value: Any, source: str) -> np.ndarray:
    rot = np.asarray(value, dtype=np.float64)
    if rot.shape != (3, 3) or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-4) or np.linalg.det(rot) < 0:
        raise SampleError(f"{source}: {name} is not a proper 3x3 rotation matrix")
    return rot


def rows_to_table(rows: list[Mapping[str, Any]]) -> pa.Table:
    """An Arrow table of SCHEMA (column order and types enforced) from row dicts."""
    return pa.Table.from_pylist([dict(r) for r in rows], schema=SCHEMA)


def _column(batch: Any, name: str) -> list:
    if isinstance(batch, pa.Table):
        return batch.column(name).to_pylist()
    col = batch[name]
    if isinstance(col, np.ndarray) and col.dtype.kind == "S":
        # Fixed-width bytes arrays drop trailing NUL bytes on item access; read the raw cells instead.
        return [col[i : i + 1].tobytes() for i in range(len(col))]
    if hasattr(col, "tolist"):
        return list(col.tolist()) if not isinstance(col, list) else col
    return list(col)


def _scalar_column(batch: Any, name: str) -> np.ndarray:
    return np.asarray(_column(batch, name)).astype(np.int64)


# Ground-truth cells a sample may lack (refinement-only inputs): they decode as background / empty.
NULLABLE_TARGETS = ("target", "target_mask")


def decode_images(batch: Any, require_target: bool = False) -> dict[str, np.ndarray]:
    """Images of a batch (pyarrow Table, pandas DataFrame or Ray's dict of numpy columns) as arrays.

    Returns `input` (B,H,W,C_in) float32, `target` (B,H,W,3) float32, `input_mask`/`target_mask`
    (B,H,W) bool, and `target_rgb` (B,H,W,3) float32 when every row has one. All rows of a batch
    must share one image size and channel count (they do within one dataset); each cell may be in
    either encoding (data.codec). A null or absent target / target_mask (a sample without ground
    truth) decodes as background / empty, or raises with `require_target` (training).
    """
    heights = _scalar_column(batch, "height")
    widths = _scalar_column(batch, "width")
    chans = _scalar_column(batch, "input_channels")
    if len(heights) == 0:
        raise ValueError("decode_images: empty batch")
    if len(set(heights)) != 1 or len(set(widths)) != 1 or len(set(chans)) != 1:
        raise ValueError("decode_images: rows of one batch differ in image size or channel count")
    h, w, c = int(heights[0]), int(widths[0]), int(chans[0])
    names = batch.column_names if isinstance(batch, pa.Table) else list(batch.keys()) if isinstance(batch, dict) else list(batch.columns)

    def cells(name: str) -> list:
        values = _column(batch, name) if name in names or name not in NULLABLE_TARGETS else [None] * len(heights)
        if require_target and name in NULLABLE_TARGETS and any(v is None for v in values):
            raise ValueError(f"decode_images: a row has no {name} (a sample without ground truth cannot be trained on)")
        return values

    def images(name: str, channels: int, colour: bool = False) -> np.ndarray:
        values = cells(name)
        out = np.empty((len(values), h, w, channels), np.float32)
        for i, v in enumerate(values):
            if v is None and name in NULLABLE_TARGETS:
                out[i] = -1.0   # a sample without ground truth: all background
                continue
            if v is None:
                raise ValueError(f"decode_images: column {name} is empty in row {i}")
            try:
                codec.decode_image(v, h, w, channels, colour=colour, out=out[i])
            except ValueError as exc:
                raise ValueError(f"decode_images: column {name} {exc}") from None
        return out

    def masks(name: str) -> np.ndarray:
        values = cells(name)
        out = np.empty((len(values), h, w), bool)
        for i, v in enumerate(values):
            if v is None and name in NULLABLE_TARGETS:
                out[i] = False
                continue
            if v is None:
                raise ValueError(f"decode_images: column {name} is empty in row {i}")
            try:
                out[i] = codec.decode_mask(v, h, w)
            except ValueError as exc:
                raise ValueError(f"decode_images: column {name} {exc}") from None
        return out

    out = {"input": images("input", c), "target": images("target", 3),
           "input_mask": masks("input_mask"), "target_mask": masks("target_mask")}
    if "target_rgb" in names:
        rgb = _column(batch, "target_rgb")
        if all(v is not None for v in rgb):
            out["target_rgb"] = images("target_rgb", 3, colour=True)
    return out


# ----------------------------------------------------------------------------- manifest

MANIFEST_NAME = "manifest.json"
MANIFEST_KEYS = ("image_size", "scale_px_per_mm", "normalization", "input_channels", "counts",
                 "config", "code_version", "inputs", "created")


def write_manifest(output_uri: str, manifest: Mapping[str, Any]) -> str:
    """Atomically write `<output>/manifest.json`; missing required keys are an error, `created` is filled."""
    data = dict(manifest)
    data.setdefault("code_version", code_version())
    data.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    missing = [k for k in MANIFEST_KEYS if k not in data]
    if missing:
        raise ValueError(f"{output_uri}: manifest lacks {missing}")
    uri = storage.join(output_uri, MANIFEST_NAME)
    storage.atomic_write_text(uri, json.dumps(data, indent=2, sort_keys=True, default=storage.json_default))
    return uri


def manifest_image_side(manifest: Mapping[str, Any]) -> int:
    """The side of the dataset's square images (`image_size` is stored as [H, W] or as one number)."""
    size = manifest["image_size"]
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def read_manifest(output_uri: str) -> dict[str, Any]:
    """The manifest of a dataset folder (or the manifest file itself), with a clear error when absent/bad."""
    uri = output_uri if str(output_uri).endswith(".json") else storage.join(output_uri, MANIFEST_NAME)
    try:
        text = storage.read_text(uri)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{uri}: no manifest (was the preprocessing job run on this folder?)") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{uri}: manifest is not valid JSON: {exc}") from exc
    missing = [k for k in MANIFEST_KEYS if k not in data]
    if missing:
        raise ValueError(f"{uri}: manifest lacks {missing}")
    return data

