"""Put several refinement outputs in one comparison table (ablation configurations, pix2pix, …).

  refine-ray report --runs OUT_A OUT_B … [--labels A B …] --out DIR|s3://…
  python jobs/report.py …

Each --runs entry is an output folder of the refine job. Writes summary.json, report.md and
report.html under --out: one Refined row per run and dataset (mean ± std of MAE, Eq. 4 and mm), and
the Coarse rows once when every run refined the same inputs. With a single run and no --labels it
(re)writes that run's full report (heat maps, histogram, failures) instead.
Exit status 0 done, 2 could not run.
"""
from __future__ import annotations

import argparse
import sys

from refine_ray.cli import CannotRun, EXIT_DONE, job_main, parser_for
from refine_ray.inference.config import CompareConfig
from refine_ray.inference.report import combine_runs, write_report


def build_parser() -> argparse.ArgumentParser:
    return parser_for(CompareConfig, "report", __doc__)


def main(argv: list[str] | None = None) -> int:
    return job_main(build_parser(), CompareConfig, _report, argv)


def _report(cfg: CompareConfig, args: argparse.Namespace) -> int:
    if not (cfg.runs and cfg.out):
        raise CannotRun("--runs and --out are required (flags or config keys)")
    if len(cfg.runs) == 1 and not cfg.labels:
        write_report(cfg.runs[0], cfg.out, title=cfg.title, heatmap_max_mm=cfg.heatmap_max_mm)
    else:
        combine_runs(cfg.runs, cfg.out, labels=cfg.labels, title=cfg.title)
    print(f"report: {cfg.out.rstrip('/')}/report.html")
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
