"""Train the refinement GAN (paper §4) on Ray Train.

  refine-ray train --config configs/train/dce_d_dce.yaml --data DATA --storage RUNS --name RUN \
      --num-workers 2 [--gpu] [--iterations-per-stage N] [--max-resolution R] [--init-from CKPT]
  python jobs/train.py …                 (the same, as `ray job submit` runs it)

Re-running with the same --name continues from the run's last checkpoint. Every flag overrides the
config key named in its help. Exit status 0 when training finished, 2 when it could not run.
"""
from __future__ import annotations

import argparse
import sys

from refine_ray.cli import EXIT_DONE, job_main, parser_for
from refine_ray.training.config import TrainConfig
from refine_ray.training.trainer import train


def build_parser() -> argparse.ArgumentParser:
    return parser_for(TrainConfig, "train", __doc__,
                      "YAML config (configs/train/*.yaml: the 7 Table-3 settings and pix2pix)")


def main(argv: list[str] | None = None) -> int:
    return job_main(build_parser(), TrainConfig, _train, argv)


def _train(cfg: TrainConfig, args: argparse.Namespace) -> int:
    cfg.require_paths()
    result = train(cfg)
    print(result.describe(), flush=True)
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
