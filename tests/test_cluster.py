"""cluster.yaml: valid against the JSON schema shipped inside the installed Ray, and what the design asks of it."""
from __future__ import annotations

import json
import os
import re

import pytest
import yaml

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


def test_setup_installs_this_project_with_pinned_dependencies(cluster):
    import ray
    import torch

    setup = " ".join(cluster["setup_commands"])
    assert "pip install -e ~/refine-ray" in setup
    assert cluster["file_mounts"]["/home/ubuntu/refine-ray"] == "."
    # every dependency pinned to one version (ray and torch: the ones these tests ran with)
    pins = dict(re.findall(r'"([A-Za-z0-9_.\[\],-]+?)==([^"]+)"', setup))
    assert pins["ray[default,data,train]"] == ray.__version__  # the versions the tests ran with
    assert pins["torch"] == torch.__version__.split("+")[0]
    assert len(pins) >= 15
    assert "AWS_SECRET_ACCESS_KEY" not in open(os.path.join(ROOT, "cluster.yaml")).read()
