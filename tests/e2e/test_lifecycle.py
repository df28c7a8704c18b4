"""Workers die with their parent (edge/lifecycle.py).

BentoML's arbiter (circus, in the ``bentoml serve`` process) starts every worker in a session of
its own, so a SIGKILL of the server's process group used to leave the workers serving under PID 1
and holding the ports.  The first tests drive ``bind_to_parent`` in a pair of plain processes shaped
like circus's (a parent holding a listening socket, a child in its own session given ``--fd N``);
the last one hard-kills the served Bento and starts it again on the same ports.

Every wait is a poll with a generous deadline (a hang guard, never a speed requirement).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import httpx
import psutil
import pytest

import e2e_conftest
from e2e_conftest import REPO, start_server

pytestmark = pytest.mark.e2e

DEADLINE_S = 120.0  # hang guard of every poll below

# A parent shaped like circus's arbiter: it holds a listening socket and starts the child in a
# session of its own with the socket's fd on its command line, then lives until killed.
PARENT = r"""
import os, socket, subprocess, sys, time
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
fd = sock.fileno()
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], "--fd", str(fd), str(os.getpid()), *sys.argv[2:]],
                         pass_fds=[fd], start_new_session=True)
print(child.pid, flush=True)
time.sleep(3600)
"""

# The worker: binds itself (mode below), writes its parent-death signal to `ready`, lives on.
CHILD = r"""
import os, signal, sys, time
from edge import lifecycle
parent, mode, ready = int(sys.argv[3]), sys.argv[4], sys.argv[5]
if mode == "watchdog":    # no prctl: the getppid() watchdog alone
    lifecycle.set_parent_death_signal = lambda sig: False
if mode == "stubborn":    # ignores the graceful signal: the watchdog's SIGKILL after grace_s
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    lifecycle.set_parent_death_signal = lambda sig: False
if mode == "late":        # the parent dies before the worker binds
    while os.getppid() == parent:
        time.sleep(0.05)
lifecycle.bind_to_parent(force=True, grace_s=1.0, poll_s=0.1)
with open(ready + ".tmp", "w") as f:
    f.write(str(lifecycle.parent_death_signal()))
os.replace(ready + ".tmp", ready)
time.sleep(3600)
"""


def poll(what: str, done: Callable[[], bool], deadline_s: float = DEADLINE_S, every: float = 0.1) -> None:
    deadline = time.monotonic() + deadline_s
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still not the case after {deadline_s:.0f} s")
        time.sleep(every)


def gone(pid: int) -> bool:
    """Not running (a zombie waiting for its reaper counts as gone: it holds no socket)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def ppid(pid: int) -> int | None:
    try:
        return psutil.Process(pid).ppid()
    except psutil.NoSuchProcess:
        return None


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def port_free(port: int) -> bool:
    """Bindable the way the servers bind it (SO_REUSEADDR, no SO_REUSEPORT, all interfaces)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def spawn_pair(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, int, Path]:
    ready = tmp_path / f"ready-{mode}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, mode, str(ready)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(parent.stdout.readline())
    return parent, child, ready


def hard_kill(proc: subprocess.Popen) -> None:
    """SIGKILL to the process group the process leads, as in the issue."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.mark.parametrize("mode", ["pdeathsig", "watchdog", "stubborn"])
def test_worker_stops_when_its_parent_is_killed(tmp_path, mode):
    parent, child, ready = spawn_pair(tmp_path, mode)
    try:
        poll("the child bound itself", ready.exists)
        expected = 0 if mode in ("watchdog", "stubborn") else signal.SIGTERM
        assert int(ready.read_text()) == expected
        assert not gone(child)
        hard_kill(parent)
        poll(f"the orphaned child ({mode}) is gone", lambda: gone(child))
    finally:
        kill_quietly(child)
        if parent.poll() is None:
            hard_kill(parent)


def test_worker_whose_parent_died_before_it_bound_stops(tmp_path):
    """The pre-prctl window: the child finds itself reparented at bind time, and its new parent
    (init or a subreaper) does not hold the socket it was handed."""
    parent, child, ready = spawn_pair(tmp_path, "late")
    try:
        hard_kill(parent)
        poll("the orphan was reparented", lambda: gone(child) or ppid(child) != parent.pid)
        if not gone(child):
            try:
                os.listdir(f"/proc/{ppid(child)}/fd")
            except PermissionError:
                pytest.skip("the orphan's new parent belongs to another user: the socket check cannot tell")
        poll("the late-bound orphan is gone", lambda: gone(child))
    finally:
        kill_quietly(child)


def test_bind_is_a_no_op_outside_a_bentoml_worker():
    """The ``bentoml serve`` process imports service.py too: it must not bind itself to its parent."""
    code = ("import bentoml\nfrom edge import lifecycle\n"
            "assert not lifecycle.in_bentoml_worker()\nassert lifecycle.bind_to_parent() is None\n"
            "print(lifecycle.parent_death_signal())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_hard_kill_of_the_server_takes_its_workers_and_frees_the_ports(tmp_path, monkeypatch):
    db = tmp_path / "keys.sqlite3"
    first = start_server(db, tmp_path, {"LIVENESS_WORKERS": "2"})
    workers = psutil.Process(first.proc.pid).children(recursive=True)
    try:
        assert len(workers) == 2, workers
        # The premise: circus starts each worker in a session (and process group) of its own.
        assert all(os.getsid(w.pid) == w.pid != os.getpgid(first.proc.pid) for w in workers)

        hard_kill(first.proc)
        poll("every worker of the killed server is gone", lambda: all(gone(w.pid) for w in workers))
        poll(f"HTTP port {first.port} is free", lambda: port_free(first.port))
        poll(f"gRPC port {first.grpc_port} is free", lambda: port_free(first.grpc_port))
    finally:
        for w in workers:
            kill_quietly(w.pid)

    # Again on the same ports and the same BENTOML_HOME (its Prometheus folder still holds the
    # killed workers' files): start_server picks its ports with free_ports.
    monkeypatch.setattr(e2e_conftest, "free_ports", lambda count, host="127.0.0.1": [first.port, first.grpc_port])
    second = start_server(db, tmp_path)
    try:
        assert (second.port, second.grpc_port) == (first.port, first.grpc_port)
        assert httpx.get(second.url + "/readyz", timeout=60).status_code == 200
        r = httpx.get(second.url + "/status_check", timeout=60)
        assert (r.status_code, r.text) == (200, "Service is live")
        with socket.create_connection(("127.0.0.1", second.grpc_port), timeout=60):  # gRPC listens again
            pass
    finally:
        second.stop()
