"""py-spy on the served workers while Locust loads them: where the CPU and the GIL go.

Used by ``bench_report.py`` (a dedicated load level, not one of the measured ones: the sampler
takes CPU from the server).  Two passes over every BentoML worker at once:

* ``threads``: ``py-spy record --idle`` (every thread, every sample), then samples whose innermost
  Python frame is a waiting point (a pool thread waiting for work, ``Condition.wait``, the event
  loop's ``select``, a C-level thread target) are dropped, so what is left is threads at work;
  a thread inside ONNX Runtime or OpenCV (GIL released) shows as the Python line that called it.
  py-spy's own idle detection is not used: on this VM it counted pool threads waiting on their
  queue as running.  kept samples / (seconds x rate) is roughly the cores the worker kept busy;
* ``gil``: ``py-spy record --gil``: only the thread holding the GIL; samples / (seconds x rate)
  is the share of wall time the worker's GIL was held: near 100% means the worker is bound by its
  Python code (one interpreter), whatever the cores.

Each sample's leaf frame is put in a category (below), and the heaviest leaf functions listed.
"""

from __future__ import annotations

import linecache
import re
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# First match wins: (category, substrings of the leaf frame "function (file:line)").
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ONNX Runtime (model run)", ("onnxruntime",)),
    ("image decode (liveness.imaging)", ("liveness/imaging/",)),
    ("face detector pre/post (liveness.detection)", ("liveness/detection/",)),
    ("crops / classifier pre-post (liveness.antispoof)", ("liveness/antispoof/",)),
    ("batcher / backend (liveness.inference)", ("liveness/inference/",)),
    ("key store / quota (liveness.keys, sqlite)", ("liveness/keys/", "liveness/storage/", "sqlite3")),
    ("request parsing / answer (edge, service.py)", (f"{REPO}/edge/", f"{REPO}/service.py")),
    ("pipeline glue (liveness.app, pipeline, decision)", ("liveness/",)),
    ("base64 / JSON", ("base64.py", "json/", "orjson")),
    ("OpenCV / NumPy called from elsewhere", ("cv2", "numpy/")),
    ("HTTP server (uvicorn, h11, httptools)", ("uvicorn/", "h11/", "httptools")),
    ("ASGI framework (starlette, bentoml, _bentoml_impl)", ("starlette/", "bentoml/", "_bentoml_", "multipart")),
    ("validation (pydantic)", ("pydantic",)),
    ("metrics / tracing (prometheus, opentelemetry)", ("prometheus", "opentelemetry")),
    ("per-request introspection (inspect, typing, simple_di)", ("/inspect.py", "/typing.py", "simple_di")),
    ("gRPC", ("grpc",)),
    ("asyncio event loop", ("asyncio/", "selectors.py", "anyio/")),
    ("thread pools / locks", ("concurrent/futures", "threading.py", "queue.py")),
    ("logging", ("logging/",)),
)


# Innermost frames that are a thread waiting, not working: (function, file suffix).
IDLE: tuple[tuple[str, str], ...] = (
    ("_worker", "concurrent/futures/thread.py"),  # a pool thread blocked on its work queue
    ("wait", "threading.py"),  # Condition.wait / Event.wait
    ("_wait_for_tstate_lock", "threading.py"),
    ("run", "threading.py"),  # Thread.run of a C-level target (gRPC poller, ...): blocked in C
    ("get", "queue.py"),
    ("select", "selectors.py"),  # the event loop waiting for sockets
    ("sleep", "asyncio/tasks.py"),
)


# A thread whose innermost Python line takes a lock is (almost always) blocked on it in C.
_LOCK_LINE = re.compile(r"^with\s+[\w.]*(lock|_cond|mutex)\w*\s*:|\.acquire\(|^with\s+[\w.]*(Lock|Condition)\(")


def _where(leaf: str) -> tuple[str, str, int]:
    func, _, where = leaf.partition(" (")
    path, _, line = where.rstrip(")").rpartition(":")
    return func.rsplit(".", 1)[-1], path, int(line) if line.isdigit() else 0


def is_idle(leaf: str) -> bool:
    func, path, _ = _where(leaf)
    return any(func == f and path.endswith(suffix) for f, suffix in IDLE)


def lock_wait(leaf: str) -> str | None:
    """The source line if ``leaf`` is a thread taking a lock (so: waiting for it), else None."""
    func, path, line = _where(leaf)
    if func == "__enter__" and path.endswith("threading.py"):  # Condition.__enter__: its lock
        return "threading.Condition.__enter__"
    text = linecache.getline(path, line).strip() if line else ""
    return text if text and _LOCK_LINE.search(text) else None


def category(leaf: str) -> str:
    for name, needles in CATEGORIES:
        if any(n in leaf for n in needles):
            return name
    return "other"


def short(frame: str) -> str:
    """'func (/long/path/site-packages/pkg/mod.py:12)' -> 'func (pkg/mod.py)'."""
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", f"/lib/python{sys.version_info[0]}.{sys.version_info[1]}/", f"{REPO}/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


def parse_raw(path: Path) -> Counter[str]:
    """py-spy ``--format raw`` (collapsed stacks) -> samples per leaf frame."""
    leaves: Counter[str] = Counter()
    if not path.is_file():
        return leaves
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaves[stack.split(";")[-1]] += int(count)
    return leaves


def record(py_spy: Path, pids: list[int], seconds: float, out_dir: Path, tag: str, rate: int = 100,
           extra: tuple[str, ...] = ()) -> dict[int, Path]:
    """``py-spy record`` on every pid at once for ``seconds``; {pid: raw output file}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {pid: out_dir / f"pyspy_{tag}_{pid}.txt" for pid in pids}
    errors: dict[int, str] = {}

    def one(pid: int) -> None:
        cmd = [str(py_spy), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate",
               str(rate), "--format", "raw", "--full-filenames", "--output", str(files[pid]), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        if proc.returncode != 0:
            errors[pid] = (proc.stderr or proc.stdout).strip()[-300:]

    threads = [threading.Thread(target=one, args=(pid,)) for pid in pids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for pid, err in errors.items():
        print(f"[bench] py-spy {tag} on {pid} failed: {err}", flush=True)
    return files


def summarise(files: dict[int, Path], seconds: float, rate: int = 100, top: int = 12,
              drop_idle: bool = False) -> dict[str, Any]:
    """Categories and top leaves of the samples; with ``drop_idle`` (the all-threads pass) samples
    of waiting threads are dropped and those blocked on a lock are counted apart (``lock_waits``)."""
    per_worker = {}
    cats: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    locks: Counter[str] = Counter()
    for pid, path in files.items():
        lv = parse_raw(path)
        waiting = 0
        if drop_idle:
            work: Counter[str] = Counter()
            for leaf, c in lv.items():
                if is_idle(leaf):
                    continue
                line = lock_wait(leaf)
                if line is not None:
                    locks[f"{short(leaf).split(' (')[0]}: {line}"] += c
                    waiting += c
                else:
                    work[leaf] += c
            lv = work
        n = sum(lv.values())
        per_worker[pid] = {"samples": n, "busy": n / (seconds * rate) if seconds else 0.0,
                           "lock_waiting": waiting / (seconds * rate) if seconds else 0.0}
        for leaf, c in lv.items():
            cats[category(leaf)] += c
            leaves[short(leaf)] += c
    total = sum(cats.values())
    return {
        "seconds": seconds, "rate": rate, "samples": total, "workers": per_worker,
        "categories": [(name, c / total) for name, c in cats.most_common()] if total else [],
        "top": [(name, c / total) for name, c in leaves.most_common(top)] if total else [],
        # lock site -> average threads blocked there (all workers together)
        "lock_waits": [(site, c / (seconds * rate)) for site, c in locks.most_common(8)] if seconds else [],
    }
