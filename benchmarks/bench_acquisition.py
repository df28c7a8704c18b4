"""What face acquisition costs (a benchmark, NOT a test); writes the "acquisition" section of
docs/PERFORMANCE.md.

    python benchmarks/bench_acquisition.py [--quick] [--runs N] [--before REV] [--no-write]

Method: the dev images plus the 110 real-world framings of tools/realworld_media.py (dev stills
and video frames reframed to 40-70% face width at 1500x1900, small faces in 12 MP frames,
EXIF-rotated, RGBA and 16-bit PNG), written once to a temp folder.  Each file goes through
``LivenessApp.check_image`` (decode -> acquire -> crop -> classify; in-process, embedded ONNX
Runtime, auth off) one at a time, ``--runs`` times (default 7, ``--quick`` 3) after one warm-up
pass; the median per file is kept.  The same measurement runs, in a child process each, on this
tree and on ``--before`` (default: the commit before face acquisition landed, checked out as a
git worktree, using this tree's model_repository), so the two differ only by the code.
Reported: the median over files of the per-file medians, for the files the reference pass handles
(they must not be slower) and for those only a fallback pass finds (before: the time to answer
``no_face``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
MEDIA = REPO.parent / "shared" / "media" / "dev"
SOURCES = REPO.parent / "shared" / "models"


def measure(folder: Path, runs: int, code_root: Path) -> dict:
    """Child side: per-file median ms and outcome, with the code of ``code_root``."""
    import asyncio

    sys.path.insert(0, str(code_root))  # before this file's own tree

    from liveness.app import LivenessApp
    from liveness.errors import LivenessError
    from liveness.settings import Settings

    import liveness

    print(f"code: {Path(liveness.__file__).parent}", file=sys.stderr)

    app = LivenessApp(Settings(model_repository=REPO / "model_repository", auth_enabled=False,
                               db_path=folder / "bench.sqlite3"))
    files = sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))
    data = {p.name: p.read_bytes() for p in files}

    async def once(blob: bytes) -> tuple[float, str]:
        t = time.perf_counter()
        try:
            r = await app.check_image(None, blob)
            outcome = getattr(r, "acquisition", "reference")
        except LivenessError as e:
            outcome = e.code
        return (time.perf_counter() - t) * 1000, outcome

    async def run() -> dict:
        for blob in data.values():  # warm-up
            await once(blob)
        out = {}
        for name, blob in data.items():
            times, outcome = [], ""
            for _ in range(runs):
                ms, outcome = await once(blob)
                times.append(ms)
            out[name] = {"ms": statistics.median(times), "outcome": outcome}
        return out

    try:
        return asyncio.run(run())
    finally:
        app.close()


def child(code_root: Path, folder: Path, runs: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    cmd = [sys.executable, __file__, "--measure", str(folder), "--runs", str(runs), "--code-root", str(code_root)]
    out = subprocess.run(cmd, cwd=code_root, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def before_acquisition() -> str:
    added = subprocess.run(["git", "log", "--diff-filter=A", "--format=%H", "--", "liveness/detection/acquire.py"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return f"{added[-1]}~1" if added else "HEAD"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--code-root", type=Path, default=REPO, help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--before", default=None, help="git revision to compare with")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    runs = args.runs or (3 if args.quick else 7)
    if args.measure:
        print(json.dumps(measure(args.measure, runs, args.code_root)))
        return

    from tools.realworld_media import dev_realworld_set

    before = args.before or before_acquisition()
    with tempfile.TemporaryDirectory(prefix="bench-acq-") as tmp:
        tmp_path = Path(tmp)
        folder = tmp_path / "media"
        folder.mkdir()
        for k in ("T1", "F1", "F2"):
            (folder / f"dev_{k}.jpg").write_bytes((MEDIA / "images" / f"silentface_image_{k}.jpg").read_bytes())
        for i, s in enumerate(dev_realworld_set(MEDIA, SOURCES)):
            ext = ".png" if s.condition.startswith("png") else ".jpg"
            (folder / f"rw{i:03d}_{s.name.replace('/', '_').replace('@', '_')}{ext}").write_bytes(s.data)
        worktree = tmp_path / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), before], cwd=REPO, check=True,
                       capture_output=True)
        try:
            rev = subprocess.run(["git", "rev-parse", "--short", before], cwd=REPO, capture_output=True, text=True,
                                 check=True).stdout.strip()
            print(f"measuring {before} ({rev}) ...", file=sys.stderr)
            old = child(worktree, folder, runs)
            print("measuring this tree ...", file=sys.stderr)
            new = child(REPO, folder, runs)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, check=False)

    def med(names: list[str], side: dict) -> float:
        return statistics.median(side[n]["ms"] for n in names) if names else float("nan")

    ref = [n for n in new if new[n]["outcome"] == "reference"]
    dev = [n for n in ref if n.startswith("dev_")]
    fallback = [n for n in new if new[n]["outcome"] != "reference" and not new[n]["outcome"].startswith("no_")]
    missed = [n for n in new if new[n]["outcome"].startswith("no_")]
    by_pass: dict[str, list[str]] = {}
    for n in fallback:
        by_pass.setdefault(new[n]["outcome"], []).append(n)
    rows = [
        ("dev images (480x640)", dev),
        ("real-world files the reference pass handles", [n for n in ref if not n.startswith("dev_")]),
    ]
    lines = [
        "| files | n | before (ms) | now (ms) | now / before |",
        "|---|---|---|---|---|",
    ]
    for label, names in rows:
        b, a = med(names, old), med(names, new)
        lines.append(f"| {label} | {len(names)} | {b:.1f} | {a:.1f} | {a / b:.2f} |")
    b, a = med(fallback, old), med(fallback, new)
    lines.append(f"| found only by a fallback pass (before: answered `no_face`) | {len(fallback)} | {b:.1f} | {a:.1f} "
                 f"| {a / b:.2f} |")
    for p, names in sorted(by_pass.items()):
        lines.append(f"| &nbsp;&nbsp;of which `{p}` | {len(names)} | {med(names, old):.1f} | {med(names, new):.1f} | "
                     f"{med(names, new) / med(names, old):.2f} |")
    lost_before = sum(1 for n in old if old[n]["outcome"].startswith("no_"))
    text = "\n".join(lines)
    ref_ratio = med(rows[1][1], new) / med(rows[1][1], old)
    summary = (
        f"Failure to acquire: {lost_before} of {len(old)} files before, {len(missed)} now. Files the reference "
        f"pass handles take {ref_ratio:.2f}x their time before (the fallbacks never run for them); a file only a "
        f"fallback finds now gets a verdict {med(fallback, new) - med(fallback, old):.0f} ms later than it used to "
        f"get its `no_face` (median), most of them 12 MP photos."
    )
    print(text)
    print(summary)
    if not args.no_write:
        from report_sections import replace_section

        header = (
            "## Face acquisition: what the fallback passes cost\n\n"
            f"`benchmarks/bench_acquisition.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {runs} runs per "
            f"file, median per file, then median over files). In-process `check_image`, one image at a time, so the "
            f"figures are latency on an otherwise idle worker (decode included: 12 MP JPEGs decode in ~50 ms). "
            f"*before* is `{before}` ({rev}), the same benchmark on the code before face acquisition, same models. "
            f"Files: the 3 dev images and the 110 real-world framings of `tools/realworld_media.py`.\n\n"
            f"{summary}\n"
        )
        replace_section(REPO / "docs" / "PERFORMANCE.md", "acquisition", header + "\n" + text)
        print("wrote the acquisition section of docs/PERFORMANCE.md")


if __name__ == "__main__":
    main()
