"""Where the quality benchmark keeps its data, runs and results under one work folder."""
from __future__ import annotations

from refine_ray import storage


def paths(work: str, tag: str = "") -> dict[str, str]:
    """Data is shared by every run under `work`; runs, refined outputs and results are per `tag`
    (so several schedules can be compared on the same data)."""
    j = storage.join
    sub = f"-{storage.safe_name(tag)}" if tag else ""
    return {"frgc_scans": j(work, "scans", "frgc"), "bos_scans": j(work, "scans", "bosphorus"),
            "model": j(work, "model.npz"), "frgc_data": j(work, "data", "frgc"), "bos_data": j(work, "data", "bosphorus"),
            "runs": j(work, "runs" + sub), "refined": j(work, "refined" + sub), "results": j(work, "results" + sub)}


def refine_outputs(work: str, tag: str, config: str):
    """(dataset, refine output folder, dataset folder) of each set `config` has refined under `work`/`tag`;
    a set without refine output is skipped with a line on stderr."""
    import sys

    pth = paths(work, tag)
    for ds, data_key in (("frgc", "frgc_data"), ("bosphorus", "bos_data")):
        out = storage.join(pth["refined"], config, ds)
        if not storage.exists(storage.join(out, "metrics.parquet")):
            print(f"{out}: no refine output, skipped", file=sys.stderr)
            continue
        yield ds, out, pth[data_key]
