"""Third-party 3DMM files straight from `jobs/preprocess.py --model`: one model written by the test as our .npz,
as an eos .bin (written by eos itself) with an eos landmark mapping, and as an ICT-FaceKit folder (OBJs in cm),
drives the same preprocessing; a bad model is one line and exit status 2 before Ray starts."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 8


@pytest.fixture(scope="module")
def model():
    """A small model (first K components of the default PCA), without stored contour candidates, so every
    format gives the fit exactly the same information."""
    from refine_ray.morphable import MorphableModel, default_model

    m = default_model()
    return MorphableModel(mean=m.mean, shape_basis=m.shape_basis[:K], shape_std=m.shape_std[:K], faces=m.faces,
                          landmark_index=m.landmark_index, name="small")


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    from refine_ray.synth.face import Identity, make_face
    from refine_ray.synth.render import FRGC, render_scan
    from refine_ray.synth.writers import write_frgc_scan

    d = str(tmp_path_factory.mktemp("scans"))
    rng = np.random.default_rng(5)
    small = dataclasses.replace(FRGC, height=120, width=160, px_per_mm=0.375)
    for name in ("04400d1", "04401d1"):
        write_frgc_scan(d, name, render_scan(make_face(Identity.sample(rng), name[:5]), small, rng))
    return d


def _write_ict(folder, m, expressions: int = 2):
    """ICT-FaceKit layout: neutral + identity000.. (neutral + one std of each mode), blendshapes, vertex_indices.json;
    centimetres, faces written as OBJ 1-based 'f v/vt' triples as the kit does."""
    os.makedirs(folder)
    faces = "".join(f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}\n" for a, b, c in m.faces)

    def obj(name, vertices_mm):
        v = "".join(f"v {x:.7f} {y:.7f} {z:.7f}\n" for x, y, z in vertices_mm / 10.0)
        with open(os.path.join(folder, name), "w") as f:
            f.write(v + "vt 0 0\n" * len(vertices_mm) + faces)

    obj("generic_neutral_mesh.obj", m.mean)
    for k in range(m.n_shape):
        obj(f"identity{k:03d}.obj", m.mean + m.shape_std[k] * m.shape_basis[k])
    names = [f"shape{e}" for e in range(expressions)]
    for e, name in enumerate(names):   # any displacement field serves as a blendshape
        obj(name + ".obj", m.mean + 0.5 * m.shape_std[e] * m.shape_basis[(e + 3) % m.n_shape])
    with open(os.path.join(folder, "vertex_indices.json"), "w") as f:
        json.dump({"expressions": names, "idx_to_landmark_verts": m.landmark_index.tolist()}, f)


def _write_eos(path, m):
    eos = pytest.importorskip("eos")
    V = m.n_vertices
    basis = m.shape_basis.reshape(m.n_shape, -1).T
    norms = np.linalg.norm(basis, axis=0)
    shape = eos.morphablemodel.PcaModel(m.mean.reshape(-1, 1).astype(np.float32), (basis / norms).astype(np.float32),
                                        ((m.shape_std * norms) ** 2).reshape(-1, 1).astype(np.float32),
                                        m.faces.tolist())
    eos.morphablemodel.save_model(eos.morphablemodel.MorphableModel(shape, eos.morphablemodel.PcaModel()), str(path))
    assert V == m.n_vertices


def _job():
    from refine_ray.cli import preprocess

    return preprocess


def _inputs(out):
    """(input images, fit RMS) of every sample under out/test, by sample id."""
    import pyarrow as pa

    from refine_ray.data.schema import decode_images

    table = pa.concat_tables([pq.read_table(os.path.join(out, "test", f)) for f in sorted(os.listdir(os.path.join(out, "test")))])
    table = table.sort_by("sample_id")
    return list(decode_images(table)["input"]), table.column("fit_rms_px").to_pylist()


def test_eos_and_ict_models_drive_preprocess_like_the_npz(model, scans, tmp_path):
    job = _job()
    model.save_npz(str(tmp_path / "small.npz"))
    _write_eos(tmp_path / "small.bin", model)
    mapping = tmp_path / "ibug_to_small.txt"   # eos' own mapping format: iBUG 1-based = vertex
    mapping.write_text("[landmark_mappings]\n" + "".join(f'"{i + 1}" = {v}\n' for i, v in enumerate(model.landmark_index)))
    _write_ict(str(tmp_path / "ict"), model, expressions=0)     # blendshapes would change the fit itself
    base = ["--local", "--input", scans, "--image-size", "32", "--scale-px-per-mm", "0.15", "--poses", "0", "--split", "all-test",
            "--no-textured"]
    assert job.main(base + ["--output", str(tmp_path / "o_npz"), "--model", str(tmp_path / "small.npz")]) == 0
    assert job.main(base + ["--output", str(tmp_path / "o_eos"), "--model", str(tmp_path / "small.bin"),
                            "--model-landmarks", str(mapping)]) == 0
    assert job.main(base + ["--output", str(tmp_path / "o_ict"), "--model", str(tmp_path / "ict")]) == 0
    ref, ref_rms = _inputs(str(tmp_path / "o_npz"))
    assert len(ref) == 2
    for out in ("o_eos", "o_ict"):
        got, rms = _inputs(str(tmp_path / out))
        # same model in another file format → the same coarse fit (float32 .npz/.bin, 7-decimal cm text OBJs):
        # reprojection RMS within 1e-3 px and the encoded input within 1e-4 network units on average
        np.testing.assert_allclose(rms, ref_rms, atol=1e-3)
        for a, b in zip(got, ref):
            assert a.shape == b.shape and float(np.abs(a - b).mean()) < 1e-4, out


def test_ict_loader_reads_blendshapes_and_units(model, tmp_path):
    from refine_ray.morphable import load_model

    _write_ict(str(tmp_path / "ict"), model, expressions=2)
    m = load_model(str(tmp_path / "ict"))
    np.testing.assert_allclose(m.mean, model.mean, atol=1e-5)                         # cm → mm
    np.testing.assert_allclose(m.instance([1.0] + [0] * (K - 1)), model.instance([1.0]), atol=1e-4)
    assert m.n_expr == 2 and np.array_equal(m.landmark_index, model.landmark_index)
    np.testing.assert_allclose(m.instance(None, [0.0, 1.0]),
                               model.mean + 0.5 * model.shape_std[1] * model.shape_basis[4], atol=1e-4)


def test_bad_models_fail_in_one_line_before_ray(model, scans, tmp_path, capfd):
    (tmp_path / "broken.bin").write_bytes(b"\x00not an eos model" * 10)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    model.save_npz(str(tmp_path / "small.npz"))
    _write_ict(str(tmp_path / "ict"), model, expressions=0)
    with open(tmp_path / "ict" / "identity002.obj", "w") as f:
        f.write("v 1 2 3\nf 1 1 1\n")                                               # wrong vertex count
    (tmp_path / "no_lm.txt").write_text("1 2 3\n")
    args = ["--input", scans, "--output", str(tmp_path / "out"), "--poses", "0"]
    # the job as a user starts it: nothing but one line, exit status 2, and Ray never started
    p = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", "preprocess.py")] + args
                       + ["--model", str(tmp_path / "broken.bin")], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    lines = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, (p.stdout, p.stderr)
    assert lines[0].startswith(f"error: model {tmp_path / 'broken.bin'}: eos could not read the model")
    job = _job()
    cases = [
        (["--model", str(tmp_path / "broken.npz")], "broken.npz: not a readable .npz model"),
        (["--model", str(tmp_path / "ict")], "identity002.obj: 1 vertices, the neutral mesh has"),
        (["--model", str(tmp_path / "small.npz"), "--model-landmarks", str(tmp_path / "no_lm.txt")],
         "no_lm.txt: neither 68 vertex indices"),
        (["--model", str(tmp_path / "missing.h5")], "missing.h5: model file not found"),
        (["--model", str(tmp_path / "small.bin")], "small.bin: model file not found"),
    ]
    capfd.readouterr()
    for extra, needle in cases:
        assert job.main(args + extra) == 2, extra
        captured = capfd.readouterr()
        lines = [ln for ln in (captured.out + captured.err).splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: model ") and needle in lines[0], lines
    assert not os.path.exists(tmp_path / "out" / "manifest.json")
