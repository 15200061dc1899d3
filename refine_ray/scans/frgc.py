"""FRGC v2.0 range scans: ASCII `.abs` / `.abs.gz` (pixel-registered with a `.ppm` photo).

Layout: `480 rows`, `640 columns`, `pixels (flag X Y Z):`, then four lines of rows×cols values —
flags, X, Y, Z — row-major, top row first; X/Y/Z of invalid pixels = -999999.
Parsing scans the bytes of each data line with a small numba decimal parser (≈1.2 M numbers in
a few tens of ms; pandas' C tokenizer as the fallback for unusual tokens), never a Python loop; every inconsistency becomes a ScanFormatError naming the file.
"""
from __future__ import annotations

import io
import re

import numba
import numpy as np
import pandas as pd

from refine_ray.scans import limits
from refine_ray.scans.record import ScanFormatError

INVALID = -999999.0
_HEADER = re.compile(rb"\s*(\d+)\s+rows\s*\n\s*(\d+)\s+columns\s*\n\s*pixels\s*\(flag X Y Z\):?[^\n]*\n", re.I)


MAX_VALUE_BYTES = 24   # one value and its separator ("-999999.000000 " is 15; real files use fewer)


def _header(data, source: str) -> tuple[re.Match, int, int]:
    m = _HEADER.match(data)
    if not m:
        raise ScanFormatError(source, "not an FRGC .abs file (expected 'N rows', 'M columns', 'pixels (flag X Y Z):')")
    rows, cols = int(m.group(1)), int(m.group(2))
    limits.check_grid(rows, cols, source)
    return m, rows, cols


def _inflated_budget(source: str):
    """What an .abs header can justify: its 4 lines of rows×cols values of at most MAX_VALUE_BYTES each."""
    def budget(head: bytes) -> int:
        m, rows, cols = _header(head, source)
        return m.end() + 4 * rows * cols * MAX_VALUE_BYTES + 64
    return budget


def decompress_if_gz(data: bytes, source: str):
    """Inflate a gzip'ed .abs in bounded memory (limits.inflate, capped by the declared grid)."""
    if data[:2] == b"\x1f\x8b":
        return limits.inflate(data, source, _inflated_budget(source))
    return data


@numba.njit(cache=True, nogil=True)
def _scan_decimals(buf, out):
    """Parse whitespace-separated decimals ([+-]digits[.digits][e[+-]digits]) from bytes into `out`.

    Returns (count, error_position): error_position ≥ 0 at the first token it does not understand
    (then the caller falls back to a general parser), count = len(out) + 1 when there are more values.
    """
    n = buf.size
    cap = out.size
    i = 0
    k = 0
    while True:
        while i < n and (buf[i] == 32 or buf[i] == 9 or buf[i] == 10 or buf[i] == 13):
            i += 1
        if i >= n:
            return k, -1
        if k >= cap:
            return cap + 1, -1
        start = i
        neg = False
        if buf[i] == 45 or buf[i] == 43:
            neg = buf[i] == 45
            i += 1
        mant = 0
        digits = 0
        frac = 0
        while i < n and 48 <= buf[i] <= 57:
            mant = mant * 10 + (buf[i] - 48)
            digits += 1
            i += 1
        if i < n and buf[i] == 46:
            i += 1
            while i < n and 48 <= buf[i] <= 57:
                mant = mant * 10 + (buf[i] - 48)
                digits += 1
                frac += 1
                i += 1
        if digits == 0 or digits > 15:          # ≤ 15 digits: the mantissa is exact in a float64
            return k, start
        exp = 0
        if i < n and (buf[i] == 101 or buf[i] == 69):
            i += 1
            eneg = False
            if i < n and (buf[i] == 45 or buf[i] == 43):
                eneg = buf[i] == 45
                i += 1
            edigits = 0
            while i < n and 48 <= buf[i] <= 57:
                exp = exp * 10 + (buf[i] - 48)
                edigits += 1
                i += 1
            if edigits == 0 or exp > 300:
                return k, start
            if eneg:
                exp = -exp
        if i < n and not (buf[i] == 32 or buf[i] == 9 or buf[i] == 10 or buf[i] == 13):
            return k, start
        e = exp - frac
        if e > 22 or e < -22:
            return k, start                      # beyond exact powers of ten: let the general parser do it
        v = float(mant)
        if e < 0:
            v = v / 10.0 ** (-e)                 # exact power of ten, one correctly rounded division
        elif e > 0:
            v = v * 10.0 ** e
        out[k] = -v if neg else v
        k += 1


def _parse_numbers(line: bytes, source: str, what: str, expected: int = -1) -> np.ndarray:
    """One whitespace-separated line of numbers → float64.

    Fast path: a numba byte scanner for plain decimals (≈10 ms per 300k values). Anything else
    (nan, inf, very long mantissas, garbage) goes to pandas' C tokenizer, which parses it or names the
    problem. np.fromstring / np.loadtxt take 10–30× longer on the same line.
    """
    if expected >= 0:
        out = np.empty(expected)
        count, err = _scan_decimals(np.frombuffer(line, dtype=np.uint8), out)
        if err < 0:
            return out if count == expected else np.empty(count)
    line = line.strip()
    if not line:
        return np.empty(0)
    try:
        col = pd.read_csv(io.BytesIO(line.replace(b"\t", b" ").replace(b" ", b"\n")), header=None, engine="c",
                          dtype=np.float64, skip_blank_lines=True)
    except (ValueError, pd.errors.ParserError) as exc:
        raise ScanFormatError(source, f"non-numeric value in the {what} line ({str(exc)[:80]})") from None
    return col.to_numpy()[:, 0]


def _fast_flags(line: bytes, n: int) -> np.ndarray | None:
    """The flag line as written by the scanner software ('0 1 1 0 …', single spaces): a byte view, no parsing."""
    line = line.strip()
    if len(line) != 2 * n - 1:
        return None
    b = np.frombuffer(line, dtype=np.uint8)
    digits, gaps = b[0::2], b[1::2]
    if not ((gaps == 32).all() and ((digits == 48) | (digits == 49)).all()):
        return None
    return (digits - 48).astype(np.float64)


def parse_abs(data: bytes, source: str = "<abs>") -> tuple[np.ndarray, np.ndarray]:
    """`.abs` bytes (gzip or plain) → (grid (H,W,3) float64 mm with NaN where invalid, valid (H,W) bool)."""
    data = decompress_if_gz(data, source)
    m, rows, cols = _header(data, source)
    n = rows * cols
    # Each value takes a character and a separator: a body shorter than that cannot back the header,
    # refused before anything of the declared size is allocated.
    if len(data) - m.end() < 4 * (2 * n - 1):
        raise ScanFormatError(source, f"data of {len(data) - m.end()} bytes is too short for 4 lines of {rows}×{cols} = "
                                      f"{n} values (truncated file or wrong header)")
    # Split the whole buffer and drop the header's lines: slicing the body off and stripping its end
    # would copy the ~4 MB of data twice per scan.
    lines = data.split(b"\n")[data.count(b"\n", 0, m.end()):]
    while lines and not lines[-1].strip(b"\r"):
        lines.pop()  # trailing blank lines (the old body.rstrip(b"\r\n"))
    if lines:
        lines[-1] = lines[-1].rstrip(b"\r")
    if len(lines) != 4:
        raise ScanFormatError(source, f"expected 4 data lines (flag, X, Y, Z), found {len(lines)} (truncated?)")
    parsed_lines = []
    for k, (line, what) in enumerate(zip(lines, ("flag", "X", "Y", "Z"))):
        if len(line) < 2 * n - 1:    # every value takes ≥ 1 character and a separator: cheap check before parsing
            raise ScanFormatError(source, f"{what} line is {len(line)} bytes, too short for {rows}×{cols} = {n} values "
                                          "(truncated file or wrong header)")
        parsed = _fast_flags(line, n) if k == 0 else None
        parsed = _parse_numbers(line, source, what, n) if parsed is None else parsed
        if parsed.size != n:
            raise ScanFormatError(source, f"{what} line holds {parsed.size} values, expected {rows}×{cols} = {n} "
                                          "(truncated or inconsistent file)")
        parsed_lines.append(parsed.reshape(rows, cols))
    flags, x, y, z = parsed_lines
    xyz, valid, n_bad, first_bad, flags_ok = _assemble_grid(flags, x, y, z)
    if not flags_ok:
        raise ScanFormatError(source, "flag line holds values other than 0 and 1")
    if n_bad:
        r, c = divmod(int(first_bad), cols)
        raise ScanFormatError(source, f"{n_bad} pixels flagged valid carry the invalid marker "
                                      f"or a non-finite value (first at row {r}, col {c})")
    return xyz, valid


@numba.njit(cache=True, nogil=True)
def _assemble_grid(flags, x, y, z):
    """(H,W,3) grid with NaN where not valid, the valid mask, and the checks, in one pass
    (the numpy version made ~6 full-grid temporaries: ~10 ms per 640×480 scan)."""
    h, w = flags.shape
    xyz = np.empty((h, w, 3))
    valid = np.zeros((h, w), dtype=np.bool_)
    n_bad, first_bad, flags_ok = 0, -1, True
    for r in range(h):
        for c in range(w):
            f = flags[r, c]
            if f != 0.0 and f != 1.0:
                flags_ok = False
            if f == 1.0:
                valid[r, c] = True
                px, py, pz = x[r, c], y[r, c], z[r, c]
                xyz[r, c, 0], xyz[r, c, 1], xyz[r, c, 2] = px, py, pz
                if (px == INVALID or py == INVALID or pz == INVALID
                        or not (np.isfinite(px) and np.isfinite(py) and np.isfinite(pz))):
                    if n_bad == 0:
                        first_bad = r * w + c
                    n_bad += 1
            else:
                xyz[r, c, 0] = xyz[r, c, 1] = xyz[r, c, 2] = np.nan
    return xyz, valid, n_bad, first_bad, flags_ok


def format_abs(grid: np.ndarray, valid: np.ndarray, decimals: int = 3) -> bytes:
    """(H,W,3) mm + (H,W) valid → `.abs` text bytes; values rounded to `decimals` (default 1 µm)."""
    grid = np.asarray(grid, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    rows, cols = valid.shape
    if grid.shape != (rows, cols, 3):
        raise ValueError(f"grid shape {grid.shape} does not match valid {valid.shape}")
    if not np.isfinite(grid[valid]).all():
        raise ValueError("valid pixels must have finite coordinates")
    flat_valid = valid.ravel()
    out = [f"{rows} rows\n{cols} columns\npixels (flag X Y Z):\n".encode(),
           " ".join("1" if v else "0" for v in flat_valid).encode() + b"\n"]
    fmt = f"{{:.{decimals}f}}".format
    for k in range(3):
        tokens = np.full(flat_valid.size, "-999999", dtype=object)
        tokens[flat_valid] = [fmt(v) for v in grid[..., k].ravel()[flat_valid]]
        out.append(" ".join(tokens).encode() + b"\n")
    return b"".join(out)
