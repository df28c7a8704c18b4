"""Per-frame face quality in [0, 1] (used to pick ``best_face``; never part of the verdict).

    quality = sharpness^0.35 * size^0.20 * pose^0.25 * exposure^0.20      (weighted geometric mean)

so any factor at 0 gives 0 and a perfect face gives 1.  The factors:

* sharpness = v / (v + 100), v = variance of the Laplacian of the face box, converted to grey
  and resized to 112x112 (so it does not depend on the face's pixel size).  v = 100 -> 0.5;
  a crisp webcam face is ~300-1500, a motion-blurred one ~20-60.
* size = min(1, shorter side of the face box / (2 * min_face_size)): 0.5 at the
  ``face_too_small`` flag limit (64 px by default), 1 from 128 px.
* pose, from the five keypoints when the detector gives them (YuNet: right eye, left eye,
  nose, right and left mouth corner): yaw = |nose x - eye-midpoint x| / eye distance,
  roll = eye-line angle;  pose = clip(1 - yaw / 0.6) * clip(1 - |roll| / 45 deg).
  Without keypoints (RetinaFace): from the box aspect ratio r = h / w, whose frontal value is
  ~1.2 and which drops towards ~0.9 as the head turns (the box narrows) and grows as it tilts
  up/down:  pose = clip(1 - |ln(r / 1.2)| / ln(1.6)).
* exposure, from the face box luminance (BT.601 grey): mean m and the fraction c of clipped
  pixels (<= 5 or >= 250):  exposure = clip(1 - max(0, |m - 128| - 48) / 80) * clip(1 - 2c).
  1 for a mean in [80, 176] with nothing clipped; 0 at a mean of 0 or 256, or with half the
  face clipped.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from liveness.detection.base import Face

WEIGHTS = {"sharpness": 0.35, "size": 0.20, "pose": 0.25, "exposure": 0.20}
_SHARP_HALF = 100.0
_FRONTAL_RATIO = 1.2


def _clip(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def face_region(bgr: np.ndarray, face: Face) -> np.ndarray:
    h, w = bgr.shape[:2]
    x0, y0 = max(0, int(face.x)), max(0, int(face.y))
    x1, y1 = min(w, int(math.ceil(face.x + face.w))), min(h, int(math.ceil(face.y + face.h)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((0, 0), np.uint8)
    return cv2.cvtColor(bgr[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)


def sharpness(grey: np.ndarray) -> float:
    if grey.size == 0:
        return 0.0
    v = float(cv2.Laplacian(cv2.resize(grey, (112, 112), interpolation=cv2.INTER_AREA), cv2.CV_64F).var())
    return v / (v + _SHARP_HALF)


def size_score(face: Face, min_face_size: int) -> float:
    return _clip(min(face.w, face.h) / (2.0 * min_face_size))


def pose_score(face: Face) -> float:
    kp = face.keypoints
    if kp is not None and len(kp) >= 3:
        (rx, ry), (lx, ly), (nx, _) = kp[0], kp[1], kp[2]
        eye_dist = math.hypot(lx - rx, ly - ry)
        if eye_dist > 1e-3:
            yaw = abs(nx - (rx + lx) / 2) / eye_dist
            roll = abs(math.degrees(math.atan2(ly - ry, lx - rx)))
            roll = min(roll, 180 - roll)
            return _clip(1 - yaw / 0.6) * _clip(1 - roll / 45.0)
    if face.w <= 0 or face.h <= 0:
        return 0.0
    return _clip(1 - abs(math.log((face.h / face.w) / _FRONTAL_RATIO)) / math.log(1.6))


def exposure_score(grey: np.ndarray) -> float:
    if grey.size == 0:
        return 0.0
    m = float(grey.mean())
    clipped = float(np.count_nonzero((grey <= 5) | (grey >= 250))) / grey.size
    return _clip(1 - max(0.0, abs(m - 128) - 48) / 80) * _clip(1 - 2 * clipped)


def face_quality(bgr: np.ndarray, face: Face, min_face_size: int) -> tuple[float, dict[str, float]]:
    """-> (quality, the four factors)."""
    grey = face_region(bgr, face)
    parts = {
        "sharpness": sharpness(grey),
        "size": size_score(face, min_face_size),
        "pose": pose_score(face),
        "exposure": exposure_score(grey),
    }
    q = 1.0
    for k, wgt in WEIGHTS.items():
        q *= max(parts[k], 0.0) ** wgt
    return float(q), parts
