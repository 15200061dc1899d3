"""refine-ray: detailed 3D faces from coarse 3DMM reconstructions, at dataset scale on Ray."""
from refine_ray.version import __version__, code_version

__all__ = ["__version__", "code_version"]
