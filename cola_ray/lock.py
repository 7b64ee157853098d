"""One run at a time per --out: a lock file under it, which a crashed run's rerun takes over.

Two runs writing one --out would interleave shards, markers and manifests. The lock names its
holder (host, pid, command, start) and carries a heartbeat the holder refreshes every
HEARTBEAT_S seconds. A new run refuses while the holder is alive: on the same host, its pid
still runs; on another host (a shared S3 --out), its heartbeat is younger than STALE_S. A lock
whose holder died (a crash, a killed job) is taken over, so rerunning after a crash just works.

Neither a local file system nor S3 gives us a lock that every storage honours (fcntl locks do
not cross hosts; S3 has no atomic create that moto and every S3-compatible store share), so
this is a write-then-read-back claim: two runs started within the same second on two hosts
could both pass; one run per --out at a time on one machine is exact.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager

from cola_ray import storage
from cola_ray.errors import UserError

NAME = ".cola-ray.lock"
HEARTBEAT_S = 60.0
STALE_S = 600.0
_HELD: set[str] = set()  # tokens of the locks this process holds


def _alive(holder: dict) -> bool:
    if holder.get("token") in _HELD:
        return True
    if holder.get("host") != socket.gethostname():
        return time.time() - float(holder.get("beat", 0)) < STALE_S
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True  # a pid we may not signal is a live process
    return int(holder["pid"]) != os.getpid()  # our own pid without our token: a lock left by a past run


def _refuse(out: str, holder: dict) -> UserError:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
    return UserError(f"--out {out}: another cola-ray {holder.get('command', 'run')} is using it (host "
                     f"{holder.get('host')}, pid {holder.get('pid')}, since {since}); wait for it to finish or "
                     f"use another --out")


@contextmanager
def hold(out: str, command: str):
    """Hold the lock of `out` for the duration of a run (checks that `out` is writable first)."""
    storage.check_writable(out)
    uri = storage.join(out, NAME)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "command": command, "token": uuid.uuid4().hex,
          "started": time.time(), "beat": time.time()}
    held = storage.read_json(uri) if storage.exists(uri) else None
    if held and _alive(held):
        raise _refuse(out, held)
    storage.write_json(uri, me)
    if storage.read_json(uri).get("token") != me["token"]:  # another run claimed it in between
        raise _refuse(out, storage.read_json(uri))
    _HELD.add(me["token"])
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(uri, me, stop), daemon=True, name="cola-ray-lock")
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join(timeout=5)
        _HELD.discard(me["token"])
        try:
            if storage.exists(uri) and storage.read_json(uri).get("token") == me["token"]:
                storage.delete(uri)
        except Exception:  # noqa: BLE001 - a lock we cannot remove is taken over by the next run
            pass


def _heartbeat(uri: str, me: dict, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            storage.write_json(uri, {**me, "beat": time.time()})
        except Exception:  # noqa: BLE001 - a missed beat only makes the lock look older
            pass
