"""Put several refinement outputs in one comparison table (ablation configurations, pix2pix, …).

The `report` job as a script, the form `ray job submit -- python jobs/report.py …` runs; the same as
`refine-ray report …`. Flags: `python jobs/report.py --help`; the code: refine_ray/cli/report.py.
"""
import sys

from refine_ray.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
