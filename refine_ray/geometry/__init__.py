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
from refine_ray.geometry.surface import boundary_vertices, elevation, face_normals, mean_curvature, vertex_normals
from refine_ray.geometry.dce import (
    CURVATURE_RADIUS_MM,
    IBUG_ANCHOR,
    DceImage,
    DceNormalization,
    anchor_from_landmarks,
    encode_dce,
)

__all__ = [
    "CURVATURE_RADIUS_MM",
    "IBUG_ANCHOR",
    "DceImage",
    "DceNormalization",
    "anchor_from_landmarks",
    "boundary_vertices",
    "elevation",
    "encode_dce",
    "face_normals",
    "mean_curvature",
    "vertex_normals",
    "ImageView",
    "ScaledOrthographic",
    "estimate_scaled_orthographic",
    "nearest_rotation",
    "pixels_to_plane",
    "plane_to_pixels",
    "rasterize",
    "rasterize_visibility",
]
