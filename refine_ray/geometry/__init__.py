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
from refine_ray.geometry.surface import (
    boundary_vertices,
    elevation,
    face_normals,
    mean_curvature,
    smooth_normals,
    vertex_normals,
)
from refine_ray.geometry.meshes import depth_to_mesh, mesh_from_grid, mesh_to_ply_bytes, orient_faces_toward
from refine_ray.geometry.crop import crop_face, face_contour_polygon, median_filter_outliers
from refine_ray.geometry.dce import (
    CURVATURE_RADIUS_MM,
    IBUG_ANCHOR,
    DceImage,
    DceNormalization,
    DceSurface,
    anchor_from_landmarks,
    encode_dce,
    fill_invalid,
)

__all__ = [
    "CURVATURE_RADIUS_MM",
    "IBUG_ANCHOR",
    "DceImage",
    "DceNormalization",
    "DceSurface",
    "anchor_from_landmarks",
    "boundary_vertices",
    "crop_face",
    "depth_to_mesh",
    "face_contour_polygon",
    "median_filter_outliers",
    "mesh_from_grid",
    "mesh_to_ply_bytes",
    "orient_faces_toward",
    "elevation",
    "encode_dce",
    "face_normals",
    "fill_invalid",
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
    "smooth_normals",
]
