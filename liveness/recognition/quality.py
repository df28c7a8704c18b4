"""``quality_for_recognition``: is this face good enough to enrol or match?  (cf. Azure Face's
``qualityForRecognition``: high / medium / low.)  Advisory: it never changes a match score.

Each check measures one thing and sorts it into high / medium / low; the face's level is the
worst of them, and every check that is not "high" adds its machine-readable reason code:

====================== ============================================================ ===================
reason code            measured                                                     medium / low when
====================== ============================================================ ===================
``blurry``             s = r / (r + 0.25), r = var(Laplacian) / var(grey) on the     s < 0.35 / < 0.15
                       inner face of the aligned 112x112 crop (what the model sees)  (r < 0.13 / < 0.044)
``face_too_small``     inter-eye distance in image pixels                            < 40 / < 20 px
``extreme_pose``       |yaw|, |pitch|, |roll| from the 5 keypoints (geometry.pose)   yaw > 25 / > 45,
                                                                                     pitch > 25 / > 40,
                                                                                     roll > 30 / > 60 deg
``underexposed``       mean luminance of the inner face; fraction of it <= 10        < 70 / < 40;
                                                                                     > 0.15 / > 0.40
``overexposed``        mean luminance of the inner face; fraction of it >= 245       > 200 / > 225;
                                                                                     > 0.15 / > 0.40
``possible_occlusion`` detector score; keypoints outside their box or in an order    medium only:
                       no face has; inner face outside the image (cut off)           < 0.80; any; > 0.10
====================== ============================================================ ===================

Why these numbers (measured on ../shared/media/dev: the 11 verification photos, 3 selfies and 3
landmark photos, and synthetic degradations of them; docs/VERIFICATION.md has the table):

* blur: r is a ratio, so it does not change with contrast or exposure (a darkened photo keeps
  its r; the raw Laplacian variance would call it blurry).  The dev faces have r = 0.37-1.7;
  a Gaussian blur of 0.4 % of the image side takes it to 0.01-0.14, one of 1 % to <= 0.02.  The
  crop is what the embedder sees, so a small face upsampled into it is rightly blurry too
  (inter-eye 30 px: r = 0.05-0.4; 15 px: 0.02-0.15).  Like every Laplacian measure it is fooled
  by strong sensor noise (noise looks sharp).
* size: the template puts the eyes 35.2 px apart in the 112x112 crop.  From ~40 px in the image
  the crop is a downsample, all the detail the model can use is there; 20-40 px means up to
  1.8x upsampling; under 20 px (a face box of ~45 px) the crop is mostly interpolation.  (Azure
  recommends faces of >= 200x200 px and detects from 36x36.)
* pose: recognition of models trained on mostly frontal faces degrades steadily beyond ~20-25
  deg of yaw and much faster past ~45.  The 5-point estimate (geometry.pose) is coarse (+-10 deg, and a
  broad smile lowers the pitch estimate), so the bands are wide: the dev photos give |yaw| <= 32
  and |pitch| <= 12.  Alignment undoes roll, so only extreme roll (a rotated image) counts.
* exposure: the inner face of the dev photos has a mean luminance of 97-178 (BT.601) with <= 6 %
  clipped.  Under ~40 the face is mostly noise (a photo at 15 % brightness: 15-26), above ~225
  it is washed out; clipped pixels carry no information at all.
* occlusion: YuNet scores the dev faces 0.93-0.96; masks, hands and sunglasses cost it
  confidence, so a score under 0.80 is a hint, not a verdict.  Keypoints outside their own box,
  or eyes/nose/mouth in an impossible order, mean the detector was guessing.  A face more than
  10 % outside the image is cut off: part of it is hidden.

Pose: ``liveness.geometry.pose.keypoint_pose`` (the service's one pose module: how yaw, pitch and
roll are estimated from the five keypoints, and their signs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from liveness.detection.base import Face
from liveness.geometry.pose import keypoint_pose, roll_frame
from liveness.recognition.align import ALIGNED_SIZE, ARCFACE_TEMPLATE, align_face, similarity_transform

Level = Literal["high", "medium", "low"]
LEVELS: tuple[Level, ...] = ("high", "medium", "low")

BLURRY = "blurry"
FACE_TOO_SMALL = "face_too_small"
EXTREME_POSE = "extreme_pose"
UNDEREXPOSED = "underexposed"
OVEREXPOSED = "overexposed"
POSSIBLE_OCCLUSION = "possible_occlusion"
REASONS = (BLURRY, FACE_TOO_SMALL, EXTREME_POSE, UNDEREXPOSED, OVEREXPOSED, POSSIBLE_OCCLUSION)

# --- thresholds (medium, low); why: the module docstring ---------------------------------------
SHARPNESS_HALF = 0.25  # r that maps to sharpness 0.5
SHARPNESS_MEDIUM, SHARPNESS_LOW = 0.35, 0.15
EYE_DIST_MEDIUM, EYE_DIST_LOW = 40.0, 20.0  # px in the original image
YAW_MEDIUM, YAW_LOW = 25.0, 45.0  # degrees
PITCH_MEDIUM, PITCH_LOW = 25.0, 40.0
ROLL_MEDIUM, ROLL_LOW = 30.0, 60.0
DARK_MEAN_MEDIUM, DARK_MEAN_LOW = 70.0, 40.0  # mean luminance, 0..255
BRIGHT_MEAN_MEDIUM, BRIGHT_MEAN_LOW = 200.0, 225.0
CLIPPED_MEDIUM, CLIPPED_LOW = 0.15, 0.40  # fraction of the inner face at <= 10 or >= 245
DARK_PIXEL, BRIGHT_PIXEL = 10, 245
SCORE_MEDIUM = 0.80  # detector confidence
OUTSIDE_MEDIUM = 0.10  # fraction of the inner face outside the image

# The inner face in the aligned 112x112 crop: brows to chin, cheek to cheek, so hair, background
# and the black border of a face at the image edge stay out of the measurements.
_INNER = (slice(36, 108), slice(24, 88))


@dataclass(frozen=True)
class RecognitionQuality:
    level: Level
    reasons: tuple[str, ...]  # codes from REASONS, in that order; empty when level is "high"
    metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "level": self.level,
            "reasons": list(self.reasons),
            "metrics": {k: round(float(v), 4) for k, v in self.metrics.items()},
        }


def _keypoint_problems(face: Face, kp: np.ndarray) -> int:
    """Keypoints outside the (10 % enlarged) box, plus 1 if they are in an order no face has."""
    mx, my = 0.1 * face.w, 0.1 * face.h
    outside = int(
        np.count_nonzero(
            (kp[:, 0] < face.x - mx)
            | (kp[:, 0] > face.x + face.w + mx)
            | (kp[:, 1] < face.y - my)
            | (kp[:, 1] > face.y + face.h + my)
        )
    )
    _, _, r = roll_frame(kp)
    eye_y, nose_y, mouth_y = (r[0, 1] + r[1, 1]) / 2, r[2, 1], (r[3, 1] + r[4, 1]) / 2
    ordered = eye_y < nose_y < mouth_y and r[0, 0] < r[1, 0] and r[3, 0] < r[4, 0]
    return outside + (0 if ordered else 1)


def _outside_fraction(m: np.ndarray, width: int, height: int) -> float:
    """Fraction of the inner face (a 16x16 grid of it) that maps outside the image."""
    ys = np.linspace(_INNER[0].start, _INNER[0].stop - 1, 16)
    xs = np.linspace(_INNER[1].start, _INNER[1].stop - 1, 16)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    a = np.vstack([m, [0.0, 0.0, 1.0]])
    src = (np.linalg.inv(a) @ np.c_[grid, np.ones(len(grid))].T)[:2].T
    out = (src[:, 0] < 0) | (src[:, 0] > width - 1) | (src[:, 1] < 0) | (src[:, 1] > height - 1)
    return float(np.count_nonzero(out)) / len(grid)


def _band(value: float, medium: float, low: float, higher_is_better: bool) -> int:
    if higher_is_better:
        return 2 if value < low else 1 if value < medium else 0
    return 2 if value > low else 1 if value > medium else 0


def assess(
    bgr: np.ndarray, face: Face, aligned: np.ndarray | None = None, template: np.ndarray | None = None
) -> RecognitionQuality:
    """Quality for recognition of ``face`` (with YuNet's five keypoints) in the BGR image.
    ``template``: the embedder's alignment template in 112x112 pixels (default
    ``ARCFACE_TEMPLATE``); ``aligned`` (``align_face(bgr, face.keypoints, template=template)``)
    is reused when given."""
    if face.keypoints is None or len(face.keypoints) != 5:
        raise ValueError("assess() needs a face with five keypoints (YuNet)")
    kp = np.asarray(face.keypoints, np.float64).reshape(5, 2)
    tpl = ARCFACE_TEMPLATE if template is None else np.asarray(template, np.float64).reshape(5, 2)
    m = similarity_transform(kp, tpl)
    crop = aligned if aligned is not None else align_face(bgr, kp, template=tpl)
    if crop.shape[:2] != (ALIGNED_SIZE, ALIGNED_SIZE):
        raise ValueError(f"aligned face must be {ALIGNED_SIZE}x{ALIGNED_SIZE}, got {crop.shape}")
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    inner = grey[_INNER]

    lap_var = float(cv2.Laplacian(grey, cv2.CV_64F)[_INNER].var())
    contrast = float(inner.std())
    lap_ratio = lap_var / max(contrast, 1.0) ** 2
    sharp = lap_ratio / (lap_ratio + SHARPNESS_HALF)
    eye_dist = float(np.hypot(*(kp[1] - kp[0])))
    yaw, pitch, roll = keypoint_pose(kp)
    lum = float(inner.mean())
    dark = float(np.count_nonzero(inner <= DARK_PIXEL)) / inner.size
    bright = float(np.count_nonzero(inner >= BRIGHT_PIXEL)) / inner.size
    kp_problems = _keypoint_problems(face, kp)
    outside = _outside_fraction(m, bgr.shape[1], bgr.shape[0])

    metrics = {
        "sharpness": sharp,
        "laplacian_ratio": lap_ratio,
        "contrast": contrast,
        "inter_eye_px": eye_dist,
        "face_short_side_px": float(min(face.w, face.h)),
        "yaw_deg": yaw,
        "pitch_deg": pitch,
        "roll_deg": roll,
        "luminance_mean": lum,
        "dark_fraction": dark,
        "bright_fraction": bright,
        "detector_score": float(face.score),
        "keypoint_problems": float(kp_problems),
        "outside_fraction": outside,
    }
    checks = {
        BLURRY: _band(sharp, SHARPNESS_MEDIUM, SHARPNESS_LOW, True),
        FACE_TOO_SMALL: _band(eye_dist, EYE_DIST_MEDIUM, EYE_DIST_LOW, True),
        EXTREME_POSE: max(
            _band(abs(yaw), YAW_MEDIUM, YAW_LOW, False),
            _band(abs(pitch), PITCH_MEDIUM, PITCH_LOW, False),
            _band(abs(roll), ROLL_MEDIUM, ROLL_LOW, False),
        ),
        UNDEREXPOSED: max(
            _band(lum, DARK_MEAN_MEDIUM, DARK_MEAN_LOW, True), _band(dark, CLIPPED_MEDIUM, CLIPPED_LOW, False)
        ),
        OVEREXPOSED: max(
            _band(lum, BRIGHT_MEAN_MEDIUM, BRIGHT_MEAN_LOW, False), _band(bright, CLIPPED_MEDIUM, CLIPPED_LOW, False)
        ),
        POSSIBLE_OCCLUSION: int(face.score < SCORE_MEDIUM or kp_problems > 0 or outside > OUTSIDE_MEDIUM),
    }
    return RecognitionQuality(LEVELS[max(checks.values())], tuple(r for r in REASONS if checks[r]), metrics)
