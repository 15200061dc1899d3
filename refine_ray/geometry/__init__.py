"""Geometry of the DCE face image (pure numpy/numba, no I/O): projection, rasterization, curvature, crop, meshes."""
from refine_ray.geometry.projection import (
    ImageView,
    ScaledOrthographic,
    estimate_scaled_orthographic,
    nearest_rotation,
    pixels_to_plane,
    plane_to_pixels,
    rotation_from_angles,
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
from refine_ray.geometry.footprint import refined_footprint, scan_holes
from refine_ray.geometry.dce import (
    CURVATURE_RADIUS_MM,
    IBUG_ANCHOR,
    DceImage,
    DceNormalization,
    DceSurface,
    anchor_from_landmarks,
    depth_units_to_mm,
    encode_dce,
    fill_invalid,
)

__all__ = [
    "depth_units_to_mm",
    "refined_footprint",
    "scan_holes",
    "rotation_from_angles",
    "anchor_from_landmarks",
    "boundary_vertices",
    "crop_face",
    "CURVATURE_RADIUS_MM",
    "DceImage",
    "DceNormalization",
    "DceSurface",
    "depth_to_mesh",
    "elevation",
    "encode_dce",
    "estimate_scaled_orthographic",
    "face_contour_polygon",
    "face_normals",
    "fill_invalid",
    "IBUG_ANCHOR",
    "ImageView",
    "mean_curvature",
    "median_filter_outliers",
    "mesh_from_grid",
    "mesh_to_ply_bytes",
    "nearest_rotation",
    "orient_faces_toward",
    "pixels_to_plane",
    "plane_to_pixels",
    "rasterize",
    "rasterize_visibility",
    "ScaledOrthographic",
    "smooth_normals",
    "vertex_normals",
]
