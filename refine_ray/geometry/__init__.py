"""Pure-numpy geometry of the DCE face image: projection, rasterization, curvature, crop, meshes."""
from refine_ray.geometry.projection import (
    ImageView,
    ScaledOrthographic,
    estimate_scaled_orthographic,
    nearest_rotation,
    pixels_to_plane,
    plane_to_pixels,
)
from refine_ray.geometry.rasterize import rasterize, rasterize_visibility

__all__ = [
    "ImageView",
    "ScaledOrthographic",
    "estimate_scaled_orthographic",
    "nearest_rotation",
    "pixels_to_plane",
    "plane_to_pixels",
    "rasterize",
    "rasterize_visibility",
]
