"""Train the refinement GAN (paper §4) on Ray Train.

The `train` job as a script, the form `ray job submit -- python jobs/train.py …` runs; the same as
`refine-ray train …`. Flags: `python jobs/train.py --help`; the code: refine_ray/cli/train.py.
"""
import sys

from refine_ray.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
