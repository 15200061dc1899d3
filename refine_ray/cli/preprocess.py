"""Preprocess scans into training-ready Parquet shards (coarse 3DMM vs ground truth, DCE+RGB images).

  refine-ray preprocess --input DIR|s3://… --output DIR|s3://… [--config configs/preprocess/frgc.yaml] …
  python jobs/preprocess.py …            (the same, as `ray job submit` runs it)

Every flag overrides the config key named in its help; re-running on the same output completes what
is missing. Exit status 0 on success, 1 when more than --max-error-fraction of the scans failed,
2 when the job cannot run (bad flags/config, no scans, output made with other settings) or stopped
part-way (storage or cluster failure: re-run the same command to resume).
"""
from __future__ import annotations

import argparse
import json
import sys

from refine_ray.cli import EXIT_CANNOT_RUN, EXIT_DONE, EXIT_SOME_FAILED, error, job_main, parser_for
from refine_ray.config import ConfigError
from refine_ray.data.pipeline import PreprocessError, run_preprocess
from refine_ray.data.settings import PreprocessSettings
from refine_ray.data.shards import OutputMismatchError


def build_parser() -> argparse.ArgumentParser:
    return parser_for(PreprocessSettings, "preprocess", __doc__,
                      "YAML settings (configs/preprocess/*.yaml); flags override its keys")


def main(argv: list[str] | None = None) -> int:
    return job_main(build_parser(), PreprocessSettings, _preprocess, argv)


def _preprocess(settings: PreprocessSettings, args: argparse.Namespace) -> int:
    try:
        summary = run_preprocess(settings)
    except (PreprocessError, OutputMismatchError, ConfigError) as exc:
        error(exc)
        return EXIT_CANNOT_RUN
    print(json.dumps(dict(summary), default=str))
    if not summary["ok"]:
        error(f"{summary['scans_failed']} scans failed ({summary['error_fraction']:.1%} > "
              f"max_error_fraction {settings.max_error_fraction:.1%}); see {settings.output}/errors.parquet")
        return EXIT_SOME_FAILED
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
