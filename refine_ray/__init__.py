"""refine-ray: detailed 3D faces from coarse 3DMM reconstructions, at dataset scale on Ray."""
from refine_ray.version import __version__, code_version

__all__ = ["Refiner", "__version__", "code_version"]


def __getattr__(name: str):
    """`Refiner` is imported on first use, so `import refine_ray.nn` (the GPU check, on machines without
    Ray or trimesh) does not pull in the whole inference stack."""
    if name == "Refiner":
        from refine_ray.inference.api import Refiner
        return Refiner
    raise AttributeError(f"module 'refine_ray' has no attribute {name!r}")
