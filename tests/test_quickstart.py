"""jobs/quickstart.py: its CLI, and (opt-in, REFINE_RAY_SLOW=1) the whole chain on a tiny problem."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_help_explains_every_flag():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", "quickstart.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for flag in ("--out", "--subjects", "--iterations-per-stage", "--image-size"):
        assert flag in out.stdout


def test_bad_settings_are_refused_before_any_work(tmp_path):
    from refine_ray.cli import quickstart

    assert quickstart.main(["--subjects", "1", "--out", str(tmp_path / "q")]) == 2
    assert not (tmp_path / "q").exists()


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("REFINE_RAY_SLOW") != "1", reason="whole chain (~2-4 min on 2 cores); REFINE_RAY_SLOW=1")
def test_whole_chain_on_a_tiny_problem(tmp_path, ray_session):
    from refine_ray.quickstart import QuickstartConfig, run_quickstart

    cfg = QuickstartConfig(out=str(tmp_path / "q"), subjects=3, scans_per_subject=1, poses=0, image_size=32,
                           scale_px_per_mm=0.15, max_resolution=8, iterations_per_stage=4, max_channels=8)
    result = run_quickstart(cfg, project_root=ROOT)
    assert result["errors"] == 0 and result["samples_refined"] >= 1
    summary = json.loads(open(os.path.join(os.path.dirname(result["report"]), "summary.json")).read())
    assert summary["samples_refined"] == result["samples_refined"]
    assert os.path.exists(result["report"])
