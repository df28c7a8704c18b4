"""Face recognition for verification: 5-point alignment, MobileFaceNet embeddings, cosine
matching and quality-for-recognition (docs/VERIFICATION.md).  Head pose from the five keypoints:
``liveness.geometry.pose.keypoint_pose``."""

from liveness.recognition.align import ALIGNED_SIZE, ARCFACE_TEMPLATE, align_face, similarity_transform
from liveness.recognition.mobilefacenet import MobileFaceNet, cosine
from liveness.recognition.quality import REASONS, RecognitionQuality, assess
from liveness.recognition.verify import (
    DEFAULT_THRESHOLD,
    FaceTemplate,
    FaceVerifier,
    VerifyResult,
    iou,
    match_confidence,
)

__all__ = [
    "ALIGNED_SIZE",
    "ARCFACE_TEMPLATE",
    "DEFAULT_THRESHOLD",
    "FaceTemplate",
    "FaceVerifier",
    "MobileFaceNet",
    "REASONS",
    "RecognitionQuality",
    "VerifyResult",
    "align_face",
    "assess",
    "cosine",
    "iou",
    "match_confidence",
    "similarity_transform",
]
