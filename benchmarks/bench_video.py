"""Time to verdict for video liveness, by clip length and resolution (NOT a test).

Clips are made in memory from the real dev mp4 (jomariya_real_1.mp4, 368x656 portrait, 30 fps)
upscaled to 360p/720p/1080p (portrait: 360x640, 720x1280, 1080x1920) and re-encoded with x264
(ultrafast, keyframe every 30 frames, like a phone) at 30 fps.  Each row is the median of
``--runs`` calls of ``check_video`` on an in-process LivenessApp (embedded backend):

* ``early``: default settings (stop after 7 live frames; one chunk of 8 frames);
* ``full``: early stopping off, all 30 selected frames analysed (the worst case: a clip that
  never reaches 7 live or 7 spoof frames early);
* ``seq``: ``full`` with hybrid seeking off (pure sequential decoding).

    .venv/bin/python benchmarks/bench_video.py [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

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


def make_clip(source: list, seconds: float, res: str) -> bytes:
    w, h = HEIGHTS[res]
    n = int(seconds * 30)
    frames = (cv2.resize(source[i % len(source)], (w, h), interpolation=cv2.INTER_LINEAR) for i in range(n))
    return encode(frames, 30, codec="libx264", options={"preset": "ultrafast", "g": "30", "bf": "0"})


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
    ap.add_argument("--quick", action="store_true", help="only the 10 s 720p clip")
    ap.add_argument("--write", action="store_true", help="write the table into docs/PERFORMANCE.md")
    args = ap.parse_args()

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
        replace_section(REPO / "docs" / "PERFORMANCE.md", "video", header + "\n" + "\n".join(lines))
        print("wrote the video section of docs/PERFORMANCE.md")


if __name__ == "__main__":
    main()
