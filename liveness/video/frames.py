"""Frame selection and bounded decoding.

Selection: ``select_frames`` picks up to ``k`` frames equidistant in *frame number* over the
whole clip (first and last frame included), using the exact presentation timestamps from the
probe's packet index, so ``frame_no`` and ``frame_ts`` in the answer are the real ones.

Decoding (``decode_selected``) runs in a worker thread and hands each selected frame, as BGR
uint8, to ``emit`` as soon as it is decoded -- it never holds more than the frame it is working
on; back-pressure comes from ``emit`` (a bounded queue).  Hybrid seek: frames are decoded
sequentially, except that when the next selected frame lies after a keyframe that comes later
than the current position, the decoder *seeks* to that keyframe instead of decoding the gap.
That never decodes more than plain sequential decoding and never re-decodes a GOP (naive
seek-per-frame does, when several selected frames share one).  Measured on the 27 s,
368x656, 800-frame dev mp4 (keyframe every 60 frames), 30 frames selected, 2 shared cores:
sequential 0.58-0.78 s (800 frames decoded), seek per frame 0.80-0.83 s (~900), hybrid
0.48-0.62 s (601).  GIF is always decoded sequentially (its frames are deltas of each other).

Guards (only ``LivenessError`` leaves): a deadline of ``timeout_s`` of *decoding* time is
checked between frames (time spent waiting for the consumer does not count: that is our
load, not the file's fault) -> ``VIDEO_TIMEOUT``; at most ``max_frames`` decoded frames and
``max_frames * max_frame_pixels`` decoded pixels; every decoded frame's size is checked against
the resolution limit (a stream may change size mid-way) -> ``VIDEO_RESOLUTION_TOO_HIGH``;
decoder errors and a stream that ends before a selected frame -> ``CORRUPT_VIDEO``.
``stop`` (a ``threading.Event``) ends decoding early (verdict reached, request cancelled).
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from liveness.errors import CORRUPT_VIDEO, VIDEO_RESOLUTION_TOO_HIGH, VIDEO_TIMEOUT, LivenessError
from liveness.imaging import apply_orientation
from liveness.video.probe import VideoIndex, VideoInfo, VideoLimits, open_container


# Hybrid seeking on (the default); benchmarks/bench_video.py turns it off to compare.
SEEK = True


@dataclass(frozen=True)
class Target:
    order: int  # position among the selected frames (time order)
    frame_no: int  # presentation index in the clip, 0-based
    pts: int
    ts: float  # seconds from the first frame


@dataclass
class SelectedFrame:
    target: Target
    bgr: np.ndarray | None  # None when the frame could not be converted
    reason: str | None = None


def select_frames(index: VideoIndex, k: int) -> list[Target]:
    n = len(index.pts)
    k = max(1, min(k, n))
    if k == 1:
        picks = [0]
    else:
        picks = sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})
    return [Target(i, no, index.pts[no], index.seconds(index.pts[no])) for i, no in enumerate(picks)]


def _err(kind, message: str, **details) -> LivenessError:
    return LivenessError(kind, message, details)


def _to_bgr(frame) -> np.ndarray:
    bgr = frame.to_ndarray(format="bgr24")
    rotation = int(getattr(frame, "rotation", 0) or 0) % 360
    # PyAV reports the display matrix's counter-clockwise angle; FFmpeg's player applies the
    # opposite turn (a phone's "rotate=90" clip has -90 here and is shown turned clockwise).
    # As EXIF orientations: 6 turns clockwise, 8 counter-clockwise, 3 half a turn.
    bgr = apply_orientation(bgr, {270: 6, 90: 8, 180: 3}.get(rotation, 1))
    return np.ascontiguousarray(bgr)


@dataclass
class DecodeStats:
    decoded: int = 0
    seeks: int = 0
    busy_s: float = 0.0


def decode_selected(
    data: bytes,
    info: VideoInfo,
    index: VideoIndex,
    targets: list[Target],
    emit: Callable[[SelectedFrame], bool],
    *,
    limits: VideoLimits,
    timeout_s: float,
    stop: threading.Event,
    stats: DecodeStats | None = None,
) -> DecodeStats:
    """Decode ``targets`` in order, calling ``emit`` for each; ``emit`` returns False to stop.

    Raises only ``LivenessError``."""
    stats = stats if stats is not None else DecodeStats()
    try:
        _decode(data, info, index, targets, emit, limits, timeout_s, stop, stats)
    except LivenessError:
        raise
    except MemoryError:
        raise _err(VIDEO_RESOLUTION_TOO_HIGH, "the video frames are too large to decode") from None
    except Exception as exc:
        raise _err(CORRUPT_VIDEO, "the video data is corrupt", reason=type(exc).__name__,
                   frames_decoded=stats.decoded) from None
    return stats


def _decode(data, info, index, targets, emit, limits, timeout_s, stop, stats) -> None:
    max_frames = limits.max_packets
    max_pixels = max_frames * limits.max_frame_pixels
    pixels = 0
    seekable = SEEK and info.container != "gif" and len(index.keyframes) > 1
    container = open_container(data, info.container)
    try:
        stream = container.streams.video[0]
        gen = None
        last_pts: int | None = None
        count = -1  # presentation index of the last decoded frame when pts are missing
        t_busy = time.perf_counter()
        for target in targets:
            if stop.is_set():
                return
            if seekable:
                kf = index.keyframes[max(0, bisect.bisect_right(index.keyframes, target.pts) - 1)]
                if gen is None and kf > index.keyframes[0] or (last_pts is not None and kf > last_pts):
                    container.seek(kf, stream=stream, backward=True, any_frame=False)
                    stats.seeks += 1
                    if gen is not None:
                        gen.close()
                    gen = None
                    last_pts, count = None, -2  # count unknown after a seek
            if gen is None:
                gen = container.decode(stream)
            found = None
            for frame in gen:
                stats.decoded += 1
                if count >= -1:
                    count += 1
                w, h = frame.width, frame.height
                pixels += w * h
                if not limits.fits(w, h):
                    raise _err(
                        VIDEO_RESOLUTION_TOO_HIGH,
                        f"a video frame is {w}x{h}; the limit is {limits.max_width}x{limits.max_height}",
                        width=w, height=h, max_width=limits.max_width, max_height=limits.max_height,
                    )
                if stats.decoded > max_frames or pixels > max_pixels:
                    raise _err(CORRUPT_VIDEO, "the video decodes to more frames than it declares",
                               frames_decoded=stats.decoded)
                now = time.perf_counter()
                if stats.busy_s + (now - t_busy) > timeout_s:
                    raise _err(VIDEO_TIMEOUT, f"decoding the video took longer than {timeout_s:g} s",
                               timeout_s=timeout_s, frames_decoded=stats.decoded)
                if stop.is_set():
                    return
                pts = frame.pts
                last_pts = pts if pts is not None else last_pts
                hit = (pts >= target.pts) if pts is not None else (count >= target.frame_no)
                if hit:
                    found = frame
                    break
            if found is None:
                raise _err(CORRUPT_VIDEO, "the video ends before its declared last frame (truncated?)",
                           frame_no=target.frame_no, frames_decoded=stats.decoded)
            try:
                item = SelectedFrame(target, _to_bgr(found))
            except Exception:
                item = SelectedFrame(target, None, "unreadable_frame")
            stats.busy_s += time.perf_counter() - t_busy
            keep_going = emit(item)  # may block on back-pressure: not counted as decoding time
            t_busy = time.perf_counter()
            if not keep_going:
                return
    finally:
        container.close()
