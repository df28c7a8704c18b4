"""`make bench`: measure the liveness service and write docs/PERFORMANCE.md.

    python benchmarks/bench_report.py [--quick] [--duration S] [--users N] [--output PATH]

Steps
  1. in-process ceiling: the same ``LivenessApp`` the service builds, called directly from N
     concurrent asyncio tasks (no HTTP, no auth) for a few N, the best being the ceiling; plus
     sequential single-request latency;
  2. model-only: each ONNX model through onnxruntime directly, batch 1 and batch 8;
  3. served: ``bentoml serve service:Liveness`` on a free port with a throw-away key store, a key
     from the admin CLI, Locust headless (FaciaUser) at peak load and at about half the peak
     throughput; the ``liveness_batch_size`` histogram is scraped from /metrics before and after;
  4. docs/PERFORMANCE.md is regenerated from the numbers.

Environment: BENCH_DURATION (seconds per HTTP load level, default 30), BENCH_USERS (peak users,
default 16), BENCH_MODERATE_USERS (users of the moderate level, default 4),
BENCH_CONCURRENCY (in-process task counts, default "8,16,32"; the best is the ceiling).
``--quick`` makes every duration 5 s.
Numbers are only meaningful on an otherwise idle machine: Locust runs on the same host.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import datetime as dt
import importlib.metadata
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MEDIA = REPO.parent / "shared" / "media" / "dev" / "images"
IMAGES = (("T1", True), ("F1", False), ("F2", False))  # name, expected live
BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
BIN = Path(sys.executable).parent


# Profiling history: what was measured and changed (not regenerated; numbers from the dated runs).
FINDINGS = """## What decides the speed (profiled 2026-11-24, this 2-core machine)

| Change | Before | After | How measured |
| --- | ---: | ---: | --- |
| MiniFASNet: exact `PRelu` -> `Max(x, slope*x)` rewrite in the converter (slopes <= 1; output bit-identical, parity diff 0) | 3.7 ms/call | 1.9 ms/call | ORT profile: PRelu was 53% of the model's time (slow per-channel broadcast kernel that also blocks conv fusion) |
| Batcher waits `max_queue_delay` = 0 instead of 1-2 ms (batches form from requests queued while the model is busy) | 13.5 ms single, 179 img/s at 8 tasks | 7.9 ms single, 194 img/s at 8 tasks | in-process, same images |
| Cache BentoML's per-request JSON-schema rebuild of root-input models; return a ready `JSONResponse` | 116 req/s | 131 req/s | 1 worker, Locust 16 users; py-spy `--gil`: schema rebuild was 11% and output serialisation 6% of the worker's GIL time |
| Workers = cores (2) instead of 1 | 131 req/s | 151 req/s | Locust 16 users; one worker's event loop held the GIL 66% of the time with 91% of it in the HTTP stack |

Where the CPU goes per request now (single request, in-process): JPEG decode with EXIF rotation ~2.0 ms,
detector pre-processing 0.4 ms, RetinaFace 2.1 ms, two MiniFASNets 1.9 ms each (in parallel), crops and
post-processing < 0.3 ms. Over HTTP each request adds ~1-3 ms of Python in the worker's event loop
(Starlette/BentoML middleware: tracing, access log, Prometheus, request parsing). Locust shares the 2 cores.
"""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


@dataclass
class Config:
    quick: bool
    inprocess_seconds: float
    http_seconds: float
    users: int
    moderate_users: int
    concurrency: list[int]
    output: Path
    model_seconds: float


@dataclass
class Results:
    machine: dict[str, str] = field(default_factory=dict)
    ceiling: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    http: list[dict[str, Any]] = field(default_factory=list)
    batch_hist: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, str]:
    import bentoml
    import onnxruntime

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:  # never `import locust` here: it monkey-patches threading (gevent) for the whole process
        locust_version = importlib.metadata.version("locust")
    except importlib.metadata.PackageNotFoundError:
        locust_version = "not installed"
    return {
        "CPU": cpu,
        "Cores (os.cpu_count)": str(os.cpu_count()),
        "Usable cores (affinity)": str(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else "?",
        "Load average at start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "BentoML": bentoml.__version__,
        "Locust": locust_version,
        "Date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def load_images() -> list[tuple[str, bool, bytes]]:
    out = []
    for name, live in IMAGES:
        path = MEDIA / f"silentface_image_{name}.jpg"
        if not path.is_file():
            sys.exit(f"missing dev image {path}")
        out.append((name, live, path.read_bytes()))
    return out


# --------------------------------------------------------------------------- step 1: in-process


def inprocess_ceiling(cfg: Config, images: list[tuple[str, bool, bytes]]) -> tuple[dict[str, Any], Any]:
    """Throughput of LivenessApp at each of ``cfg.concurrency`` task counts (the best one is the
    ceiling), and sequential latency.
    Returns (numbers, a T1 face box for the model-only step)."""
    from liveness.api import facia
    from liveness.app import LivenessApp
    from liveness.settings import Settings

    hist: dict[str, list[int]] = defaultdict(list)

    def observer(model: str, version: int, rows: int, seconds: float) -> None:
        hist[model].append(rows)

    settings = Settings(auth_enabled=False, model_repository=REPO / "model_repository")
    log(f"in-process: building LivenessApp (detector {settings.detector}, models {list(settings.antispoof_models)})")
    app = LivenessApp(settings, observer=observer)
    limits = app.pipeline.limits
    # The FACIA path's work minus HTTP: base64 text -> bytes -> pipeline.
    docs = [(name, live, {"selfie_image": base64.b64encode(raw).decode()}) for name, live, raw in images]

    async def one(i: int) -> tuple[bool, Any]:
        name, live, doc = docs[i % len(docs)]
        result = await app.check_image(None, lambda: facia.selfie_bytes(doc, limits))
        return result.is_live == live, result

    async def sequential(n: int) -> tuple[list[float], Any]:
        lat, face = [], None
        for i in range(n):
            t0 = time.perf_counter()
            ok, result = await one(i)
            lat.append(time.perf_counter() - t0)
            if not ok:
                raise RuntimeError(f"wrong verdict for {docs[i % len(docs)][0]} in-process")
            if docs[i % len(docs)][0] == "T1":
                face = result.face
        return lat, face

    async def saturate(seconds: float, tasks: int) -> tuple[int, int, float, list[float]]:
        done = wrong = 0
        lat: list[float] = []
        stop = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal done, wrong
            i = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                ok, _ = await one(i)
                lat.append(time.perf_counter() - t0)
                done += 1
                wrong += not ok
                i += tasks

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(tasks)))
        return done, wrong, time.perf_counter() - t0, lat

    def cpu_now() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    async def run() -> tuple[dict[str, Any], Any]:
        await sequential(6)  # warm-up: lazy imports, allocator, caches
        n_seq = 30 if cfg.quick else 90
        log(f"in-process: {n_seq} sequential requests")
        lat, face = await sequential(n_seq)
        levels = []
        for tasks in cfg.concurrency:
            hist.clear()
            log(f"in-process: {tasks} concurrent tasks for {cfg.inprocess_seconds:.0f} s")
            cpu0 = cpu_now()
            done, wrong, elapsed, conc_lat = await saturate(cfg.inprocess_seconds, tasks)
            levels.append({
                "concurrency": tasks,
                "seconds": elapsed,
                "requests": done,
                "wrong": wrong,
                "images_per_s": done / elapsed,
                "cpu_pct": 100 * (cpu_now() - cpu0) / elapsed,
                "conc_p50_ms": pct(conc_lat, 50) * 1000,
                "conc_p95_ms": pct(conc_lat, 95) * 1000,
                "batch_mean": {m: statistics.mean(v) for m, v in sorted(hist.items()) if v},
            })
            lv = levels[-1]
            log(f"in-process:   {lv['images_per_s']:.1f} images/s, p50 {lv['conc_p50_ms']:.0f} ms, "
                f"CPU {lv['cpu_pct']:.0f}% of one core, {wrong} wrong verdicts")
        best = max(levels, key=lambda lv: lv["images_per_s"])
        numbers = {
            **best,  # the ceiling is the best concurrency level
            "levels": levels,
            "seq_n": n_seq,
            "seq_p50_ms": pct(lat, 50) * 1000,
            "seq_p95_ms": pct(lat, 95) * 1000,
            "seq_images_per_s": 1 / statistics.mean(lat),
        }
        return numbers, face

    try:
        numbers, face = asyncio.run(run())
    finally:
        app.close()
    log(f"in-process: ceiling {numbers['images_per_s']:.1f} images/s (at concurrency {numbers['concurrency']}), "
        f"single-request p50 {numbers['seq_p50_ms']:.1f} ms")
    return numbers, face


# --------------------------------------------------------------------------- step 2: model-only


def model_only(cfg: Config, images: list[tuple[str, bool, bytes]], face: Any) -> list[dict[str, Any]]:
    """Each model through onnxruntime directly (same session options as the service), on the
    real preprocessed T1 input, batch 1 and batch 8."""
    import cv2
    import numpy as np
    import onnxruntime as ort

    from liveness.antispoof.minifasnet import MiniFASNet
    from liveness.inference.repository import load_repository
    from liveness.pipeline import make_detector
    from liveness.settings import Settings

    settings = Settings(auth_enabled=False, model_repository=REPO / "model_repository")
    repo = load_repository(settings.model_repository)
    bgr = cv2.imdecode(np.frombuffer(images[0][2], np.uint8), cv2.IMREAD_COLOR)
    detector = make_detector(settings)
    inputs = {detector.model: detector.preprocess(bgr)[0]}
    for name in settings.antispoof_models:
        inputs[name] = MiniFASNet.from_config(repo[name]).preprocess(bgr, face)

    rows = []
    for name, x1 in inputs.items():
        mcfg = repo[name]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = settings.ort_intra_op_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(mcfg.model_file(mcfg.latest)), opts, providers=["CPUExecutionProvider"])
        feed_name = sess.get_inputs()[0].name
        for batch in (1, 8):
            if batch > max(1, mcfg.max_batch_size):
                continue
            x = np.ascontiguousarray(np.repeat(x1, batch, axis=0))
            for _ in range(3):
                sess.run(None, {feed_name: x})
            times = []
            stop = time.perf_counter() + cfg.model_seconds
            while time.perf_counter() < stop or len(times) < 5:
                t0 = time.perf_counter()
                sess.run(None, {feed_name: x})
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            rows.append({
                "model": name, "batch": batch, "input": "x".join(str(d) for d in x.shape),
                "runs": len(times), "ms_per_call": med * 1000, "ms_per_image": med * 1000 / batch,
                "images_per_s": batch / med,
            })
            log(f"model-only: {name} batch {batch}: {med * 1000:.2f} ms/call, {batch / med:.0f} images/s")
        del sess
    return rows


# --------------------------------------------------------------------------- step 3: served


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state, 1 = ppid)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants (BentoML workers run in sessions of their own)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _proc_stat(int(entry.name))
        if fields:
            children[int(fields[1])].append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds_of_tree(root: int) -> float:
    """utime+stime of ``root`` and its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in process_tree(root):
        fields = _proc_stat(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])
    return total / tick


class Server:
    """``bentoml serve service:Liveness`` with a throw-away key store."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "LIVENESS_DB_PATH": str(tmp / "keys.sqlite3")}
        # BentoML keeps Prometheus multiprocess files in $BENTOML_HOME/prometheus_multiproc_dir and
        # wipes that folder whenever any server starts: with the shared default, other servers of
        # the same user would mix into (or reset) our /metrics.  A private home isolates them.
        self.env["BENTOML_HOME"] = str(tmp / "bentoml_home")
        self.env.pop("LIVENESS_AUTH_ENABLED", None)  # the benchmark measures the authenticated path
        self.log_path = tmp / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> None:
        import httpx

        cmd = [str(BIN / "bentoml"), "serve", "service:Liveness", "--host", "127.0.0.1", "--port", str(self.port)]
        log(f"served: {' '.join(cmd[1:])} (log {self.log_path})")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    log(f"served: ready after {time.monotonic() - t0:.1f} s on port {self.port}")
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def create_key(self) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "liveness", "keys", "create", "--name", "bench", "--limit", "1000000000",
             "--period", "total"],
            cwd=REPO, env=self.env, capture_output=True, text=True, check=True,
        )
        return out.stdout.strip().splitlines()[-1].strip()

    def cpu_seconds(self) -> float:
        return cpu_seconds_of_tree(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        log("served: stopping server")
        tree = process_tree(self.proc.pid)  # the arbiter and the workers it started
        try:
            self.proc.send_signal(signal.SIGTERM)  # the arbiter stops its workers itself
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in reversed(tree):  # only processes this script started
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(timeout=10)
        finally:
            self._log.close()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}\s+([0-9eE+.\-naNinf]+)')


def scrape_batch_histogram(url: str) -> dict[str, dict[str, float]]:
    """{model: {"le=1": cumulative count, ..., "count": n, "sum": rows}} from /metrics."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or "liveness_batch_size" not in m.group(1):
            continue
        name, labels, value = m.groups()
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        model = lab.get("model")
        if not model:
            continue
        if name.endswith("_bucket"):
            out[model][f"le={lab.get('le')}"] = out[model].get(f"le={lab.get('le')}", 0) + float(value)
        elif name.endswith("_count"):
            out[model]["count"] = out[model].get("count", 0) + float(value)
        elif name.endswith("_sum"):
            out[model]["sum"] = out[model].get("sum", 0) + float(value)
    return out


def histogram_delta(before: dict, after: dict) -> dict[str, dict[str, Any]]:
    result = {}
    for model, cur in after.items():
        prev = before.get(model, {})
        d = {k: cur.get(k, 0) - prev.get(k, 0) for k in cur}
        count = d.get("count", 0)
        if count <= 0:
            continue
        per_bucket, below = {}, 0.0
        for b in BUCKETS:
            cum = d.get(f"le={float(b)}", d.get(f"le={b}", 0))
            per_bucket[b] = cum - below
            below = cum
        result[model] = {"invocations": int(count), "rows": d.get("sum", 0), "mean": d.get("sum", 0) / count,
                         "buckets": per_bucket, "over": count - below}
    return result


def warm_up(url: str, key: str, images: list[tuple[str, bool, bytes]]) -> None:
    import httpx

    with httpx.Client(timeout=30) as client:
        for i in range(6):
            name, live, raw = images[i % len(images)]
            r = client.post(f"{url}/liveness", json={"hash_id": key, "selfie_image": base64.b64encode(raw).decode()})
            if r.status_code != 201 or bool(r.json()["liveness_result"]["is_live"]) != live:
                raise RuntimeError(f"warm-up request for {name} failed: {r.status_code} {r.text[:200]}")


def run_locust(server: Server, key: str, users: int, seconds: float, label: str,
               user_rps: float | None = None) -> dict[str, Any]:
    prefix = server.tmp / f"locust_{label}"
    env = {**os.environ, "LIVENESS_LOADTEST_KEY": key}
    env.pop("LIVENESS_LOADTEST_USER_RPS", None)
    env.pop("LIVENESS_LOADTEST_WAIT", None)
    if user_rps:
        env["LIVENESS_LOADTEST_USER_RPS"] = f"{user_rps:.4f}"
    cmd = [str(BIN / "locust"), "-f", "loadtests/locustfile.py", "--headless", "-u", str(users), "-r", str(users),
           "-t", f"{int(round(seconds))}s", "--csv", str(prefix), "--host", server.url, "--only-summary",
           "--loglevel", "WARNING", "FaciaUser"]
    pace = f", paced at {user_rps:.2f} req/s per user" if user_rps else ", no wait"
    log(f"served: locust {label}: {users} users for {seconds:.0f} s{pace}")
    before_hist = scrape_batch_histogram(server.url)
    cpu_server0 = server.cpu_seconds()
    rus0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=seconds + 120)
    rus1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_server = server.cpu_seconds() - cpu_server0
    after_hist = scrape_batch_histogram(server.url)
    stats_file = Path(f"{prefix}_stats.csv")
    if not stats_file.is_file():
        raise RuntimeError(f"locust wrote no CSV (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    with open(stats_file, newline="") as fh:
        agg = next(r for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
    failures = []
    fail_file = Path(f"{prefix}_failures.csv")
    if fail_file.is_file():
        with open(fail_file, newline="") as fh:
            failures = [f"{r['Occurrences']}x {r['Method']} {r['Name']}: {r['Error']}" for r in csv.DictReader(fh)]

    def num(col: str) -> float:
        try:
            return float(agg[col])
        except (KeyError, ValueError):
            return float("nan")

    locust_cpu = (rus1.ru_utime + rus1.ru_stime) - (rus0.ru_utime + rus0.ru_stime)
    row = {
        "label": label, "users": users, "user_rps": user_rps, "seconds": seconds,
        "requests": int(num("Request Count")), "failures": int(num("Failure Count")),
        "rps": num("Requests/s"), "p50": num("50%"), "p95": num("95%"), "p99": num("99%"),
        "avg": num("Average Response Time"), "max": num("Max Response Time"),
        # Over the configured duration (the load window); Locust's includes its own start-up.
        "server_cpu_pct": 100 * cpu_server / seconds, "locust_cpu_pct": 100 * locust_cpu / seconds,
        "failure_lines": failures, "batch": histogram_delta(before_hist, after_hist),
        "exit_code": proc.returncode,
    }
    log(f"served: {label}: {row['rps']:.1f} req/s, p50 {row['p50']:.0f} ms, p95 {row['p95']:.0f} ms, "
        f"p99 {row['p99']:.0f} ms, {row['failures']} failures / {row['requests']}; "
        f"CPU server {row['server_cpu_pct']:.0f}%, locust {row['locust_cpu_pct']:.0f}%")
    for line in failures[:5]:
        log(f"  failure: {line}")
    return row


def served(cfg: Config, images: list[tuple[str, bool, bytes]]) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="liveness-bench-"))
    server = Server(tmp)
    rows = []
    try:
        server.start()
        key = server.create_key()
        log("served: bench key created via `python -m liveness keys create`")
        warm_up(server.url, key, images)
        peak = run_locust(server, key, cfg.users, cfg.http_seconds, "peak")
        rows.append(peak)
        # Moderate: about half the peak throughput, spread over a few paced users.
        if peak["rps"] > 0 and peak["rps"] == peak["rps"]:
            target = peak["rps"] / 2
            rows.append(run_locust(server, key, cfg.moderate_users, cfg.http_seconds, "moderate",
                                   user_rps=target / cfg.moderate_users))
        else:
            rows.append(run_locust(server, key, 2, cfg.http_seconds, "moderate"))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


# --------------------------------------------------------------------------- step 4: report


def table(headers: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def f1(v: float) -> str:
    return "n/a" if v != v else f"{v:.1f}"


def f0(v: float) -> str:
    return "n/a" if v != v else f"{v:.0f}"


def render(cfg: Config, res: Results) -> str:
    c = res.ceiling
    out = ["# Performance", ""]
    out.append("_Generated by `benchmarks/bench_report.py` (`make bench`); do not edit by hand — rerun it._")
    out.append("")
    if cfg.quick:
        out += ["> **Quick smoke run (`--quick`, 5 s per level):** these numbers only show that the benchmark "
                "works; rerun `make bench` on an idle machine for representative figures.", ""]
    out += ["## Machine", "", table(["", ""], [[k, v] for k, v in res.machine.items()], "ll"), ""]
    out += ["Locust runs on the same machine as the server and takes part of its CPU. Service settings "
            f"(environment / `liveness.toml`): BentoML workers {c.get('workers', '?')} (`LIVENESS_WORKERS`), detector "
            f"`{c.get('detector', '?')}`, `ort_intra_op_threads` {c.get('intra_op', '?')}, "
            f"`inference_concurrency` {c.get('inflight', '?')}, `cpu_threads` {c.get('cpu_threads', '?')}.", ""]

    out += ["## Summary", ""]
    peak = next((r for r in res.http if r["label"] == "peak"), None)
    summary = [["In-process ceiling", f"{c['images_per_s']:.1f} images/s"],
               ["In-process single request p50", f"{c['seq_p50_ms']:.1f} ms"]]
    if peak:
        summary += [["HTTP peak (FACIA `/liveness`)", f"{peak['rps']:.1f} req/s"],
                    ["HTTP / in-process ceiling", f"{peak['rps'] / c['images_per_s']:.0%}"]]
    out += [table(["", ""], summary, "lr"), ""]

    out += ["## In-process ceiling", "",
            "`LivenessApp(Settings(auth_enabled=False))` called directly — the service's pipeline without "
            "HTTP, JSON or key checks — over the three dev images (T1 live, F1/F2 spoof), base64 "
            "input as on the FACIA endpoint.", ""]
    out += [table(["Measurement", "Value"], [
        ["Ceiling (best concurrency level)", f"{c['images_per_s']:.1f} images/s at {c['concurrency']} tasks"],
        [f"Single request (sequential, n={c['seq_n']}) p50 / p95", f"{c['seq_p50_ms']:.1f} / {c['seq_p95_ms']:.1f} ms"],
        ["Sequential throughput", f"{c['seq_images_per_s']:.1f} images/s"],
    ], "lr"), ""]
    out += [table(["Concurrent tasks", "Duration", "Requests", "Wrong verdicts", "Images/s", "p50 ms", "p95 ms",
                   "Process CPU", "Mean rows per model call"],
                  [[lv["concurrency"], f"{lv['seconds']:.1f} s", lv["requests"], lv["wrong"],
                    f"{lv['images_per_s']:.1f}", f"{lv['conc_p50_ms']:.0f}", f"{lv['conc_p95_ms']:.0f}",
                    f"{lv['cpu_pct']:.0f}%", ", ".join(f"{m} {v:.2f}" for m, v in lv["batch_mean"].items())]
                   for lv in c["levels"]], "r" * 8 + "l"), ""]
    out += ["Process CPU is percent of one core (all threads of the benchmark process).", ""]

    out += ["## HTTP (served Bento, Locust)", "",
            "`bentoml serve service:Liveness`, Locust headless with `FaciaUser` (POST `/liveness`, JSON + "
            "base64, real key from the admin CLI). A response counts as a failure if its status is not 201 "
            "or its verdict is wrong. Latencies in ms. The moderate level paces its users so that the "
            "offered load is about half the peak throughput.", ""]
    rows = []
    for r in res.http:
        users = f"{r['users']}" + (f" × {r['user_rps']:.2f}/s" if r["user_rps"] else " (no wait)")
        ratio = r["rps"] / c["images_per_s"] if c.get("images_per_s") else float("nan")
        rows.append([r["label"], users, f"{r['seconds']:.0f} s", r["requests"], r["failures"], f1(r["rps"]),
                     f"{ratio:.0%}", f0(r["p50"]), f0(r["p95"]), f0(r["p99"]), f0(r["max"]),
                     f"{r['server_cpu_pct']:.0f}%", f"{r['locust_cpu_pct']:.0f}%"])
    out += [table(["Level", "Users", "Duration", "Requests", "Failures", "Req/s", "Of ceiling", "p50", "p95",
                   "p99", "Max", "Server CPU", "Locust CPU"], rows), ""]
    out += ["CPU columns are CPU seconds over the load duration, as percent of one core (the machine has "
            f"{res.machine.get('Cores (os.cpu_count)', '?')} cores); Locust's includes its start-up.", ""]
    fails = [line for r in res.http for line in r["failure_lines"]]
    if fails:
        out += ["Failures:", ""] + [f"- `{line}`" for line in fails[:20]] + [""]

    out += ["## Dynamic batching (`liveness_batch_size` histogram)", "",
            "Rows per model invocation, from the service's `/metrics` (delta over each load level).", ""]
    hist_rows = []
    for r in res.http:
        for model, h in sorted(r["batch"].items()):
            hist_rows.append([r["label"], model, h["invocations"], f"{h['mean']:.2f}",
                              *[int(h["buckets"][b]) for b in BUCKETS], int(h["over"])])
    if hist_rows:
        labels = ["1", "2", "3", "4", "5-6", "7-8", "9-12", "13-16", "17-24", "25-32", ">32"]
        out += [table(["Level", "Model", "Calls", "Mean rows", *labels], hist_rows, "ll" + "r" * (len(labels) + 2)), ""]
    else:
        out += ["(no batch observations scraped)", ""]

    out += ["## Model-only", "",
            "Each ONNX model via onnxruntime directly (same session options as the service: "
            f"{c.get('intra_op', '?')} intra-op thread(s)), real preprocessed T1 input, median of repeated runs.",
            ""]
    out += [table(["Model", "Batch", "Input", "ms / call", "ms / image", "Images/s"],
                  [[m["model"], m["batch"], m["input"], f"{m['ms_per_call']:.2f}", f"{m['ms_per_image']:.2f}",
                    f0(m["images_per_s"])] for m in res.models]), ""]
    per_image = {(m["model"], m["batch"]): m["ms_per_image"] for m in res.models}
    b1 = sum(v for (name, b), v in per_image.items() if b == 1)
    if b1:
        out += [f"Models alone at batch 1 take {b1:.1f} ms per image (detector + both classifiers); the "
                f"in-process pipeline's single-request p50 is {c['seq_p50_ms']:.1f} ms, the rest is decode, "
                "pre/post-processing and scheduling.", ""]
    if res.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in res.notes] + [""]
    out += [FINDINGS]
    out += ["## How to reproduce", "", "```sh", "make bench                      # full run, writes docs/PERFORMANCE.md",
            "python benchmarks/bench_report.py --quick   # 5 s smoke run",
            "BENCH_DURATION=60 BENCH_USERS=32 make bench", "```", "",
            "Run on an otherwise idle machine. The load test alone: start the service, create a key with "
            "`python -m liveness keys create --name load --limit 1000000 --period total`, then "
            "`LIVENESS_LOADTEST_KEY=<key> locust -f loadtests/locustfile.py --host http://127.0.0.1:3000`.", ""]
    return "\n".join(out)


def observations(res: Results) -> list[str]:
    """A few bottleneck hints derived from the numbers (not a substitute for reading them)."""
    notes = []
    c, cores = res.ceiling, os.cpu_count() or 1
    workers = c.get("workers", 1)
    peak = next((r for r in res.http if r["label"] == "peak"), None)
    if c.get("cpu_pct", 0) < 100 * min(cores, 2) * 0.75 and cores > 1:
        notes.append(f"The in-process ceiling is one Python process: it used {c['cpu_pct']:.0f}% of one core "
                     f"out of {cores * 100}%, so it is a per-process ceiling (GIL-bound pre/post-processing), "
                     "not the machine's.")
    if peak:
        ratio = peak["rps"] / c["images_per_s"] if c.get("images_per_s") else 0
        if ratio > 1:
            why = (f"{workers} worker processes use more cores than the single in-process run" if workers > 1 else
                   "staggered HTTP arrivals overlap the pipeline stages (and their threads) better than the "
                   "in-process closed loop, whose tasks tend to move in lock-step batches")
            notes.append(f"HTTP exceeds the in-process ceiling ({ratio:.0%}): {why}. Treat the ceiling as a "
                         "reference point, not an upper bound.")
        busy = peak["server_cpu_pct"] + peak["locust_cpu_pct"]
        if busy > 85 * cores:
            notes.append(f"At peak the machine is CPU-saturated: server {peak['server_cpu_pct']:.0f}% + Locust "
                         f"{peak['locust_cpu_pct']:.0f}% of {cores * 100}%; throughput is bounded by CPU work per "
                         "request, not by waiting.")
        elif peak["server_cpu_pct"] / workers < 115 and workers < cores:
            notes.append(f"At peak the server used {peak['server_cpu_pct']:.0f}% with cores idle: one Python "
                         "process (GIL) is the limit; more workers (`LIVENESS_WORKERS`) should help.")
        if peak["locust_cpu_pct"] > 50:
            notes.append(f"Locust used {peak['locust_cpu_pct']:.0f}% of a core on the same machine: the load "
                         "generator takes CPU the service could use.")
        if peak["failures"]:
            notes.append(f"{peak['failures']} failed requests at peak (see the failure list).")
        for model, h in peak["batch"].items():
            if h["mean"] > 1.5:
                notes.append(f"Dynamic batching is active at peak: {model} averaged {h['mean']:.1f} rows per call.")
                break
    return notes


# --------------------------------------------------------------------------- main


def parse_args() -> Config:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 s per measurement (smoke run)")
    ap.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", 30)),
                    help="seconds per HTTP load level (env BENCH_DURATION, default 30)")
    ap.add_argument("--users", type=int, default=int(os.environ.get("BENCH_USERS", 16)),
                    help="Locust users at peak load (env BENCH_USERS, default 16)")
    ap.add_argument("--moderate-users", type=int, default=int(os.environ.get("BENCH_MODERATE_USERS", 4)),
                    help="paced users of the moderate level (env BENCH_MODERATE_USERS, default 4)")
    ap.add_argument("--concurrency", default=os.environ.get("BENCH_CONCURRENCY", "8,16,32"),
                    help="asyncio task counts for the in-process ceiling, comma-separated; the best is the "
                         "ceiling (env BENCH_CONCURRENCY, default 8,16,32)")
    ap.add_argument("--output", type=Path, default=REPO / "docs" / "PERFORMANCE.md")
    a = ap.parse_args()
    http = 5.0 if a.quick else a.duration
    return Config(quick=a.quick, inprocess_seconds=5.0 if a.quick else 10.0, http_seconds=http,
                  users=a.users, moderate_users=max(1, a.moderate_users), concurrency=[int(v) for v in str(a.concurrency).split(",") if v.strip()],
                  output=a.output, model_seconds=0.5 if a.quick else 2.0)


def main() -> int:
    cfg = parse_args()
    os.chdir(REPO)  # Settings' relative paths and liveness.toml resolve as for `make serve`
    res = Results()
    res.machine = machine_info()
    log(f"machine: {res.machine['CPU']}, {res.machine['Cores (os.cpu_count)']} cores, "
        f"load {res.machine['Load average at start']}")
    images = load_images()

    from liveness.settings import Settings

    s = Settings(auth_enabled=False)
    res.ceiling, face = inprocess_ceiling(cfg, images)
    res.ceiling.update(workers=int(os.environ.get("LIVENESS_WORKERS") or os.cpu_count() or 1), detector=s.detector, intra_op=s.ort_intra_op_threads, inflight=s.inference_concurrency,
                       cpu_threads=s.cpu_threads)
    res.models = model_only(cfg, images, face)
    res.http = served(cfg, images)

    res.notes += observations(res)
    if os.getloadavg()[0] > (os.cpu_count() or 1) * 1.5:
        res.notes.append(f"Load average was {os.getloadavg()[0]:.1f} at the end of the run: other work "
                         "competed for the CPU, the numbers are pessimistic.")
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    from report_sections import keep_sections  # benchmarks/ is on sys.path when run as a script

    cfg.output.write_text(keep_sections(render(cfg, res), cfg.output))
    log(f"wrote {cfg.output.relative_to(REPO) if cfg.output.is_relative_to(REPO) else cfg.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
