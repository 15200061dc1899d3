"""Put several refinement outputs in one comparison table (ablation configurations, pix2pix, …).

  python jobs/report.py --runs OUT_A OUT_B … [--labels A B …] --out DIR|s3://…

Each --runs entry is an output folder of jobs/refine.py. Writes summary.json, report.md and
report.html under --out: one Refined row per run and dataset (mean ± std of MAE, Eq. 4 and mm), and
the Coarse rows once when every run refined the same inputs. With a single run and no --labels it
(re)writes that run's full report (heat maps, histogram, failures) instead.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="output folders (or s3:// prefixes) of jobs/refine.py")
    p.add_argument("--labels", nargs="+", help="row label per run (default: each folder's name)")
    p.add_argument("--out", required=True, help="folder or s3:// prefix for summary.json, report.md, report.html")
    p.add_argument("--title", help="report title")
    p.add_argument("--heatmap-max-mm", type=float, default=5.0, help="single run: colour-scale limit of the heat maps (mm)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from refine_ray.inference.report import combine_runs, write_report

    try:
        if len(args.runs) == 1 and not args.labels:
            write_report(args.runs[0], args.out, title=args.title, heatmap_max_mm=args.heatmap_max_mm)
        else:
            combine_runs(args.runs, args.out, labels=args.labels, title=args.title)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {args.out.rstrip('/')}/report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
