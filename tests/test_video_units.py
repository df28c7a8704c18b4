"""Pure parts of the video path: the early-stopping judge, frame selection, container sniffing
and probing (phone 3GP/3G2 clips made from the dev video), rotation on decode, quality, the HTTP
adapter (parsing and the answer's schema).  No models."""

from __future__ import annotations

import base64
import threading
from fractions import Fraction

import numpy as np
import pytest

from edge.video import body_limit, parse_video_request, video_response
from liveness import errors
from liveness.detection.base import Face
from liveness.errors import LivenessError
from liveness.inference.repository import ModelVersion
from liveness.settings import Settings
from liveness.video import BestFace, FrameResult, Judge, Verdict, VideoIndex, VideoInfo, VideoIssue, VideoResult
from liveness.video.frames import decode_selected, select_frames
from liveness.video.probe import VideoLimits, probe, sniff_video
from liveness.video.quality import face_quality, pose_score
from tests.video_helpers import encode, fit, read_frames, stored_frames


def judge(**kw) -> Judge:
    return Judge(threshold=0.5, **kw)


def test_judge_stops_at_seven_live():
    j = judge()
    verdicts = [j.add(0.9) for _ in range(7)]
    assert verdicts[:6] == [None] * 6 and verdicts[6] is Verdict.LIVE and j.stopped_early
    with pytest.raises(RuntimeError):
        j.add(0.9)


def test_judge_spoof_and_failures_in_time_order():
    j = judge()
    for s in [0.9, 0.1, None, 0.1, 0.2, 0.3, 0.9, 0.1, 0.4, 0.2]:
        j.add(s)
    assert j.verdict is Verdict.SPOOF and (j.live, j.spoof, j.failures) == (2, 7, 1)
    j = judge()
    for s in [None, 0.9, None, None, None, None]:
        j.add(s)
    assert j.verdict is Verdict.FAILURE_TO_ACQUIRE and j.judged == 6


def test_judge_end_of_frames():
    j = judge()
    for s in [0.9, 0.9, 0.1]:
        j.add(s)
    assert j.finish() is Verdict.FAILURE_TO_ACQUIRE  # 3 usable < min_selected 10
    j = judge(min_selected=3)
    for s in [0.9, 0.9, 0.1, 0.1]:
        j.add(s)
    assert j.finish() is Verdict.SPOOF  # tie is spoof
    j = judge(min_selected=3)
    for s in [0.9, 0.9, 0.1]:
        j.add(s)
    assert j.finish() is Verdict.LIVE and j.average == pytest.approx(1.9 / 3)


def test_select_frames_equidistant_with_ends():
    index = VideoIndex(tuple(range(0, 800 * 512, 512)), (0,), Fraction(1, 15360), 0)
    t = select_frames(index, 30)
    assert len(t) == 30 and t[0].frame_no == 0 and t[-1].frame_no == 799
    gaps = np.diff([x.frame_no for x in t])
    assert gaps.min() >= 27 and gaps.max() <= 28
    assert t[-1].ts == pytest.approx(799 / 30)
    short = VideoIndex((0, 10, 20), (0,), Fraction(1, 100), 0)
    assert [x.frame_no for x in select_frames(short, 30)] == [0, 1, 2]


def test_sniff_video():
    assert sniff_video(b"\x00\x00\x00\x20ftypisom\x00\x00") == "mp4"
    assert sniff_video(b"\x00\x00\x00\x14ftypqt  \x00\x00") == "mp4"
    assert sniff_video(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81") == "webm"
    assert sniff_video(b"GIF89a\x10\x00") == "gif"
    assert sniff_video(b"\x00\x00\x00\x1cftypavif\x00\x00") is None
    assert sniff_video(b"PK\x03\x04") is None and sniff_video(b"\xff\xd8\xff\xe0") is None


# -- phone containers: 3GP / 3G2 (ISO-BMFF, read by the forced "mov" demuxer) -------------------

PHONE_BRANDS = [b"3gp4", b"3gp5", b"3gp6", b"3gp7", b"3gr6", b"3gs6", b"3ge6", b"3gg6", b"3g2a", b"3g2b", b"3g2c",
                b"mp42", b"M4V ", b"iso5", b"avc1"]
STILL_BRANDS = [b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis",
                b"avci", b"jpeg"]


def ftyp(brand: bytes) -> bytes:
    return b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00isom" + brand


@pytest.mark.parametrize("brand", PHONE_BRANDS, ids=lambda b: b.decode().strip())
def test_sniff_accepts_every_movie_brand(brand):
    assert sniff_video(ftyp(brand)) == "mp4"


@pytest.mark.parametrize("brand", STILL_BRANDS, ids=lambda b: b.decode())
def test_sniff_refuses_still_image_brands(brand):
    assert sniff_video(ftyp(brand)) is None


@pytest.fixture(scope="module")
def upright(media) -> list[np.ndarray]:
    """40 frames (every 4th) of the real dev selfie video, 368x656 portrait: 2.7 s at 15 fps."""
    return read_frames(media / "videos" / "jomariya_real_1.mp4", every=4, limit=40)


@pytest.fixture(scope="module")
def clip_3gp(upright) -> bytes:
    return encode(upright, 15, codec="h264", fmt="3gp")


LIMITS = VideoLimits()


@pytest.mark.parametrize(
    "fmt,codec,size",
    [("3gp", "h264", None), ("3gp", "mpeg4", None), ("3g2", "h264", None), ("3g2", "mpeg4", None),
     ("3gp", "h263", (176, 144)), ("3gp", "h263", (352, 288))],
    ids=["3gp-h264", "3gp-mpeg4", "3g2-h264", "3g2-mpeg4", "3gp-h263-qcif", "3gp-h263-cif"],
)
def test_probe_accepts_3gp_and_3g2(upright, fmt, codec, size):
    frames = upright if size is None else [fit(f, *size) for f in upright]
    data = encode(frames, 15, codec=codec, fmt=fmt)
    assert data[4:8] == b"ftyp" and data[8:11] == fmt.encode()  # a real 3GPP/3GPP2 major brand
    info, index = probe(data, LIMITS)
    width, height = size or (368, 656)
    assert (info.container, info.codec, info.width, info.height) == ("mp4", codec, width, height)
    assert info.frame_count == len(index.pts) == 40
    assert info.fps == pytest.approx(15.0) and info.duration_s == pytest.approx(40 / 15, abs=1e-3)


def test_3gp_limits_are_read_from_the_container(clip_3gp):
    """Bytes, seconds, fps and size refuse a 3GP clip before any frame is decoded (probe never
    decodes), exactly as for mp4."""
    cases = [
        (VideoLimits(max_bytes=len(clip_3gp) - 1), errors.VIDEO_TOO_LARGE),
        (VideoLimits(max_seconds=2.0), errors.VIDEO_TOO_LONG),
        (VideoLimits(max_fps=10.0), errors.VIDEO_FPS_TOO_HIGH),
        (VideoLimits(max_width=640, max_height=360), errors.VIDEO_RESOLUTION_TOO_HIGH),  # 656 > 640
    ]
    for limits, kind in cases:
        with pytest.raises(LivenessError) as exc:
            probe(clip_3gp, limits)
        assert exc.value.kind is kind, (limits, exc.value)
    probe(clip_3gp, VideoLimits(max_seconds=3.0, max_fps=15.0, max_width=656, max_height=368))  # just fits


@pytest.mark.parametrize("brand", [b"heic", b"mif1", b"msf1", b"avif", b"hevc"], ids=lambda b: b.decode())
def test_probe_refuses_heif_even_with_a_playable_movie_inside(clip_3gp, brand):
    patched = clip_3gp[:8] + brand + clip_3gp[12:]  # the major brand of the ftyp box
    with pytest.raises(LivenessError) as exc:
        probe(patched, LIMITS)
    assert exc.value.kind is errors.UNSUPPORTED_VIDEO and exc.value.details["detected"] == "heif/avif image"


def test_probe_refuses_random_bytes(clip_3gp):
    rng = np.random.default_rng(3)
    with pytest.raises(LivenessError) as exc:
        probe(rng.bytes(64 * 1024), LIMITS)
    assert exc.value.kind is errors.UNSUPPORTED_VIDEO and "3GP/3G2" in str(exc.value)
    # A 3GP ftyp box followed by garbage reaches the mov demuxer only, which refuses it.
    with pytest.raises(LivenessError) as exc:
        probe(clip_3gp[:32] + rng.bytes(64 * 1024), LIMITS)
    assert exc.value.kind is errors.CORRUPT_VIDEO
    with pytest.raises(LivenessError) as exc:  # truncated phone upload
        probe(clip_3gp[: len(clip_3gp) // 3], LIMITS)
    assert exc.value.kind is errors.CORRUPT_VIDEO


def decode_all(data: bytes, k: int = 6) -> list:
    info, index = probe(data, LIMITS)
    got = []
    decode_selected(data, info, index, select_frames(index, k), lambda item: got.append(item) or True,
                    limits=LIMITS, timeout_s=20, stop=threading.Event())
    return got


@pytest.mark.parametrize("fmt,codec,rotation", [("3gp", "h264", -90), ("3gp", "mpeg4", 90), ("3g2", "h264", 180),
                                                ("mp4", "h264", -90)])
def test_rotated_clip_decodes_upright(upright, fmt, codec, rotation):
    """A display matrix (a phone's portrait clip stored landscape) is applied on decode, for 3GP
    exactly as for mp4: the frames come out as the upright source."""
    stored = stored_frames(upright, rotation)
    assert stored[0].shape != upright[0].shape or rotation == 180
    got = decode_all(encode(stored, 15, codec=codec, fmt=fmt, rotation=rotation))
    assert len(got) == 6
    for item in got:
        src = upright[item.target.frame_no]
        assert item.bgr.shape == src.shape
        assert np.abs(item.bgr.astype(int) - src).mean() < 10  # compression noise only
        assert np.abs(item.bgr.astype(int) - np.rot90(src, 2)).mean() > 30  # not upside down


def test_phone_h263_portrait_clip_decodes_upright(upright):
    """The classic phone 3GP: H.263 CIF (352x288) stored landscape, display matrix -90."""
    portrait = [fit(f, 288, 352) for f in upright]
    data = encode(stored_frames(portrait, -90), 15, codec="h263", fmt="3gp", rotation=-90)
    info, _ = probe(data, LIMITS)
    assert (info.codec, info.width, info.height) == ("h263", 352, 288)  # as stored
    for item in decode_all(data):
        assert item.bgr.shape == (352, 288, 3)
        assert np.abs(item.bgr.astype(int) - portrait[item.target.frame_no]).mean() < 10


def test_quality_prefers_sharp_frontal_well_exposed():
    rng = np.random.default_rng(0)
    sharp = rng.integers(60, 200, (200, 200, 3), dtype=np.uint8)
    blurry = np.full((200, 200, 3), 128, np.uint8)
    dark = (sharp // 8).astype(np.uint8)
    face = Face(50, 40, 100, 120, 0.99)
    q_sharp, parts = face_quality(sharp, face, 64)
    assert 0 <= q_sharp <= 1 and set(parts) == {"sharpness", "size", "pose", "exposure"}
    assert q_sharp > face_quality(blurry, face, 64)[0]
    assert q_sharp > face_quality(dark, face, 64)[0]
    assert q_sharp > face_quality(sharp, Face(90, 90, 20, 24, 0.99), 64)[0]  # tiny face
    kp_front = np.array([[80, 80], [120, 80], [100, 100], [85, 120], [115, 120]], float)
    kp_turned = np.array([[80, 80], [120, 80], [118, 100], [85, 120], [115, 120]], float)
    assert pose_score(Face(50, 40, 100, 120, 0.9, kp_front)) > 0.9 > pose_score(Face(50, 40, 100, 120, 0.9, kp_turned))


# -- adapter -----------------------------------------------------------------------------------


def test_parse_raw_body_and_flags():
    req = parse_video_request(b"\x00\x00\x00\x20ftypisom", "video/mp4", {"x-api-key": "k1"},
                              {"return_photo": "true", "return_normalized": "0"})
    assert req.api_key == "k1" and req.video() == b"\x00\x00\x00\x20ftypisom"
    assert req.content_type == "video/mp4" and req.return_photo and not req.return_normalized
    with pytest.raises(LivenessError) as e:
        parse_video_request(b"x", "video/mp4", {}, {"return_photo": "maybe"})
    assert e.value.kind is errors.INVALID_REQUEST
    # An empty raw body parses; the payload gate then answers empty_video (liveness.payload).
    assert parse_video_request(b"", "video/mp4", {}, {}).video() == b""
    with pytest.raises(LivenessError) as e:
        parse_video_request(b'{"video": "AAAA"}', "application/json", {}, {})
    assert e.value.kind is errors.INVALID_REQUEST


def test_parse_multipart():
    boundary = "xyz"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n"
        "Content-Type: video/mp4\r\n\r\nVIDEOBYTES\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"return_normalized\"\r\n\r\ntrue\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    req = parse_video_request(body, f"multipart/form-data; boundary={boundary}", {"authorization": "Bearer k2"}, {})
    assert req.video() == b"VIDEOBYTES" and req.return_normalized and not req.return_photo and req.api_key == "k2"
    empty = f"--{boundary}\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--{boundary}--\r\n".encode()
    req = parse_video_request(empty, f"multipart/form-data; boundary={boundary}", {}, {})
    with pytest.raises(LivenessError) as e:
        req.video()
    assert e.value.kind is errors.MISSING_VIDEO
    assert body_limit(Settings()) > Settings().video_max_bytes


def test_response_schema():
    frames = (
        FrameResult(0, 0.0, True, 0.91, 0.8, None, True, 1, (10, 20, 110, 140)),
        FrameResult(27, 0.9, False, None, None, "no_face"),
    )
    result = VideoResult(
        alive=True, verdict=Verdict.LIVE, average_liveness=0.91, threshold=0.5,
        best_face=BestFace(0, 0.0, 0.91, 0.8, (10, 20, 110, 140), b"jpegbytes", None),
        frames=frames, errors=(VideoIssue("FailureToAcquire", "m", {"a": 1}),),
        models=(ModelVersion("retinaface", 1, "ab" * 32),),
        video=VideoInfo("mp4", "h264", 368, 656, 26.7, 30.0, 800, 123),
        frames_selected=30, frames_analyzed=8, stopped_early=True, charged=True, timings_ms={"total": 1.0},
    )
    d = video_response(result, "rid")
    assert set(d) >= {"request_id", "alive", "average_liveness", "liveness_threshold", "best_face", "frames",
                      "errors", "models", "timings_ms"}
    assert d["best_face"]["bbox"] == {"left": 10, "top": 20, "right": 110, "bottom": 140}
    assert base64.b64decode(d["best_face"]["photo"]) == b"jpegbytes" and "normalized" not in d["best_face"]
    assert d["frames"][0]["bbox"] == {"left": 10, "top": 20, "right": 110, "bottom": 140}
    assert d["frames"][1] == {"frame_no": 27, "frame_ts": 0.9, "face_found": False, "liveness": None,
                              "quality": None, "reason": "no_face"}
    assert d["models"] == [{"name": "retinaface", "version": 1, "sha256": "ab" * 8}]
    assert d["errors"] == [{"code": "FailureToAcquire", "message": "m", "details": {"a": 1}}]
