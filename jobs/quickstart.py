"""The whole refine-ray chain on a laptop, in minutes: synthesize a small FRGC-format set, preprocess it,
train a short progressive schedule on the CPU, refine the test split and write the report.

  python jobs/quickstart.py [--out DIR]

Prints where the report is. Every flag overrides the key of the embedded default named in its help;
re-running with the same --out skips the finished steps. The training is far too short to reach the
paper's numbers: the quickstart shows the parts working together, not the method's accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from refine_ray.config import ConfigError, load_config  # noqa: E402
from refine_ray.quickstart import QuickstartConfig  # noqa: E402

FLAGS = {"out": "out", "subjects": "subjects", "scans_per_subject": "scans_per_subject", "poses": "poses",
         "image_size": "image_size", "max_resolution": "max_resolution",
         "iterations_per_stage": "iterations_per_stage", "seed": "seed"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quickstart", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML overriding the embedded default (keys as in the flags' help)")
    p.add_argument("--out", help="[out] output folder (default ./quickstart-out)")
    p.add_argument("--subjects", type=int, help="[subjects] synthetic subjects (default 9)")
    p.add_argument("--scans-per-subject", type=int, help="[scans_per_subject] (default 2)")
    p.add_argument("--poses", type=int, help="[poses] augmented poses per scan (default 2)")
    p.add_argument("--image-size", type=int, help="[image_size] image side in px (default 64)")
    p.add_argument("--max-resolution", type=int, help="[max_resolution] last progressive stage (default 64)")
    p.add_argument("--iterations-per-stage", type=int, help="[iterations_per_stage] (default 400; paper 10,000)")
    p.add_argument("--seed", type=int, help="[seed]")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(QuickstartConfig, args.config, {k: getattr(args, d) for d, k in FLAGS.items()})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from refine_ray.quickstart import run_quickstart

    result = run_quickstart(cfg, project_root=ROOT)
    print(json.dumps(result, indent=2))
    print(f"\nReport: {result['report']}")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
