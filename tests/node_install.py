"""What the cluster nodes install on top of their image, and whether pip finds a wheel of each pin for them.

The nodes (cluster.yaml) run Ray's image for Python 3.11 on Ubuntu 22.04 (glibc 2.35, x86_64) and
install the project with `pip install -c constraints.txt torch==… -e .`. These helpers rebuild that list
from the checkout's pyproject.toml and the installed packages' metadata, and ask pip to resolve each pin
for the node's interpreter and platform, binary wheels only, without installing anything.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NODE_PYTHON = "3.11"
NODE_GLIBC_MINOR = 35  # Ubuntu 22.04
NODE_MARKERS = {
    "python_version": NODE_PYTHON, "python_full_version": NODE_PYTHON + ".0", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
    "implementation_name": "cpython", "platform_python_implementation": "CPython",
}


def node_platforms() -> list[str]:
    """Every manylinux tag a glibc-2.35 x86_64 node accepts (pip does not expand one --platform itself)."""
    return ["manylinux2014_x86_64"] + [f"manylinux_2_{m}_x86_64" for m in range(17, NODE_GLIBC_MINOR + 1)]


def read_pins(path: str = os.path.join(ROOT, "constraints.txt")) -> dict[str, str]:
    pins = {}
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _applies(req: Requirement, extras: frozenset[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**NODE_MARKERS, "extra": e}) for e in (extras | {""}))


def runtime_closure(skip: tuple[str, ...] = ("torch",)) -> set[str]:
    """Names of the project's runtime dependencies and theirs, with extras, for the node's markers.

    `skip` (torch) is pinned on the setup line itself; its CUDA dependencies come with its own pins.
    """
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        roots = [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]
    todo = [(r.name, frozenset(r.extras)) for r in roots if _applies(r, frozenset())]
    seen: dict[str, frozenset[str]] = {}
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in skip or (key in seen and extras <= seen[key]):
            continue
        extras = seen.get(key, frozenset()) | extras
        seen[key] = extras
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: reported as unpinned by the caller if it is not pinned
        for line in requires:
            req = Requirement(line)
            if _applies(req, extras):
                todo.append((req.name, frozenset(req.extras)))
    return set(seen)


def _pip_env() -> dict[str, str]:
    """The caller's environment without pip verbosity settings: `PIP_QUIET` (set by CI) hides the
    version list `pip index versions` prints, and these helpers read pip's output."""
    return {**{k: v for k, v in os.environ.items() if k not in ("PIP_QUIET", "PIP_VERBOSE")},
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def resolve_for_node(requirements: list[str], jobs: int = 4) -> tuple[int, dict, str]:
    """`pip install --dry-run --report` of exact pins for the node (binary only, no dependencies).

    Split over `jobs` concurrent pip processes (the time goes into index look-ups). Returns (worst exit
    status, pip's JSON reports merged, pip's stderr).
    """
    from concurrent.futures import ThreadPoolExecutor

    chunks = [requirements[i::jobs] for i in range(jobs) if requirements[i::jobs]]
    with ThreadPoolExecutor(len(chunks)) as pool:
        results = list(pool.map(_resolve_chunk, chunks))
    merged = {"install": [item for _, data, _ in results for item in data.get("install", [])]}
    return max(rc for rc, _, _ in results), merged, "".join(err for _, _, err in results)


def _resolve_chunk(requirements: list[str]) -> tuple[int, dict, str]:
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--no-deps",
               "--only-binary=:all:", "--python-version", NODE_PYTHON, "--implementation", "cp",
               "--target", os.path.join(tmp, "target"), "--report", report]
        for p in node_platforms():
            cmd += ["--platform", p]
        proc = subprocess.run(cmd + requirements, capture_output=True, text=True, timeout=600,
                              env=_pip_env())
        data = json.load(open(report)) if os.path.exists(report) else {}
    return proc.returncode, data, proc.stderr


def versions_for_node(name: str) -> list[str]:
    """Versions of `name` that have a wheel for the node (`pip index versions`: no download)."""
    cmd = [sys.executable, "-m", "pip", "index", "versions", name, "--only-binary=:all:",
           "--python-version", NODE_PYTHON, "--implementation", "cp"]
    for p in node_platforms():
        cmd += ["--platform", p]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_pip_env())
    m = re.search(r"Available versions: (.*)", proc.stdout)
    if proc.returncode == 0 and not m:
        raise RuntimeError(f"pip index versions {name}: no version list in its output: {proc.stdout[-500:]!r}")
    return [v.strip() for v in m.group(1).split(",")] if m else []
