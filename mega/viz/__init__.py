"""Visualisation: a pure-torch rasteriser, Lambert shading, compositing, keypoints, colour maps.

>>> frags = rasterize(verts, body.faces, K, 256, 256)            # (B, V, 3) camera frame
>>> rgb, alpha = shade(frags, verts, body.faces, colors, light)  # (B, H, W, 3), (B, H, W)
>>> img = composite(rgb, alpha, background)                      # (B, H, W, 3) float
"""

from mega.viz.colormap import colorbar, scalar_to_colors
from mega.viz.composite import composite, outline, to_float_image, to_uint8
from mega.viz.keypoints import draw_keypoints
from mega.viz.raster import Fragments, project_vertices, rasterize
from mega.viz.shading import interpolate, shade, vertex_normals

__all__ = [
    "Fragments",
    "colorbar",
    "composite",
    "draw_keypoints",
    "interpolate",
    "outline",
    "project_vertices",
    "rasterize",
    "scalar_to_colors",
    "shade",
    "to_float_image",
    "to_uint8",
    "vertex_normals",
]
