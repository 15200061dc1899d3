"""Comparison reports over several runs, from metrics tables written by the test (no Ray needed)."""
from __future__ import annotations

import json
import re
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refine_ray.inference.units import METRICS_SCHEMA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_run(folder, coarse, refined, dataset="frgc"):
    n = len(coarse)
    data = {f.name: [None] * n for f in METRICS_SCHEMA}
    data.update(sample_id=[f"{dataset}/s{i}/p0" for i in range(n)], dataset=[dataset] * n, subject_id=["x"] * n,
                split=["test"] * n, pose=[0] * n, has_target=[True] * n, n_pixels=[100] * n,
                mae_norm_coarse=list(coarse), mae_norm_refined=list(refined),
                mae_mm_coarse=[10 * c for c in coarse], mae_mm_refined=[10 * r for r in refined],
                input_file=["in.parquet"] * n, unit=["u"] * n)
    for k in ("normal_deg", "detail_energy_err"):
        data[f"{k}_coarse"] = data[f"{k}_refined"] = [float("nan")] * n
    os.makedirs(folder, exist_ok=True)
    pq.write_table(pa.Table.from_pydict(data, schema=METRICS_SCHEMA), os.path.join(folder, "metrics.parquet"))


def test_combined_table_has_each_run_and_one_coarse_row(tmp_path):
    from refine_ray.cli import report as report_job

    coarse = [0.12, 0.10, 0.14]
    _write_run(tmp_path / "dce", coarse, [0.08, 0.07, 0.09])
    _write_run(tmp_path / "pix2pix", coarse, [0.09, 0.09, 0.12])
    out = tmp_path / "cmp"
    rc = report_job.main(["--runs", str(tmp_path / "dce"), str(tmp_path / "pix2pix"),
                          "--labels", "DCE|D|DCE", "pix2pix", "--out", str(out)])
    assert rc == 0
    md = (out / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ")][1:]
    by_model = {re.split(r"(?<!\\)\|", r)[1].strip().replace("\\|", "|"): r for r in rows}
    assert set(by_model) == {"DCE|D|DCE", "pix2pix", "Coarse"}  # coarse inputs identical → one Coarse row
    for label, vals in (("DCE|D|DCE", [0.08, 0.07, 0.09]), ("pix2pix", [0.09, 0.09, 0.12]), ("Coarse", coarse)):
        v = np.array(vals)
        assert f"{v.mean():.3f} ± {v.std():.3f}" in by_model[label]
        assert f"{10 * v.mean():.2f} ± {10 * v.std():.2f}" in by_model[label]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["datasets"]["pix2pix"]["frgc"]["refined"]["mae_norm"]["n"] == 3
    assert "<table>" in (out / "report.html").read_text()


def test_different_inputs_get_a_coarse_row_per_run(tmp_path):
    from refine_ray.inference.report import combine_runs

    _write_run(tmp_path / "a", [0.1, 0.2], [0.05, 0.1])
    _write_run(tmp_path / "b", [0.3, 0.3], [0.2, 0.2])
    combine_runs([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "out"))
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Coarse (a)" in md and "Coarse (b)" in md


def test_missing_run_is_a_clear_error(tmp_path):
    from refine_ray.cli import report as report_job

    rc = report_job.main(["--runs", str(tmp_path / "nope"), str(tmp_path / "nope2"), "--out", str(tmp_path / "o")])
    assert rc == 2
    with pytest.raises(FileNotFoundError, match="no metrics.parquet"):
        from refine_ray.inference.report import combine_runs

        combine_runs([str(tmp_path / "nope")], str(tmp_path / "o"))


@pytest.mark.parametrize("job", ["refine.py", "report.py"])
def test_help_explains_the_job(job):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", job), "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "--out" in out.stdout


def test_refine_cli_rejects_bad_config(tmp_path):
    from refine_ray.cli import refine as refine_job

    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: 0\nunknown_key: 1\n")
    assert refine_job.main(["--config", str(bad), "--checkpoint", "x", "--input", "y", "--output", "z"]) == 2
    assert refine_job.main(["--input", "y", "--output", "z"]) == 2  # no checkpoint
