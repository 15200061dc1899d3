"""Memory bounds for scan files, which may be hostile: a few megabytes must never become gigabytes.

Each reader checks what a file declares (grid size, element counts, image size) against these caps
and against what its body can hold *before* allocating for it, and gzip streams inflate in chunks
up to a cap derived from the declared grid. The caps are far above real scanners (FRGC 640×480,
Bosphorus ≈ 500×400, a 24-Mpixel photo) and keep one scan's peak memory to a few hundred MB.
"""
from __future__ import annotations

import zlib
from typing import Callable

from refine_ray.scans.record import ScanFormatError

MAX_FILE_BYTES = 256 * 1024**2       # one scan file as stored
MAX_INFLATED_BYTES = 256 * 1024**2   # one gzip stream, inflated
MAX_GRID_PIXELS = 2048 * 2048        # range-grid pixels
MAX_PHOTO_PIXELS = 40_000_000        # photo pixels (PIL itself refuses only beyond 179 M)
MAX_MESH_VERTICES = 5_000_000
MAX_MESH_FACES = 10_000_000

_HEAD_BYTES = 64 * 1024              # inflated before the declared size is asked for
_IN_CHUNK = 64 * 1024
_OUT_CHUNK = 4 * 1024**2


def check_grid(rows: int, cols: int, source: str) -> None:
    if not (0 < rows and 0 < cols):
        raise ScanFormatError(source, f"empty grid {rows}×{cols}")
    if rows * cols > MAX_GRID_PIXELS:
        raise ScanFormatError(source, f"grid {rows}×{cols} = {rows * cols} pixels exceeds the limit of "
                                      f"{MAX_GRID_PIXELS} (refine_ray.scans.limits.MAX_GRID_PIXELS)")


def check_file_size(size: int, source: str) -> None:
    if size > MAX_FILE_BYTES:
        raise ScanFormatError(source, f"file is {size} bytes, over the limit of {MAX_FILE_BYTES} "
                                      "(refine_ray.scans.limits.MAX_FILE_BYTES)")


def inflate(data: bytes, source: str, budget: Callable[[bytes], int] | None = None) -> bytearray:
    """Inflate a gzip file (every member, as `gzip.decompress`) without ever holding more than the cap.

    `budget(head)` sees the first inflated bytes (the header of the format) and returns how many
    inflated bytes that header can justify (or raises ScanFormatError); the cap is the smaller of it
    and MAX_INFLATED_BYTES. A stream that goes beyond is refused as soon as it does.
    """
    cap = MAX_INFLATED_BYTES
    out = bytearray()
    asked = budget is None
    view = memoryview(data)
    pos = 0                                       # end of the input fed so far
    d = zlib.decompressobj(wbits=31)
    try:
        while True:
            if d.eof:
                pos -= len(d.unused_data)             # where this member ended
                if not view[pos:pos + 2] == b"\x1f\x8b":
                    if any(view[pos:]):
                        raise ScanFormatError(source, "trailing data after the gzip stream")
                    break                             # end, or zero padding (as gzip allows)
                d = zlib.decompressobj(wbits=31)      # next member of a multi-member file
            if d.unconsumed_tail:
                piece = d.decompress(d.unconsumed_tail, _OUT_CHUNK)
            elif pos < len(view):
                piece = d.decompress(view[pos:pos + _IN_CHUNK], _OUT_CHUNK)
                pos = min(pos + _IN_CHUNK, len(view))
            else:
                raise ScanFormatError(source, "corrupt or truncated gzip stream (ends inside a member)")
            out += piece
            if not asked and (len(out) >= _HEAD_BYTES or d.eof):
                cap = min(cap, budget(bytes(out[:_HEAD_BYTES])))
                asked = True
            if len(out) > cap:
                raise ScanFormatError(source, f"gzip stream inflates beyond {cap} bytes, more than its header can "
                                              "need (decompression bomb?)")
    except zlib.error as exc:
        raise ScanFormatError(source, f"corrupt or truncated gzip stream ({exc})") from None
    return out   # a bytearray: the parsers take it as is (bytes(out) would double the peak)
