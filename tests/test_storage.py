"""storage: atomic writes, listing and safe names, locally and on the S3 server."""
import os

import pytest

from refine_ray import storage


def test_atomic_write_and_list_local(tmp_path):
    target = tmp_path / "a" / "b.bin"
    storage.atomic_write_bytes(str(target), b"hello")
    assert target.read_bytes() == b"hello"
    assert not [p for p in os.listdir(target.parent) if p.startswith(".tmp-")]
    storage.atomic_write_text(str(tmp_path / "a" / "c.txt"), "x")
    assert storage.list_files(str(tmp_path), [".bin"]) == [str(target)]


def test_s3_round_trip(s3_bucket):
    uri = storage.join(s3_bucket, "dir", "x.json")
    storage.atomic_write_text(uri, '{"a": 1}')
    assert storage.read_text(uri) == '{"a": 1}'
    assert storage.list_files(s3_bucket) == [uri]
    assert storage.exists(uri)


@pytest.mark.parametrize("bad,expected", [("../../etc/passwd", "passwd"), ("a/b\\..\\c.ply", "c.ply"), ("x y.abs", "x_y.abs")])
def test_safe_name_strips_paths(bad, expected):
    assert storage.safe_name(bad) == expected


def test_output_claim_waits_for_the_workers_of_a_killed_run(tmp_path):
    """A worker process of an earlier run still holds the output: a new claim succeeds only once it has exited."""
    import subprocess
    import sys

    from refine_ray import storage

    out = str(tmp_path / "out")
    with storage.OutputClaim(out):          # the earlier driver, which then dies; its worker lives on
        worker = subprocess.Popen([sys.executable, "-c", (
            "import sys, time; from refine_ray import storage; storage.join_output(sys.argv[1]); "
            "print('joined', flush=True); time.sleep(3)"), out], stdout=subprocess.PIPE, text=True)
        assert worker.stdout.readline().strip() == "joined"
    said = []
    with storage.OutputClaim(out, log=said.append):
        assert worker.poll() is not None     # the claim came only after the worker had gone
    assert said and "waiting for the processes of an earlier run" in said[0]
    with storage.OutputClaim(out):           # while one run holds it, another is refused after its wait
        with pytest.raises(ValueError, match="another run"):
            with storage.OutputClaim(out, wait_s=0.5):
                pass


def test_a_submitted_jobs_own_variables_are_not_repeated_in_its_drivers_runtime_env(monkeypatch):
    """Ray refuses a driver's ray.init whose runtime env repeats a variable of the job's
    (`ray job submit --runtime-env-json '{"env_vars": …}'`): those are left out."""
    import json

    from refine_ray import storage

    for key in storage.AWS_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-in-a-runtime-env")
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert storage.driver_runtime_env() == {"env_vars": {"AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                                                         "AWS_DEFAULT_REGION": "us-east-1"}}
    job = {"runtime_env": {"env_vars": {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}}, "metadata": {}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert storage.driver_runtime_env() == {"env_vars": {"AWS_DEFAULT_REGION": "us-east-1"}}
    job["runtime_env"]["env_vars"]["AWS_DEFAULT_REGION"] = "us-east-1"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert storage.driver_runtime_env() is None
