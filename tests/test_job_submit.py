"""`ray job submit`, as an operator runs it, on a Ray cluster of two nodes started here (a head and a worker
node, each its own `ray start`, token authentication on), against an S3 server that checks signatures.

The nodes hold no store settings: the endpoint and a credentials *file* travel in the job's runtime env
(`env_vars`), so a worker that did not get them fails its first read. The chain is the documented one —
preprocess raw scans, train on the shards, refine the test split — next to a folder of photos and a folder
of coarse meshes made elsewhere, all data and runs on `s3://`. Checked: every job SUCCEEDED, its outputs
(against what the test wrote), training ran on both nodes, the upload stayed small and held no data, and
the secret key is nowhere in Ray's files, logs included. Only the processes this test started are stopped.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import pytest

import refine_support as rf
from test_coarse_meshes import _other_topology, _write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
BUCKET = "lab-faces"
UPLOAD_LIMIT = 8 * 1024 * 1024
JOB_TIMEOUT_S = 420
NODE_CPUS = 3   # a training worker takes 2: one per node, and a CPU left on each for Ray Data


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _descendants(pid: int) -> list[int]:
    """PIDs of every process below `pid`, read from /proc (a parent's PID is field 4 of /proc/<pid>/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for_port(port: int, what: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{what} not listening on {port} after {timeout_s} s")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """moto's S3 server in its own process with signature checks on: the first three requests (IAM user,
    policy, access key) are free, every later one needs the key moto generated — random per run."""
    import boto3

    (port,) = _free_ports(1)
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                             "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, "moto_server", proc)
        url = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bootstrap",
                           aws_secret_access_key="bootstrap")
        iam.create_user(UserName="jobs")
        iam.put_user_policy(UserName="jobs", PolicyName="bucket", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="jobs")["AccessKey"]
        creds = tmp_path_factory.mktemp("aws") / "credentials"
        creds.write_text(f"[default]\naws_access_key_id = {key['AccessKeyId']}\n"
                         f"aws_secret_access_key = {key['SecretAccessKey']}\n")
        creds.chmod(0o600)
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
                          aws_secret_access_key=key["SecretAccessKey"])
        s3.create_bucket(Bucket=BUCKET)
        yield {"url": url, "credentials_file": str(creds), "secret": key["SecretAccessKey"], "s3": s3}
    finally:
        proc.terminate()
        proc.wait(10)


def _upload_tree(s3, local: str, prefix: str) -> None:
    for folder, _, names in os.walk(local):
        for name in names:
            path = os.path.join(folder, name)
            s3.upload_file(path, BUCKET, f"{prefix}/{os.path.relpath(path, local)}")


def _keys(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    return sorted(o["Key"][len(prefix) + 1:] for p in pages for o in p.get("Contents", []))


def _read_json(s3, key: str):
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def _read_parquet(s3, key: str):
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()))


class TwoNodeRay:
    """A head (`ray start --head --block`) and a worker node (`ray start --address … --block`) of 3 CPUs each,
    with their own temp folder, ports and auth token, and no AWS settings in their environment."""

    def __init__(self, temp_dir: str):
        self.temp_dir = temp_dir
        token = os.path.join(temp_dir, "auth_token")
        self.token = secrets.token_hex(32)
        with open(token, "w") as f:
            f.write(self.token)
        os.chmod(token, 0o600)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_"))}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=token, RAY_USAGE_STATS_ENABLED="0",
                        RAY_DATA_DISABLE_PROGRESS_BARS="1")
        self.procs: list[subprocess.Popen] = []
        self.names: list[str] = []
        self.gcs_port, self.dashboard_port, client_port = _free_ports(3)
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        head = [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(self.gcs_port),
                "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(self.dashboard_port), "--ray-client-server-port", str(client_port),
                "--temp-dir", temp_dir, *self._node_flags()]
        self._start(head, "head")
        _wait_for_port(self.dashboard_port, "Ray head's job server", self.procs[0], timeout_s=120)
        # its own temp folder, as a node on another machine has: nodes sharing one would also share the
        # runtime-env cache, and each node's first download of a package replaces the other's copy
        worker_temp = os.path.join(temp_dir, "w")
        for attempt in range(2):   # ports are picked free but may be taken before the worker binds them
            self._start([RAY, "start", "--block", "--address", f"127.0.0.1:{self.gcs_port}",
                         "--node-ip-address", "127.0.0.1", "--temp-dir", worker_temp, *self._node_flags()],
                        f"worker{attempt}")
            try:
                self._wait_for_nodes(2)
                return
            except RuntimeError:
                if attempt or self.procs[0].poll() is not None or self.procs[-1].poll() is None:
                    raise
                # that worker exited: start another on fresh ports (the dead one stays listed for stop())

    @staticmethod
    def _node_flags() -> list[str]:
        nm, om, metrics, agent, agent_grpc, renv, lo = _free_ports(7)
        return ["--num-cpus", str(NODE_CPUS), "--num-gpus", "0", "--object-store-memory", str(300 * 1024 * 1024),
                "--node-manager-port", str(nm), "--object-manager-port", str(om),
                "--metrics-export-port", str(metrics), "--dashboard-agent-listen-port", str(agent),
                "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(renv),
                "--min-worker-port", str(20000 + lo % 20000), "--max-worker-port", str(20000 + lo % 20000 + 200),
                "--disable-usage-stats"]

    def _start(self, cmd: list[str], name: str) -> None:
        self.names.append(name)
        log = open(os.path.join(self.temp_dir, f"ray-start-{name}.log"), "wb")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def ray(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        out = subprocess.run([RAY, *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        if check and out.returncode != 0:
            raise AssertionError(f"ray {' '.join(args[:2])} failed ({out.returncode}):\n{out.stdout[-3000:]}"
                                 f"\n{out.stderr[-3000:]}")
        return out

    def list_state(self, resource: str, *filters: str) -> list[dict]:
        """`ray list <resource>` through the state API ("No resource in the cluster" is an empty list)."""
        args = [a for f in filters for a in ("--filter", f)]
        out = self.ray("list", resource, "--address", self.address, "--format", "json", "--limit", "10000", *args,
                       check=False)
        return json.loads(out.stdout) if out.returncode == 0 and out.stdout.lstrip().startswith("[") else []

    def nodes(self) -> list[dict]:
        return self.list_state("nodes")

    def _wait_for_nodes(self, n: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sum(node["state"] == "ALIVE" for node in self.nodes()) >= n:
                return
            for p, name in ((self.procs[0], self.names[0]), (self.procs[-1], self.names[-1])):  # head, newest worker
                if p.poll() is not None:
                    log = open(os.path.join(self.temp_dir, f"ray-start-{name}.log"), errors="replace").read()[-2000:]
                    raise RuntimeError(f"{p.args[:3]} exited with {p.returncode}:\n{log}")
            time.sleep(2)
        raise TimeoutError(f"{n} Ray nodes not alive after {timeout_s} s")

    def submit(self, job_id: str, env_vars: dict[str, str], *entrypoint: str) -> None:
        self.ray("job", "submit", "--address", self.address, "--no-wait", "--submission-id", job_id,
                 "--working-dir", ".", "--runtime-env-json", json.dumps({"env_vars": env_vars}),
                 "--", "python", *entrypoint)

    def job(self, job_id: str) -> dict:
        """The job's record from the job server's REST API (what `ray job status` prints, without starting
        a CLI process at every poll on a 2-core machine)."""
        request = urllib.request.Request(f"{self.address}/api/jobs/{job_id}",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def wait_until_started(self, job_id: str, timeout_s: float = 120) -> None:
        """Until the job's runtime env is set up (RUNNING or ended). Jobs submitted at once with the same
        working dir race in Ray's runtime-env agent: each first download of the package removes the copy
        another job's driver already runs in, so jobs are let in one at a time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.job(job_id)["status"] != "PENDING":
                return
            time.sleep(1)
        raise TimeoutError(f"job {job_id} still PENDING after {timeout_s} s")

    def wait(self, job_ids: list[str], exit_codes: dict[str, int] | None = None,
             timeout_s: float = JOB_TIMEOUT_S) -> None:
        """Until every job ended; one that did not end as expected fails the test with the end of its log.
        A job exits 0 (SUCCEEDED), or 1 when some inputs failed (each in its errors table; Ray says FAILED)."""
        pending, deadline = list(job_ids), time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                info = self.job(job_id)
                if info["status"] not in ("SUCCEEDED", "FAILED", "STOPPED"):
                    continue
                pending.remove(job_id)
                code = (exit_codes or {}).get(job_id, 0)
                ok = info["status"] == "SUCCEEDED" if code == 0 else (
                    info["status"] == "FAILED" and f"failed with exit code {code}," in (info.get("message") or ""))
                if not ok:
                    logs = self.ray("job", "logs", "--address", self.address, job_id, check=False).stdout
                    raise AssertionError(f"job {job_id} (expected exit {code}): {info['status']} "
                                         f"{(info.get('message') or '')[:2000]}\n{logs[-6000:]}")
            time.sleep(2)
        if pending:
            raise TimeoutError(f"jobs {pending} still running after {timeout_s} s")

    def stop(self) -> None:
        """SIGTERM to the two `ray start --block` processes (each stops its node's processes), worker first;
        whatever they started and left behind is then killed by PID."""
        started = [c for p in self.procs if p.poll() is None for c in _descendants(p.pid)]
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        deadline = time.monotonic() + 10
        while any(map(_alive, started)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in filter(_alive, started):
            os.kill(pid, signal.SIGKILL)


def _scans(folder: str) -> None:
    """Four FRGC-format scans of two subjects (half-resolution scanner profile, to stay fast)."""
    from refine_ray.synth.face import Identity, make_face
    from refine_ray.synth.render import FRGC, render_scan
    from refine_ray.synth.writers import write_frgc_scan

    rng = np.random.default_rng(5)
    small = dataclasses.replace(FRGC, height=120, width=160, px_per_mm=0.375)
    for subject in ("04300", "04301"):
        face = make_face(Identity.sample(rng), subject)
        for take in ("d1", "d2"):
            write_frgc_scan(folder, subject + take, render_scan(face, small, rng))


def _photos(folder: str) -> None:
    """Two photos rendered from synthetic faces with their landmark files beside them, and one broken file."""
    from PIL import Image

    from refine_ray.landmarks import formats
    from refine_ray.synth.face import Identity, make_face
    from refine_ray.synth.render import FRGC, render_scan

    profile = dataclasses.replace(FRGC, height=240, width=320, px_per_mm=0.75)
    os.makedirs(folder)
    for k in range(2):
        rng = np.random.default_rng(300 + k)
        scan = render_scan(make_face(Identity.sample(rng), f"p{k}"), profile, rng)
        Image.fromarray(scan.photo).save(os.path.join(folder, f"face{k}.png"))
        with open(os.path.join(folder, f"face{k}.pts"), "w") as f:
            f.write(formats.format_pts(scan.landmarks_2d))
    with open(os.path.join(folder, "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff not really a jpeg")


def _uploaded_packages(temp_dir: str) -> list[str]:
    found = []
    for folder, dirs, _ in os.walk(temp_dir):
        found += [os.path.join(folder, d) for d in dirs if d.startswith("_ray_pkg_")]
        dirs[:] = [d for d in dirs if not d.startswith("_ray_pkg_")]
    return found


def _tree_bytes(folder: str) -> tuple[int, list[str]]:
    total, names = 0, []
    for sub, _, files in os.walk(folder):
        for name in files:
            total += os.path.getsize(os.path.join(sub, name))
            names.append(os.path.relpath(os.path.join(sub, name), folder))
    return total, names


def test_the_documented_jobs_through_ray_job_submit_on_two_nodes(store, tmp_path, monkeypatch):
    s3 = store["s3"]
    env_vars = {"AWS_ENDPOINT_URL": store["url"], "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_SHARED_CREDENTIALS_FILE": store["credentials_file"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env_vars.items():
        monkeypatch.setenv(key, value)
    local = tmp_path / "local"
    _scans(str(local / "scans"))
    _photos(str(local / "photos"))
    os.makedirs(local / "meshes")
    vertices, faces, colors, index = _other_topology(3)
    _write(str(local / "meshes"), "tool_output", vertices, faces, colors, index)
    _write(str(local / "meshes"), "no_landmarks", vertices, faces, colors)
    for name in ("scans", "photos", "meshes"):
        _upload_tree(s3, str(local / name), name)
    b = f"s3://{BUCKET}"
    rf.tiny_model_and_checkpoint(f"{b}/model")   # through the credentials file, as the jobs will read it
    temp_dir = tempfile.mkdtemp(prefix="rr-", dir="/tmp")   # short: Ray's socket paths have a length limit
    cluster = None
    try:
        cluster = TwoNodeRay(temp_dir)
        cluster.submit("preprocess", env_vars, "jobs/preprocess.py", "--config", "configs/preprocess/tiny.yaml",
                       "--input", f"{b}/scans", "--output", f"{b}/data", "--image-size", "32",
                       "--scale-px-per-mm", "0.16", "--poses", "1", "--train-fraction", "0.5", "--seed", "1",
                       "--min-workers", "1", "--num-workers", "2", "--log-level", "info")
        cluster.wait_until_started("preprocess")
        cluster.submit("photos", env_vars, "jobs/refine.py", "--checkpoint", f"{b}/model/ckpt.pt",
                       "--input", f"{b}/photos", "--output", f"{b}/refined-photos", "--num-actors", "1",
                       "--cpus-per-actor", "1", "--photos-per-unit", "4")
        cluster.wait_until_started("photos")
        cluster.submit("meshes", env_vars, "jobs/refine.py", "--checkpoint", f"{b}/model/ckpt.pt",
                       "--input", f"{b}/meshes", "--output", f"{b}/refined-meshes", "--num-actors", "1",
                       "--cpus-per-actor", "1", "--mesh-units", "m", "--meshes-per-unit", "2", "--log-level", "debug")
        cluster.wait(["preprocess", "photos", "meshes"], exit_codes={"photos": 1, "meshes": 1})
        cluster.submit("train", env_vars, "jobs/train.py", "--config", "configs/train/dce_d_dce.yaml",
                       "--data", f"{b}/data", "--storage", f"{b}/runs", "--name", "tiny", "--max-resolution", "8",
                       "--max-channels", "8", "--iterations-per-stage", "2", "--batch-size", "2",
                       "--checkpoint-every", "2", "--log-every", "1", "--val-samples", "1", "--grid-samples", "1",
                       "--num-workers", "2", "--cpus-per-worker", "2")
        cluster.wait(["train"])
        train_nodes = {a["node_id"] for a in cluster.list_state("actors", "class_name=RayTrainWorker")}
        cluster.submit("refine", env_vars, "jobs/refine.py", "--checkpoint", f"{b}/runs/tiny",
                       "--input", f"{b}/data", "--output", f"{b}/refined", "--num-actors", "2",
                       "--cpus-per-actor", "1", "--meshes")
        cluster.wait(["refine"])
        alive = {n["node_id"] for n in cluster.nodes() if n["state"] == "ALIVE"}
        unpacked = [_tree_bytes(p) for p in _uploaded_packages(temp_dir)]   # before the nodes remove them
        leaks = rf.files_holding(temp_dir, store["secret"].encode())
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)

    # the cluster: two nodes, training's two workers one on each (3 CPUs each, a worker asks for 2)
    assert len(alive) == 2 and train_nodes == alive
    # the upload: the checkout without data, outputs or environments, a few MB
    assert unpacked and all("jobs/train.py" in names for _, names in unpacked)
    for size, names in unpacked:
        assert size < UPLOAD_LIMIT, size
        assert not any(n.endswith((".parquet", ".pt")) or ".venv" in n for n in names)
    # no secret in Ray's files (logs, runtime envs, job records) nor in any output
    assert leaks == []
    for prefix in ("data", "runs", "refined", "refined-photos", "refined-meshes"):
        for key in _keys(s3, prefix):
            body = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["Body"].read()
            assert store["secret"].encode() not in body, key

    # preprocess: the four scans, each as taken and in one more pose, split by subject, no errors
    counts = _read_json(s3, "data/manifest.json")["counts"]
    assert (counts["scans_ok"], counts["scans_failed"], counts["samples"]) == (4, 0, {"train": 4, "test": 4})
    data = _keys(s3, "data")
    assert _read_parquet(s3, "data/errors.parquet").num_rows == 0
    test_ids = sorted(sid for k in data if k.startswith("test/") and k.endswith(".parquet")
                      for sid in _read_parquet(s3, f"data/{k}").column("sample_id").to_pylist())
    assert len(test_ids) == 4 and len({i.split("/")[1][:5] for i in test_ids}) == 1
    # train: two stages (4² → 8²), kept stage files, Ray Train checkpoints, appended metrics, TensorBoard
    runs = _keys(s3, "runs/tiny")
    assert {"checkpoints/stage-0-4x4.pt", "checkpoints/stage-1-8x8.pt"} <= set(runs), runs
    assert any(k.startswith("checkpoint-step") and k.endswith("checkpoint.pt") for k in runs)
    assert any(k.startswith("tensorboard/") and "tfevents" in k for k in runs)
    metrics = [json.loads(line) for line in s3.get_object(Bucket=BUCKET, Key="runs/tiny/metrics.jsonl")["Body"]
               .read().decode().splitlines()]
    assert metrics and max(m.get("stage", 0) for m in metrics) == 1
    # refine: each test sample once, with its metrics, mesh and report
    refined = _keys(s3, "refined")
    ids = sorted(sid for k in refined if k.startswith("refined/") and k.endswith(".parquet")
                 for sid in _read_parquet(s3, f"refined/{k}").column("sample_id").to_pylist())
    assert ids == test_ids
    assert _read_parquet(s3, "refined/metrics.parquet").num_rows == 4
    assert sum(k.startswith("meshes/") and k.endswith(".refined.ply") for k in refined) == 4
    assert _read_json(s3, "refined/report/summary.json")["samples_with_ground_truth"] == 4
    # photos: two refined with meshes and fits, the broken file one error row
    photos = _keys(s3, "refined-photos")
    assert sum(k.endswith(".refined.ply") for k in photos) == 2 and sum(k.startswith("fits/") for k in photos) == 2
    errors = _read_parquet(s3, "refined-photos/errors.parquet").to_pylist()
    assert [e["file"].rsplit("/", 1)[-1] for e in errors] == ["broken.jpg"]
    # coarse meshes of another tool: the one with landmarks refined, the other an error row
    meshes = _keys(s3, "refined-meshes")
    assert [k for k in meshes if k.endswith(".refined.ply")] == ["meshes/mesh_tool_output_p0.refined.ply"]
    errors = _read_parquet(s3, "refined-meshes/errors.parquet").to_pylist()
    assert [(e["file"].rsplit("/", 1)[-1], e["stage"]) for e in errors] == [("no_landmarks.ply", "landmarks")]
