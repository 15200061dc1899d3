"""refine-ray: detailed 3D faces from coarse 3DMM reconstructions, at dataset scale on Ray."""
from refine_ray.version import __version__, code_version
from refine_ray.inference.api import Refiner

__all__ = ["Refiner", "__version__", "code_version"]
