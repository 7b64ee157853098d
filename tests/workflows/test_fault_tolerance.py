"""Crash recovery: an activation actor killed mid-run, and a driver killed mid-run then rerun."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import psutil

from cola_ray.workflows.curate import SHARDS, run_curate
from tests.workflows.conftest import ft_config


def _wait_for_shards(folder, n, timeout=900, process=None):
    deadline = time.time() + timeout
    while time.time() < deadline and (process is None or process.poll() is None):
        if folder.exists() and len(list(folder.glob("shard-*.parquet"))) >= n:
            return True
        time.sleep(0.2)
    return False


def _activation_actor_pids():
    """Activation actors of *this* test session's Ray (children of its raylet), not others'."""
    import ray

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    return [p.pid for p in psutil.Process(raylet).children(recursive=True)
            if "ActivationExtractor" in " ".join(p.cmdline())]


def test_killed_activation_actor_changes_nothing(ray_session, tiny_llama, ft_corpus, ft_reference, tmp_path):
    out = tmp_path / "out"
    killed = []

    def killer():
        if _wait_for_shards(out / SHARDS, 1):
            for pid in _activation_actor_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    manifest = run_curate(ft_config(tiny_llama, ft_corpus, out))
    thread.join(timeout=5)
    assert killed, "no activation actor was found to kill"
    assert (out / "calibration.jsonl").read_text() == ft_reference
    ids = __import__("pyarrow.parquet", fromlist=["x"]).read_table(out / SHARDS, columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)), "a chunk was written twice"
    assert manifest["counts"]["chunks"] == len(ids) - manifest["counts"]["dropped"].get("empty", 0)


def test_killed_driver_then_rerun_resumes(tiny_llama, ft_corpus, ft_reference, tmp_path):
    out = tmp_path / "out"
    cfg = ft_config(tiny_llama, ft_corpus, out)
    argv = [sys.executable, "-m", "cola_ray.cli", "curate", "--model", cfg.model,
            *sum((["--corpus", c] for c in cfg.corpus), []), "--out", str(out),
            "--num-samples", "6", "--seq-len", "64", "--min-tokens", "8", "--proj-dim", "16",
            "--kmeans-iters", "10", "--kmeans-restarts", "2", "--shard-size", "16", "--batch-size", "8"]
    env = {**os.environ, "COLA_RAY_NO_PROGRESS": "1"}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "first.log"
    with open(log, "w") as sink:
        first = subprocess.Popen(argv, env=env, stdout=sink, stderr=sink, start_new_session=True)
    try:
        assert _wait_for_shards(out / SHARDS, 2, process=first), f"no shards; log:\n{log.read_text()[-3000:]}"
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the local Ray it started
        first.wait()
    written = len(list((out / SHARDS).glob("shard-*.parquet")))
    assert not (out / "manifest.json").exists()
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-2000:]
    resumed = re.search(r"resuming: (\d+) activation shards already written", second.stderr)
    assert resumed and int(resumed.group(1)) >= min(written, 2), second.stderr[-2000:]
    assert (out / "calibration.jsonl").read_text() == ft_reference
    # Ray's own C++ log lines stay off a user's terminal (common.ensure_ray; COLA_RAY_VERBOSE=1 shows them)
    assert "constructor arguments in the object store" not in second.stderr, second.stderr[-2000:]


def test_shards_cut_short_or_deleted_between_runs_are_embedded_again(tiny_llama, ft_corpus, ft_reference,
                                                                     ft_reference_out, tmp_path, capsys):
    """A finished run's pool, then one shard truncated (a full disk, an interrupted copy), one
    emptied and one deleted: the rerun moves the unreadable ones aside (kept, named in the log
    and the manifest), embeds their chunks again, and selects exactly what the undisturbed run did."""
    import json
    import shutil

    out = tmp_path / "out"
    shutil.copytree(ft_reference_out, out)
    shards = sorted((out / SHARDS).glob("shard-*.parquet"))
    assert len(shards) >= 3
    cut, emptied, deleted = shards[0], shards[1], shards[2]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    emptied.write_bytes(b"")
    deleted.unlink()
    manifest = run_curate(ft_config(tiny_llama, ft_corpus, out))
    assert (out / "calibration.jsonl").read_text() == ft_reference
    assert sorted(manifest["resume"]["shards_set_aside"]) == sorted([cut.name, emptied.name])
    assert manifest["resume"]["shards_reused"] == len(shards) - 3
    assert {p.name for p in (out / "work" / "broken-shards").iterdir()} == {cut.name, emptied.name}
    assert "unreadable activation shard(s) moved to" in capsys.readouterr().err
    ids = __import__("pyarrow.parquet", fromlist=["x"]).read_table(out / SHARDS, columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)), "a chunk was written twice"
    assert json.loads((out / "manifest.json").read_text())["counts"] == manifest["counts"]
