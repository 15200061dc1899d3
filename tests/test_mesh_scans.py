"""Textured meshes as scanners and photogrammetry tools export them (OBJ + MTL + UV texture), in mm / cm / m, in
any orientation, with 3D landmarks in LJSON v1, named-group LJSON, 3D .pts, or none (a stand-in detector),
preprocess into the same samples as the same face in the FRGC format.

Truth: each face is captured once by the synthetic FRGC scanner (frontal); the OBJ is that capture's own range
surface (meshed grid) with the capture's photo as its UV texture, then rotated, moved and rescaled by a known
transform. Both paths must give the same ground-truth and coarse DCE images."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pyarrow as pa
import pytest

from refine_ray.data.augment import sample_poses
from refine_ray.data.samples import SampleBuildError, build_samples
from refine_ray.data.schema import decode_images, rows_to_table
from refine_ray.data.settings import PreprocessSettings
from refine_ray.geometry import DceNormalization, mesh_from_grid, rotation_from_angles
from refine_ray.landmarks import LandmarkError, LandmarkProvider, make_provider
from refine_ray.landmarks import formats
from refine_ray.morphable import default_model
from refine_ray.scans import read_scan

MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
SETTINGS = dict(image_size=64, scale_px_per_mm=0.3, poses={"count": 0}, crop_contour=False)


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    """Two frontal synthetic FRGC captures written in the FRGC format; returns (folder, {name: RenderedScan})."""
    import refine_ray.synth.render as render
    from refine_ray.synth.face import Identity, make_face
    from refine_ray.synth.writers import write_frgc_scan

    d = str(tmp_path_factory.mktemp("frgc"))
    rng = np.random.default_rng(3)
    small = dataclasses.replace(render.FRGC, height=120, width=160, px_per_mm=0.375, spike_fraction=0.0)
    original = render.draw_pose
    render.draw_pose = lambda rng, profile: (0.0, 0.0, 0.0)     # frontal captures: the mesh path's camera
    try:
        out = {}
        for name in ("04500d1", "04501d1"):
            out[name] = render.render_scan(make_face(Identity.sample(rng), name[:5]), small, rng)
            write_frgc_scan(d, name, out[name])
    finally:
        render.draw_pose = original
    return d, out


def _write_obj(folder, name, cap, R, t, unit):
    """The capture's range surface as a textured OBJ (UV into its photo), moved by X → R·X + t, in `unit`;
    returns the transform's 3D landmarks (file units)."""
    from PIL import Image

    vertices, faces, gidx = mesh_from_grid(cap.grid, cap.valid)
    h, w = cap.valid.shape
    uv = np.stack([(gidx % w + 0.5) / w, 1.0 - (gidx // w + 0.5) / h], axis=1)
    moved = (vertices @ R.T + t) / MM[unit]
    Image.fromarray(cap.photo).save(os.path.join(folder, f"{name}_albedo.png"))
    with open(os.path.join(folder, f"{name}.mtl"), "w") as f:
        f.write(f"newmtl skin\nKd 1 1 1\nmap_Kd {name}_albedo.png\n")
    with open(os.path.join(folder, f"{name}.obj"), "w") as f:
        f.write(f"mtllib {name}.mtl\nusemtl skin\n")
        f.write("".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in moved))
        f.write("".join(f"vt {a:.6f} {b:.6f}\n" for a, b in uv))
        f.write("".join(f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}\n" for a, b, c in faces))
    return (cap.landmarks_3d @ R.T + t) / MM[unit]


class KnownLandmarks(LandmarkProvider):
    """A stand-in detector: the true landmarks of the face, projected into the render it is shown."""

    name = "known"

    def __init__(self, truth_mm: dict):
        self.truth_mm = truth_mm

    def landmarks_for(self, scan, photo=None):
        if scan.scan_id not in self.truth_mm:
            raise LandmarkError(scan.source, "face detector found no face in the photo")
        return scan.extra["frontal_view"].to_image(self.truth_mm[scan.scan_id])[:, :2]


def _rows(scan, settings, provider):
    rows = build_samples(scan, settings, default_model(), provider, sample_poses("x", 0, 0, 0, 0, 0))
    return decode_images(rows_to_table(rows)), rows[0]


def _depth_gap(a, b, norm, key="target", mask="target_mask"):
    both = a[mask][0] & b[mask][0]
    da, db = norm.denormalize_depth(a[key][0][..., 0]), norm.denormalize_depth(b[key][0][..., 0])
    return float(np.abs(da - db)[both].mean()), float(both.sum() / max(a[mask][0].sum(), 1))


LAYOUTS = [("mm", "ljson2", (35, -50, 160)), ("m", "ljson1", (-120, 70, 20)), ("cm", "pts", (180, 10, -90)),
           ("m", None, (15, -10, 8))]


@pytest.mark.parametrize("unit,layout,angles", LAYOUTS)
def test_textured_mesh_matches_the_frgc_path(captures, tmp_path, unit, layout, angles):
    folder, caps = captures
    name = "04500d1"
    cap = caps[name]
    R, t = rotation_from_angles(*angles), np.array([40.0, -300.0, 950.0])
    lm = _write_obj(str(tmp_path), name, cap, R, t, unit)
    if layout == "ljson2":       # the layout the issue reports ("version": 2 with named groups)
        doc = {"version": 2, "groups": {"dlib_3d": {"landmarks": {"points": lm.tolist(), "connectivity": []}}}}
        (tmp_path / f"{name}.ljson").write_text(json.dumps(doc))
    elif layout == "ljson1":
        doc = {"version": 1, "groups": [{"label": "all", "connectivity": [],
                                         "landmarks": [{"point": p.tolist()} for p in lm]}]}
        (tmp_path / f"{name}.ljson").write_text(json.dumps(doc))
    elif layout == "pts":
        formats.write_pts(str(tmp_path / f"{name}.pts"), lm)
    settings = PreprocessSettings(**SETTINGS, scan_units=unit)
    norm = DceNormalization()
    mesh = read_scan(str(tmp_path / f"{name}.obj"), units=unit)
    assert mesh.photo is None and mesh.texture is not None         # the albedo atlas is not taken for a photo
    provider = KnownLandmarks({name: lm * MM[unit]}) if layout is None else make_provider("file")
    got, row = _rows(mesh, settings, provider)
    ref, ref_row = _rows(read_scan(os.path.join(folder, name + ".abs.gz")), settings, make_provider("file"))
    # Tolerances (measured 0.86 mm / 0.80 mm for every unit and orientation): the two paths see one surface through cameras that differ by the rigid fit of this face's
    # landmarks to the model's mean landmarks (≈1°, i.e. ≈1 mm of depth 60 mm from the anchor) and resample it
    # at 0.3 px/mm; the coarse fits start from landmarks projected by different cameras.
    gap_t, overlap_t = _depth_gap(got, ref, norm)
    gap_c, overlap_c = _depth_gap(got, ref, norm, "input", "input_mask")
    print(f"{unit} {layout}: target depth gap {gap_t:.3f} mm (overlap {overlap_t:.2f}), coarse {gap_c:.3f} mm "
          f"(overlap {overlap_c:.2f}), fit rms {row['fit_rms_px']:.3f} vs {ref_row['fit_rms_px']:.3f} px")
    # Without a landmark file the landmarks come from the (stand-in) detector on the render and are lifted to
    # the surface; this scan has holes at the eyes, so eye corners land on the nearest rim (≤ 6 mm away), which
    # moves the depth anchor and the alignment: measured 2.3 mm / 3.3 mm; allowed 3 / 4 mm.
    lim_t, lim_c, lim_rms = (1.5, 2.0, 0.5) if layout else (3.0, 4.0, 1.5)
    assert overlap_t > 0.9 and gap_t < lim_t, (gap_t, overlap_t)
    assert overlap_c > 0.9 and gap_c < lim_c, (gap_c, overlap_c)
    rgb_gap = np.abs(got["input"][0][..., 3:] - ref["input"][0][..., 3:])[got["input_mask"][0] & ref["input_mask"][0]]
    assert float(rgb_gap.mean()) < 0.1                               # texture colours the samples like the photo
    assert np.isfinite(row["fit_rms_px"]) and row["fit_rms_px"] < lim_rms


def test_wrong_unit_and_no_face_are_error_rows(captures, tmp_path):
    folder, caps = captures
    name = "04501d1"
    lm = _write_obj(str(tmp_path), name, caps[name], np.eye(3), np.zeros(3), "m")
    formats.write_json(str(tmp_path / f"{name}.json"), points_3d=lm)
    mesh = read_scan(str(tmp_path / f"{name}.obj"), units="mm")     # metres read as millimetres
    with pytest.raises(SampleBuildError, match=r"\[align\] landmark distances are implausible for a face in mm.*look like m\b"):
        _rows(mesh, PreprocessSettings(**SETTINGS), make_provider("file"))
    os.remove(tmp_path / f"{name}.json")
    mesh = read_scan(str(tmp_path / f"{name}.obj"), units="m")
    with pytest.raises(SampleBuildError, match=r"\[landmarks\] no landmark file, and no face found"):
        _rows(mesh, PreprocessSettings(**SETTINGS, scan_units="m"), KnownLandmarks({}))


def test_folder_of_meshes_through_the_job(captures, tmp_path):
    """The job from its flags: textured OBJs in metres with LJSON landmarks, and one without any → error row."""
    import pyarrow.parquet as pq

    from refine_ray.cli import preprocess

    _, caps = captures
    inp = tmp_path / "meshes"
    inp.mkdir()
    for k, (name, cap) in enumerate(caps.items()):
        lm = _write_obj(str(inp), name, cap, rotation_from_angles(40.0 * k, 170.0, -20.0), np.array([5.0, 9.0, -2.0]), "m")
        if k == 0:
            formats.write_ljson(str(inp / f"{name}.ljson"), lm)
    out = tmp_path / "ds"
    code = preprocess.main(["--local", "--input", str(inp), "--output", str(out), "--scan-units", "m", "--poses", "1",
                            "--image-size", "64", "--scale-px-per-mm", "0.3", "--split", "all-test",
                            "--max-error-fraction", "0.6"])
    assert code == 0
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    assert [(os.path.basename(e["file"]), e["stage"]) for e in errors] == [("04501d1.obj", "landmarks")]
    samples = sum(pq.read_table(out / "test" / f).num_rows for f in os.listdir(out / "test"))
    assert samples == 2                                              # one mesh, original pose + one augmentation
