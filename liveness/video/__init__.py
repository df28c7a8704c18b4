"""Video liveness: a short selfie clip -> one verdict.

    check_size/probe (limits, before decoding)   liveness.video.probe
    select + decode (bounded worker thread)      liveness.video.frames
    per-frame pipeline, concurrently in chunks   liveness.video.check
    quality of each face                         liveness.video.quality
    early-stopping verdict                       liveness.video.decide

The entry point is :func:`check_video`; HTTP parsing and the answer's JSON live in
``edge.video``.  No web framework is imported here.
"""

from liveness.video.check import BestFace, FrameResult, VideoIssue, VideoResult, check_video
from liveness.video.decide import FAILURE_TO_ACQUIRE, REJECTED, Judge, Verdict
from liveness.video.probe import VideoIndex, VideoInfo, VideoLimits, probe, sniff_video

__all__ = [
    "BestFace",
    "FAILURE_TO_ACQUIRE",
    "FrameResult",
    "Judge",
    "REJECTED",
    "Verdict",
    "VideoIndex",
    "VideoInfo",
    "VideoIssue",
    "VideoLimits",
    "VideoResult",
    "check_video",
    "probe",
    "sniff_video",
]
