"""Build a PCA 3D Morphable Model from registered meshes of one topology.

The `build-3dmm` job as a script, the form `ray job submit -- python jobs/build_3dmm.py …` runs; the same as
`refine-ray build-3dmm …`. Flags: `python jobs/build_3dmm.py --help`; the code: refine_ray/cli/build_3dmm.py.
"""
import sys

from refine_ray.cli.build_3dmm import main

if __name__ == "__main__":
    sys.exit(main())
