"""bench/scale.py at a tiny N: every stage runs and reports figures that agree with what it wrote."""
from __future__ import annotations

import glob
import os
import runpy

import pyarrow.parquet as pq
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_scale_bench_smoke(tmp_path, ray_session):
    main = runpy.run_path(os.path.join(ROOT, "bench", "scale.py"), run_name="bench_scale")["main"]
    work = str(tmp_path / "work")
    args = ["--scans", "6", "--image-size", "32", "--poses", "1", "--cpus", "2", "--work", work]
    (synth,) = main(args + ["--synthesize-only"])["stages"]
    assert not os.path.exists(os.path.join(work, "data"))                # it stopped after synthesis
    with pytest.raises(SystemExit, match="synthesis.json: describes"):   # another N is another set of scans
        main(["--scans", "9", "--work", work, "--reuse-scans"])
    summary = main(args + ["--reuse-scans"])
    pre, ref = summary["stages"]
    assert summary["subjects"] == 3 and synth["scans"] == 6 and summary["reused_synthesis"]["scans"] == 6
    assert len(glob.glob(os.path.join(work, "scans", "*.abs.gz"))) == 6
    assert pre["scans"] == 6 and pre["scans_failed"] == 0
    rows = {sp: sum(pq.read_metadata(f).num_rows for f in glob.glob(os.path.join(work, "data", sp, "*.parquet")))
            for sp in ("train", "test")}
    assert rows == pre["samples"] and sum(rows.values()) == 12           # 6 scans × 2 poses, as written
    refined = sum(pq.read_metadata(f).num_rows for f in glob.glob(os.path.join(work, "refined", "refined", "*.parquet")))
    assert ref["samples"] == refined == rows["test"] > 0
    for st in (synth, pre, ref):
        assert st["wall_s"] > 0 and st["bytes_written"] > 0 and st["driver_peak_bytes"] > 0
        assert st["worker_peak_bytes"] is None or st["worker_peak_bytes"] > 0
    assert pre["worker_peak_bytes"] is not None            # Linux: the preprocessing workers were seen
    assert os.path.exists(os.path.join(work, "scale.json"))
