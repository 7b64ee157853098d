"""A real two-node Ray cluster on this machine (cluster_configs/local): a curate job submitted
through the Ray job API, reading its corpus from and writing its output to the loopback S3 server.
The job must succeed, place activation actors on both nodes, and select exactly what a local run
selects."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cola_ray import storage
from tests.workflows.conftest import ft_config

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "cluster_configs" / "local"


def _free_port_block(n=4) -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n < 65000 and all(_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free port block")


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory, s3_endpoint):
    port = _free_port_block()
    env = {**os.environ, "COLA_RAY_PORT": str(port), "COLA_RAY_HEAD_CPUS": "2", "COLA_RAY_WORKER_CPUS": "2",
           # short: Ray's unix sockets live under it and their paths may not exceed 107 bytes
           "COLA_RAY_LOCAL_DIR": f"/tmp/cola-ray-test-{port}", "AWS_ENDPOINT_URL": s3_endpoint,
           "COLA_RAY_START_TIMEOUT": "300"}
    env.pop("RAY_ADDRESS", None)
    started = subprocess.run([str(LOCAL / "start.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        yield {"address": started.stdout.strip().splitlines()[-1], "dashboard": f"http://127.0.0.1:{port + 1}",
               "env": env}
    finally:
        subprocess.run([str(LOCAL / "stop.sh")], env=env, capture_output=True, timeout=120)
        shutil.rmtree(env["COLA_RAY_LOCAL_DIR"], ignore_errors=True)


def test_curate_job_on_two_nodes_matches_local_run(two_node_cluster, tiny_llama, ft_corpus, ft_reference,
                                                   s3_bucket, s3_endpoint, tmp_path):
    import boto3
    from ray.job_submission import JobStatus, JobSubmissionClient

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for name in ("news.jsonl", "code.jsonl"):
        s3.upload_file(str(ft_corpus / name), s3_bucket, f"multinode/corpus/{name}")
    out = f"s3://{s3_bucket}/multinode/out"
    cfg = ft_config(tiny_llama, ft_corpus, out, workers=2)
    config = {k: v for k, v in vars(cfg).items() if v is not None and k != "config"}
    config["corpus"] = [f"s3://{s3_bucket}/multinode/corpus/news.jsonl", f"s3://{s3_bucket}/multinode/corpus/code.jsonl"]
    config_path = tmp_path / "curate.yaml"
    config_path.write_text(yaml.safe_dump(config))

    client = JobSubmissionClient(two_node_cluster["dashboard"])
    job = client.submit_job(
        entrypoint=f"{sys.executable} {REPO / 'jobs' / 'curate.py'} --config {config_path}",
        runtime_env={"env_vars": {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                             "AWS_DEFAULT_REGION") if k in os.environ}
                     | {"AWS_ENDPOINT_URL": s3_endpoint, "COLA_RAY_NO_PROGRESS": "1"}},
    )
    deadline = time.time() + 900
    while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.time() < deadline, "job did not finish in 15 minutes"
        time.sleep(2)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]

    from ray.util.state import list_actors

    actors = list_actors(address=two_node_cluster["dashboard"], limit=1000,
                         detail=True, raise_on_missing_output=False)
    nodes = {a.node_id for a in actors if "ActivationExtractor" in (a.class_name or "")
             or "ActivationExtractor" in str(getattr(a, "repr_name", "") or "")}
    assert len(nodes) == 2, f"activation actors ran on {len(nodes)} node(s)"
    assert storage.read_bytes(f"{out}/calibration.jsonl").decode() == ft_reference
    assert storage.exists(f"{out}/manifest.json")
