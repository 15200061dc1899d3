"""Synthetic face scans in the real dataset formats (FRGC .abs.gz, Bosphorus .bnt) or registered meshes.

The `synthesize` job as a script, the form `ray job submit -- python jobs/synthesize.py …` runs; the same as
`refine-ray synthesize …`. Flags: `python jobs/synthesize.py --help`; the code: refine_ray/cli/synthesize.py.
"""
import sys

from refine_ray.cli.synthesize import main

if __name__ == "__main__":
    sys.exit(main())
