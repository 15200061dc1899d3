"""Refine coarse reconstructions with a trained model, at dataset scale on Ray Data, and report the error.

The `refine` job as a script, the form `ray job submit -- python jobs/refine.py …` runs; the same as
`refine-ray refine …`. Flags: `python jobs/refine.py --help`; the code: refine_ray/cli/refine.py.
"""
import sys

from refine_ray.cli.refine import main

if __name__ == "__main__":
    sys.exit(main())
