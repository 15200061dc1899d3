"""Preprocess scans into training-ready Parquet shards (coarse 3DMM vs ground truth, DCE+RGB images).

The `preprocess` job as a script, the form `ray job submit -- python jobs/preprocess.py …` runs; the same as
`refine-ray preprocess …`. Flags: `python jobs/preprocess.py --help`; the code: refine_ray/cli/preprocess.py.
"""
import sys

from refine_ray.cli.preprocess import main

if __name__ == "__main__":
    sys.exit(main())
