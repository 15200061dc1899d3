"""The kinds of input `jobs/refine.py --input` accepts, and how each becomes work units.

    shards   sample shards (jobs/preprocess.py output, any folder of them, one .parquet file)
    scans    raw scans (FRGC, Bosphorus, OBJ/PLY/WRL + photo + landmarks): prepared once into shards
             with the checkpoint's encoding (data.encoding), then refined as shards
    meshes   coarse meshes made by other tools (OBJ/PLY/GLB/GLTF + 3D landmarks or a landmark-vertex-index
             file): brought to the model's frame by their landmarks, encoded on the fly, written back in
             their own frame and unit
    photos   a folder / s3:// prefix of .jpg/.jpeg/.png face photos: encoded on the fly in the units

A kind is an `InputKind`: `detect(input_uri)` says whether the input is of that kind (tried in
KINDS order when input_kind is auto), `plan(...)` returns its units, and raw kinds give the actors a
`batches` factory (kind → function that yields sample tables and per-sample extras for a unit).
To add a kind (e.g. coarse meshes made by other tools), write an InputKind and register it in KINDS
before the kinds it would be mistaken for; everything downstream (exactly-once units, outputs, report)
is shared.
"""
from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field
from typing import Any, Callable

from refine_ray import storage
from refine_ray.data.encoding import (check_shards_match, Encoding, encoding_from_data, EncodingError,
    manifest_encoding)
from refine_ray.data.photos import detector_problem, discover_photos, PhotoEncoder, PhotoOptions
from refine_ray.data.schema import read_manifest
from refine_ray.geometry import DceNormalization
from refine_ray.inference.mesh_input import (discover_meshes, has_index_files, mesh_batches, MeshEncoder, MeshOptions,
    plan_mesh_units)
from refine_ray.inference.photo_input import photo_batches, plan_photo_units
from refine_ray.inference.prepare import prepare_raw_input
from refine_ray.inference.units import plan_units
from refine_ray.scans import discover_scans

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What the driver hands the actors: units, errors found while planning, and how to read the units."""

    kind: str
    units: list
    errors: list[dict[str, str]] = field(default_factory=list)
    normalization: DceNormalization | None = None   # read once, from the manifest or the checkpoint
    split: str | None = None
    raw: bool = False                       # units are raw inputs encoded on the fly (batches factory)
    warnings: list[str] = field(default_factory=list)
    gallery: bool = False                   # inputs without ground truth: per-sample files (meshes, gallery) by default


class InputKind:
    name = "base"
    raw = False

    def detect(self, input_uri: str) -> bool:
        raise NotImplementedError

    def plan(self, cfg, encoding: Encoding | None) -> Plan:
        raise NotImplementedError


class ShardsInput(InputKind):
    name = "shards"

    def detect(self, input_uri: str) -> bool:
        
        files, errors = find_input_shards(input_uri, None)
        return bool(files or errors)

    def plan(self, cfg, encoding: Encoding | None) -> Plan:
        files, manifest_errors = find_input_shards(cfg.input, cfg.split)
        if not files and not manifest_errors:
            raise FileNotFoundError(f"{cfg.input}: no sample shards" + (f" of split {cfg.split}" if cfg.split else ""))
        units, errors = plan_units(files)
        errors = manifest_errors + errors
        norm, warnings, gallery = None, [], False
        if not str(cfg.input).endswith(".parquet"):
            try:
                manifest = read_manifest(cfg.input)
            except FileNotFoundError:
                manifest = None
            if manifest is not None:
                norm = DceNormalization.from_dict(manifest["normalization"]) if manifest.get("normalization") else None
                gallery = manifest.get("ground_truth") is False   # e.g. photos preprocessed into shards
                if encoding is not None:
                    try:
                        diffs = check_shards_match(encoding, manifest_encoding(manifest, cfg.input))
                    except EncodingError:
                        diffs = []
                    if diffs:
                        warnings.append(f"{cfg.input}: the shards are not encoded like the model's training data "
                                        f"({'; '.join(diffs)}); refined faces may be worse than the coarse ones")
        return Plan(self.name, units, errors, norm, cfg.split, warnings=warnings, gallery=gallery)


class ScansInput(InputKind):
    name = "scans"

    def detect(self, input_uri: str) -> bool:
        try:
            return bool(discover_scans(input_uri))
        except FileNotFoundError:
            return False

    def plan(self, cfg, encoding: Encoding | None) -> Plan:
        if encoding is None:
            settings = dict(cfg.prepare)
            warnings = ["raw scans prepared with the given prepare settings: the model does not say how its "
                        "inputs were encoded, so they cannot be checked"]
        else:
            settings = encoding.preprocess_settings(cfg.prepare)   # EncodingError on a contradiction
            warnings = []
        log.info("%s: raw scans; preprocessing them with the model's encoding (original pose only)", cfg.input)
        prepared, norm = prepare_raw_input(cfg.input, storage.join(cfg.output, "prepared"), settings)
        files, manifest_errors = find_input_shards(prepared, None)
        if not files:
            raise FileNotFoundError(f"{cfg.input}: no scan could be prepared for refinement")
        units, errors = plan_units(files)
        errors = manifest_errors + errors
        return Plan(self.name, units, errors, norm, None, warnings=warnings)


class MeshesInput(InputKind):
    """Coarse meshes made by other tools. Auto-detected only where landmark-index files sit beside meshes
    (a folder of meshes with 3D landmark files is also a valid scan folder: ask for input_kind meshes)."""

    name = "meshes"
    raw = True

    def detect(self, input_uri: str) -> bool:
        try:
            return has_index_files(input_uri) and bool(discover_meshes(input_uri))
        except FileNotFoundError:
            return False

    def plan(self, cfg, encoding: Encoding | None) -> Plan:
        if encoding is None:
            raise EncodingError("coarse-mesh inputs need the model's input encoding (a checkpoint that records it)")
        units, errors = plan_mesh_units(cfg.input, cfg.coarse_meshes.per_unit)
        if not units and not errors:
            raise FileNotFoundError(f"{cfg.input}: no meshes (.obj, .ply, .glb, .gltf)")
        return Plan(self.name, units, errors, encoding.dce_normalization(), None, raw=True)


class PhotosInput(InputKind):
    name = "photos"
    raw = True

    def detect(self, input_uri: str) -> bool:
        try:
            return bool(discover_photos(input_uri))
        except FileNotFoundError:
            return False

    def plan(self, cfg, encoding: Encoding | None) -> Plan:
        if encoding is None:
            raise EncodingError("photo inputs need the model's input encoding (a checkpoint that records it)")

        units, errors = plan_photo_units(cfg.input, cfg.photos.per_unit)
        if not units and not errors:
            raise FileNotFoundError(f"{cfg.input}: no photos (.jpg, .jpeg, .png)")
        problem = detector_problem([u for unit in units for u in unit.items],
                                   PhotoOptions(**cfg.photos.model_dump(exclude={"per_unit"})))
        if problem:
            raise ValueError(problem)
        return Plan(self.name, units, errors, encoding.dce_normalization(), None, raw=True)


def find_input_shards(input_uri: str, split: str | None) -> tuple[list[str], list[dict[str, str]]]:
    """(sample shards under `input_uri`, error rows for manifest entries that cannot be used).

    The shards the manifest lists (committed shards only, never the leftovers of an interrupted
    preprocessing run), each resolved inside `input_uri` (an entry that leads elsewhere is an error
    row, never read); else `<input>/<split>/*.parquet` when that folder exists, else every *.parquet
    but the errors table. A single .parquet file is accepted too."""
    if str(input_uri).endswith(".parquet"):
        return [str(input_uri)], []

    try:
        listed = read_manifest(input_uri).get("shards")
    except (FileNotFoundError, ValueError):
        listed = None
    if isinstance(listed, dict):
        files, errors = [], []
        for sp, paths in sorted(listed.items()):
            if split not in (None, sp):
                continue
            for rel in paths if isinstance(paths, list) else [paths]:
                try:
                    files.append(storage.resolve_inside(input_uri, str(rel)))
                except ValueError as exc:
                    errors.append({"file": storage.printable(str(rel)), "sample_id": "", "stage": "manifest",
                                   "reason": f"shard path refused: {exc}"})
        return sorted(files), errors
    root = storage.join(input_uri, split) if split and storage.exists(storage.join(input_uri, split)) else input_uri
    files = storage.list_files(root, suffixes=(".parquet",))
    return [f for f in files if posixpath.basename(f.replace("\\", "/")) != "errors.parquet"], []


# Tried in this order when input_kind is "auto": shards, then scans (whose folders hold photos too),
# then photos. A kind for foreign coarse meshes goes before scans (both may be OBJ/PLY).
KINDS: dict[str, InputKind] = {k.name: k for k in (ShardsInput(), MeshesInput(), ScansInput(), PhotosInput())}


def resolve_kind(input_uri: str, requested: str = "auto") -> InputKind:
    """The input kind asked for, or the first of KINDS that recognises the input."""
    if requested != "auto":
        if requested not in KINDS:
            raise ValueError(f"input_kind must be auto or one of {', '.join(KINDS)}, got {requested!r}")
        return KINDS[requested]
    if not storage.exists(input_uri):
        raise FileNotFoundError(f"{input_uri}: input not found")
    for kind in KINDS.values():
        if kind.detect(input_uri):
            return kind
    raise FileNotFoundError(f"{input_uri}: nothing to refine (no sample shards, scans, or photos .jpg/.jpeg/.png)")


def batches_factory(kind: str, context: dict[str, Any]) -> Callable:
    """In an actor: the `batches(unit, batch_size, counts, errors)` function of a raw input kind.
    `context` is JSON-able (the model's encoding and the kind's options), built once per actor."""
    if kind == "photos":
        enc = encoding_from_data(context["encoding"], context["encoding"].get("source", "checkpoint"))
        encoder = PhotoEncoder(enc, PhotoOptions(**context["options"]))
        return lambda unit, batch_size, counts, errors: photo_batches(encoder, unit, batch_size, counts, errors)
    if kind == "meshes":
        enc = encoding_from_data(context["encoding"], context["encoding"].get("source", "checkpoint"))
        mesh_encoder = MeshEncoder(enc, MeshOptions(**context["options"]))
        return lambda unit, batch_size, counts, errors: mesh_batches(mesh_encoder, unit, batch_size, counts, errors)
    raise ValueError(f"no batches for input kind {kind!r}")
