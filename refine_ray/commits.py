"""Exactly-once outputs of batch jobs: a unit of work is done when its commit record exists.

Preprocessing (a batch of scans → shards) and refinement (a row group → refined shard + metrics)
share this protocol. A unit's output files have names derived from the unit alone (never from a
task, actor or run), are staged under temporary `.tmp-` names and published whole (a local rename,
one PUT on S3); the unit's record (small JSON under the output's commit folder) is written last.
So a unit without a record is unfinished, whatever files it left: a re-run skips the units that
have a record and does the others again, overwriting or removing what an unfinished attempt left.
A retried task or restarted actor rewrites the same names, never a second copy.
"""
from __future__ import annotations

import json
import os
import posixpath
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from refine_ray import storage

TEMP_PREFIX = ".tmp-"


def _basename(uri: str) -> str:
    return posixpath.basename(str(uri).replace("\\", "/"))


class StagedParquet:
    """A Parquet file streamed batch by batch into a local temp file (memory bounded by one batch),
    published in one step by `publish` (rename or one upload): no reader ever sees a partial file."""

    def __init__(self, uri: str, schema: pa.Schema, compression: str = "zstd"):
        self.uri = uri
        folder = None if storage.is_remote(uri) else os.path.dirname(os.path.abspath(uri))
        if folder:
            os.makedirs(folder, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".parquet", dir=folder)
        os.close(fd)
        self.writer = pq.ParquetWriter(self.tmp, schema, compression=compression)

    @property
    def schema(self) -> pa.Schema:
        return self.writer.schema

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)

    def publish(self) -> None:
        self.writer.close()
        try:
            if storage.is_remote(self.uri):
                fs, path = storage.filesystem(self.uri)
                fs.put_file(self.tmp, path)
            else:
                os.replace(self.tmp, self.uri)
        finally:
            self.discard()

    def discard(self) -> None:
        self.writer.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


class _StagedBytes:
    """Bytes already complete in memory: published with storage.atomic_write_bytes."""

    def __init__(self, uri: str, data: bytes):
        self.uri, self.data = uri, data

    def publish(self) -> None:
        storage.atomic_write_bytes(self.uri, self.data)

    def discard(self) -> None:
        self.data = b""


class UnitCommit:
    """The outputs of one unit: staged while it runs, published on `commit` (files first, the record last).

    Used as a context manager, an exception before `commit` discards everything staged, so nothing
    of the attempt is published and the unit stays uncommitted (a retry or re-run does it again).
    """

    def __init__(self, log: "CommitLog", key: str):
        self.log, self.key = log, key
        self._staged: list[StagedParquet | _StagedBytes] = []
        self.committed = False

    def parquet(self, uri: str, schema: pa.Schema, compression: str = "zstd") -> StagedParquet:
        staged = StagedParquet(uri, schema, compression)
        self._staged.append(staged)
        return staged

    def put(self, uri: str, data: bytes) -> None:
        self._staged.append(_StagedBytes(uri, data))

    def commit(self, record: dict[str, Any]) -> dict[str, Any]:
        try:
            for staged in self._staged:
                staged.publish()
        except BaseException:
            self.abort()
            raise
        self._staged = []
        storage.atomic_write_text(self.log.record_uri(self.key),
                                  json.dumps(record, indent=1, sort_keys=True, default=storage.json_default))
        self.committed = True
        return record

    def abort(self) -> None:
        for staged in self._staged:
            staged.discard()
        self._staged = []

    def __enter__(self) -> "UnitCommit":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if not self.committed:
            self.abort()


class CommitLog:
    """The commit records of one output (local folder or s3:// prefix): `<output>/<folder>/<key><suffix>`."""

    def __init__(self, output: str, folder: str, suffix: str = ".json"):
        self.output, self.folder, self.suffix = str(output).rstrip("/"), folder, suffix

    def record_uri(self, key: str) -> str:
        return storage.join(self.output, self.folder, f"{key}{self.suffix}")

    def begin(self, key: str) -> UnitCommit:
        return UnitCommit(self, key)

    def committed(self) -> set[str]:
        """Keys of the committed units, from one listing (not one request per unit)."""
        return {_basename(u)[: -len(self.suffix)] for u in self._record_uris()}

    def read(self, key: str) -> dict[str, Any] | None:
        """The unit's record, or None while it is uncommitted."""
        try:
            return self._parse(self.record_uri(key))
        except FileNotFoundError:
            return None

    def records(self, threads: int = 16) -> dict[str, dict[str, Any]]:
        """Every committed unit's record by key (read in parallel threads: thousands of small objects on S3)."""
        uris = self._record_uris()
        with ThreadPoolExecutor(max(1, min(threads, len(uris)))) as pool:
            parsed = list(pool.map(self._parse, uris))
        return {_basename(u)[: -len(self.suffix)]: r for u, r in zip(uris, parsed)}

    def remove_unnamed(self, folders: Iterable[str], named: set[str]) -> list[str]:
        """Delete the files in `folders` (relative to the output) that no record names (`named`: relative
        paths): what killed attempts left. Only safe while no unit is in flight. Returns their URIs."""
        removed = []
        for sub in folders:
            folder = storage.join(self.output, sub)
            if not storage.exists(folder):
                continue
            for uri in storage.list_files(folder, recursive=False):
                if posixpath.join(sub, _basename(uri)) not in named:
                    fs, path = storage.filesystem(uri)
                    fs.rm(path)
                    removed.append(uri)
        return removed

    def remove_temp_files(self, folders: Iterable[str]) -> None:
        """Temp files of attempts killed mid-write (never published, ignored by readers). Local outputs only:
        object-store outputs are staged in the worker's temp dir or in memory, never in the bucket."""
        if storage.is_remote(self.output):
            return
        for sub in folders:
            folder = os.path.join(self.output, sub)
            if os.path.isdir(folder):
                for name in os.listdir(folder):
                    if name.startswith(TEMP_PREFIX):
                        os.unlink(os.path.join(folder, name))

    def _record_uris(self) -> list[str]:
        folder = storage.join(self.output, self.folder)
        if not storage.exists(folder):
            return []
        return storage.list_files(folder, suffixes=(self.suffix,), recursive=False)

    @staticmethod
    def _parse(uri: str) -> dict[str, Any]:
        text = storage.read_text(uri)
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{uri}: unreadable commit record ({exc}); delete it to redo that unit") from exc
        if not isinstance(record, dict):
            raise ValueError(f"{uri}: unreadable commit record (not a JSON object); delete it to redo that unit")
        return record
