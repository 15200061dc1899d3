"""The whole refine-ray chain on a laptop, in minutes: synthesize a small FRGC-format set, preprocess it,
train a short progressive schedule on the CPU, refine the test split and write the report.

  refine-ray quickstart [--out DIR]
  python jobs/quickstart.py [--out DIR]

Prints where the report is. Every flag overrides the key of the embedded default named in its help;
re-running with the same --out skips the finished steps. The training is far too short to reach the
paper's numbers: the quickstart shows the parts working together, not the method's accuracy.
Exit status 0 done, 1 some samples failed, 2 could not run.
"""
from __future__ import annotations

import argparse
import json
import sys

from refine_ray.cli import EXIT_DONE, EXIT_SOME_FAILED, job_main, parser_for
from refine_ray.quickstart import QuickstartConfig, run_quickstart


def build_parser() -> argparse.ArgumentParser:
    return parser_for(QuickstartConfig, "quickstart", __doc__, "YAML overriding the embedded default (keys as in the flags' help)")


def main(argv: list[str] | None = None) -> int:
    return job_main(build_parser(), QuickstartConfig, _quickstart, argv)


def _quickstart(cfg: QuickstartConfig, args: argparse.Namespace) -> int:
    result = run_quickstart(cfg)
    print(json.dumps(result, indent=2))
    print(f"\nReport: {result['report']}")
    return EXIT_DONE if result["errors"] == 0 else EXIT_SOME_FAILED


if __name__ == "__main__":
    sys.exit(main())
