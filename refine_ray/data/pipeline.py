"""The preprocessing job: scan URIs streamed through Ray Data, one scan per row, batches of scans
committed as shards by a pool of actors (each holds the 3DMM and landmark provider once).

A folder of face photos goes the same way (input_kind photos): each photo becomes one target-less test
sample through data.photos.PhotoEncoder, the step jobs/refine.py encodes photos with."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict
from typing import Any, Callable

import numpy as np

from refine_ray import storage
from refine_ray.cluster import actor_pool_strategy, ensure_ray
from refine_ray.data import codec, schema
from refine_ray.data.augment import assign_split, sample_poses
from refine_ray.data.encoding import settings_encoding
from refine_ray.data.fit_model import PreprocessError, load_fit_model
from refine_ray.data.photos import (detector_problem, discover_photos, make_detector, PhotoEncoder, PhotoOptions,
                                    photo_id)
from refine_ray.data.preview import write_preview
from refine_ray.data.samples import SampleBuildError, build_samples
from refine_ray.data.settings import PreprocessSettings, StorageSettings
from refine_ray.data.shards import ScanOutcome, ShardStore, summarize
from refine_ray.landmarks import make_provider
from refine_ray.scans import discover_scans, read_scan
from refine_ray.scans.readers import split_name


def make_landmark_provider(settings: PreprocessSettings):
    """The 2D landmark source named by `settings.landmarks` ('file', 'face_alignment', 'dlib'); for photos
    the detector as jobs/refine.py configures it (whole photos, not face crops)."""
    if settings.input_kind == "photos":
        return make_detector(photo_options(settings))
    return make_provider(settings.landmarks)


def process_scan(uri: str, settings: PreprocessSettings, model, provider, norm) -> tuple[list[dict], ScanOutcome]:
    """Read and turn one scan into rows; every failure becomes a `failed` outcome, never an exception."""
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        try:
            scan = read_scan(uri, landmark_group=settings.landmark_group, units=settings.scan_units)
        except Exception as exc:
            raise SampleBuildError(uri, "read", str(getattr(exc, "problem", None) or f"{type(exc).__name__}: {exc}")) from exc
        split = assign_split(scan.subject_id, settings.split, settings.train_fraction, settings.seed)
        p = settings.poses
        poses = sample_poses(f"{scan.dataset}/{scan.scan_id}", p.count, p.yaw_deg, p.pitch_deg, p.roll_deg, settings.seed)
        rows = build_samples(scan, settings, model, provider, poses, split=split, normalization=norm)
        return rows, ScanOutcome(uri, "ok", len(rows), split, scan.subject_id, seconds=time.perf_counter() - t0,
                                 cpu_seconds=time.process_time() - c0)
    except SampleBuildError as exc:
        return [], ScanOutcome(uri, "failed", stage=exc.stage, reason=exc.reason, seconds=time.perf_counter() - t0,
                               cpu_seconds=time.process_time() - c0)
    except Exception as exc:  # a bug or an unforeseen input: still recorded, never silent
        return [], ScanOutcome(uri, "failed", stage="unknown", reason=f"{type(exc).__name__}: {exc}",
                               seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0)


def photo_options(settings: PreprocessSettings) -> PhotoOptions:
    """The photo settings of a preprocessing run: its landmark provider is the detector of photos without a
    landmark file beside them ('file': such a photo is an error row)."""
    return PhotoOptions(landmarks=settings.landmarks, model=settings.model)


def process_photo(uri: str, settings: PreprocessSettings, encoder: PhotoEncoder) -> tuple[list[dict], ScanOutcome]:
    """One photo → one target-less test sample (pose 0); every failure becomes a `failed` outcome."""
    t0, c0 = time.perf_counter(), time.process_time()

    def outcome(**kw) -> ScanOutcome:
        return ScanOutcome(uri, seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0, **kw)

    try:
        sample, _ = encoder.encode_uri(uri, settings.input)
    except SampleBuildError as exc:
        return [], outcome(status="failed", stage=exc.stage, reason=exc.reason)
    except Exception as exc:  # a bug or an unforeseen input: still recorded, never silent
        return [], outcome(status="failed", stage="unknown", reason=f"{type(exc).__name__}: {exc}")
    row = sample.row
    return [row], outcome(status="ok", samples=1, split=row["split"], subject_id=row["subject_id"])


def process_batch(uris: list[str], settings: PreprocessSettings, model, provider, norm, store: ShardStore) -> list[ScanOutcome]:
    """Process a batch of scans one at a time and commit them as shards + one ledger entry.

    BLAS runs single-threaded here: a scan's matrices are small (3DMM fit: ~136×66), parallelism comes
    from one worker per core, and OpenBLAS threads busy-wait on a busy machine — measured, they took
    the fit from ~6 to ~40 CPU-ms per scan on the shared 2-core box.
    """
    from threadpoolctl import threadpool_limits

    rows: list[dict] = []
    outcomes = []
    if settings.input_kind == "photos":
        encoder = PhotoEncoder(settings_encoding(settings), photo_options(settings), model, detector=provider)
        process = lambda uri: process_photo(uri, settings, encoder)  # noqa: E731
    else:
        process = lambda uri: process_scan(uri, settings, model, provider, norm)  # noqa: E731
    with threadpool_limits(limits=1, user_api="blas"):
        for uri in uris:
            r, o = process(uri)
            rows.extend(r)
            outcomes.append(o)
        store.commit_batch(uris, rows, outcomes, settings.fingerprint())
    return outcomes


class BatchWorker:
    """Ray Data actor: takes the model the driver loaded (from the object store: `model_ref` is a one-element
    list so Ray passes the reference, not a copy in the task spec), then commits each batch of scan URIs."""

    def __init__(self, settings_json: str, model_ref: list, credentials: storage.WorkerCredentials | None = None):
        import ray

        if credentials:
            credentials.apply()
        self.settings = PreprocessSettings.model_validate_json(settings_json)
        storage.join_output(self.settings.output)   # held until this actor's process ends
        self.model = ray.get(model_ref[0])
        self.provider = make_landmark_provider(self.settings)
        self.norm = self.settings.dce_normalization()
        self.store = ShardStore(self.settings.output, self.settings.compression)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        uris = [str(u) for u in batch["uri"]]
        outcomes = process_batch(uris, self.settings, self.model, self.provider, self.norm, self.store)
        return {
            "uri": np.array([o.uri for o in outcomes], dtype=object),
            "status": np.array([o.status for o in outcomes], dtype=object),
            "samples": np.array([o.samples for o in outcomes], dtype=np.int64),
            "seconds": np.array([o.seconds for o in outcomes], dtype=np.float64),
            "cpu_seconds": np.array([o.cpu_seconds for o in outcomes], dtype=np.float64),
        }


def _log(msg: str) -> None:
    print(f"[preprocess] {msg}", file=sys.stderr, flush=True)


def input_kind(settings: PreprocessSettings) -> str:
    """'scans' or 'photos': as asked, or (auto) scans when the input holds any, else photos."""
    if settings.input_kind != "auto":
        return settings.input_kind
    try:
        return "scans" if discover_scans(settings.input) or not discover_photos(settings.input) else "photos"
    except FileNotFoundError as exc:
        raise PreprocessError(str(exc)) from exc


def discover(settings: PreprocessSettings) -> list[str]:
    """The inputs of the run's kind (settings.input_kind resolved: scans or photos), sorted."""
    photos = settings.input_kind == "photos"
    try:
        uris = discover_photos(settings.input) if photos else discover_scans(settings.input)
    except FileNotFoundError as exc:
        raise PreprocessError(str(exc)) from exc
    if settings.limit:
        uris = uris[: settings.limit]
    if not uris:
        raise PreprocessError(f"{settings.input}: no " + ("photos found (.jpg, .jpeg, .png)" if photos else
                              "scans found (.abs, .abs.gz, .bnt, .obj, .ply, .wrl) and no photos (.jpg, .jpeg, .png)"))
    return uris


def _duplicate_ids(uris: list[str], settings: PreprocessSettings) -> list[str]:
    """URIs whose sample name (a scan's file name without its suffix; a photo's path below the input)
    already appeared earlier in the sorted list."""
    seen, dup = set(), []
    for u in uris:
        base = photo_id(u, settings.input) if settings.input_kind == "photos" else split_name(u)[1]
        if base in seen:
            dup.append(u)
        seen.add(base)
    return dup


def run_preprocess(settings: PreprocessSettings, use_ray: bool = True, log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Run (or resume) the job; returns the summary dict also written into the manifest.

    `use_ray=False` runs the same batches in this process (the benchmark's baseline, small demos).
    """
    use_ray = use_ray and not settings.local
    if not settings.input or not settings.output:
        raise PreprocessError("both input and output must be given (flags --input/--output or config keys)")
    if any([settings.storage.endpoint_url, settings.storage.region, settings.storage.access_key_id]):
        storage.StorageOptions(settings.storage.endpoint_url, settings.storage.region,
                               settings.storage.access_key_id, settings.storage.secret_access_key).apply_to_env()
    settings = settings.model_copy(update={"input_kind": input_kind(settings)})   # workers need not look again
    uris = discover(settings)
    if settings.input_kind == "photos":
        problem = detector_problem(uris, photo_options(settings))
        if problem:
            raise PreprocessError(problem)
    with storage.OutputClaim(settings.output, log=log):   # a killed run's workers stop first
        return _run_claimed(settings, uris, use_ray, log)


def _run_claimed(settings: PreprocessSettings, uris: list[str], use_ray: bool, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    model = load_fit_model(settings)    # once, on the driver, before Ray starts: a bad model is one line, exit 2
    store = ShardStore(settings.output, settings.compression)
    storage.makedirs(settings.output)
    todo = _resume(store, settings, uris, log)
    progress = _Progress(len(todo), started, log)
    if todo:
        outcomes = _run_ray(todo, settings, model) if use_ray else _run_local(todo, settings, model)
        for _uri, status, n, *_ in outcomes:
            progress.add(status, n)
    elapsed = time.perf_counter() - started

    entries = store.ledger()
    store.remove_orphans(entries)  # nothing is in flight now: only committed shards may remain
    counts = summarize(entries)
    n_errors = store.write_errors(entries)
    _write_manifest(settings, store, entries, counts, uris)
    total = counts["scans_ok"] + counts["scans_failed"]
    summary = {
        "scans_ok": counts["scans_ok"], "scans_failed": counts["scans_failed"], "errors": n_errors,
        "samples": counts["samples"], "this_run_scans": progress.processed, "this_run_samples": progress.samples,
        "seconds": elapsed, "scans_per_s": progress.processed / elapsed if elapsed > 0 else 0.0,
        "error_fraction": counts["scans_failed"] / total if total else 0.0,
        "first_result_s": progress.first_result,
    }
    summary["ok"] = summary["error_fraction"] <= settings.max_error_fraction
    if settings.preview:
        summary["preview"] = write_preview(store.shard_uris(entries), settings.preview, storage.join(settings.output, "preview.png"))
    log(f"done: {counts['scans_ok']} scans ok, {counts['scans_failed']} failed, "
        f"{counts['samples']['train']} train + {counts['samples']['test']} test samples; "
        f"this run {progress.processed} scans in {elapsed:.1f} s ({summary['scans_per_s']:.2f} scans/s)")
    return summary


def _resume(store: ShardStore, settings: PreprocessSettings, uris: list[str], log: Callable[[str], None]) -> list[str]:
    """The scans still to process: the ledger's (done or failed) are skipped, what a killed run left is
    removed, and unusable names (or one scan name twice) are committed as failures without processing."""
    entries = store.ledger()
    store.check_fingerprint(entries, settings.fingerprint())
    removed = store.remove_orphans(entries)
    if removed:
        log(f"removed {len(removed)} unfinished shard file(s) of an interrupted run")
    done = {s["uri"] for e in entries for s in e.scans}
    refused = [(u, storage.name_problem(u)) for u in uris if u not in done and storage.name_problem(u)]
    usable = [u for u in uris if not storage.name_problem(u)]
    refused += [(u, "another file with the same scan name was found first; scan names must be unique")
                for u in _duplicate_ids(usable, settings) if u not in done]
    if refused:  # unusable names, or one scan id twice (two samples, one sample_id): record, never process
        store.commit_batch([u for u, _ in refused], [],
                           [ScanOutcome(u, "failed", stage="discover", reason=why) for u, why in refused],
                           settings.fingerprint())
        done.update(u for u, _ in refused)
    todo = [u for u in uris if u not in done]
    log(f"{len(uris)} scans found, {len(uris) - len(todo)} already done, {len(todo)} to process")
    return todo


class _Progress:
    """Counts of this run's scans as their outcomes arrive, logged about twenty times per run."""

    def __init__(self, total: int, started: float, log: Callable[[str], None]):
        self.total, self.started, self.log = total, started, log
        self.processed = self.failed = self.samples = 0
        self.first_result: float | None = None

    def add(self, status: str, samples: int) -> None:
        if self.first_result is None:
            self.first_result = time.perf_counter() - self.started
        self.processed += 1
        self.failed += status != "ok"
        self.samples += samples
        if self.processed == self.total or self.processed % max(1, self.total // 20) == 0:
            rate = self.processed / max(time.perf_counter() - self.started, 1e-9)
            self.log(f"{self.processed}/{self.total} scans, {self.failed} failed, {self.samples} samples, {rate:.2f} scans/s")


def _write_manifest(settings: PreprocessSettings, store: ShardStore, entries: list, counts: dict[str, Any],
                    uris: list[str]) -> None:
    norm = settings.dce_normalization()
    channels = list(schema.DCE_CHANNELS) + (list(schema.RGB_CHANNELS) if settings.textured else [])
    schema.write_manifest(settings.output, {
        "image_size": [settings.image_size, settings.image_size],
        "scale_px_per_mm": settings.scale_px_per_mm,
        "normalization": norm.to_dict(),
        "input_channels": channels,
        "target_channels": list(schema.DCE_CHANNELS),
        "encoding": {"name": settings.encoding, "steps": codec.steps(norm, settings.encoding, settings.textured)},
        "counts": counts,
        "config": settings.public_dict(),
        "fingerprint": settings.fingerprint(),
        "inputs": {"root": settings.input, "kind": settings.input_kind, "scans": [storage.printable(u) for u in uris]},
        "ground_truth": settings.input_kind != "photos",
        "shards": {sp: [s["path"] for e in entries for s in e.shards if s["split"] == sp] for sp in schema.SPLITS},
        "errors": "errors.parquet",
    })


def _batch_size(todo: list[str], settings: PreprocessSettings, workers: int) -> int:
    """Batch size: at most scans_per_shard, small enough that every worker gets work."""
    return max(1, min(settings.scans_per_shard, math.ceil(len(todo) / max(1, 2 * workers))))


def _run_local(todo: list[str], settings: PreprocessSettings, model):
    provider, norm = make_landmark_provider(settings), settings.dce_normalization()
    store = ShardStore(settings.output, settings.compression)
    size = _batch_size(todo, settings, 1)
    for i in range(0, len(todo), size):
        for o in process_batch(todo[i:i + size], settings, model, provider, norm, store):
            yield o.uri, o.status, o.samples, o.cpu_seconds


def _run_ray(todo: list[str], settings: PreprocessSettings, model):
    import ray

    ensure_ray()
    model_ref = ray.put(model)      # one copy in the object store, shared by every worker on a node
    # Batches sized for the most workers there may be (--num-workers, else the CPUs present now); the
    # pool then scales between min_workers and that (or one per batch) as CPU nodes join or leave.
    workers = settings.num_workers or max(1, settings.min_workers, int(ray.cluster_resources().get("CPU", 1)))
    size = _batch_size(todo, settings, workers)
    n_batches = math.ceil(len(todo) / size)
    ds = ray.data.from_items([{"uri": u} for u in todo], override_num_blocks=n_batches)
    remote_args: dict[str, Any] = {"num_cpus": 1}
    ds = ds.map_batches(
        BatchWorker,
        # Settings without their storage section (it may hold credentials); the store settings go by
        # storage.worker_credentials, so workers of an already running Ray reach the same store.
        fn_constructor_kwargs={"settings_json": settings.model_copy(update={"storage": StorageSettings()}).model_dump_json(),
                               "model_ref": [model_ref], "credentials": storage.worker_credentials()},
        batch_size=size,
        batch_format="numpy",
        compute=actor_pool_strategy(settings.min_workers, settings.num_workers, n_batches),
        **remote_args,
    )
    for row in ds.iter_rows():
        yield str(row["uri"]), str(row["status"]), int(row["samples"]), float(row["cpu_seconds"])
