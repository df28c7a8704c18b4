"""Time to verdict for video liveness, by clip length and resolution (NOT a test).

Clips are made in memory from the real dev mp4 (jomariya_real_1.mp4, 368x656 portrait, 30 fps)
upscaled to 360p/720p/1080p (portrait: 360x640, 720x1280, 1080x1920) and re-encoded with x264
(ultrafast, keyframe every 30 frames, like a phone) at 30 fps.  Each row is the median of
``--runs`` calls of ``check_video`` on an in-process LivenessApp (embedded backend):

* ``early``: default settings (stop after 7 live frames; one chunk of 8 frames);
* ``full``: early stopping off, all 30 selected frames analysed (the worst case: a clip that
  never reaches 7 live or 7 spoof frames early);
* ``seq``: ``full`` with hybrid seeking off (pure sequential decoding).

Then (issue 15, part 4) the time to verdict through HTTP, ``served_time_to_verdict``: a 10 s 720p
(720x1280 portrait) and a 10 s 1080p (1080x1920) clip made from the *first* 10 s (300 frames) of the
same dev mp4, upscaled bicubic and encoded H.264 with libx264 (veryfast, CRF 23, keyframe every
30 frames, no B-frames, yuv420p, 30 fps, MP4), each POSTed as the raw body to ``/v1/video-liveness``
of a served Bento (``bentoml serve``, a key from the admin CLI) ``--served-runs`` times one after
the other; the client's wall time from sending the request to the parsed answer is the time to
verdict.  The goal is < 1 s for each clip.  It writes a section of its own ("video-served").

    .venv/bin/python benchmarks/bench_video.py [--runs 3] [--served-runs 5] [--quick] [--write] [--only served]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from liveness.app import LivenessApp  # noqa: E402
from liveness.settings import Settings  # noqa: E402
from liveness.video import check_video  # noqa: E402
from liveness.video import frames as video_frames  # noqa: E402
from tests.video_helpers import encode, read_frames  # noqa: E402

SOURCE = REPO.parent / "shared" / "media" / "dev" / "videos" / "jomariya_real_1.mp4"
HEIGHTS = {"360p": (360, 640), "720p": (720, 1280), "1080p": (1080, 1920)}
SERVED_CLIPS = ("720p", "1080p")
SERVED_SECONDS = 10
GOAL_S = 1.0  # issue 15: time to verdict of a 10 s 720p and a 10 s 1080p clip
X264 = {"preset": "veryfast", "crf": "23", "g": "30", "bf": "0"}


def make_clip(source: list, seconds: float, res: str) -> bytes:
    w, h = HEIGHTS[res]
    n = int(seconds * 30)
    frames = (cv2.resize(source[i % len(source)], (w, h), interpolation=cv2.INTER_LINEAR) for i in range(n))
    return encode(frames, 30, codec="libx264", options={"preset": "ultrafast", "g": "30", "bf": "0"})


def served_clip(first: list, res: str) -> bytes:
    """``first`` (the source's first frames) upscaled bicubic to ``res`` portrait, H.264 (``X264``)."""
    w, h = HEIGHTS[res]
    frames = (cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in first)
    return encode(frames, 30, codec="libx264", options=X264)


def _post(client: Any, url: str, key: str, data: bytes) -> tuple[float, dict]:
    t = time.perf_counter()
    r = client.post(f"{url}/v1/video-liveness", content=data, headers={"Content-Type": "video/mp4", "X-API-Key": key})
    doc = r.json()
    wall = time.perf_counter() - t
    if r.status_code != 200:
        raise RuntimeError(f"/v1/video-liveness answered {r.status_code}: {str(doc)[:300]}")
    return wall, doc


def served_time_to_verdict(runs: int) -> dict[str, Any]:
    """Both clips through a served Bento, ``runs`` sequential POSTs each (after one warm-up POST
    of the first clip, not counted: the first request of a fresh worker pays lazy start-up)."""
    import httpx

    from bench_report import Server  # benchmarks/ is sys.path[0] when run as a script

    first = read_frames(SOURCE, limit=SERVED_SECONDS * 30)
    clips = {}
    for res in SERVED_CLIPS:
        t = time.perf_counter()
        clips[res] = served_clip(first, res)
        print(f"served clip {SERVED_SECONDS} s {res}: {len(clips[res]) / 1e6:.1f} MB, encoded in "
              f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
    out: dict[str, Any] = {"runs": runs, "source_frames": len(first), "x264": X264, "clips": []}
    with tempfile.TemporaryDirectory(prefix="liveness-bench-video-") as tmp:
        server = Server(Path(tmp))
        try:
            server.start()
            key = server.create_key()
            with httpx.Client(timeout=120) as client:
                _post(client, server.url, key, clips[SERVED_CLIPS[0]])  # warm-up
                for res, data in clips.items():
                    walls, docs = [], []
                    for _ in range(runs):
                        wall, doc = _post(client, server.url, key, data)
                        walls.append(wall)
                        docs.append(doc)
                    last = docs[-1]
                    row = {
                        "clip": f"{SERVED_SECONDS} s {res}", "width": HEIGHTS[res][0], "height": HEIGHTS[res][1],
                        "bytes": len(data), "runs": runs,
                        "median_s": statistics.median(walls), "max_s": max(walls), "walls_s": walls,
                        "decision": last["decision"], "alive": last["alive"],
                        "decisions": sorted({d["decision"] for d in docs}),
                        "frames_selected": last["frames_selected"], "frames_analyzed": last["frames_analyzed"],
                        "frames_judged": len(last["frames"]), "stopped_early": last["stopped_early"],
                        "video": last["video"],
                        # the service's own clocks, median over the runs
                        "timings_ms": {k: statistics.median(d["timings_ms"].get(k, 0.0) for d in docs)
                                       for k in last["timings_ms"]},
                    }
                    row["goal_met"] = row["max_s"] < GOAL_S
                    out["clips"].append(row)
                    print(f"served {row['clip']}: median {row['median_s'] * 1000:.0f} ms, max "
                          f"{row['max_s'] * 1000:.0f} ms, {row['decision']}, selected/analysed/judged "
                          f"{row['frames_selected']}/{row['frames_analyzed']}/{row['frames_judged']}, "
                          f"service {row['timings_ms']}", file=sys.stderr)
        finally:
            server.stop()
    return out


def served_section(m: dict[str, Any], quick: bool) -> str:
    """The "video-served" section of docs/PERFORMANCE.md."""
    x = m["x264"]
    lines = [
        "## Video: time to verdict through HTTP (issue 15)", "",
        f"`benchmarks/bench_video.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). Clips made from the "
        f"first {SERVED_SECONDS} s ({m['source_frames']} frames) of the real dev video `jomariya_real_1.mp4` (368x656, "
        f"30 fps), **upscaled bicubic** to 720x1280 and 1080x1920 portrait and encoded H.264 with libx264 (PyAV; "
        f"preset {x['preset']}, CRF {x['crf']}, keyframe every {x['g']} frames, no B-frames, yuv420p, 30 fps, MP4). "
        f"Each clip POSTed as the raw body to `/v1/video-liveness` of a served Bento (embedded backend, a real key) "
        f"{m['runs']} times one after the other, after one uncounted warm-up request; *time to verdict* is the "
        "client's wall time from sending the request to the parsed answer (upload over loopback included). "
        "Frames *selected* / *analysed* / *judged* are the answer's `frames_selected`, `frames_analyzed` and the "
        "length of `frames`; the answer does not count the frames the decoder went through "
        "(`frames_decoded` of the in-process table above). *Service* times are the answer's `timings_ms`, median "
        f"over the runs. Goal: < {GOAL_S:.0f} s for each clip (judged on the slowest run).",
    ]
    if quick:
        lines += ["", "> Quick smoke run: fewer runs, and the machine may have been busy; not representative."]
    keys = [k for k in ("probe", "decode", "inference", "total") if any(k in c["timings_ms"] for c in m["clips"])]
    lines += ["", "| Clip | Stored | MB | Verdict | Selected / analysed / judged | Stopped early | Time to verdict, "
              "median ms | Max ms | Service " + " / ".join(keys) + " ms | Goal < 1 s |",
              "|---|---|---:|---|---:|---|---:|---:|---:|---|"]
    for c in m["clips"]:
        v = c["video"]
        verdict = c["decision"] + ("" if len(c["decisions"]) == 1 else f" (runs: {', '.join(c['decisions'])})")
        lines.append(
            f"| {c['clip']} | {v['width']}x{v['height']}, {v['frame_count']} frames, {v['codec']} | "
            f"{c['bytes'] / 1e6:.1f} | {verdict} | {c['frames_selected']} / {c['frames_analyzed']} / "
            f"{c['frames_judged']} | {'yes' if c['stopped_early'] else 'no'} | {c['median_s'] * 1000:.0f} | "
            f"{c['max_s'] * 1000:.0f} | " + " / ".join(f"{c['timings_ms'].get(k, 0):.0f}" for k in keys)
            + f" | {'**met**' if c['goal_met'] else '**not met**'} |")
    return "\n".join(lines)


async def measure(app: LivenessApp, data: bytes, runs: int) -> dict:
    walls, last = [], None
    for _ in range(runs):
        t = time.perf_counter()
        last = await check_video(app, None, data, "video/mp4")
        walls.append(time.perf_counter() - t)
    return {"wall_ms": statistics.median(walls) * 1000, "r": last}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--served-runs", type=int, default=None, help="POSTs per clip through HTTP (default 5, quick 2)")
    ap.add_argument("--quick", action="store_true", help="in-process: only the 10 s 720p clip; served: 2 runs")
    ap.add_argument("--write", action="store_true", help="write the tables into the report (--output)")
    ap.add_argument("--output", type=Path, default=REPO / "docs" / "PERFORMANCE.md",
                    help="the report --write updates (default docs/PERFORMANCE.md)")
    ap.add_argument("--only", choices=("inprocess", "served"), default=None, help="run one of the two parts")
    args = ap.parse_args()
    if args.only != "served":
        inprocess(args)
    if args.only != "inprocess":
        m = served_time_to_verdict(args.served_runs or (2 if args.quick else 5))
        text = served_section(m, args.quick)
        print()
        print(text)
        if args.write:
            from report_sections import replace_section

            replace_section(args.output, "video-served", text)
            print(f"wrote the video-served section of {args.output}")


def inprocess(args: argparse.Namespace) -> None:
    """The in-process table (``check_video`` on a LivenessApp), by clip length and resolution."""
    source = read_frames(SOURCE)
    cases = [(10, "720p")] if args.quick else [(5, "720p"), (10, "720p"), (20, "720p"), (10, "360p"), (10, "1080p")]
    clips = {}
    for seconds, res in cases:
        t = time.perf_counter()
        clips[(seconds, res)] = make_clip(source, seconds, res)
        print(f"encoded {seconds:>2} s {res:>5}: {len(clips[(seconds, res)]) / 1e6:.1f} MB "
              f"in {time.perf_counter() - t:.1f} s", file=sys.stderr)

    repo = REPO / "model_repository"
    early = LivenessApp(Settings(model_repository=repo, auth_enabled=False))
    full = LivenessApp(Settings(model_repository=repo, auth_enabled=False,
                                video_live_frames_to_stop=99, video_spoof_frames_to_stop=99))

    async def run_all():
        await check_video(early, None, clips[cases[0]])  # warm-up
        rows = []
        for key in cases:
            data = clips[key]
            e = await measure(early, data, args.runs)
            f = await measure(full, data, args.runs)
            video_frames.SEEK = False
            try:
                q = await measure(full, data, args.runs)
            finally:
                video_frames.SEEK = True
            rows.append((key, len(data), e, f, q))
        return rows

    rows = asyncio.run(run_all())
    early.close()
    full.close()

    lines = [
        "| clip | MB | early: verdict, judged/analysed, decoded | early ms | full: decoded, seeks | full ms "
        "(decode / infer) | seq: decoded | seq ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (seconds, res), size, e, f, q in rows:
        er, fr, qr = e["r"], f["r"], q["r"]
        lines.append(
            f"| {seconds} s {res} | {size / 1e6:.1f} | {er.verdict.value}, {len(er.frames)}/{er.frames_analyzed}, "
            f"{er.frames_decoded} | {e['wall_ms']:.0f} | {fr.frames_decoded}, {fr.seeks} | {f['wall_ms']:.0f} "
            f"({fr.timings_ms['decode']:.0f} / {fr.timings_ms['inference']:.0f}) | {qr.frames_decoded} | "
            f"{q['wall_ms']:.0f} |"
        )
    print()
    print("\n".join(lines))
    if args.write:
        from report_sections import replace_section

        header = (
            "## Video liveness: time to verdict\n\n"
            f"`benchmarks/bench_video.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}), in-process, median of "
            f"{args.runs} runs. Clips re-encoded from the real dev mp4 (x264, keyframe every 30 frames, 30 fps), "
            "portrait. *early*: default settings (BioID early stopping after 7 live frames); *full*: all 30 selected "
            "frames analysed (a clip that never decides early); *seq*: full without forward seeking.\n"
        )
        replace_section(args.output, "video", header + "\n" + "\n".join(lines))
        print(f"wrote the video section of {args.output}")


if __name__ == "__main__":
    main()
