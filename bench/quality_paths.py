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


def run_arguments(doc: str, config: str | None = "dcergb_d_dce", config_help: str | None = None,
                  reads_runs: bool = True):
    """The command line the quality diagnostics share: --work, --json and, for those that read a run's
    refine outputs (`reads_runs`), --tag and --config. Add your own to it."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="a bench/quality.py --work folder")
    if reads_runs:
        ap.add_argument("--tag", default="", help="the run's --tag (its refine outputs)")
        ap.add_argument("--config", default=config, help=config_help or "the configuration whose refine outputs are read")
    ap.add_argument("--json", help="also write the results as JSON here")
    return ap


def finish(results: dict, json_path: str | None, nothing: str) -> int:
    """Exit status of a diagnostic: 2 with `nothing` on stderr when it judged nothing, else 0 after
    writing `results` to `json_path` when given."""
    import json
    import sys

    if not results:
        print(f"error: {nothing}", file=sys.stderr)
        return 2
    if json_path:
        storage.atomic_write_text(json_path, json.dumps(results, indent=2))
    return 0
