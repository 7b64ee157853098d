"""One run at a time per --out (cola_ray/lock.py): refused while the holder lives, taken over after a crash."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from cola_ray import lock
from cola_ray.cli import main
from cola_ray.errors import UserError


def _lock(out, pid, host=None, beat=None):
    out.mkdir(parents=True, exist_ok=True)
    (out / lock.NAME).write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid, "command": "curate",
                                             "token": "other", "started": time.time(), "beat": beat or time.time()}))


def test_a_second_run_on_the_same_out_is_refused_in_one_line(tmp_path, tiny_llama, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(tmp_path / "out", holder.pid)
        code = main(["curate", "--model", str(tiny_llama), "--corpus", str(tmp_path / "none.jsonl"),
                     "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert code == 2 and "another cola-ray curate is using it" in err and f"pid {holder.pid}" in err
        assert json.loads((tmp_path / "out" / lock.NAME).read_text())["token"] == "other"  # left alone
    finally:
        holder.kill()
        holder.wait()


def test_a_crashed_runs_lock_is_taken_over_and_released(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lock(tmp_path, dead.pid)
    with lock.hold(str(tmp_path), "curate"):
        held = json.loads((tmp_path / lock.NAME).read_text())
        assert held["pid"] != dead.pid and held["command"] == "curate"
        with pytest.raises(UserError, match="another cola-ray curate is using it"):
            with lock.hold(str(tmp_path), "score"):  # nested in one process: still one run per --out
                pass
    assert not (tmp_path / lock.NAME).exists()


def test_another_hosts_lock_counts_until_its_heartbeat_goes_stale(tmp_path):
    _lock(tmp_path, 1, host="elsewhere")
    with pytest.raises(UserError, match="host elsewhere"):
        with lock.hold(str(tmp_path), "curate"):
            pass
    _lock(tmp_path, 1, host="elsewhere", beat=time.time() - 2 * lock.STALE_S)
    with lock.hold(str(tmp_path), "curate"):
        pass
