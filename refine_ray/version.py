"""The package version, and the exact code a manifest or checkpoint was made with."""
from __future__ import annotations

import subprocess
from pathlib import Path

__version__ = "0.1.0"


def code_version() -> str:
    """Package version plus the git commit when run from a checkout (recorded in manifests and checkpoints)."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return f"{__version__}+g{sha}" if sha else __version__
    except Exception:
        return __version__
