"""A crash invents no charges: under load, SIGKILL one worker, then the whole server; after a
restart every lease is settled and the key's ``used`` is at most the 200s its clients received
(and at most the requests in flight at the kills below it).

Measured before leases: 9,518 answers, ``used`` +9,538 (every request in flight at the kill kept
its reserved unit).  Now each reservation is a lease (``reservation_lease_s``, 10 s here) that the
restarted server's sweep gives back.  Waits are polls with generous deadlines, never speed
assertions.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

import httpx
import psutil

from e2e_conftest import T1 as T1_PATH, create_key, key_usage, start_server

T1 = T1_PATH.read_bytes()
DEADLINE_S = 300.0
CLIENTS = 6


def poll(what, done, deadline_s: float = DEADLINE_S, every: float = 0.2):
    end = time.monotonic() + deadline_s
    while not done():
        if time.monotonic() > end:
            raise AssertionError(f"still not true after {deadline_s:.0f} s: {what} {_states()}")
        time.sleep(every)


_WATCHED: list[int] = []
_last: dict = {}


def _states() -> dict[int, str]:
    out = {}
    for pid in _WATCHED:
        try:
            out[pid] = psutil.Process(pid).status() + " " + " ".join(psutil.Process(pid).cmdline()[:4])
        except psutil.NoSuchProcess:
            out[pid] = "none"
    return {**out, "usage": dict(_last)}


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Load:
    """Clients posting T1 to /v1/liveness until stopped; ``ok`` counts the 200s received."""

    def __init__(self, url: str, key: str, clients: int = 6) -> None:
        self.url, self.key, self.ok, self.failed = url, key, 0, 0
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(f"{self.url}/v1/liveness", content=T1,
                                    headers={"X-API-Key": self.key, "Content-Type": "image/jpeg"})
                    good = r.status_code == 200 and "is_live" in r.json()
                except (httpx.HTTPError, ValueError):
                    good = False  # the server died under this request: no answer, no charge
                with self._lock:
                    if good:
                        self.ok += 1
                    else:
                        self.failed += 1

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)


def test_a_crash_mid_load_neither_loses_nor_invents_charges(tmp_path):
    db = tmp_path / "keys.sqlite3"
    key = create_key(db, 1_000_000)
    env = {"LIVENESS_WORKERS": "2", "LIVENESS_RESERVATION_LEASE_S": "10"}
    server = start_server(db, tmp_path, env)
    tree = [server.proc.pid]
    try:
        workers = psutil.Process(server.proc.pid).children(recursive=True)
        assert len(workers) == 2
        load = Load(server.url, str(key), CLIENTS)
        try:
            poll("the first answers", lambda: load.ok >= 20)
            os.kill(workers[0].pid, signal.SIGKILL)  # one worker dies mid-request
            seen = load.ok
            poll("answers after the worker died", lambda: load.ok >= seen + 20)
            tree += [p.pid for p in psutil.Process(server.proc.pid).children(recursive=True)]
            _WATCHED[:] = tree
            for pid in tree:  # then the whole server, workers and all
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            load.stop()
        server.proc.poll()  # reap the server itself (our child)
        poll(f"every process of the killed server is gone: {tree}", lambda: all(gone(p) for p in tree), deadline_s=60)
        assert load.failed > 0  # requests really were cut off in flight
        answered = load.ok
        held = _leases(db)  # units of cut-off requests, still reserved (usually a few; 0 if the kills fell between requests)
        assert key_usage(key)["used"] >= answered - 2 * CLIENTS + held
    finally:
        server.stop()

    again = start_server(db, tmp_path, env)  # sweeps at start-up and every 30 s
    try:
        poll(f"the leases of the killed processes are reclaimed (answered {answered})",
             lambda: _leases(db) == 0 and bool(_last.update(key_usage(key))) is False, deadline_s=120)
        usage = key_usage(key)
        # Never a charge without an answer: a unit is committed only once its answer was written
        # to the socket.  At most the requests in flight at each of the two kills (one per client)
        # were answered and killed before their commit: given back, in the client's favour.
        assert usage["used"] <= answered, (usage, answered)
        assert answered - usage["used"] <= 2 * CLIENTS, (usage, answered)
        assert usage["reclaimed"] >= held
    finally:
        again.stop()


def _leases(db) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0]
