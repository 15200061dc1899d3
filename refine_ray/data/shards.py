"""Resumable, duplicate-free shard output: a batch of scans is committed by its ledger entry.

Layout under the output:
  train/part-<key>.parquet, test/part-<key>.parquet   samples of one batch of scans
  _ledger/<key>.json                                   the commit record of that batch
  errors.parquet, manifest.json                        rebuilt from the ledger at the end of a run

`key` is a hash of the batch's sorted scan URIs; the batch is a unit of refine_ray.commits (the
same exactly-once protocol as refinement): its shards are published whole, its ledger entry last.
A batch without a ledger entry is unfinished, whatever files it left: the next run deletes shard
files no ledger entry names and processes the batch's scans again. Scans in the ledger (done or
failed) are never processed twice, so every sample exists exactly once.
"""
from __future__ import annotations

import hashlib
import io
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from refine_ray import storage
from refine_ray.commits import CommitLog
from refine_ray.data import schema

LEDGER_DIR = "_ledger"
ERRORS_NAME = "errors.parquet"


@dataclass
class ScanOutcome:
    """What happened to one scan: `ok` with its sample count, or `failed` at a stage with a reason."""

    uri: str
    status: str                     # "ok" | "failed"
    samples: int = 0
    split: str | None = None
    subject_id: str | None = None
    stage: str | None = None
    reason: str | None = None
    seconds: float = 0.0            # wall time of the scan in its worker
    cpu_seconds: float = 0.0        # CPU time of the worker process for the scan (load-independent)


@dataclass
class LedgerEntry:
    key: str
    fingerprint: str
    shards: list[dict] = field(default_factory=list)      # {"path": relative, "split", "rows", "bytes"}
    scans: list[dict] = field(default_factory=list)       # ScanOutcome dicts


class OutputMismatchError(ValueError):
    """The output folder holds a dataset made with different sample settings."""


def batch_key(uris: Iterable[str]) -> str:
    """Hash of a batch's URIs; file names Python could not decode (surrogates) hash as their raw bytes."""
    return hashlib.sha1("\n".join(sorted(uris)).encode("utf-8", "surrogateescape")).hexdigest()[:20]


def table_bytes(table: pa.Table, compression: str) -> bytes:
    # No min/max statistics for binary columns: on megabyte image blobs they cost time and are useless
    # (nobody filters on the bytes of an image); scalar columns keep theirs for predicate pushdown.
    stats = [f.name for f in table.schema if not pa.types.is_binary(f.type)]
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=None if compression == "none" else compression,
                   use_dictionary=["dataset", "subject_id", "split", "expression"], write_statistics=stats)
    return buf.getvalue()


class ShardStore:
    """Reads and writes the ledger and shards of one output folder (local or s3://)."""

    def __init__(self, output_uri: str, compression: str = "zstd"):
        self.output = str(output_uri).rstrip("/")
        self.compression = compression
        self.commits = CommitLog(self.output, LEDGER_DIR)

    def uri(self, *parts: str) -> str:
        return storage.join(self.output, *parts)

    # -- writing (on workers)
    def commit_batch(self, uris: list[str], rows: list[dict], outcomes: list[ScanOutcome], fingerprint: str) -> LedgerEntry:
        """Write the batch's shards (one per split present), then its ledger entry."""
        key = batch_key(uris)
        entry = LedgerEntry(key=key, fingerprint=fingerprint, scans=[asdict(o) for o in outcomes])
        with self.commits.begin(key) as unit:
            for split in schema.SPLITS:
                part = [r for r in rows if r["split"] == split]
                if not part:
                    continue
                data = table_bytes(schema.rows_to_table(part), self.compression)
                rel = posixpath.join(split, f"part-{key}.parquet")
                unit.put(self.uri(*rel.split("/")), data)
                entry.shards.append({"path": rel, "split": split, "rows": len(part), "bytes": len(data)})
            unit.commit(asdict(entry))
        return entry

    # -- reading (on the driver)
    def ledger(self) -> list[LedgerEntry]:
        entries = []
        for key, record in sorted(self.commits.records().items()):
            try:
                entries.append(LedgerEntry(**record))
            except TypeError as exc:
                raise ValueError(f"{self.commits.record_uri(key)}: unreadable ledger entry ({exc}); "
                                 "delete it to redo that batch") from exc
        return entries

    def check_fingerprint(self, entries: list[LedgerEntry], fingerprint: str) -> None:
        other = sorted({e.fingerprint for e in entries} - {fingerprint})
        if other:
            raise OutputMismatchError(
                f"{self.output}: holds samples made with different settings (fingerprint {other[0]} vs {fingerprint}); "
                "write to a new output or delete it")

    def remove_orphans(self, entries: list[LedgerEntry]) -> list[str]:
        """Delete shard files that no ledger entry names (left by a killed run); returns their URIs."""
        return self.commits.remove_unnamed(schema.SPLITS, {s["path"] for e in entries for s in e.shards})

    def write_errors(self, entries: list[LedgerEntry]) -> int:
        rows = [{"file": storage.printable(s["uri"]), "stage": s["stage"] or "unknown",
                 "reason": storage.printable(s["reason"] or "")}
                for e in entries for s in e.scans if s["status"] != "ok"]
        rows.sort(key=lambda r: r["file"])
        table = pa.Table.from_pylist(rows, schema=schema.ERRORS_SCHEMA)
        storage.atomic_write_bytes(self.uri(ERRORS_NAME), table_bytes(table, "zstd"))
        return len(rows)

    def shard_uris(self, entries: list[LedgerEntry], split: str | None = None) -> list[str]:
        return sorted(self.uri(*s["path"].split("/")) for e in entries for s in e.shards
                      if split is None or s["split"] == split)


def summarize(entries: list[LedgerEntry]) -> dict[str, Any]:
    scans = [s for e in entries for s in e.scans]
    counts: dict[str, Any] = {
        "scans_ok": sum(s["status"] == "ok" for s in scans),
        "scans_failed": sum(s["status"] != "ok" for s in scans),
        "samples": {sp: sum(sh["rows"] for e in entries for sh in e.shards if sh["split"] == sp) for sp in schema.SPLITS},
        "subjects": {sp: len({s["subject_id"] for s in scans if s["status"] == "ok" and s["split"] == sp})
                     for sp in schema.SPLITS},
        "shards": {sp: sum(sh["split"] == sp for e in entries for sh in e.shards) for sp in schema.SPLITS},
        "bytes": sum(sh["bytes"] for e in entries for sh in e.shards),
    }
    return counts
