"""`make loadtest`: serve the Bento on a free port, run one Locust scenario headless, summarise.

    python loadtests/run.py [--scenario FaciaUser[,VideoUser...]] [--users 8] [--duration 30s] [--mix phone|DIR]

Steps: ``bentoml serve service:Liveness`` on a free HTTP port and a free gRPC port
(LIVENESS_GRPC_PORT) with a throw-away key store (benchmarks/bench_report.py's ``Server``), a key
from ``python -m liveness keys create``, a gRPC token from ``python -m liveness tokens create``,
Locust headless (``loadtests/locustfile.py``) with ``--csv`` into
``loadtests/results/<timestamp>/``, a summary (req/s, p50/p95/p99, failures per user class),
then the server is stopped.

``--mix``: the single-image users send an image set instead of T1/F1/F2 (LIVENESS_LOADTEST_MIX):
a folder with a ``labels.csv``, or ``phone`` for the phone-photo mix (``benchmarks/phone_mix.py``,
written to the run's temporary folder).

Locust runs as a subprocess on purpose: importing locust monkey-patches the process for gevent,
which does not mix with the thread pools of anything else in the same process.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_report import Server  # noqa: E402  (stdlib-only at import)

BIN = Path(sys.executable).parent
RESULTS = REPO / "loadtests" / "results"
USER_CLASSES = ("FaciaUser", "NativeUser", "VideoUser", "ChallengeUser", "GrpcUser", "SessionUser", "VerifyUser")
# Locust's stats are per request name; which user class sends which name:
CLASS_OF = {
    "/liveness": "FaciaUser",
    "/v1/liveness": "NativeUser",
    "/v1/video-liveness": "VideoUser",
    "/start": "ChallengeUser",
    "/process": "ChallengeUser",
    "/complete": "ChallengeUser",
    "/liveness.bws.v1.LivenessWebService/LivenessDetection": "GrpcUser",
    "/v1/sessions": "SessionUser",
    "/v1/liveness [session token]": "SessionUser",
    "/v1/sessions/{id}": "SessionUser",
    "/v1/sessions/{id} [delete]": "SessionUser",
    "/v1/verify": "VerifyUser",
}


def log(msg: str) -> None:
    print(f"[loadtest {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def create_token(server: Server, key_name: str, ttl: int = 3600) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "liveness", "tokens", "create", "--key", key_name, "--ttl", str(ttl)],
        cwd=REPO, env=server.env, capture_output=True, text=True, check=True,
    )
    return out.stdout.strip().splitlines()[-1].strip()


def _float(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def summarise(prefix: Path, scenario: list[str]) -> str:
    stats_path = prefix.with_name(prefix.name + "_stats.csv")
    failures_path = prefix.with_name(prefix.name + "_failures.csv")
    if not stats_path.is_file():
        return f"no stats written ({stats_path} missing)"
    rows = list(csv.DictReader(stats_path.open()))
    lines = [f"{'type':<6} {'name':<55} {'reqs':>6} {'fails':>6} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"]
    per_class: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        name = row["Name"]
        reqs, fails = int(row["Request Count"]), int(row["Failure Count"])
        lines.append(f"{row['Type'] or '':<6} {name:<55} {reqs:>6} {fails:>6} {_float(row['Requests/s']):>7.2f} "
                     f"{_float(row['50%']):>7.0f} {_float(row['95%']):>7.0f} {_float(row['99%']):>7.0f}")
        if name != "Aggregated":
            cls = CLASS_OF.get(name, "?")
            per_class[cls][0] += reqs
            per_class[cls][1] += fails
    lines.append("")
    lines.append("failures per user class:")
    for cls in scenario:
        reqs, fails = per_class.get(cls, [0, 0])
        share = f"{100 * fails / reqs:.1f}%" if reqs else "-"
        lines.append(f"  {cls:<14} {fails} of {reqs} requests failed ({share})")
    if failures_path.is_file():
        failures = list(csv.DictReader(failures_path.open()))
        if failures:
            lines.append("")
            lines.append("failure messages:")
            for f in failures:
                lines.append(f"  {f['Occurrences']:>5} x {f['Method']} {f['Name']}: {f['Error']}")
    return "\n".join(lines)


def mix_folder(spec: str, tmp: Path) -> Path:
    """``--mix``: "phone" (written into ``tmp``) or a folder that has a labels.csv."""
    if spec == "phone":
        from phone_mix import write_mix  # benchmarks/ is on sys.path

        log("writing the phone-photo mix")
        return write_mix(tmp / "phone-mix").parent
    folder = Path(spec)
    if not (folder / "labels.csv").is_file():
        sys.exit(f"--mix: {folder} has no labels.csv")
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="FaciaUser",
                    help="user class(es), comma separated, from " + ", ".join(USER_CLASSES))
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--spawn-rate", type=float, default=None, help="users started per second (default: all at once)")
    ap.add_argument("--duration", default="30s", help="Locust --run-time, e.g. 30s, 2m")
    ap.add_argument("--mix", default=None, help="image set of the single-image users: 'phone' or a folder with labels.csv")
    args = ap.parse_args()
    scenario = [c.strip() for c in args.scenario.replace(" ", ",").split(",") if c.strip()]
    unknown = [c for c in scenario if c not in USER_CLASSES]
    if unknown:
        ap.error(f"unknown user class {', '.join(unknown)}; choose from {', '.join(USER_CLASSES)}")

    out_dir = RESULTS / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="liveness-loadtest-") as tmp_name:
        tmp = Path(tmp_name)
        server = Server(tmp)  # HTTP and gRPC on two distinct free ports
        grpc_port = server.grpc_port
        try:
            log(f"starting the server (HTTP {server.port}, gRPC {grpc_port}, key store {tmp / 'keys.sqlite3'})")
            server.start()
            key = server.create_key()  # named "bench"
            token = create_token(server, "bench")
            log("key and gRPC token created via the admin CLI")
            prefix = out_dir / "locust"
            env = {**os.environ, "LIVENESS_LOADTEST_KEY": key, "LIVENESS_LOADTEST_TOKEN": token,
                   "LIVENESS_LOADTEST_GRPC": f"127.0.0.1:{grpc_port}"}
            if args.mix:
                env["LIVENESS_LOADTEST_MIX"] = str(mix_folder(args.mix, tmp))
            cmd = [str(BIN / "locust"), "-f", str(REPO / "loadtests" / "locustfile.py"), "--headless",
                   "-u", str(args.users), "-r", str(args.spawn_rate or args.users), "-t", args.duration,
                   "--csv", str(prefix), "--html", str(out_dir / "report.html"), "--host", server.url,
                   "--only-summary", "--loglevel", "WARNING", *scenario]
            log(f"locust: {' '.join(scenario)}, {args.users} users for {args.duration} -> {out_dir.relative_to(REPO)}")
            with open(out_dir / "locust.log", "wb") as locust_log:
                rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=locust_log, stderr=subprocess.STDOUT).returncode
            log(f"locust exited with {rc} (1 = some requests failed)")
        except Exception:
            print(server.log_tail(), file=sys.stderr)
            raise
        finally:
            server.stop()
            try:  # keep the server log beside the results
                (out_dir / "server.log").write_bytes(server.log_path.read_bytes())
            except OSError:
                pass
    summary = summarise(prefix, scenario)
    (out_dir / "summary.txt").write_text(summary + "\n")
    print(summary)
    print(f"\nresults: {out_dir.relative_to(REPO)}/ (locust_*.csv, report.html, locust.log, server.log)")
    return 0 if rc in (0, 1) else rc


if __name__ == "__main__":
    sys.exit(main())
