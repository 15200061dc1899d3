"""Contact sheet: photo over shaded depth for a few scans, read back through the scan readers
(so the picture shows what a user's pipeline would see, not the generator's internals)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from refine_ray import storage
from refine_ray.geometry import rasterize
from refine_ray.scans import read_scan

TILE_W, TILE_H = 200, 250


def shaded_depth(grid: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Grey Lambertian shading of a range grid under a fixed frontal-left light (uint8, H×W)."""
    d_row = np.gradient(grid, axis=0)
    d_col = np.gradient(grid, axis=1)
    n = np.cross(d_col, -d_row)
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    light = np.array([-0.4, 0.5, 0.77])
    shade = np.clip(np.nan_to_num(n @ (light / np.linalg.norm(light)), nan=0.0), 0, 1)
    return (np.where(valid, 40 + 215 * shade, 0)).astype(np.uint8)


def _crop_box(valid: np.ndarray, pad: int = 6):
    rows, cols = np.nonzero(valid)
    if len(rows) == 0:
        return 0, 0, valid.shape[1], valid.shape[0]
    return (max(cols.min() - pad, 0), max(rows.min() - pad, 0),
            min(cols.max() + pad, valid.shape[1]), min(rows.max() + pad, valid.shape[0]))


def _fit(im: Image.Image) -> Image.Image:
    im = im.copy()
    im.thumbnail((TILE_W, TILE_H))
    tile = Image.new("RGB", (TILE_W, TILE_H), (20, 20, 20))
    tile.paste(im, ((TILE_W - im.width) // 2, (TILE_H - im.height) // 2))
    return tile


def contact_sheet(scan_uris: list[str], out_uri: str, max_scans: int = 12) -> str:
    uris = list(scan_uris)
    if len(uris) > max_scans:   # spread over subjects and expressions
        uris = [uris[i] for i in np.linspace(0, len(uris) - 1, max_scans).round().astype(int)]
    tiles = []
    for uri in uris:
        scan = read_scan(uri)
        box = _crop_box(scan.grid_valid)
        depth = Image.fromarray(shaded_depth(scan.grid, scan.grid_valid)).crop(box).convert("RGB")
        if scan.photo is not None:
            sy = scan.photo.shape[0] / scan.grid_valid.shape[0]
            sx = scan.photo.shape[1] / scan.grid_valid.shape[1]
            pbox = (int(box[0] * sx), int(box[1] * sy), int(box[2] * sx), int(box[3] * sy))
            photo = Image.fromarray(scan.photo).crop(pbox)
        else:
            photo = Image.new("RGB", depth.size)
        top, bottom = _fit(photo), _fit(depth)
        ImageDraw.Draw(top).text((4, 4), f"{scan.scan_id} {scan.expression or ''}", fill=(255, 255, 0))
        tiles.append((top, bottom))
    cols = min(len(tiles), 6)
    nrows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * TILE_W, nrows * 2 * TILE_H), (0, 0, 0))
    for i, (a, b) in enumerate(tiles):
        x, y = (i % cols) * TILE_W, (i // cols) * 2 * TILE_H
        sheet.paste(a, (x, y))
        sheet.paste(b, (x, y + TILE_H))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    storage.atomic_write_bytes(out_uri, buf.getvalue())
    return out_uri


def registered_sheet(vertices: np.ndarray, faces: np.ndarray, out_uri: str, max_faces: int = 12,
                     px_per_mm: float = 1.5) -> str:
    """Shaded frontal depth of registered meshes (they have no photo), rasterized like a scan."""
    picks = np.linspace(0, len(vertices) - 1, min(max_faces, len(vertices))).round().astype(int)
    tiles = []
    for i in picks:
        v = vertices[i] - vertices[i].mean(0)
        h, w = 330, 260
        img = np.c_[w / 2 + px_per_mm * v[:, 0], h / 2 - px_per_mm * v[:, 1], v[:, 2]]
        xyz, mask = rasterize(img, faces, v, h, w)
        grid = np.where(mask[..., None], xyz.astype(np.float64), np.nan)
        tiles.append(_fit(Image.fromarray(shaded_depth(grid, mask)).convert("RGB")))
    cols = min(len(tiles), 6)
    sheet = Image.new("RGB", (cols * TILE_W, ((len(tiles) + cols - 1) // cols) * TILE_H))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % cols) * TILE_W, (k // cols) * TILE_H))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    storage.atomic_write_bytes(out_uri, buf.getvalue())
    return out_uri
