"""The whole refine-ray chain on a laptop, in minutes: synthesize a small FRGC-format set, preprocess it,

The `quickstart` job as a script, the form `ray job submit -- python jobs/quickstart.py …` runs; the same as
`refine-ray quickstart …`. Flags: `python jobs/quickstart.py --help`; the code: refine_ray/cli/quickstart.py.
"""
import sys

from refine_ray.cli.quickstart import main

if __name__ == "__main__":
    sys.exit(main())
