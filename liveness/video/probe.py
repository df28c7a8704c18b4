"""Container sniffing, limits and a packet index -- everything before the first frame is decoded.

Order (each step is cheap compared with the next):

1. byte count (``EMPTY_VIDEO`` / ``VIDEO_TOO_LARGE``) -- nothing is parsed;
2. magic bytes: ISO-BMFF (mp4 / QuickTime ``ftyp``/``moov``/``mdat``...), Matroska/WebM (EBML
   header) or GIF; anything else (zip, JPEG, text...) is ``UNSUPPORTED_VIDEO``.  The FFmpeg
   demuxer is then *forced* (``format=``) so no other of FFmpeg's many demuxers ever sees
   client bytes.  ISO-BMFF is one container whatever its ``ftyp`` brand -- ``isom``/``mp42``
   (MP4), ``qt  `` (QuickTime), ``3gp4``, ``3gp5``, ``3gp6``, ``3ge6``... (3GP, from Android and
   older phones), ``3g2a``/``3g2b`` (3G2), ``M4V `` ... -- and is always read by FFmpeg's ``mov``
   demuxer (we report it as container ``"mp4"``); only the still-image brands (HEIF/HEIC,
   AVIF and their image sequences, ``_STILL_BRANDS``) are refused here;
3. container header: video stream present, codec allow-listed, width/height, duration and
   frame rate as declared -> ``VIDEO_RESOLUTION_TOO_HIGH`` / ``VIDEO_TOO_LONG`` /
   ``VIDEO_FPS_TOO_HIGH`` (each error names the limit and the value);
4. a demux-only scan of the video packets (no decoding; ~9 ms for a 3 MB, 800-frame mp4) with
   a hard cap on the packet count.  It yields the real frame count, timestamps and keyframes
   and re-checks duration and fps with real numbers, so a header that lies is caught here,
   still before decoding.  Fewer packets than the header declares, or a damaged packet, is a
   truncated file -> ``CORRUPT_VIDEO``.

Frame rate: a clip is over ``max_fps`` only when it is above it by more than 0.5 fps, so
nominal 30 fps material (29.97, or a GIF of 3/3/4-centisecond delays = 30.03 fps) passes.
Resolution is orientation-free: the longer side is compared with the larger of
``max_width``/``max_height`` and the shorter side with the smaller, so a portrait 1080x1920
phone clip fits a 1920x1080 limit.

Only ``LivenessError`` leaves this module.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from fractions import Fraction

import av

from liveness.errors import (
    CORRUPT_VIDEO,
    EMPTY_VIDEO,
    MISSING_VIDEO,
    UNSUPPORTED_VIDEO,
    VIDEO_FPS_TOO_HIGH,
    VIDEO_RESOLUTION_TOO_HIGH,
    VIDEO_TOO_LARGE,
    VIDEO_TOO_LONG,
    LivenessError,
)
from liveness.payload import PayloadCodes, check_payload, describe_head, parse_refusing

ACCEPTED_MSG = "accepted formats are MP4, QuickTime (MOV), 3GP/3G2, WebM/Matroska and animated GIF"

# Our container name -> the FFmpeg demuxer we force for it ("mp4" = every ISO-BMFF movie:
# MP4, QuickTime, 3GP, 3G2...).
DEMUXERS = {"mp4": "mov", "webm": "matroska", "gif": "gif"}
# Video codecs we let FFmpeg decode (names of the codec descriptors).  h263 is what older and
# low-end Android phones put in 3GP (with mpeg4 or h264 on newer ones).
CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "h263", "mjpeg", "gif"})
# Top-level ISO-BMFF boxes a QuickTime/mp4/3GP file may start with.
_BMFF_FIRST = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
# Major brands of ISO-BMFF still images and image sequences (HEIF/HEIC, AVIF, MIAF; ISO/IEC
# 23008-12): the same container as a movie, refused as a video.
_STILL_BRANDS = (
    b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs",
    b"mif1", b"msf1", b"avci", b"avcs", b"jpeg", b"jpgs",
)
_FPS_SLACK = 0.5
_OTHER_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG", "png"),
    (b"PK\x03\x04", "zip"),
    (b"%PDF", "pdf"),
    (b"BM", "bmp"),
    (b"\x1f\x8b", "gzip"),
    (b"OggS", "ogg"),
    (b"ID3", "mp3"),
    (b"fLaC", "flac"),
)


@dataclass(frozen=True)
class VideoLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_seconds: float = 60.0
    max_fps: float = 30.0
    max_width: int = 1920
    max_height: int = 1080

    @classmethod
    def from_settings(cls, s) -> "VideoLimits":
        return cls(s.video_max_bytes, s.video_max_seconds, s.video_max_fps, s.video_max_width, s.video_max_height)

    @property
    def max_packets(self) -> int:
        """Hard cap on video packets (= frames) a file within the limits can hold."""
        return math.ceil(self.max_seconds * (self.max_fps + _FPS_SLACK)) + 16

    @property
    def max_frame_pixels(self) -> int:
        return self.max_width * self.max_height

    def fits(self, width: int, height: int) -> bool:
        long_side, short_side = max(self.max_width, self.max_height), min(self.max_width, self.max_height)
        return max(width, height) <= long_side and min(width, height) <= short_side


@dataclass(frozen=True)
class VideoInfo:
    container: str  # "mp4" (ISO-BMFF: mp4/QuickTime/3GP/3G2) | "webm" (WebM/Matroska) | "gif"
    codec: str
    width: int
    height: int
    duration_s: float
    fps: float
    frame_count: int
    nbytes: int

    def as_dict(self) -> dict:
        return {
            "container": self.container,
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "duration_s": round(self.duration_s, 3),
            "fps": round(self.fps, 3),
            "frame_count": self.frame_count,
        }


@dataclass(frozen=True)
class VideoIndex:
    """Presentation timestamps of every frame (sorted) and of the keyframes, in stream units."""

    pts: tuple[int, ...]
    keyframes: tuple[int, ...]
    time_base: Fraction
    start: int

    def seconds(self, pts: int) -> float:
        return float((pts - self.start) * self.time_base)


_VIDEO_CODES = PayloadCodes("video", MISSING_VIDEO, EMPTY_VIDEO, VIDEO_TOO_LARGE)


def _err(kind, message: str, **details) -> LivenessError:
    return LivenessError(kind, message, details)


def sniff_video(data: bytes) -> str | None:
    """``"mp4"`` (any ISO-BMFF movie brand), ``"webm"`` or ``"gif"`` from the magic bytes alone,
    else ``None``."""
    head = bytes(data[:16])
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[4:8] in _BMFF_FIRST:
        if head[4:8] == b"ftyp" and head[8:12] in _STILL_BRANDS:
            return None  # AVIF / HEIF still images share the container
        return "mp4"
    return None


def _riff_or_still(head: bytes) -> str | None:
    if head[:4] == b"RIFF":
        return {b"WEBP": "webp", b"AVI ": "avi", b"WAVE": "wav"}.get(head[8:12], "riff")
    if head[4:8] == b"ftyp" and head[8:12] in _STILL_BRANDS:
        return "heif/avif image"
    return None


def _describe(head: bytes) -> str | None:
    return describe_head(head, _OTHER_MAGIC, _riff_or_still)


def check_size(data: bytes, limits: VideoLimits) -> str:
    """Byte limits and magic bytes -> our container name.  Parses nothing."""
    check_payload(data, limits.max_bytes, _VIDEO_CODES)
    fmt = sniff_video(data)
    if fmt is None:
        detected = _describe(bytes(data[:16]))
        what = f" ({detected})" if detected else ""
        raise _err(
            UNSUPPORTED_VIDEO,
            f"unsupported video format{what}; {ACCEPTED_MSG}",
            **({"detected": detected} if detected else {}),
        )
    return fmt


def open_container(data: bytes, fmt: str):
    """Open from memory with the demuxer forced; external references (mov drefs) stay off."""
    try:
        return av.open(io.BytesIO(data), mode="r", format=DEMUXERS[fmt])
    except Exception as exc:
        raise _err(CORRUPT_VIDEO, f"the {fmt} container cannot be read", reason=type(exc).__name__) from None


def _check_resolution(width: int, height: int, limits: VideoLimits) -> None:
    if not limits.fits(width, height):
        raise _err(
            VIDEO_RESOLUTION_TOO_HIGH,
            f"video resolution is {width}x{height}; the limit is {limits.max_width}x{limits.max_height} "
            "(either orientation)",
            width=width,
            height=height,
            max_width=limits.max_width,
            max_height=limits.max_height,
        )


def _check_duration(seconds: float, limits: VideoLimits) -> None:
    if seconds > limits.max_seconds:
        raise _err(
            VIDEO_TOO_LONG,
            f"video is {seconds:.1f} s long; the limit is {limits.max_seconds:g} s",
            duration_s=round(seconds, 3),
            max_seconds=limits.max_seconds,
        )


def _check_fps(fps: float, limits: VideoLimits) -> None:
    if fps > limits.max_fps + _FPS_SLACK:
        raise _err(
            VIDEO_FPS_TOO_HIGH,
            f"video frame rate is {fps:.2f} fps; the limit is {limits.max_fps:g} fps",
            fps=round(fps, 3),
            max_fps=limits.max_fps,
        )


def probe(data: bytes, limits: VideoLimits) -> tuple[VideoInfo, VideoIndex]:
    """All limits, checked before any frame is decoded.  Only ``LivenessError`` is raised."""
    return parse_refusing(
        lambda: _probe(data, limits),
        (VIDEO_TOO_LARGE, "video is too large to index"),
        (CORRUPT_VIDEO, "video could not be read"),
    )


def _probe(data: bytes, limits: VideoLimits) -> tuple[VideoInfo, VideoIndex]:
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    fmt = check_size(data, limits)
    container = open_container(data, fmt)
    try:
        if not container.streams.video:
            raise _err(UNSUPPORTED_VIDEO, "the file has no video stream", container=fmt)
        stream = container.streams.video[0]
        ctx = stream.codec_context
        codec = ctx.codec.name if ctx.codec is not None else ""
        if codec not in CODECS:
            raise _err(
                UNSUPPORTED_VIDEO,
                f"unsupported video codec {codec or 'unknown'!r}; accepted: {', '.join(sorted(CODECS))}",
                codec=codec,
            )
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width <= 0 or height <= 0:
            raise _err(CORRUPT_VIDEO, "the video stream declares no frame size")
        _check_resolution(width, height, limits)

        # Declared duration and rate (header only).
        tb = stream.time_base or Fraction(1, 1_000_000)
        declared = None
        if stream.duration:
            declared = float(stream.duration * tb)
        elif container.duration:
            declared = container.duration / 1_000_000
        if declared is not None:
            _check_duration(declared, limits)
        declared_frames = int(stream.frames or 0)
        if declared and declared_frames:
            _check_fps(declared_frames / declared, limits)
        elif stream.average_rate:
            _check_fps(float(stream.average_rate), limits)

        # Demux-only scan: real frame count, timestamps, keyframes.  No decoding.
        pts: list[int] = []
        keyframes: list[int] = []
        end = None
        cap = limits.max_packets
        for packet in container.demux(stream):
            if packet.pts is None and packet.dts is None:
                continue  # the flush packet at EOF
            if packet.is_corrupt:
                raise _err(CORRUPT_VIDEO, "the video stream contains a damaged packet (truncated file?)")
            t = packet.pts if packet.pts is not None else packet.dts
            pts.append(t)
            if packet.is_keyframe:
                keyframes.append(t)
            e = t + (packet.duration or 0)
            end = e if end is None else max(end, e)
            if len(pts) > cap:
                raise _err(
                    VIDEO_FPS_TOO_HIGH if declared is not None and declared <= limits.max_seconds else VIDEO_TOO_LONG,
                    f"video has more than {cap} frames; the limits are {limits.max_seconds:g} s "
                    f"at {limits.max_fps:g} fps",
                    max_frames=cap,
                    max_seconds=limits.max_seconds,
                    max_fps=limits.max_fps,
                )
        if not pts:
            raise _err(CORRUPT_VIDEO, "the video stream has no frames")
        if declared_frames and len(pts) < declared_frames:
            raise _err(
                CORRUPT_VIDEO,
                f"the video is truncated: {len(pts)} of {declared_frames} declared frames are present",
                frames_present=len(pts),
                frames_declared=declared_frames,
            )
        pts.sort()
        start = pts[0]
        span = float((end - start) * tb) if end is not None and end > start else 0.0
        if span <= 0.0 and len(pts) > 1:
            span = float((pts[-1] - start) * tb)
        _check_duration(span, limits)
        fps = len(pts) / span if span > 0 else 0.0
        if len(pts) > 1:
            _check_fps(fps, limits)
        if not keyframes:
            keyframes = [start]
        info = VideoInfo(fmt, codec, width, height, span, fps, len(pts), len(data))
        return info, VideoIndex(tuple(pts), tuple(sorted(keyframes)), Fraction(tb), start)
    finally:
        container.close()
