"""Scan readers: FRGC .abs(.gz), Bosphorus .bnt, OBJ/PLY/WRL — local or s3:// — all into one Scan record."""
from refine_ray.scans.readers import PRIMARY_SUFFIXES, discover_scans, read_scan
from refine_ray.scans.record import Scan, ScanFormatError

__all__ = ["PRIMARY_SUFFIXES", "Scan", "ScanFormatError", "discover_scans", "read_scan"]
