"""One place for URIs, filesystems and atomic writes, local paths and s3:// alike.

Credentials and endpoint come from the standard AWS environment variables (or a config's
`storage` section); they reach Ray workers through `worker_credentials()` (inside task and actor
arguments, never a runtime_env, which Ray logs) and are never written to a file or log.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import unicodedata
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

import fsspec
import numpy as np
import pyarrow.fs as pafs

AWS_ENV_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_PROFILE",
)


@dataclass(frozen=True)
class StorageOptions:
    """S3 settings; empty fields fall back to the AWS environment variables."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)

    def apply_to_env(self) -> None:
        """Export the explicit settings so s3fs, pyarrow and Ray workers started later see them."""
        for key, value in (
            ("AWS_ENDPOINT_URL", self.endpoint_url),
            ("AWS_DEFAULT_REGION", self.region),
            ("AWS_ACCESS_KEY_ID", self.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key),
        ):
            if value:
                os.environ[key] = value


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URI with '/'."""
    uri = str(uri)
    if is_remote(uri):
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://" + posixpath.join(rest, *parts)
    return os.path.join(uri, *parts)


def resolve_inside(root: str, relative: str) -> str:
    """`root`/`relative` for a path read from a data file (a manifest), refused unless it stays inside
    `root`: absolute paths, other schemes, `..` and (locally) symlinks that lead out raise ValueError."""
    rel = str(relative)
    problem = name_problem(rel)
    if problem:
        raise ValueError(f"{printable(rel)}: {problem}")
    if "://" in rel or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise ValueError(f"{rel}: not a path relative to {root}")
    parts = rel.replace("\\", "/").split("/")
    if ".." in parts:
        raise ValueError(f"{rel}: leaves {root}")
    uri = join(root, *[p for p in parts if p not in ("", ".")])
    if not is_remote(root):
        base = os.path.realpath(root)
        real = os.path.realpath(uri)
        if os.path.commonpath([base, real]) != base:
            raise ValueError(f"{rel}: leads out of {root} (through a symbolic link)")
    return uri


SECRET_ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def worker_env() -> dict[str, str]:
    """The non-secret store settings of this process (endpoint, region): all a Ray runtime_env may carry,
    since Ray's runtime-env agent writes a runtime_env's env_vars into its log in plain text."""
    return {k: os.environ[k] for k in AWS_ENV_KEYS if os.environ.get(k) and k not in SECRET_ENV_KEYS}


def driver_runtime_env() -> dict | None:
    """The runtime_env for a job's own `ray.init`: the non-secret store settings (worker_env) minus any
    variable the submitted job's runtime env already sets (`ray job submit --runtime-env-json`), since
    Ray refuses to start a driver whose runtime env repeats one of the job's variables."""
    import json

    env = worker_env()
    job = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")  # set by Ray for a submitted job's driver
    if job:
        taken = (json.loads(job).get("runtime_env") or {}).get("env_vars") or {}
        env = {k: v for k, v in env.items() if k not in taken}
    return {"env_vars": env} if env else None


class WorkerCredentials:
    """This process's object-store settings, credentials included, on their way to Ray workers.

    They travel inside the arguments of the workers' actors and tasks (never a runtime_env, never a
    file) and `apply()` puts them into the worker's environment before it touches storage. A
    driver without AWS_* settings sends nothing, and workers keep what their node gives them
    (instance profile, ~/.aws, the node's environment). The repr never shows a value.
    """

    __slots__ = ("_env",)

    def __init__(self, env: dict[str, str]):
        self._env = dict(env)

    def apply(self) -> None:
        os.environ.update(self._env)

    def __bool__(self) -> bool:
        return bool(self._env)

    def __repr__(self) -> str:
        return f"WorkerCredentials({sorted(self._env)})"

    def __getstate__(self):
        return self._env

    def __setstate__(self, state):
        self._env = dict(state)


def worker_credentials() -> WorkerCredentials:
    """The one place that decides how this process's store settings reach Ray workers (see WorkerCredentials)."""
    return WorkerCredentials({k: os.environ[k] for k in AWS_ENV_KEYS if os.environ.get(k)})


def _fsspec_options(protocol: str) -> dict:
    if protocol in ("s3", "s3a"):
        opts: dict = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
        if endpoint:
            opts["client_kwargs"] = {"endpoint_url": endpoint}
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
        if region:
            opts.setdefault("client_kwargs", {})["region_name"] = region
        # Fresh instances: settings may change between tests/jobs in one process.
        opts["skip_instance_cache"] = True
        return opts
    return {}


def filesystem(uri: str, portable: bool = False) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fsspec filesystem, path inside it) for a local path or URI.

    `portable`: an S3 filesystem also carries this process's credentials, so a pickled copy works in a
    Ray process started without them (Ray Data's file listing runs in tasks that take no runtime_env).
    The credentials then travel inside Ray's task arguments, as a runtime_env would carry them; they
    are never written to a log or file by this project.
    """
    uri = str(uri)
    protocol = uri.split("://", 1)[0] if is_remote(uri) else "file"
    opts = _fsspec_options(protocol)
    if portable and protocol in ("s3", "s3a"):
        for key, env in (("key", "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY"), ("token", "AWS_SESSION_TOKEN")):
            if os.environ.get(env):
                opts[key] = os.environ[env]
    fs, path = fsspec.core.url_to_fs(uri, **opts)
    return fs, path


def arrow_filesystem(uri: str, portable: bool = False) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path) — what pyarrow.parquet and Ray Data take (`portable`: see filesystem)."""
    fs, path = filesystem(uri, portable)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        return f.read()


def read_text(uri: str, encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


def makedirs(uri: str) -> None:
    fs, path = filesystem(uri)
    if not is_remote(uri):
        fs.makedirs(path, exist_ok=True)


def atomic_write_bytes(uri: str, data: bytes) -> None:
    """Write so that readers see the old object or the whole new one, never a part.

    Local: a temp file in the same folder, then os.replace. S3: a single PUT is already atomic.
    """
    uri = str(uri)
    if is_remote(uri):
        fs, path = filesystem(uri)
        fs.pipe_file(path, data)
        return
    folder = os.path.dirname(os.path.abspath(uri))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}-{os.path.basename(uri)}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, uri)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(uri: str, text: str) -> None:
    atomic_write_bytes(uri, text.encode("utf-8"))


def list_files(uri: str, suffixes: Iterable[str] | None = None, recursive: bool = True) -> list[str]:
    """Sorted URIs (same scheme as `uri`) of files under a folder, optionally filtered by suffix."""
    uri = str(uri)
    fs, path = filesystem(uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"{uri}: no such folder or bucket prefix")
    found = fs.find(path) if recursive else [p for p in fs.ls(path, detail=False)]
    sfx = tuple(s.lower() for s in suffixes) if suffixes else None
    out = []
    for p in found:
        name = posixpath.basename(p)
        if name.startswith(".tmp-"):
            continue
        if sfx and not name.lower().endswith(sfx):
            continue
        out.append(_as_uri(uri, p))
    return sorted(out)


def _as_uri(template: str, path: str) -> str:
    if is_remote(template):
        scheme = template.split("://", 1)[0]
        return f"{scheme}://{path}"
    return path


def printable(text: str) -> str:
    """A name read from a file system or bucket, made safe to store, print and log: bytes that are not
    UTF-8 become `\\xNN`, control characters `\\n`, `\\x1b`… (Python gives undecodable file-name bytes
    to us as lone surrogates, which Parquet, JSON and terminals cannot take)."""
    text = str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) == "Cc" else ch
                   for ch in text)


def name_problem(name: str) -> str | None:
    """Why a file name cannot identify an input (not UTF-8, control characters), or None when it can.

    Such names cannot travel into Parquet columns, sample ids or log lines unchanged; the jobs record
    the file (under its `printable` form) as an error instead of guessing another name for it.
    """
    try:
        str(name).encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8; rename the file"
    if any(unicodedata.category(ch) == "Cc" for ch in str(name)):
        return "file name holds control characters; rename the file"
    return None


def bounded_stem(name: str, max_bytes: int = 120) -> str:
    """`safe_name(name)`, shortened to at most `max_bytes` UTF-8 bytes with a hash of the full name kept
    (so long names stay distinct), for output files named after data (file systems allow 255 bytes)."""
    clean = safe_name(name)
    if len(clean.encode("utf-8")) <= max_bytes:
        return clean
    digest = hashlib.sha1(str(name).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    head = clean.encode("utf-8")[: max_bytes - len(digest) - 1].decode("utf-8", "ignore")
    return f"{head}-{digest}"


def safe_name(name: str) -> str:
    """A file name taken from data, reduced to a harmless basename (no separators, no '..')."""
    base = posixpath.basename(str(name).replace("\\", "/"))
    cleaned = "".join(ch if (ch.isalnum() or ch in "-_.") else "_" for ch in base).lstrip(".")
    if not cleaned:
        raise ValueError(f"unusable file name {name!r}")
    return cleaned


LOCK_NAME = ".run.lock"
_HELD: list = []   # lock files a worker process keeps open for its lifetime


class OutputClaim:
    """One run at a time on a local output, and never before the processes of an earlier run are gone.

    The driver takes the output's lock file exclusively (waiting while anyone else holds it), then
    keeps it shared for the run; each worker joins with a shared lock held until its process exits
    (`join_output`). A driver killed mid-run leaves its workers holding the lock until they have
    stopped, so a quick re-run waits for them instead of racing their last commits. Object-store
    outputs have no such lock: there the commit protocol alone keeps a re-run exactly-once.
    """

    def __init__(self, output: str, wait_s: float = 120.0, log=None):
        self.output, self.wait_s, self.log = str(output), wait_s, log
        self.fd: int | None = None

    def __enter__(self) -> "OutputClaim":
        import fcntl
        import time

        if is_remote(self.output):
            return self
        os.makedirs(self.output, exist_ok=True)
        self.fd = os.open(os.path.join(self.output, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        start, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start > self.wait_s:
                    os.close(self.fd)
                    self.fd = None
                    raise ValueError(f"{self.output}: another run, or the workers of a stopped one, still use this "
                                     f"output after {self.wait_s:g} s; wait for it to end or stop it") from None
                if not told and self.log:
                    self.log(f"{self.output}: waiting for the processes of an earlier run to stop")
                    told = True
                time.sleep(0.2)
        fcntl.flock(self.fd, fcntl.LOCK_SH)   # our own workers join with shared locks
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def join_output(output: str) -> None:
    """Worker side of OutputClaim: hold the output's lock (shared) for the rest of this process."""
    import fcntl

    if is_remote(output):
        return
    path = os.path.join(str(output), LOCK_NAME)
    if not os.path.exists(path):
        return
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _HELD.append(fd)


def json_default(obj: Any) -> Any:
    """`json.dumps(default=...)` for numpy scalars and arrays in manifests and fit records."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
