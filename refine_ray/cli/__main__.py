"""`python -m refine_ray.cli <job> …` = `refine-ray <job> …`."""
import sys

from refine_ray.cli import main

sys.exit(main())
