"""Per-frame latency of the active-challenge endpoint ``POST /process`` under concurrent sessions
(a benchmark, NOT a test); writes the "challenges" section of docs/PERFORMANCE.md.

    python benchmarks/bench_challenges.py [--quick] [--duration S] [--sessions N] [--fps F] [--no-write]

Method: ``bentoml serve service:Liveness`` on a free port with a throw-away key store and
BENTOML_HOME (``Server`` from bench_report.py), one key from ``python -m liveness keys create``
with a big limit, N sessions (default 20) started concurrently with ``POST /start {}``; each sends
JPEG frames of the real dev video (jomariya_real_1.mp4, 368x656; ~200 frames decoded, JPEG-encoded
and base64-encoded once, before the clock starts) at F fps (default 10, under the server's
challenge_max_fps of 15) paced per session, for BENCH_DURATION seconds (default 20; ``--quick`` 5).
A session that finishes early (all steps done, or failed) is completed and replaced by a new one.
Every /process call is timed (429 frame_too_fast answers are counted, not timed), and every
/start and /complete.  The client shares the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_report import Server, log, pct  # noqa: E402  (importable: no side effects)
from report_sections import replace_section  # noqa: E402

VIDEO = REPO.parent / "shared" / "media" / "dev" / "videos" / "jomariya_real_1.mp4"
N_FRAMES = 200


def load_frames(n: int = N_FRAMES) -> tuple[list[str], tuple[int, int]]:
    """First ``n`` frames of the dev video as base64 JPEG text (quality 92, like the e2e tests)."""
    import av
    import cv2

    out, size = [], (0, 0)
    with av.open(str(VIDEO)) as c:
        for i, fr in enumerate(c.decode(video=0)):
            if i >= n:
                break
            bgr = fr.to_ndarray(format="bgr24")
            size = (bgr.shape[1], bgr.shape[0])
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
            assert ok
            out.append(base64.b64encode(buf.tobytes()).decode())
    if not out:
        sys.exit(f"no frames decoded from {VIDEO}")
    return out, size


class Stats:
    def __init__(self) -> None:
        self.process: list[float] = []
        self.start: list[float] = []
        self.complete: list[float] = []
        self.too_fast = 0  # 429
        self.other_errors: dict[str, int] = {}
        self.sessions = 0
        self.finished_early = 0

    def error(self, what: str) -> None:
        self.other_errors[what] = self.other_errors.get(what, 0) + 1


async def run_load(url: str, key: str, frames: list[str], sessions: int, fps: float, seconds: float) -> tuple[Stats, float]:
    import httpx

    st = Stats()
    headers = {"X-API-Key": key, "content-type": "application/json"}
    spacing = 1 / fps
    limits = httpx.Limits(max_connections=sessions * 2, max_keepalive_connections=sessions * 2)

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as client:

        async def start() -> str | None:
            t = time.perf_counter()
            r = await client.post("/start", json={})
            if r.status_code != 200:
                st.error(f"/start {r.status_code}")
                return None
            st.start.append(time.perf_counter() - t)
            st.sessions += 1
            return r.json()["session_id"]

        async def complete(sid: str) -> None:
            t = time.perf_counter()
            r = await client.post("/complete", json={"session_id": sid})
            if r.status_code != 200:
                st.error(f"/complete {r.status_code}")
                return
            st.complete.append(time.perf_counter() - t)

        # Warm-up (not measured): one session, a few frames, so lazy loading is out of the numbers.
        sid = await start()
        if sid is None:
            raise RuntimeError("warm-up /start failed")
        for data in frames[:5]:
            await client.post("/process", json={"session_id": sid, "image": data})
            await asyncio.sleep(spacing)
        await complete(sid)
        st.start.clear(), st.complete.clear()
        st.sessions = 0

        sids = await asyncio.gather(*(start() for _ in range(sessions)))  # started concurrently
        t0 = time.perf_counter()
        stop = t0 + seconds

        async def session(k: int, sid: str | None) -> None:
            i = k * 7  # sessions at different points of the clip
            await asyncio.sleep(k * spacing / sessions)  # spread the sessions over one frame period
            next_at = time.perf_counter()
            while time.perf_counter() < stop:
                if sid is None:
                    sid = await start()
                    if sid is None:
                        await asyncio.sleep(spacing)
                        continue
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at = max(next_at + spacing, time.perf_counter())
                data = frames[i % len(frames)]
                i += 1
                t = time.perf_counter()
                r = await client.post("/process", json={"session_id": sid, "image": data})
                lat = time.perf_counter() - t
                if r.status_code == 200:
                    st.process.append(lat)
                    body = r.json()
                    if body.get("verification_complete") or body.get("verification_failed"):
                        st.finished_early += 1
                        await complete(sid)
                        sid = None
                elif r.status_code == 429:
                    st.too_fast += 1
                else:
                    try:
                        code = r.json()["error"]["code"]
                    except Exception:  # noqa: BLE001
                        code = "?"
                    st.error(f"/process {r.status_code} {code}")
                    if r.status_code in (404, 409, 410):  # session gone or finished: replace it
                        await complete(sid)
                        sid = None
            if sid is not None:
                await complete(sid)

        await asyncio.gather(*(session(k, s) for k, s in enumerate(sids)))
        elapsed = min(time.perf_counter(), stop) - t0
    return st, elapsed


def ms(v: float) -> str:
    return f"{v * 1000:.1f}"


def row(name: str, lat: list[float]) -> str:
    if not lat:
        return f"| {name} | 0 | - | - | - | - | - |"
    return (f"| {name} | {len(lat)} | {ms(pct(lat, 50))} | {ms(pct(lat, 95))} | {ms(pct(lat, 99))} | "
            f"{ms(max(lat))} | {ms(sum(lat) / len(lat))} |")


def render(st: Stats, elapsed: float, sessions: int, fps: float, size: tuple[int, int], n_frames: int,
           cpu_pct: float | None, quick: bool) -> str:
    date = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    offered = sessions * fps
    lines = [
        "## Active challenges: /process latency",
        "",
        f"Served Bento (`bentoml serve service:Liveness`, default settings, authenticated), {sessions} "
        f"challenge sessions started concurrently (`POST /start {{}}`), each sending JPEG frames of the real "
        f"dev video `jomariya_real_1.mp4` ({size[0]}x{size[1]}, {n_frames} frames, JSON + base64) to "
        f"`POST /process` at {fps:g} fps paced per session ({sessions} x {fps:g} = {offered:g} frames/s offered) "
        f"for {elapsed:.0f} s{' (--quick)' if quick else ''}; sessions that finish early are completed "
        "and replaced. Client (httpx, asyncio) on the same machine. Latencies in ms.",
        "",
        "| Call | Count | p50 | p95 | p99 | Max | Mean |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        row("`/process`", st.process),
        row("`/start`", st.start),
        row("`/complete`", st.complete),
        "",
        f"- Throughput: {len(st.process) / elapsed:.1f} frames/s answered 200 (offered {offered:g}/s)",
        "- Each session waits for its answer before sending the next frame: when the server cannot keep up, "
        "sessions fall behind their pace, and throughput below the offered rate means the server is saturated",
        f"- 429 `frame_too_fast`: {st.too_fast}; other errors: "
        + (", ".join(f"{k}: {v}" for k, v in sorted(st.other_errors.items())) or "none"),
        f"- Sessions: {st.sessions} ({st.finished_early} finished early and were replaced)",
    ]
    if cpu_pct is not None:
        lines.append(f"- Server CPU: {cpu_pct:.0f}% of one core (all workers; {os.cpu_count()} cores)")
    lines += [
        f"- Date: {date}",
        "",
        "Reproduce: `python benchmarks/bench_challenges.py` (`--quick`: 5 s; `BENCH_DURATION`, `--sessions`, "
        "`--fps`).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 s instead of BENCH_DURATION (default 20 s)")
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--output", type=Path, default=REPO / "docs" / "PERFORMANCE.md")
    ap.add_argument("--no-write", action="store_true", help="print the section only")
    args = ap.parse_args()
    seconds = args.duration or (5.0 if args.quick else float(os.environ.get("BENCH_DURATION", "20")))

    log(f"decoding {N_FRAMES} frames of {VIDEO.name}")
    frames, size = load_frames()
    log(f"{len(frames)} frames {size[0]}x{size[1]}, mean base64 {sum(map(len, frames)) / len(frames) / 1024:.0f} KiB")

    tmp = Path(tempfile.mkdtemp(prefix="liveness-bench-chal-"))
    server = Server(tmp)
    # A step not done in time would fail the session (and the bench would replace it); keep the
    # sessions alive for the whole run so the numbers are steady-state /process calls.
    server.env["LIVENESS_CHALLENGE_STEP_TIMEOUT_S"] = str(max(60.0, seconds * 3))
    try:
        server.start()
        key = server.create_key()
        log("key created via `python -m liveness keys create`")
        log(f"{args.sessions} sessions x {args.fps:g} fps for {seconds:.0f} s")
        cpu0, w0 = server.cpu_seconds(), time.perf_counter()
        st, elapsed = asyncio.run(run_load(server.url, key, frames, args.sessions, args.fps, seconds))
        cpu_pct = 100 * (server.cpu_seconds() - cpu0) / (time.perf_counter() - w0)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    text = render(st, elapsed, args.sessions, args.fps, size, len(frames), cpu_pct, args.quick)
    print(text)
    if not args.no_write:
        replace_section(args.output, "challenges", text)
        log(f"wrote section 'challenges' of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
