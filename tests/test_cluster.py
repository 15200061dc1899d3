"""cluster.yaml: valid against the JSON schema shipped inside the installed Ray, and what the design asks of it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import pytest
import yaml
from packaging.utils import canonicalize_name

import node_install

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def cluster():
    with open(os.path.join(ROOT, "cluster.yaml")) as f:
        return yaml.safe_load(f)


def test_cluster_yaml_validates_against_rays_schema(cluster):
    jsonschema = pytest.importorskip("jsonschema")
    import ray

    schema_path = os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")
    with open(schema_path) as f:
        schema = json.load(f)
    jsonschema.validate(cluster, schema)  # raises ValidationError naming the bad key


def test_rays_own_launcher_checks_accept_it(cluster):
    """What `ray up` runs before it talks to AWS: defaults filled in, then Ray's validation."""
    import copy

    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_a_broken_cluster_yaml_is_rejected(cluster):
    """The validation above can fail: an unknown key and a wrong type are caught."""
    jsonschema = pytest.importorskip("jsonschema")
    import ray

    with open(os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")) as f:
        schema = json.load(f)
    bad = dict(cluster, max_workers="eight")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dict(cluster, no_such_key=1), schema)


def test_cpu_head_and_autoscaling_gpu_workers_with_spot(cluster):
    assert cluster["provider"]["type"] == "aws"
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and not head["node_config"]["InstanceType"].startswith(("g", "p"))
    gpu_types = {k: v for k, v in types.items() if v.get("resources", {}).get("GPU", 0) >= 1}
    assert gpu_types, "no GPU worker type"
    assert all(v["min_workers"] == 0 and v["max_workers"] >= 1 for v in gpu_types.values())  # autoscaling from zero
    assert any(v["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot" for v in gpu_types.values())


def test_setup_installs_this_project_with_the_pinned_versions(cluster):
    import ray
    import torch

    setup = " ".join(cluster["setup_commands"])
    mount = next(k for k, v in cluster["file_mounts"].items() if v == ".")
    assert f"-c {mount}/constraints.txt" in setup and f"-e {mount}" in setup
    torch_version = torch.__version__.split("+")[0]
    assert f'"torch=={torch_version}"' in setup  # the torch these tests ran with
    # Ray's image of the Ray these tests ran with, for the Python the pins are resolved for
    image = cluster["docker"]["image"]
    assert image == f"rayproject/ray:{ray.__version__}-py{node_install.NODE_PYTHON.replace('.', '')}-gpu"
    assert node_install.read_pins()["ray"] == ray.__version__
    assert "AWS_SECRET_ACCESS_KEY" not in open(os.path.join(ROOT, "cluster.yaml")).read()
    # the image built from deploy/Dockerfile starts from the same one
    assert f"FROM {image}" in open(os.path.join(ROOT, "deploy", "Dockerfile")).read()


def test_requires_python_agrees_with_the_pins():
    from packaging.specifiers import SpecifierSet

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        spec = SpecifierSet(tomllib.load(f)["project"]["requires-python"])
    assert node_install.NODE_PYTHON in spec
    # numpy 2.4 / scipy 1.17 / pandas 3.1 have no wheels below 3.11: the range must not promise 3.10
    assert "3.10" not in spec


def test_a_cpu_worker_type_for_preprocessing(cluster):
    types = cluster["available_node_types"]
    cpu = [v for k, v in types.items() if k != cluster["head_node_type"] and not v["resources"].get("GPU")]
    assert cpu and all(v["resources"]["CPU"] >= 8 and v["max_workers"] >= 1 for v in cpu)


def test_every_node_has_an_instance_profile_that_reaches_the_bucket(cluster):
    """Workers do every S3 read and write: each node type names a profile that deploy/iam.yaml creates,
    whose role reads and writes the bucket; the head's role may pass the workers' role."""
    types = cluster["available_node_types"]
    profile = {k: v["node_config"]["IamInstanceProfile"]["Name"] for k, v in types.items()}
    head = profile.pop(cluster["head_node_type"])
    assert profile and head not in profile.values()

    resources = _iam_template()["Resources"]
    profiles = {r["Properties"]["InstanceProfileName"]: r["Properties"]["Roles"][0]["Ref"]
                for r in resources.values() if r["Type"] == "AWS::IAM::InstanceProfile"}
    assert head in profiles and set(profile.values()) <= set(profiles)

    def statements(role):
        for pol in resources[role]["Properties"]["Policies"]:
            yield from pol["PolicyDocument"]["Statement"]

    def allowed(role, action, resource):
        return any(s["Effect"] == "Allow" and action in _as_list(s["Action"]) and resource in str(s["Resource"])
                   for s in statements(role))

    for role in {profiles[p] for p in profile.values()} | {profiles[head]}:
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            assert allowed(role, action, "${DataBucket}/*"), (role, action)
        assert allowed(role, "s3:ListBucket", "${DataBucket}"), role
    for worker_role in {profiles[p] for p in profile.values()}:
        assert allowed(profiles[head], "iam:PassRole", f"{worker_role}.Arn"), worker_role
        assert not any("iam:" in a or "ec2:" in a for s in statements(worker_role) for a in _as_list(s["Action"]))


def test_the_iam_template_passes_cfn_lint():
    exe = os.path.join(os.path.dirname(sys.executable), "cfn-lint")
    proc = subprocess.run([exe, os.path.join(ROOT, "deploy", "iam.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_runtime_dependency_is_pinned():
    pins = node_install.read_pins()
    unpinned = sorted(node_install.runtime_closure() - set(pins))
    assert not unpinned, f"constraints.txt has no pin for {unpinned}: the nodes would resolve them freely"


@pytest.mark.slow
def test_pip_finds_a_wheel_of_every_pin_for_the_nodes():
    """The nodes' install, resolved for Python 3.11 / manylinux x86_64, binary only (pip downloads
    but installs nothing); torch, a multi-GB CUDA wheel, through pip's index instead."""
    pins = node_install.read_pins()
    closure = sorted(node_install.runtime_closure())
    rc, report, err = node_install.resolve_for_node([f"{n}=={pins[n]}" for n in closure])
    assert rc == 0, err[-3000:]
    got = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}
    assert got == {n: pins[n] for n in closure}
    assert all(i["is_wheel"] if "is_wheel" in i else i["download_info"]["url"].endswith(".whl")
               for i in report["install"])
    import torch

    assert torch.__version__.split("+")[0] in node_install.versions_for_node("torch")


def test_the_resolution_check_fails_on_a_pin_without_a_wheel_for_the_nodes():
    # numpy 1.21.0 predates Python 3.11: no cp311 wheel exists, only its source archive
    rc, report, err = node_install.resolve_for_node(["numpy==1.21.0"])
    assert rc != 0 and "numpy" in err


def _iam_template():
    class Loader(yaml.SafeLoader):
        pass

    def tag(loader, suffix, node):  # CloudFormation short forms (!Ref, !Sub, !GetAtt) as plain data
        if isinstance(node, yaml.ScalarNode):
            return {suffix: loader.construct_scalar(node)}
        return {suffix: loader.construct_sequence(node)}

    Loader.add_multi_constructor("!", tag)
    with open(os.path.join(ROOT, "deploy", "iam.yaml")) as f:
        return yaml.load(f, Loader=Loader)  # noqa: S506 - SafeLoader subclass, no object construction


def _as_list(x):
    return x if isinstance(x, list) else [x]
