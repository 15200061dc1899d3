"""Hostile scan files stay in bounded memory: each is read in a fresh process whose peak RSS
(getrusage ru_maxrss) is measured. The bombs are built from gzip members of 1 MiB blocks, each
compressed once and repeated (a multi-member gzip file, as `cat a.gz b.gz` makes), so building a
2 GiB bomb takes milliseconds."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADDED_LIMIT_MB = 250    # what reading adds above the imported package (≈ 230 MB); unbounded reads add GBs

CHILD = r"""
import json, resource, sys
from refine_ray.scans import ScanFormatError, read_scan
base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
for path in sys.argv[1:]:
    try:
        read_scan(path); error = None
    except ScanFormatError as exc:
        error = exc.problem
    # the peak of the whole process so far: below the limit here means below it for every file before
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"path": path, "error": error, "rss_mb": peak_mb, "added_mb": peak_mb - base_mb}))
"""


def _bomb(path: str, header: bytes, block: bytes, inflated_bytes: int) -> int:
    """A .abs.gz holding `header` then `block` repeated up to `inflated_bytes`; returns its size on disk."""
    member = gzip.compress(block, compresslevel=9, mtime=0)
    with open(path, "wb") as f:
        f.write(gzip.compress(header, mtime=0))
        for _ in range(inflated_bytes // len(block)):
            f.write(member)
    return os.path.getsize(path)


def _ply(path: str, fmt: str) -> None:
    head = (f"ply\nformat {fmt} 1.0\nelement vertex 400000000\nproperty float x\nproperty float y\n"
            "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n").encode()
    body = np.zeros(30, np.float32).tobytes() if fmt != "ascii" else b"0 0 0\n" * 10
    open(path, "wb").write(head + body)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every hostile file, read one after the other in one fresh process: {name: (error, peak MB so far)}."""
    d = tmp_path_factory.mktemp("bombs")
    files = {}
    files["bomb2g"] = str(d / "04200d1.abs.gz")
    size = _bomb(files["bomb2g"], b"480 rows\n640 columns\npixels (flag X Y Z):\n", bytes(1 << 20), 2 << 30)
    assert size < 3 << 20                                   # ≈ 2 MB on disk, 2 GiB inflated
    files["grid5000"] = str(d / "04201d1.abs.gz")
    size = _bomb(files["grid5000"], b"5000 rows\n5000 columns\npixels (flag X Y Z):\n", b"0 " * (1 << 19),
                 4 * 2 * 5000 * 5000)                        # 1 MiB blocks of valid-looking values
    assert size < 400 << 10                                 # ≈ 200 KB on disk, 200 MB of values
    files["unbacked"] = str(d / "04202d1.abs")
    open(files["unbacked"], "wb").write(b"2000 rows\n2000 columns\npixels (flag X Y Z):\n" + b"1 2 3\n" * 4)
    files["oversized"] = str(d / "04203d1.abs")
    with open(files["oversized"], "wb") as f:
        f.write(b"480 rows\n640 columns\npixels (flag X Y Z):\n")
        f.truncate(300 << 20)                               # sparse: 300 MB that take no disk
    for fmt in ("binary_little_endian", "ascii"):
        files[f"ply_{fmt[:3]}"] = str(d / f"m_{fmt[:3]}.ply")
        _ply(files[f"ply_{fmt[:3]}"], fmt)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", CHILD, *files.values()], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    by_path = {r["path"]: r for r in map(json.loads, out.stdout.strip().splitlines())}
    return {name: by_path[p] for name, p in files.items()}


@pytest.mark.parametrize("name, message", [
    ("bomb2g", "inflates beyond"),                           # streaming cap from the declared 480×640
    ("grid5000", "5000×5000 = 25000000 pixels exceeds the limit"),
    ("unbacked", "too short"),                               # refused before allocating 2000×2000
    ("oversized", "over the limit"),                         # refused unread
    ("ply_bin", "400000000 vertex elements exceed the limit"),
    ("ply_asc", "400000000 vertex elements exceed the limit"),
])
def test_hostile_file_refused_in_bounded_memory(results, name, message):
    r = results[name]
    assert r["error"] and message in r["error"], r
    assert r["added_mb"] < ADDED_LIMIT_MB, r


def test_bounded_inflate_reads_ordinary_gzip():
    """The capped inflater gives exactly what gzip gives, multi-member files included."""
    from refine_ray.scans import limits

    rng = np.random.default_rng(0)
    parts = [rng.bytes(70_000), b"5 rows\n" * 3000, rng.bytes(10)]
    data = b"".join(gzip.compress(p) for p in parts)
    assert bytes(limits.inflate(data, "x.gz")) == b"".join(parts)
    assert bytes(limits.inflate(data, "x.gz", lambda head: 10**9)) == b"".join(parts)
    with pytest.raises(limits.ScanFormatError, match="truncated"):
        limits.inflate(data[:-12], "x.gz")
    with pytest.raises(limits.ScanFormatError, match="trailing"):
        limits.inflate(data + b"junk", "x.gz")
    assert bytes(limits.inflate(data + bytes(9), "x.gz")) == b"".join(parts)     # zero padding, as gzip allows
