"""Work units of batch refinement and their exactly-once outputs.

A unit is one row group of one input Parquet file. Its outputs have names derived only from the
unit (never from a task, actor or run id) and are committed atomically, the marker last:

    <out>/refined/<unit>.parquet         refined DCE images, joinable by sample_id
    <out>/parts/<unit>.metrics.parquet   per-sample metrics
    <out>/parts/<unit>.done.json         commit marker: counts and the unit's errors

A unit is a unit of refine_ray.commits (the protocol preprocessing shares): a retried task or
restarted actor rewrites the same names (an overwrite, not a duplicate), and a re-run skips units
whose marker exists — so every input sample ends up exactly once in the outputs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refine_ray import metrics as M, storage
from refine_ray.commits import CommitLog, StagedParquet, UnitCommit
from refine_ray.data.samples import SampleBuildError
from refine_ray.data.schema import decode_images, rows_to_table
from refine_ray.geometry import depth_units_to_mm, refined_footprint
from refine_ray.inference.model import Predictor
from refine_ray.inference.overlap import OrderedWriter, read_ahead

PARTS = "parts"

METRICS_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("dataset", pa.string()),
        ("subject_id", pa.string()),
        ("split", pa.string()),
        ("pose", pa.int32()),
        ("has_target", pa.bool_()),
        ("n_pixels", pa.int64()),
        ("mae_norm_coarse", pa.float64()),
        ("mae_norm_refined", pa.float64()),
        ("mae_mm_coarse", pa.float64()),
        ("mae_mm_refined", pa.float64()),
        ("normal_deg_coarse", pa.float64()),
        ("normal_deg_refined", pa.float64()),
        ("detail_energy_err_coarse", pa.float64()),
        ("detail_energy_err_refined", pa.float64()),
        ("coverage_refined", pa.float64()),
        ("input_file", pa.string()),
        ("unit", pa.string()),
    ]
)

# Metadata carried from the input rows into the refined shard (those present in the input are kept).
CARRIED = ("sample_id", "dataset", "subject_id", "scan_id", "expression", "pose", "split", "height", "width",
           "scale_px_per_mm", "rotation", "rotation_input", "translation_px", "anchor_input", "source_uri")


@dataclass(frozen=True)
class Unit:
    """One work unit: a row group of a shard (kind "shards"), or a few raw inputs encoded on the fly
    (kind "photos", …: `items` are their URIs, `file` the input root). See inference.inputs."""

    file: str
    row_group: int
    name: str
    kind: str = "shards"
    items: tuple[str, ...] = ()

    def to_row(self) -> dict[str, Any]:
        return {"file": self.file, "row_group": self.row_group, "name": self.name, "kind": self.kind,
                "items": json.dumps(list(self.items))}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Unit":
        return cls(str(row["file"]), int(row["row_group"]), str(row["name"]), str(row.get("kind", "shards")),
                   tuple(json.loads(str(row.get("items") or "[]"))))


def unit_name(file_uri: str, row_group: int) -> str:
    """Deterministic, file-system-safe name: readable stem + hash of the full URI (no collisions across folders)."""
    stem = storage.bounded_stem(posixpath.basename(str(file_uri)).rsplit(".parquet", 1)[0] or "part", 80)
    digest = hashlib.sha1(str(file_uri).encode("utf-8")).hexdigest()[:10]
    return f"{stem}-{digest}-rg{int(row_group):05d}"


def _row_groups(uri: str) -> int:
    fs, path = storage.arrow_filesystem(uri)
    with fs.open_input_file(path) as f:
        return pq.ParquetFile(f).metadata.num_row_groups


def plan_units(files: list[str], threads: int = 16) -> tuple[list[Unit], list[dict[str, str]]]:
    """Units of every input file (one per row group) and an error row for each unreadable file.

    Only Parquet footers are read, in parallel threads: thousands of shards on S3 plan in seconds.
    """
    from concurrent.futures import ThreadPoolExecutor

    def probe(uri: str) -> tuple[str, int | None, str]:
        if storage.name_problem(uri):
            return uri, None, storage.name_problem(uri)
        try:
            return uri, _row_groups(uri), ""
        except Exception as exc:  # a bad file is an error row, never a crash of the job
            return uri, None, str(exc)

    units: list[Unit] = []
    errors: list[dict[str, str]] = []
    with ThreadPoolExecutor(max(1, min(threads, len(files)))) as pool:
        for uri, n, problem in pool.map(probe, files):
            if n is None:
                errors.append({"file": storage.printable(uri), "sample_id": "", "stage": "read",
                               "reason": storage.printable(f"not a readable Parquet file: {problem}")})
            else:
                units.extend(Unit(uri, k, unit_name(uri, k)) for k in range(n))
    return units, errors


REFINED = "refined"


def part_uri(output: str, unit: str, kind: str) -> str:
    if kind == "refined.parquet":
        return storage.join(output, REFINED, f"{unit}.parquet")
    return storage.join(output, PARTS, f"{unit}.{kind}")


def unit_commits(output: str) -> CommitLog:
    """The commit markers of the units under `output` (parts/<unit>.done.json)."""
    return CommitLog(output, PARTS, suffix=".done.json")


def done_units(output: str) -> set[str]:
    """Names of the committed units under `output`, from one listing (not one request per unit)."""
    return unit_commits(output).committed()


def _refined_schema(input_schema: pa.Schema) -> pa.Schema:
    fields = [input_schema.field(n) for n in CARRIED if n in input_schema.names]
    fields += [pa.field("refined", pa.binary()), pa.field("refined_mask", pa.binary()),
               pa.field("model_resolution", pa.int32())]
    return pa.schema(fields)


def _sample_metrics(coarse_u: np.ndarray, refined_u: np.ndarray, target_u: np.ndarray, in_mask: np.ndarray,
                    tgt_mask: np.ndarray, kept: np.ndarray, depth_range: tuple[float, float],
                    scale: float) -> dict[str, Any]:
    """Coarse and refined errors of one sample against its ground truth (docs/design.md, Metrics).

    Each surface is judged as delivered: the coarse model on its footprint, the refined one on the
    pixels it keeps (`kept`, geometry.refined_footprint: the same pixels as its mesh). `coverage_refined` is
    the share of the coarse-and-ground-truth pixels the refinement keeps, so a model cannot hide
    error by dropping pixels unseen (mae_norm charges every dropped ground-truth pixel in full).
    """
    out: dict[str, Any] = {"has_target": bool(tgt_mask.any()), "n_pixels": int((in_mask & tgt_mask).sum())}
    if not out["has_target"]:
        for k in ("mae_norm", "mae_mm", "normal_deg", "detail_energy_err"):
            out[f"{k}_coarse"] = out[f"{k}_refined"] = float("nan")
        out["coverage_refined"] = float("nan")
        return out
    t_mm = depth_units_to_mm(target_u[..., 0], depth_range)
    out["coverage_refined"] = float((kept & tgt_mask).sum() / out["n_pixels"]) if out["n_pixels"] else float("nan")
    for tag, img, mask in (("coarse", coarse_u, in_mask), ("refined", refined_u, kept)):
        d = img[..., 0]
        d_mm = depth_units_to_mm(d, depth_range)
        both = mask & tgt_mask
        out[f"mae_norm_{tag}"] = M.mae_norm(d, target_u[..., 0], mask, tgt_mask)
        out[f"mae_mm_{tag}"] = M.mae_mm(d_mm, t_mm, both)
        out[f"normal_deg_{tag}"] = M.normal_angle_error_deg(d_mm, t_mm, both, scale)
        out[f"detail_energy_err_{tag}"] = M.detail_energy_error(d_mm, t_mm, both)
    return out


def _rows_one_by_one(table: pa.Table) -> Iterator[tuple[int, pa.Table]]:
    for i in range(table.num_rows):
        yield i, table.slice(i, 1)


def _decode_checked(table: pa.Table, file: str, errors: list[dict[str, str]]) -> tuple[pa.Table, dict[str, np.ndarray]] | None:
    """Decode a batch; when it fails, find the bad rows one by one, record them, and keep the good ones."""
    work = table   # rows without ground truth decode to an empty target (data.schema.decode_images)
    try:
        return table, decode_images(work)
    except Exception:
        good = []
        for i, row in _rows_one_by_one(work):
            try:
                decode_images(row)
                good.append(i)
            except Exception as exc:
                sid = table.column("sample_id")[i].as_py() if "sample_id" in table.column_names else ""
                errors.append({"file": file, "sample_id": sid or "", "stage": "decode", "reason": str(exc)})
        if not good:
            return None
        idx = pa.array(good)
        table = table.take(idx)
        return table, decode_images(work.take(idx))


def shard_batches(unit: Unit, batch_size: int, split: str | None, counts: dict[str, int],
                  errors: list[dict[str, str]]) -> Iterator[tuple[pa.Table, dict[str, dict]]]:
    """Batches of one row group of a sample shard (only `split` when given); no extras."""
    fs, path = storage.arrow_filesystem(unit.file)
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        missing = [c for c in ("sample_id", "input", "input_mask", "height", "width", "input_channels")
                   if c not in pf.schema_arrow.names]
        if missing:
            raise ValueError(f"lacks required columns {missing}")
        for rb in pf.iter_batches(batch_size=batch_size, row_groups=[unit.row_group]):
            table = pa.Table.from_batches([rb])
            if split is not None and "split" in table.column_names:
                table = table.filter(pa.compute.equal(table.column("split"), split))
            counts["in"] += table.num_rows
            if table.num_rows:
                yield table, {}


def raw_batches(unit: Unit, batch_size: int, counts: dict[str, int], errors: list[dict[str, str]],
                encode: Callable[[str], tuple[dict, dict]], sample_id_of: Callable[[str], str],
                ) -> Iterator[tuple[pa.Table, dict[str, dict]]]:
    """Sample tables of a unit of raw inputs (photos, meshes, …), `encode(uri)` → (row, extra) for each.

    An input that cannot become a sample (SampleBuildError, or anything its encoder did not foresee) is an
    error row naming it and the unit goes on; storage outages and the like (OSError, MemoryError,
    RuntimeError) are not the input's fault and fail the unit, which Ray retries."""
    rows, extras = [], {}
    for uri in unit.items:
        counts["in"] += 1
        try:
            row, extra = encode(uri)
        except SampleBuildError as exc:
            errors.append({"file": uri, "sample_id": sample_id_of(uri), "stage": exc.stage,
                           "reason": exc.reason if exc.source == uri else f"{exc.source}: {exc.reason}"})
            continue
        except (MemoryError, OSError, RuntimeError):
            raise
        except Exception as exc:   # never a crash of the job
            errors.append({"file": uri, "sample_id": sample_id_of(uri), "stage": "encode",
                           "reason": f"{type(exc).__name__}: {exc}"})
            continue
        rows.append(row)
        extras[row["sample_id"]] = extra
        if len(rows) >= batch_size:
            yield rows_to_table(rows), extras
            rows, extras = [], {}
    if rows:
        yield rows_to_table(rows), extras


def kept_pixels(imgs: dict[str, np.ndarray], refined: np.ndarray) -> np.ndarray:
    """(B,H,W) bool: the pixels each refined surface keeps (geometry.refined_footprint) — one decision
    for its mask, metrics, mesh and maps."""
    if not len(refined):
        return np.zeros(refined.shape[:3], bool)
    return np.stack([refined_footprint(imgs["input"][i, ..., 0], refined[i, ..., 0], imgs["input_mask"][i])
                     for i in range(len(refined))])


def refine_decoded(predictor: Predictor, imgs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(refined (B,H,W,3) network units, kept (B,H,W) bool) of a decoded batch: the model's step of the
    batch job and of the Python API."""
    refined = predictor(imgs["input"], imgs["input_mask"])
    return refined, kept_pixels(imgs, refined)


def process_unit(
    unit: Unit,
    predictor: Predictor,
    depth_range: tuple[float, float],
    output: str,
    batch_size: int,
    split: str | None = None,
    mesh_writer: Any = None,
    kill_once_marker: str | None = None,
    overlap: bool = True,
    batches: Any = None,
) -> dict[str, Any]:
    """Refine every sample of one unit, write its shards, commit its marker; return the marker's content.

    With `overlap` the next batch is read and decoded, and the previous one scored and written, while
    the model runs (inference.overlap); without, one step after the other (the plain loop).
    `batches(unit, batch_size, counts, errors)` yields (table of sample rows, extras by sample_id) for
    units of raw inputs (inference.inputs: photos are encoded in the read-ahead thread); shard units read
    their row group. `mesh_writer(row_table, coarse, coarse_mask, refined, kept, extra)` writes the
    user-facing files of one sample.

    Bad data is recorded and the unit still commits (a re-run would fail the same way); anything else
    (storage outage, out of memory, ...) may be transient: nothing is published and Ray retries.
    """
    errors: list[dict[str, str]] = []
    counts = {"in": 0}
    stream = (batches(unit, batch_size, counts, errors) if batches is not None
              else shard_batches(unit, batch_size, split, counts, errors))
    with unit_commits(output).begin(unit.name) as commit:
        shards = _UnitShards(commit, output, unit)
        n_out = _refine_stream(stream, unit, predictor, depth_range, shards, mesh_writer, errors,
                               depth=1 if overlap else 0, kill_once_marker=kill_once_marker)
        return commit.commit({"unit": unit.name, "file": unit.file, "row_group": unit.row_group, "kind": unit.kind,
                              "samples_in": counts["in"], "samples_refined": n_out,
                              "depth_range_mm": list(depth_range), "errors": errors})


class _UnitShards:
    """The unit's refined shard and metrics part, staged in its commit once the first batch is refined."""

    def __init__(self, commit: UnitCommit, output: str, unit: Unit):
        self.commit, self.output, self.unit = commit, output, unit
        self.refined: StagedParquet | None = None
        self.metrics: StagedParquet | None = None

    def open(self, input_schema: pa.Schema) -> None:
        if self.refined is None:
            self.refined = self.commit.parquet(part_uri(self.output, self.unit.name, "refined.parquet"),
                                               _refined_schema(input_schema))
            self.metrics = self.commit.parquet(part_uri(self.output, self.unit.name, "metrics.parquet"), METRICS_SCHEMA)


def _refine_stream(stream: Iterator[tuple[pa.Table, dict]], unit: Unit, predictor: Predictor,
                   depth_range: tuple[float, float], shards: _UnitShards, mesh_writer: Any,
                   errors: list[dict[str, str]], depth: int, kill_once_marker: str | None) -> int:
    """Run the model over the unit's batches (reading ahead and writing behind by `depth`); returns the
    number of samples written. Bad data ends the unit early with an error row, keeping what was written."""
    writer = OrderedWriter(depth)
    try:
        with writer, contextlib.ExitStack() as stack:
            model_res = 0
            decoded = read_ahead(_decoded(stream, unit, errors), depth)
            stack.callback(decoded.close)  # the reader thread stops before the file closes, whatever happens
            for table, imgs, extras in decoded:
                try:
                    refined = predictor(imgs["input"], imgs["input_mask"])
                except Exception as exc:
                    for sid in table.column("sample_id").to_pylist():
                        errors.append({"file": unit.file, "sample_id": sid, "stage": "model", "reason": str(exc)})
                    continue
                if kill_once_marker and not os.path.exists(kill_once_marker):
                    open(kill_once_marker, "w").close()
                    os._exit(1)  # fault injection: die mid-unit, before anything is committed
                shards.open(table.schema)
                model_res = max(model_res, int(getattr(predictor.refiner, "resolution", 0) or refined.shape[1]))
                writer.submit(_score_and_write, unit, table, imgs, refined, model_res, depth_range, mesh_writer,
                              shards.refined, shards.metrics, errors, extras)
            writer.drain()
    except (ValueError, KeyError, pa.ArrowException) as exc:
        errors.append({"file": unit.file, "sample_id": "", "stage": "unit", "reason": f"{type(exc).__name__}: {exc}"})
    return sum(writer.results)  # with bad data: the batches written before the bad one


def _decoded(stream: Iterator[tuple[pa.Table, dict]], unit: Unit,
             errors: list[dict[str, str]]) -> Iterator[tuple[pa.Table, dict, dict]]:
    """(rows, decoded images, extras) of each batch of a unit; undecodable rows become errors."""
    try:
        for table, extras in stream:
            decoded = _decode_checked(table, unit.file, errors)
            if decoded is not None:
                yield decoded[0], decoded[1], extras
    finally:
        stream.close()   # a shard's file closes with its reader


def _score_and_write(unit: Unit, table: pa.Table, imgs: dict, refined: np.ndarray, model_res: int,
                     depth_range: tuple[float, float], mesh_writer: Any, refined_w: StagedParquet,
                     metrics_w: StagedParquet, errors: list[dict[str, str]], extras: dict | None = None) -> int:
    """Footprint, metrics and user-facing files of each refined sample, then one batch into the unit's shards."""
    extras = extras or {}
    rows_m, refined_bytes, mask_bytes = [], [], []
    scales = (table.column("scale_px_per_mm").to_pylist() if "scale_px_per_mm" in table.column_names
              else [1.0] * table.num_rows)
    sids = table.column("sample_id").to_pylist()
    kept_all = kept_pixels(imgs, refined)
    for i in range(table.num_rows):
        kept = kept_all[i]
        sm = _sample_metrics(imgs["input"][i, ..., :3], refined[i], imgs["target"][i], imgs["input_mask"][i],
                             imgs["target_mask"][i], kept, depth_range, float(scales[i]))
        rows_m.append(sm)
        refined_bytes.append(refined[i].astype("<f4").tobytes())
        mask_bytes.append(kept.astype("u1").tobytes())
        if mesh_writer is not None:
            try:
                mesh_writer(table.slice(i, 1), imgs["input"][i], imgs["input_mask"][i], refined[i], kept,
                            extras.get(sids[i]))
            except Exception as exc:
                errors.append({"file": (extras.get(sids[i]) or {}).get("file", unit.file), "sample_id": sids[i],
                               "stage": "outputs", "reason": f"{type(exc).__name__}: {exc}"})
    carried = table.select([n for n in CARRIED if n in table.column_names])
    carried = carried.append_column("refined", pa.array(refined_bytes, pa.binary()))
    carried = carried.append_column("refined_mask", pa.array(mask_bytes, pa.binary()))
    carried = carried.append_column("model_resolution", pa.array([model_res] * table.num_rows, pa.int32()))
    refined_w.write(carried.cast(refined_w.schema))
    metrics_w.write(_metrics_table(table, rows_m, unit))
    return table.num_rows


def _metrics_table(table: pa.Table, rows: list[dict[str, Any]], unit: Unit) -> pa.Table:
    n = table.num_rows

    def col(name: str, default: Any = None) -> list:
        return table.column(name).to_pylist() if name in table.column_names else [default] * n

    data = {
        "sample_id": col("sample_id"),
        "dataset": col("dataset", ""),
        "subject_id": col("subject_id", ""),
        "split": col("split", ""),
        "pose": col("pose", 0),
    }
    for field in METRICS_SCHEMA:
        if field.name in data:
            continue
        if field.name == "input_file":
            data["input_file"] = [unit.file] * n
        elif field.name == "unit":
            data["unit"] = [unit.name] * n
        else:
            data[field.name] = [r[field.name] for r in rows]
    return pa.Table.from_pydict(data, schema=METRICS_SCHEMA)
