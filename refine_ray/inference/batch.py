"""Batch refinement on Ray Data: an actor pool (one model per actor) over work units, then one commit.

Ray Data schedules the units (row groups of the input shards) onto a pool of long-lived actors, each
holding one model (on one GPU when asked). Every actor streams its unit batch by batch and publishes
the unit's outputs atomically under deterministic names (refine_ray.inference.units), so retried
tasks and restarted actors cannot duplicate a sample and a re-run only does the missing units.
The driver finally combines the small per-unit metrics and errors into metrics.parquet,
errors.parquet and the report.
"""
from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
import logging
import posixpath
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refine_ray import storage
from refine_ray.cluster import ensure_ray
from refine_ray.data.schema import read_manifest
from refine_ray.inference.config import RefineConfig
from refine_ray.inference.meshes import MeshWriter
from refine_ray.inference.model import Predictor, depth_range_mm, load_model
from refine_ray.inference.prepare import prepare_raw_input
from refine_ray.inference.report import write_report
from refine_ray.inference.units import METRICS_SCHEMA, Unit, done_units, part_uri, plan_units, process_unit
from refine_ray.test_hooks import read_test_hooks

log = logging.getLogger(__name__)

ERRORS_SCHEMA = pa.schema([("file", pa.string()), ("sample_id", pa.string()), ("stage", pa.string()),
                           ("reason", pa.string())])


@dataclass
class RefineResult:
    output: str
    units_total: int
    units_run: int
    units_skipped: int
    samples_refined: int
    errors: int
    report_dir: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


class UnitRefiner:
    """Ray Data callable class: one model per actor, loaded once; each call refines whole units."""

    def __init__(self, checkpoint: str | Callable, device: str, precision: str, channels_last: bool,
                 normalization: dict | None, output: str, batch_size: int, split: str | None,
                 meshes: bool, kill_once_marker: str | None, credentials: storage.WorkerCredentials | None = None):
        if credentials:
            credentials.apply()   # before the checkpoint is read: it may be on the object store
        storage.join_output(output)   # held until this actor's process ends
        refiner = load_model(checkpoint)
        self.predictor = Predictor(refiner, device=device, precision=precision, channels_last=channels_last)
        norm = normalization if normalization is not None else getattr(refiner, "normalization", None)
        if norm is not None and not isinstance(norm, dict):
            norm = norm.to_dict()
        self.depth_range = depth_range_mm(norm)
        self.output, self.batch_size, self.split = output, batch_size, split
        self.kill_once_marker = kill_once_marker
        self.mesh_writer = None
        if meshes:
            self.mesh_writer = MeshWriter(storage.join(output, "meshes"), norm)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list] = {"unit": [], "samples_in": [], "samples_refined": [], "errors": []}
        for file, rg, name in zip(batch["file"], batch["row_group"], batch["name"]):
            unit = Unit(str(file), int(rg), str(name))
            marker = process_unit(unit, self.predictor, self.depth_range, self.output, self.batch_size,
                                  split=self.split, mesh_writer=self.mesh_writer,
                                  kill_once_marker=self.kill_once_marker)
            out["unit"].append(unit.name)
            out["samples_in"].append(marker["samples_in"])
            out["samples_refined"].append(marker["samples_refined"])
            out["errors"].append(len(marker["errors"]))
        return {k: np.asarray(v) for k, v in out.items()}


def find_input_shards(input_uri: str, split: str | None) -> tuple[list[str], list[dict[str, str]]]:
    """(sample shards under `input_uri`, error rows for manifest entries that cannot be used).

    The shards the manifest lists (committed shards only, never the leftovers of an interrupted
    preprocessing run), each resolved inside `input_uri` (an entry that leads elsewhere is an error
    row, never read); else `<input>/<split>/*.parquet` when that folder exists, else every *.parquet
    but the errors table. A single .parquet file is accepted too."""
    if str(input_uri).endswith(".parquet"):
        return [str(input_uri)], []

    try:
        listed = read_manifest(input_uri).get("shards")
    except (FileNotFoundError, ValueError):
        listed = None
    if isinstance(listed, dict):
        files, errors = [], []
        for sp, paths in sorted(listed.items()):
            if split not in (None, sp):
                continue
            for rel in paths if isinstance(paths, list) else [paths]:
                try:
                    files.append(storage.resolve_inside(input_uri, str(rel)))
                except ValueError as exc:
                    errors.append({"file": storage.printable(str(rel)), "sample_id": "", "stage": "manifest",
                                   "reason": f"shard path refused: {exc}"})
        return sorted(files), errors
    root = storage.join(input_uri, split) if split and storage.exists(storage.join(input_uri, split)) else input_uri
    files = storage.list_files(root, suffixes=(".parquet",))
    return [f for f in files if posixpath.basename(f.replace("\\", "/")) != "errors.parquet"], []


def _read_normalization(input_uri: str) -> dict | None:
    try:
        return read_manifest(input_uri).get("normalization")
    except FileNotFoundError:
        return None


def check_checkpoint(checkpoint: str, input_uri: str) -> None:
    """Load the checkpoint on the driver, before Ray starts, as the actors will (weights_only=True):
    a missing, unsafe or foreign file fails here in one line (CheckpointError), and so does a model
    that needs more input channels than the input's manifest lists."""
    refiner = load_model(checkpoint)
    need = int(getattr(refiner, "input_channels", 0) or 0)
    try:
        have = len(read_manifest(input_uri).get("input_channels") or []) if not str(input_uri).endswith(".parquet") else 0
    except (FileNotFoundError, ValueError):
        have = 0   # raw scans or bare shards: checked per sample
    if need and have and have < need:
        raise ValueError(f"{checkpoint}: the model needs {need} input channels, {input_uri} has {have} "
                         "(a DCE+RGB model needs a textured dataset)")


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def run_refine(cfg: RefineConfig, model: str | Callable | None = None) -> RefineResult:
    """Refine every sample under cfg.input into cfg.output; see the module docstring.

    `model` overrides cfg.checkpoint with a URI or a factory returning a refiner (tests, benchmarks).
    """
    checkpoint = model if model is not None else cfg.checkpoint
    if checkpoint is None or not cfg.input or not cfg.output:
        raise ValueError("refine needs checkpoint, input and output (flags or config keys)")
    if isinstance(checkpoint, str):
        check_checkpoint(checkpoint, cfg.input)
    storage.makedirs(cfg.output)
    with storage.OutputClaim(cfg.output, log=log.warning):   # a killed run's actors stop first
        return _refine_claimed(cfg, checkpoint)


def _refine_claimed(cfg: RefineConfig, checkpoint: str | Callable) -> RefineResult:
    import ray

    split = cfg.split
    files, manifest_errors = find_input_shards(cfg.input, split)
    normalization = _read_normalization(cfg.input) if not str(cfg.input).endswith(".parquet") else None
    if not files and not manifest_errors:
        log.info("%s: no Parquet shards; preprocessing the scans there (original pose only)", cfg.input)
        prepared, normalization = prepare_raw_input(cfg.input, storage.join(cfg.output, "prepared"), cfg.prepare)
        split = None  # every prepared scan is refined, whatever the training split would have been
        files, manifest_errors = find_input_shards(prepared, None)
        if not files:
            raise FileNotFoundError(f"{cfg.input}: no Parquet shards and no scans to refine")
    units, plan_errors = plan_units(files)
    plan_errors = manifest_errors + plan_errors
    finished = set() if cfg.overwrite else done_units(cfg.output)
    todo = [u for u in units if u.name not in finished]
    log.info("refine: %d units, %d to run, %d already done", len(units), len(todo), len(units) - len(todo))

    if todo:
        ensure_ray()
        ds = ray.data.from_items([u.to_row() for u in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(
            UnitRefiner,
            batch_size=1,
            concurrency=min(cfg.num_actors, len(todo)),
            num_cpus=cfg.cpus_per_actor,
            num_gpus=1 if cfg.gpu else 0,
            fn_constructor_kwargs=dict(
                checkpoint=checkpoint, device="cuda" if cfg.gpu else "cpu", precision=cfg.precision,
                channels_last=cfg.channels_last, normalization=normalization, output=cfg.output,
                batch_size=cfg.batch_size, split=split, meshes=cfg.meshes,
                kill_once_marker=read_test_hooks().kill_once_marker,
                credentials=storage.worker_credentials(),
            ),
            # Ray Data restarts a dead actor and retries its unit (its defaults: max_restarts=-1,
            # max_task_retries=-1); deterministic output names make the retry an overwrite.
            runtime_env={"env_vars": storage.worker_env()},
        )
        for row in ds.iter_rows():
            log.info("unit %s: %d refined, %d errors", row["unit"], row["samples_refined"], row["errors"])

    return finalize(cfg, units, plan_errors, units_run=len(todo))


def _remove_stale_temp_files(output: str) -> None:
    """Temp files of actors killed mid-write (never published, ignored by readers): tidy them once all units ran."""
    if storage.is_remote(output):
        return  # remote outputs are staged in the worker's local temp dir, never in the bucket
    import glob
    import os

    for sub in ("refined", "parts"):
        for path in glob.glob(os.path.join(output, sub, ".tmp-*")):
            os.unlink(path)


def finalize(cfg: RefineConfig, units: list[Unit], plan_errors: list[dict], units_run: int) -> RefineResult:
    """Combine the committed units into metrics.parquet / errors.parquet (+ the report)."""
    _remove_stale_temp_files(cfg.output)

    def collect(u: Unit) -> tuple[Unit, dict | None, pa.Table | None]:
        try:
            marker = json.loads(storage.read_text(part_uri(cfg.output, u.name, "done.json")))
        except FileNotFoundError:
            return u, None, None
        muri = part_uri(cfg.output, u.name, "metrics.parquet")
        if not storage.exists(muri):
            return u, marker, None
        fs, path = storage.arrow_filesystem(muri)
        return u, marker, pq.read_table(path, filesystem=fs, schema=METRICS_SCHEMA)

    metric_tables, errors = [], list(plan_errors)
    refined = 0
    with ThreadPoolExecutor(max(1, min(16, len(units)))) as pool:  # thousands of small objects on S3
        for u, marker, table in pool.map(collect, units):
            if marker is None:
                errors.append({"file": u.file, "sample_id": "", "stage": "unit", "reason": f"unit {u.name} did not finish"})
                continue
            errors.extend(marker["errors"])
            refined += marker["samples_refined"]
            if table is not None:
                metric_tables.append(table)
    table = pa.concat_tables(metric_tables) if metric_tables else METRICS_SCHEMA.empty_table()
    table = table.sort_by("sample_id")
    ids = table.column("sample_id").to_numpy(zero_copy_only=False)
    uniq, counts = np.unique(ids, return_counts=True)
    for sid in uniq[counts > 1]:
        errors.append({"file": "", "sample_id": str(sid), "stage": "commit",
                       "reason": "sample_id occurs in several input rows (input data has duplicates)"})
    storage.atomic_write_bytes(storage.join(cfg.output, "metrics.parquet"), _parquet_bytes(table))
    err_table = pa.Table.from_pylist([{k: storage.printable(e.get(k, "")) for k in ERRORS_SCHEMA.names} for e in errors],
                                     schema=ERRORS_SCHEMA)
    storage.atomic_write_bytes(storage.join(cfg.output, "errors.parquet"), _parquet_bytes(err_table))
    result = RefineResult(cfg.output, len(units), units_run, len(units) - units_run, refined, len(errors))
    if cfg.report.enabled:
        report_dir = storage.join(cfg.output, "report")
        result.summary = write_report(cfg.output, report_dir, title=cfg.report.title,
                                      heatmap_max_mm=cfg.report.heatmap_max_mm)
        result.report_dir = report_dir
    return result
