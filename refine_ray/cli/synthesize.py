"""Synthetic face scans in the real dataset formats (FRGC .abs.gz, Bosphorus .bnt) or registered meshes.

  refine-ray synthesize --format frgc --subjects 20 --scans-per-subject 4 --out data/synth_frgc --seed 0 --preview
  python jobs/synthesize.py …

Deterministic for a seed (per-scan seeds from (seed, subject, scan)); parallel on Ray, one task per
subject; re-running skips scans already written. Every flag has a config key (--config YAML).
Prints a JSON summary. Exit status 0 done, 2 could not run.
"""
from __future__ import annotations

import argparse
import json
import sys

from refine_ray.cli import EXIT_DONE, job_main, parser_for
from refine_ray.synth.config import SynthesizeConfig
from refine_ray.synth.dataset import synthesize_dataset


def build_parser() -> argparse.ArgumentParser:
    return parser_for(SynthesizeConfig, "synthesize", __doc__)


def main(argv: list[str] | None = None) -> int:
    return job_main(build_parser(), SynthesizeConfig, _synthesize, argv)


def _synthesize(cfg: SynthesizeConfig, args: argparse.Namespace) -> int:
    summary = synthesize_dataset(cfg.format, cfg.subjects, cfg.scans_per_subject, cfg.out, seed=cfg.seed,
                                 preview=cfg.preview, parallel=not cfg.serial)
    print(json.dumps(summary, indent=2))
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
