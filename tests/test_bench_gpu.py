"""bench/gpu.py cannot rot: its CPU dry run at tiny sizes, its imports, its step against training's, FLOP counts."""
from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU = os.path.join(ROOT, "bench", "gpu.py")


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")


def test_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, GPU, "--tiny", "--device", "cpu", "--out", str(out)],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    s = r["sections"]
    for name in ("matmul", "refine", "train", "allreduce", "short_run"):
        assert name in s and not (isinstance(s[name], dict) and "error" in s[name]), (name, s[name])
    assert s["matmul"]["fp32"] > 0
    assert {(x["channels_last"], x["batch"]) for x in s["refine"]} == {(cl, b) for cl in (False, True) for b in (2, 4)}
    assert all(x["img_per_s"] > 0 for x in s["refine"])
    assert [x["batch"] for x in s["train"]] == [2, 4] and all(x["flops_per_step"] > 0 for x in s["train"])
    # twice the batch, twice the FLOPs (the networks are per-sample except for means)
    assert s["train"][1]["flops_per_step"] == pytest.approx(2 * s["train"][0]["flops_per_step"], rel=0.01)
    assert s["allreduce"][0]["backend"] == "gloo" and s["allreduce"][0]["ok"] is True
    assert [x["resolution"] for x in s["short_run"]["stages"]] == [4, 8, 16]
    assert r["goals"]["refine_img_per_s"]["met"] is None and r["goals"]["note"]   # a CPU run claims no goal


def test_imports_torch_numpy_and_the_nn_layer_only():
    code = ("import runpy, sys; runpy.run_path(sys.argv[1], run_name='probe'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'trimesh', 'pymeshlab', 'pydantic', "
            "'pyarrow', 'yaml', 'fsspec', 'scipy', 'numba'}))")
    proc = subprocess.run([sys.executable, "-c", code, GPU], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_its_training_step_is_the_training_step():
    """Same weights, same data, same seed: one step of bench/gpu.py and of training.gan.ConditionalGan
    leave the generator and the critic with the same parameters."""
    from refine_ray.training.config import TrainConfig
    from refine_ray.training.gan import ConditionalGan

    g = runpy.run_path(GPU, run_name="bench_gpu")
    x, y = (torch.rand(2, 3, 16, 16) * 2 - 1 for _ in range(2))
    torch.manual_seed(0)
    gan = ConditionalGan(TrainConfig.model_validate({"model": {"max_resolution": 16, "max_channels": 8}}))
    step = g["TrainStep"](16, 8, torch.device("cpu"), bf16=False)
    for a, b in zip(gan.generator.state_dict().values(), step.g.state_dict().values()):
        assert torch.equal(a, b)
    torch.manual_seed(1)
    gan.step(x, y, 2, 0.5)
    torch.manual_seed(1)
    step(x, y, 2, 0.5)
    for net_a, net_b in ((gan.generator, step.g), (gan.critic, step.d)):
        for (name, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values()):
            torch.testing.assert_close(a, b, msg=name)


def test_flops_of_a_matmul_and_a_convolution_are_counted_from_their_shapes():
    from refine_ray.nn.throughput import count_flops

    a, b = torch.randn(64, 32, requires_grad=True), torch.randn(32, 16)
    assert count_flops(lambda: (a @ b).sum().backward()) == 2 * (2 * 64 * 32 * 16)   # forward + grad of a
    conv, x = torch.nn.Conv2d(3, 8, 3, padding=1), torch.randn(2, 3, 16, 16)
    assert count_flops(lambda: conv(x)) == 2 * (2 * 8 * 16 * 16) * (3 * 3 * 3)
    w = torch.randn(4, 4, requires_grad=True)
    z = torch.randn(5, 4, requires_grad=True)
    # a double backward (as the gradient penalty runs it) is counted too, not refused
    assert count_flops(lambda: torch.autograd.grad((z @ w).pow(2).sum(), z, create_graph=True)[0].sum().backward()) > 2 * 5 * 4 * 4
