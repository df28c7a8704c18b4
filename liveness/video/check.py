"""``check_video``: key -> limits/probe -> route -> decode/select -> per-frame pipeline -> verdict.

Concurrency and early stopping: a decoder thread (``frames.decode_selected``) streams the
selected frames, in time order, into a queue bounded by ``video_chunk_frames`` slots.  The
event loop takes them in chunks of ``video_chunk_frames`` (default 8) and runs each chunk
*concurrently* through the pipeline (``asyncio.gather`` of ``prepare_bgr`` then
``classify_probs``), so the dynamic batcher stacks a chunk's crops into one batch per
classifier instead of running frame by frame.  The chunk's results are then judged in time
order (``decide.Judge``); when a rule fires mid-chunk the rest of the chunk is computed but
*not judged* (it is not in ``frames``, nor in ``average_liveness``), and decoding stops (the
decoder sees the stop flag at its next frame).  Meanwhile the decoder has already been
decoding the next chunk, so decode and inference overlap.  With 7 live/spoof frames to stop,
a chunk of 8 reaches a verdict on a clean clip after one chunk with one frame to spare;
larger chunks batch better but waste more work past the stop.

Charging (one quota unit per video, never per frame; ``liveness.admission``): the key and its
quota are checked first, before any parsing.  One unit is reserved once the file has passed the
probe (a readable container within every limit) and kept only when a verdict was reached --
alive, or spoof (``RejectedByPassiveLiveDetection``).  ``FailureToAcquire`` (no usable face
often enough) is refunded, like ``no_face`` on the image endpoint, and so is every error: bad
input (limits, unsupported, corrupt, timeout) is never charged.

Detections (``return_detection``, FindFace's; liveness.detections): when the verdict is
``alive``, the best face is embedded with the face verifier (YuNet's face over the liveness
face, MobileFaceNet) and only that embedding is stored, under the paying key, inside the same
admission block: it costs no extra unit, and a detection that cannot be stored (the key's cap)
fails the request before its unit is committed.  The key's room is checked before any decoding.

Only ``LivenessError`` escapes; anything unexpected is logged and becomes ``INTERNAL_ERROR``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from liveness.detection.base import Face
from liveness.errors import INTERNAL_ERROR, UNSUPPORTED_VIDEO, VERIFICATION_UNAVAILABLE, VIDEO_TIMEOUT, LivenessError
from liveness.inference.repository import ModelVersion
from liveness.pipeline import quality_flags
from liveness.recognition.align import ALIGNED_SIZE, align_face
from liveness.video.decide import FAILURE_TO_ACQUIRE, REJECTED, Judge, Verdict
from liveness.video.frames import DecodeStats, SelectedFrame, decode_selected, select_frames
from liveness.video.probe import VideoInfo, VideoLimits, check_size, probe
from liveness.video.quality import face_quality

if TYPE_CHECKING:
    from liveness.detections import DetectionStore
    from liveness.keys import Credential
    from liveness.operations import Operations
    from liveness.recognition import FaceTemplate

log = logging.getLogger("liveness.video")

MIN_FRAME_SIDE = 32  # smaller frames are a failure ("frame_too_small"), not sent to a detector
_QUEUE_GRACE_S = 5.0  # the consumer waits this long past the decode budget for a frame

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _decoder_pool(n: int) -> ThreadPoolExecutor:
    """The bounded worker pool: at most ``video_decode_threads`` decodes run at once."""
    with _pools_lock:
        pool = _pools.get(n)
        if pool is None:
            pool = _pools[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="video-decode")
        return pool


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameResult:
    frame_no: int
    frame_ts: float
    face_found: bool
    liveness: float | None
    quality: float | None
    reason: str | None  # why the frame is a failure (no_face, multiple_faces, ...), else None
    live: bool | None = None
    faces_found: int = 0
    bbox: tuple[int, int, int, int] | None = None  # left, top, right, bottom
    quality_flags: tuple[str, ...] = ()
    detector_pass: str | None = None  # the acquisition pass that found the face (liveness.detection.acquire)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "frame_no": self.frame_no,
            "frame_ts": round(self.frame_ts, 3),
            "face_found": self.face_found,
            "liveness": None if self.liveness is None else round(self.liveness, 6),
            "quality": None if self.quality is None else round(self.quality, 4),
            "reason": self.reason,
        }
        optional = {  # keys a frame answers only when they say something
            "bbox": None if self.bbox is None else dict(zip(("left", "top", "right", "bottom"), self.bbox)),
            "faces_found": self.faces_found or None,
            "quality_flags": list(self.quality_flags) or None,
            "detector_pass": self.detector_pass,
        }
        return d | {k: v for k, v in optional.items() if v is not None}


@dataclass(frozen=True)
class BestFace:
    frame_no: int
    frame_ts: float
    liveness: float
    quality: float
    bbox: tuple[int, int, int, int]  # left, top, right, bottom
    photo_jpeg: bytes | None = None  # the full frame, only when asked for
    normalized_png: bytes | None = None  # 112x112 face, only when asked for
    # return_detection: the stored detection's id, or why there is none (not_alive,
    # no_face_for_recognition); both None when no detection was asked for.
    detection_id: str | None = None
    detection_reason: str | None = None


@dataclass(frozen=True)
class VideoIssue:
    code: str  # RejectedByPassiveLiveDetection | FailureToAcquire
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            d["details"] = self.details
        return d


@dataclass(frozen=True)
class VideoResult:
    alive: bool
    verdict: Verdict
    average_liveness: float | None  # mean fused score over the judged frames with a face
    threshold: float
    best_face: BestFace | None
    frames: tuple[FrameResult, ...]  # judged frames, time order
    errors: tuple[VideoIssue, ...]
    models: tuple[ModelVersion, ...]
    video: VideoInfo
    frames_selected: int  # frames chosen for analysis (equidistant)
    frames_analyzed: int  # frames that went through the models (>= judged: chunks)
    stopped_early: bool
    charged: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    frames_decoded: int = 0  # by the decoder (selected frames and the ones in between)
    seeks: int = 0


# -- per frame ---------------------------------------------------------------------------------


@dataclass
class _Outcome:
    item: SelectedFrame
    score: float | None = None
    face: Face | None = None
    faces_found: int = 0
    reason: str | None = None
    quality: float | None = None
    flags: tuple[str, ...] = ()
    detector_pass: str | None = None
    detectors: tuple[str, ...] = ()  # detector models that found the face


async def _analyze_frame(ops: "Operations", item: SelectedFrame, versions) -> _Outcome:
    if item.bgr is None:
        return _Outcome(item, reason=item.reason or "unreadable_frame")
    h, w = item.bgr.shape[:2]
    if min(h, w) < MIN_FRAME_SIDE:
        return _Outcome(item, reason="frame_too_small")
    scored = await ops.score_frame(item.bgr, versions)
    prepared = scored.prepared
    if prepared is None:
        return _Outcome(item, reason=scored.reason, faces_found=scored.faces_found)
    s = ops.settings
    quality, _ = await ops.cpu(face_quality, item.bgr, prepared.face, s.min_face_size)
    flags = quality_flags(prepared.face, w, h, prepared.faces_found, s.min_face_size)
    return _Outcome(item, scored.score, prepared.face, prepared.faces_found, None, quality, flags,
                    prepared.acquisition, tuple(m.name for m in prepared.models))


def _ltrb(face: Face, width: int, height: int) -> tuple[int, int, int, int]:
    return (
        max(0, int(round(face.x))),
        max(0, int(round(face.y))),
        min(width, int(round(face.x + face.w))),
        min(height, int(round(face.y + face.h))),
    )


def _frame_result(o: _Outcome, judge: Judge) -> FrameResult:
    t = o.item.target
    if o.score is None:
        return FrameResult(t.frame_no, t.ts, o.reason != "no_face" and o.faces_found > 0, None, None, o.reason,
                           faces_found=o.faces_found)
    h, w = o.item.bgr.shape[:2]
    return FrameResult(t.frame_no, t.ts, True, o.score, o.quality, None, judge.is_live(o.score),
                       o.faces_found, _ltrb(o.face, w, h), o.flags, o.detector_pass)


def normalized_face(bgr: np.ndarray, face: Face, template: np.ndarray | None = None) -> np.ndarray:
    """112x112: aligned on the five keypoints when the detector gives them (the verifier's
    alignment, ``liveness.recognition.align``, onto ``template`` in 112x112 pixels: the
    embedder's, default the ArcFace template), else a square crop of the box enlarged by 20 %."""
    if face.keypoints is not None and len(face.keypoints) == 5:
        try:
            return align_face(bgr, face.keypoints, ALIGNED_SIZE, template)
        except ValueError:  # degenerate keypoints: the box crop below
            pass
    from liveness.antispoof.crop import crop_face

    return crop_face(bgr, face.bbox, 1.2, 112)


def _normalized_template(ops: "Operations") -> np.ndarray | None:
    """The embedder's alignment template in 112x112 pixels (None: verification is off, the default)."""
    verifier = getattr(ops, "verifier", None)
    if verifier is None:
        return None
    emb = verifier.embedder
    return emb.template * (ALIGNED_SIZE / emb.size)


def _best_face(o: _Outcome, return_photo: bool, return_normalized: bool, template: np.ndarray | None = None) -> BestFace:
    bgr = o.item.bgr
    h, w = bgr.shape[:2]
    photo = norm = None
    if return_photo:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        photo = buf.tobytes() if ok else None
    if return_normalized:
        ok, buf = cv2.imencode(".png", normalized_face(bgr, o.face, template))
        norm = buf.tobytes() if ok else None
    t = o.item.target
    return BestFace(t.frame_no, t.ts, float(o.score), float(o.quality), _ltrb(o.face, w, h), photo, norm)


# -- the whole video ---------------------------------------------------------------------------


async def check_video(
    ops: "Operations",
    credential: "Credential",
    data: bytes,
    content_type: str = "",
    *,
    return_photo: bool = False,
    return_normalized: bool = False,
    return_detection: bool = False,
) -> VideoResult:
    """Check one video.  ``content_type`` is advisory (echoed in an ``unsupported_video``
    error's details): the magic bytes decide the container.  Raises only ``LivenessError`` (limits, format, key, quota, ours)."""
    t0 = time.perf_counter()
    s = ops.settings
    async with ops.admission.admit(credential) as ctx:
        store = _detection_store(ops) if return_detection else None
        if store is not None:
            await asyncio.to_thread(store.check_room, ctx.key_id)  # a full key pays no decoding
        limits = VideoLimits.from_settings(s)
        try:
            check_size(data, limits)  # bytes and magic: microseconds, on the loop
        except LivenessError as e:
            if content_type and e.kind is UNSUPPORTED_VIDEO:
                e.details.setdefault("content_type", content_type.split(";")[0].strip())
            raise
        loop = asyncio.get_running_loop()
        pool = _decoder_pool(s.video_decode_threads)
        try:
            info, index = await asyncio.wait_for(
                loop.run_in_executor(pool, probe, data, limits), s.video_decode_timeout_s + _QUEUE_GRACE_S
            )
        except asyncio.TimeoutError:
            raise LivenessError(VIDEO_TIMEOUT, "reading the video container took too long") from None
        t_probe = time.perf_counter()
        versions = await ctx.versions()
        timings = {"probe": t_probe - t0}
        await ctx.input_valid()  # a readable container within every limit: one unit from here
        try:
            result, template = await _run(ops, data, info, index, versions, limits, timings, return_photo,
                                          return_normalized, return_detection)
        except LivenessError:
            raise
        except Exception as e:
            log.exception("video liveness check failed")
            raise LivenessError(INTERNAL_ERROR, "The liveness check failed on the server.") from e
        if store is not None and template is not None and result.best_face is not None:
            # Inside the block: stored before the unit is committed, refunded if it cannot be.
            d = await asyncio.to_thread(store.put, ctx.key_id, template.embedding, template.bbox, template.model,
                                        template.quality, template.reasons)
            result = replace(result, best_face=replace(result.best_face, detection_id=d.detection_id))
        if result.verdict is Verdict.FAILURE_TO_ACQUIRE:
            ctx.waive()  # no verdict: not charged
    result = replace(result, charged=ctx.charged)
    timings["total"] = time.perf_counter() - t0
    return replace(result, timings_ms={k: round(v * 1000, 2) for k, v in timings.items()})


def _detection_store(ops: "Operations") -> "DetectionStore":
    """Where detections go; VERIFICATION_UNAVAILABLE when they cannot be made here."""
    ops.require_verifier()
    store = getattr(ops, "detections", None)
    if store is None:
        raise LivenessError(VERIFICATION_UNAVAILABLE, "Detections need face verification, which is off on this server.")
    return store


@dataclass(frozen=True)
class _Embedded:
    """The best live face as the verifier sees it: what a detection keeps (never the frame)."""

    embedding: np.ndarray
    bbox: tuple[int, int, int, int]  # the verifier's face, left, top, right, bottom
    model: ModelVersion
    quality: str  # quality_for_recognition
    reasons: tuple[str, ...]


async def _embed_best(ops: "Operations", best: _Outcome, versions) -> tuple[_Embedded | None, str | None]:
    """The verifier's template of the best live face (its YuNet face overlapping the liveness
    face), or why there is none."""
    bgr = best.item.bgr
    template: "FaceTemplate | None" = await ops.require_verifier().probe(bgr, versions, best.face)
    if template is None:
        return None, "no_face_for_recognition"
    h, w = bgr.shape[:2]
    q = template.quality
    return _Embedded(template.embedding, _ltrb(template.face, w, h), template.model, q.level, tuple(q.reasons)), None


async def _run(ops: "Operations", data, info, index, versions, limits, timings, return_photo,
               return_normalized, return_detection=False) -> tuple[VideoResult, _Embedded | None]:
    s = ops.settings
    loop = asyncio.get_running_loop()
    chunk_size = s.video_chunk_frames
    targets = select_frames(index, s.video_max_decoded_frames)
    queue: asyncio.Queue = asyncio.Queue()
    slots = threading.BoundedSemaphore(chunk_size)  # frames decoded but not yet taken
    stop = threading.Event()
    stats = DecodeStats()
    end = object()

    def post(x) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, x)
        except RuntimeError:  # the loop is gone (request cancelled at shutdown)
            stop.set()

    def emit(item: SelectedFrame) -> bool:
        while not slots.acquire(timeout=0.1):
            if stop.is_set():
                return False
        if stop.is_set():
            return False
        post(item)
        return True

    def worker() -> None:
        try:
            decode_selected(data, info, index, targets, emit, limits=limits,
                            timeout_s=s.video_decode_timeout_s, stop=stop, stats=stats)
        except LivenessError as e:
            post(e)
        except BaseException as e:  # pragma: no cover - decode_selected raises LivenessError only
            post(e)
        finally:
            post(end)

    judge = Judge.from_settings(s)
    frames: list[FrameResult] = []
    best_live: _Outcome | None = None
    best_any: _Outcome | None = None
    analyzed = 0
    infer_s = 0.0
    detectors: dict[str, None] = {}  # detector models that found a face in some frame, in order
    future = loop.run_in_executor(_decoder_pool(s.video_decode_threads), worker)
    ended = False
    try:
        while not judge.done and not ended:
            chunk: list[SelectedFrame] = []
            while len(chunk) < chunk_size:
                try:
                    item = await asyncio.wait_for(queue.get(), s.video_decode_timeout_s + _QUEUE_GRACE_S)
                except asyncio.TimeoutError:
                    raise LivenessError(VIDEO_TIMEOUT, f"decoding the video took longer than "
                                        f"{s.video_decode_timeout_s:g} s", timeout_s=s.video_decode_timeout_s) from None
                if item is end:
                    ended = True
                    break
                if isinstance(item, LivenessError):
                    raise item
                if isinstance(item, BaseException):
                    raise item
                slots.release()
                chunk.append(item)
            if not chunk:
                break
            ti = time.perf_counter()
            outcomes = await asyncio.gather(*(_analyze_frame(ops, f, versions) for f in chunk))
            infer_s += time.perf_counter() - ti
            analyzed += len(chunk)
            for o in outcomes:
                judge.add(o.score)
                frames.append(_frame_result(o, judge))
                detectors.update(dict.fromkeys(o.detectors))
                if o.score is not None:
                    if best_any is None or o.quality > best_any.quality:
                        best_any = o
                    if judge.is_live(o.score) and (best_live is None or o.quality > best_live.quality):
                        best_live = o
                if judge.done:
                    break
            del chunk, outcomes
    finally:
        stop.set()
    if not future.done():
        # The decoder notices the stop flag at its next frame; don't hold the answer for it.
        future.add_done_callback(lambda f: f.exception())
    verdict = judge.finish()
    timings["decode"] = stats.busy_s
    timings["inference"] = infer_s

    errors: list[VideoIssue] = []
    counts = {"live": judge.live, "spoof": judge.spoof, "failures": judge.failures}
    if verdict is Verdict.SPOOF:
        errors.append(VideoIssue(REJECTED, f"{judge.spoof} of {judge.judged} judged frames were judged a "
                                 "presentation attack.", counts))
    elif verdict is Verdict.FAILURE_TO_ACQUIRE:
        reasons: dict[str, int] = {}
        for f in frames:
            if f.reason:
                reasons[f.reason] = reasons.get(f.reason, 0) + 1
        if judge.failures >= judge.max_failures:
            msg = f"{judge.failures} frames had no usable face (limit {judge.max_failures})."
        else:
            msg = (f"only {judge.usable} frames had a usable face; at least {judge.min_selected} are needed "
                   "when no early verdict is reached.")
        errors.append(VideoIssue(FAILURE_TO_ACQUIRE, msg, {**counts, "reasons": reasons}))

    best = best_live if verdict is Verdict.LIVE else best_any
    best_face = None
    template = None
    if best is not None:  # JPEG/PNG encoding off the event loop
        best_face = await ops.cpu(_best_face, best, return_photo, return_normalized,
                                  _normalized_template(ops) if return_normalized else None)
        if return_detection:  # only a live verdict makes a detection
            te = time.perf_counter()
            template, reason = await _embed_best(ops, best, versions) if verdict is Verdict.LIVE else (None, "not_alive")
            best_face = replace(best_face, detection_reason=reason)
            timings["detection"] = time.perf_counter() - te
    pipeline = ops.pipeline
    models = (
        *(ops.backend.version_info(m, versions[m]) for m in (detectors or [pipeline.detector.model])),
        *(ops.backend.version_info(c.model, versions[c.model]) for c in pipeline.classifiers),
    )
    return VideoResult(
        alive=verdict is Verdict.LIVE,
        verdict=verdict,
        average_liveness=judge.average,
        threshold=s.threshold,
        best_face=best_face,
        frames=tuple(frames),
        errors=tuple(errors),
        models=tuple(models),
        video=info,
        frames_selected=len(targets),
        frames_analyzed=analyzed,
        stopped_early=judge.stopped_early,
        charged=False,
        frames_decoded=stats.decoded,
        seeks=stats.seeks,
    ), template
