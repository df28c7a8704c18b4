"""Feed a labelled set through the serving pipeline, in-process, and collect typed results.

Images go through ``LivenessApp.check_image`` (POST /v1/liveness) and videos through
``check_video`` (POST /v1/video-liveness) with the settings and routed model versions the
service would use: nothing here scores anything itself.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from liveness.errors import MULTIPLE_FACES, NO_FACE, LivenessError
from liveness.evaluation.dataset import Item
from liveness.evaluation.metrics import Observation, Outcome
from liveness.settings import Settings

# Failures to acquire: the input was fine but no single usable face was found.  Everything
# else a check can raise (corrupt, unsupported, too large, ...) is an error, not a PAD outcome.
FTA_CODES = frozenset({NO_FACE.code, MULTIPLE_FACES.code})
VIDEO_FTA = "failure_to_acquire"


@dataclass(frozen=True)
class ItemResult:
    item: Item
    outcome: Outcome
    score: float | None = None  # fused score; for a video the mean over its judged frames
    verdict: str | None = None  # the service's answer: live | spoof | failure_to_acquire
    code: str | None = None  # why, for FTA and errors
    message: str | None = None
    acquisition: str | None = None  # detector pass (LivenessResult.acquisition); a video: its frames' passes
    model_scores: dict[str, float] = field(default_factory=dict)
    frames_judged: int | None = None  # videos only
    models: tuple[str, ...] = ()  # "name vN" that answered
    seconds: float = 0.0

    @property
    def observation(self) -> Observation:
        return Observation(self.item.bona_fide, self.item.attack, self.outcome, self.score, self.code)


def build_app(settings: Settings):
    """The service's app with auth off (this process answers nobody but the evaluation).
    Imported lazily so that importing this module stays cheap (no ONNX Runtime)."""
    from liveness.app import LivenessApp

    class EvaluationApp(LivenessApp):
        async def _shadow(self, *args, **kwargs) -> None:
            # A labelled test set is not production traffic: recording it as shadow samples
            # would skew `liveness models shadow-report`.
            return None

    # The app warns loudly that auth is off, which is right for a server and noise here.
    quiet = _DropAuthWarning()
    logger = logging.getLogger("liveness")
    logger.addFilter(quiet)
    try:
        return EvaluationApp(settings.model_copy(update={"auth_enabled": False}))
    finally:
        logger.removeFilter(quiet)


class _DropAuthWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "AUTHENTICATION IS DISABLED" not in str(record.msg)


def _read(item: Item) -> bytes:
    return item.path.read_bytes()


def _versions(models) -> tuple[str, ...]:
    return tuple(f"{m.name} v{m.version}" for m in models)


async def evaluate_item(app, item: Item) -> ItemResult:
    t0 = time.perf_counter()
    try:
        data = await asyncio.to_thread(_read, item)
    except FileNotFoundError:
        return ItemResult(item, Outcome.ERROR, code="file_not_found", message=f"no such file: {item.path}")
    except OSError as e:
        return ItemResult(item, Outcome.ERROR, code="unreadable_file", message=f"{item.path}: {e.strerror or e}")
    try:
        if item.media == "video":
            result = await _video(app, item, data)
        else:
            result = await _image(app, item, data)
    except LivenessError as e:
        outcome = Outcome.FTA if e.code in FTA_CODES else Outcome.ERROR
        result = ItemResult(item, outcome, code=e.code, message=e.message)
    except Exception as e:  # one bad item must not end a run of thousands
        logging.getLogger("liveness.evaluation").exception("evaluation of %s failed", item.path)
        result = ItemResult(item, Outcome.ERROR, code="internal_error", message=f"{type(e).__name__}: {e}")
    return replace(result, seconds=time.perf_counter() - t0)


async def _image(app, item: Item, data: bytes) -> ItemResult:
    r = await app.check_image(None, data)
    return ItemResult(
        item, Outcome.SCORED, score=float(r.score), verdict="live" if r.is_live else "spoof",
        acquisition=r.acquisition, model_scores=dict(r.model_scores), models=_versions(r.models),
    )


async def _video(app, item: Item, data: bytes) -> ItemResult:
    from liveness.video import check_video  # PyAV only when the set has videos
    from liveness.video.decide import Verdict

    r = await check_video(app, None, data, "")
    judged = len(r.frames)
    acquisition = _video_passes(r.frames)
    if r.verdict is Verdict.FAILURE_TO_ACQUIRE:
        message = "; ".join(e.message for e in r.errors) or "no usable frames"
        return ItemResult(item, Outcome.FTA, score=r.average_liveness, verdict=r.verdict.value, code=VIDEO_FTA,
                          message=message, acquisition=acquisition, frames_judged=judged, models=_versions(r.models))
    return ItemResult(item, Outcome.SCORED, score=float(r.average_liveness), verdict=r.verdict.value,
                      acquisition=acquisition, frames_judged=judged, models=_versions(r.models))


def _video_passes(frames) -> str | None:
    """The detector passes that found the judged frames' faces, most frequent first
    ("reference", or "reference:5 <fallback>:2" when a fallback pass helped)."""
    counts: dict[str, int] = {}
    for f in frames:
        p = f.detector_pass
        if p:
            counts[p] = counts.get(p, 0) + 1
    if not counts:
        return None
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return ranked[0][0] if len(ranked) == 1 else " ".join(f"{p}:{n}" for p, n in ranked)


Progress = Callable[[int, int], None]


async def evaluate_items(app, items: Sequence[Item], jobs: int = 4, progress: Progress | None = None) -> list[ItemResult]:
    """Results in input order.  ``jobs`` items in flight at once, so the dynamic batcher sees
    concurrent requests as it does in service; a fixed pool of workers (not one task per item)
    keeps memory flat on a set of 100k files."""
    results: list[ItemResult | None] = [None] * len(items)
    next_index = 0
    done = 0

    async def worker() -> None:
        nonlocal next_index, done
        while next_index < len(items):
            i = next_index
            next_index += 1
            results[i] = await evaluate_item(app, items[i])
            done += 1
            if progress is not None:
                progress(done, len(items))

    await asyncio.gather(*(worker() for _ in range(max(1, min(jobs, len(items))))))
    return [r for r in results if r is not None]


def run(settings: Settings, items: Sequence[Item], jobs: int = 4, progress: Progress | None = None) -> list[ItemResult]:
    app = build_app(settings)
    try:
        return asyncio.run(evaluate_items(app, items, jobs, progress))
    finally:
        app.close()


class StderrProgress:
    """One self-overwriting stderr line, only on a terminal: logs and pipes stay clean."""

    def __init__(self, stream=None, min_interval_s: float = 0.2) -> None:
        self.stream = stream or sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self.last = 0.0
        self.min_interval_s = min_interval_s

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self.last < self.min_interval_s:
            return
        self.last = now
        elapsed = now - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        width = 30
        bar = "#" * int(width * done / total) + "-" * (width - int(width * done / total))
        self.stream.write(f"\r[{bar}] {done}/{total}  {rate:.1f} items/s  ETA {eta:4.0f} s ")
        if done == total:
            self.stream.write("\n")
        self.stream.flush()
