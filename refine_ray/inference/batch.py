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
from concurrent.futures import ThreadPoolExecutor
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refine_ray import storage
from refine_ray.cluster import actor_pool_strategy, ensure_ray, torch_threads_for_reserved_cpus
from refine_ray.data.encoding import EncodingError
from refine_ray.data.photos import PhotoOptions
from refine_ray.data.schema import read_manifest
from refine_ray.inference.config import RefineConfig
from refine_ray.inference.inputs import batches_factory, resolve_kind
from refine_ray.geometry import DceNormalization
from refine_ray.inference.model import depth_range_mm, encoding_of_checkpoint, normalization_of, Predictor, refiner_from
from refine_ray.inference.outputs import assemble, OutputWriter
from refine_ray.inference.mesh_input import MeshOptions
from refine_ray.inference.report import write_report
from refine_ray.inference.units import done_units, METRICS_SCHEMA, part_uri, process_unit, Unit, unit_commits
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
    kind: str = "shards"
    warnings: list[str] = field(default_factory=list)


class UnitRefiner:
    """Ray Data callable class: one model per actor, loaded once; each call refines whole units."""

    def __init__(self, checkpoint: str | Callable, device: str, precision: str, channels_last: bool,
                 normalization: DceNormalization | None, output: str, batch_size: int, split: str | None,
                 meshes: bool, kill_once_marker: str | None, mesh_format: str = "ply",
                 raw_inputs: dict | None = None, credentials: storage.WorkerCredentials | None = None,
                 forward_batch: int = 0):
        if credentials:
            credentials.apply()   # before the checkpoint is read: it may be on the object store
        storage.join_output(output)   # held until this actor's process ends
        if device == "cpu":
            torch_threads_for_reserved_cpus()
        refiner = refiner_from(checkpoint)
        self.predictor = Predictor(refiner, device=device, precision=precision, channels_last=channels_last,
                                   forward_batch=forward_batch)
        norm = normalization if normalization is not None else normalization_of(refiner)
        self.depth_range = depth_range_mm(norm)
        self.output, self.batch_size, self.split = output, batch_size, split
        self.kill_once_marker = kill_once_marker
        self.mesh_writer = None
        if meshes:
            self.mesh_writer = SampleFiles(OutputWriter(output, norm, mesh_format))
        self.raw_inputs = raw_inputs or {}
        self._batches: dict[str, Callable] = {}

    def batches_for(self, kind: str) -> Callable | None:
        if kind == "shards":
            return None
        if kind not in self._batches:
            self._batches[kind] = batches_factory(kind, self.raw_inputs[kind])
        return self._batches[kind]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list] = {"unit": [], "samples_in": [], "samples_refined": [], "errors": []}
        keys = list(batch.keys())
        for k in range(len(batch["name"])):
            unit = Unit.from_row({key: batch[key][k] for key in keys})
            marker = process_unit(unit, self.predictor, self.depth_range, self.output, self.batch_size,
                                  split=self.split, mesh_writer=self.mesh_writer,
                                  kill_once_marker=self.kill_once_marker, batches=self.batches_for(unit.kind))
            out["unit"].append(unit.name)
            out["samples_in"].append(marker["samples_in"])
            out["samples_refined"].append(marker["samples_refined"])
            out["errors"].append(len(marker["errors"]))
        return {k: np.asarray(v) for k, v in out.items()}


class SampleFiles:
    """process_unit's per-sample hook: assemble the RefinedFace (outputs.assemble) and write its files."""

    def __init__(self, writer):
        self.writer = writer

    def __call__(self, row_table: pa.Table, coarse: np.ndarray, coarse_mask: np.ndarray, refined: np.ndarray,
                 kept: np.ndarray, extra: dict | None) -> list[str]:
        face = assemble(row_table.to_pylist()[0], coarse, coarse_mask, refined, kept, self.writer.norm, extra)
        return self.writer.write(face)


def check_checkpoint(checkpoint: str, input_uri: str) -> None:
    """Load the checkpoint on the driver, before Ray starts, as the actors will (weights_only=True):
    a missing, unsafe or foreign file fails here in one line (CheckpointError), and so does a model
    that needs more input channels than the input's manifest lists."""
    refiner = refiner_from(checkpoint)
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


def run_refine(cfg: RefineConfig, model: str | Callable | None = None, encoding: Any = None) -> RefineResult:
    """Refine every input under cfg.input into cfg.output; see the module docstring and inference.inputs.

    `model` overrides cfg.checkpoint with a URI or a factory returning a refiner (tests, benchmarks);
    `encoding` (data.encoding.Encoding) overrides the input encoding read from the checkpoint.
    """
    checkpoint = model if model is not None else cfg.checkpoint
    if checkpoint is None or not cfg.input or not cfg.output:
        raise ValueError("refine needs checkpoint, input and output (flags or config keys)")
    if isinstance(checkpoint, str):
        check_checkpoint(checkpoint, cfg.input)
    kind = resolve_kind(cfg.input, cfg.input_kind)
    if encoding is None and isinstance(checkpoint, str):
        try:
            encoding = encoding_of_checkpoint(checkpoint)
        except EncodingError:
            if kind.raw:
                raise
            encoding = None      # shards carry their own encoding; scans then need explicit prepare settings
    storage.makedirs(cfg.output)
    with storage.OutputClaim(cfg.output, log=log.warning):   # a killed run's actors stop first
        return _refine_claimed(cfg, checkpoint, kind, encoding)


def _refine_claimed(cfg: RefineConfig, checkpoint: str | Callable, kind: Any, encoding: Any) -> RefineResult:
    import ray

    plan = kind.plan(cfg, encoding)
    for warning in plan.warnings:
        log.warning("%s", warning)
        print(f"warning: {warning}", file=sys.stderr)
    units, plan_errors = plan.units, plan.errors
    meshes = cfg.meshes if cfg.meshes is not None else (plan.raw or plan.gallery)
    raw_inputs = {}
    if plan.raw:
        if plan.kind == "meshes":
            photo = PhotoOptions(**cfg.photos.model_dump(exclude={"per_unit"})).to_dict()   # photos beside meshes
            options = MeshOptions(**cfg.coarse_meshes.model_dump(exclude={"per_unit"}), photo=photo)
        else:
            options = PhotoOptions(**cfg.photos.model_dump(exclude={"per_unit"}))
        raw_inputs[plan.kind] = {"encoding": encoding.to_dict(), "options": options.to_dict()}
    finished = set() if cfg.overwrite else done_units(cfg.output)
    todo = [u for u in units if u.name not in finished]
    log.info("refine (%s): %d units, %d to run, %d already done", plan.kind, len(units), len(todo), len(units) - len(todo))

    if todo:
        ensure_ray()
        ds = ray.data.from_items([u.to_row() for u in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(
            UnitRefiner,
            batch_size=1,
            compute=actor_pool_strategy(cfg.min_actors, cfg.num_actors, len(todo)),
            num_cpus=cfg.cpus_per_actor,
            num_gpus=1 if cfg.gpu else 0,
            fn_constructor_kwargs=dict(
                checkpoint=checkpoint, device="cuda" if cfg.gpu else "cpu", precision=cfg.precision,
                channels_last=cfg.channels_last, normalization=plan.normalization, output=cfg.output,
                batch_size=cfg.batch_size, split=plan.split, meshes=meshes,
                kill_once_marker=read_test_hooks().kill_once_marker, mesh_format=cfg.mesh_format,
                raw_inputs=raw_inputs, credentials=storage.worker_credentials(),
                forward_batch=cfg.forward_batch,
            ),
            # Ray Data restarts a dead actor and retries its unit (its defaults: max_restarts=-1,
            # max_task_retries=-1); deterministic output names make the retry an overwrite.
            runtime_env={"env_vars": storage.worker_env()},
        )
        for row in ds.iter_rows():
            log.info("unit %s: %d refined, %d errors", row["unit"], row["samples_refined"], row["errors"])

    result = finalize(cfg, units, plan_errors, units_run=len(todo))
    result.kind = plan.kind
    result.warnings = list(plan.warnings)
    return result


def finalize(cfg: RefineConfig, units: list[Unit], plan_errors: list[dict], units_run: int) -> RefineResult:
    """Combine the committed units into metrics.parquet / errors.parquet (+ the report)."""
    commits = unit_commits(cfg.output)
    # temp files of actors killed mid-write (never published, ignored by readers): tidy them once all units ran
    commits.remove_temp_files(("refined", "parts", "meshes", "maps", "fits", "gallery"))

    def collect(u: Unit) -> tuple[Unit, dict | None, pa.Table | None]:
        marker = commits.read(u.name)
        if marker is None:
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
