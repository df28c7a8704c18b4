"""Per-frame facial signals measured from landmarks: the vocabulary of active challenges.

Each field is a pure function of landmarks (documented thresholds live beside the functions that
compute them).  Conventions: angles in degrees; "left"/"right" are the SUBJECT's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FaceSignals:
    left_eye_openness: float  # iris-model eyelid contour height / width (open ~0.36-0.46, closed ~0.18-0.22)
    right_eye_openness: float
    # Head pose from the face mesh (liveness.geometry.pose.mesh_pose), degrees:
    yaw: float  # > 0 when the subject turns to THEIR left (face moves to image right)
    pitch: float  # > 0 when looking up
    roll: float  # > 0 when the head tilts to the subject's left shoulder
    mouth_open: float  # inner-lip gap / mouth width
    smile: float  # mouth width / inter-ocular distance (grows with a smile)
    brows_raised: float  # brow-to-eye distance / inter-ocular distance
    presence: float  # face-mesh presence probability 0..1


# ---------------------------------------------------------------------------------------------
# Pure per-frame measures.  ``pts`` = face-mesh points (468, 3) in image pixels (z = relative
# depth, smaller = nearer, same scale as x); ``eyelid`` = the iris model's first 16 eye-contour
# points (16, >=2) in image pixels.  Values measured on ../shared/media/dev (see each docstring).
# ---------------------------------------------------------------------------------------------

import math  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import numpy as np  # noqa: E402

# Head pose (yaw, pitch, roll): the service's one pose module; its conventions and the values
# measured on the dev media are documented there.
from liveness.geometry.pose import mesh_pose  # noqa: E402

if TYPE_CHECKING:
    from liveness.landmarks.facemesh import FaceMesh
    from liveness.landmarks.iris import Eyes

RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS = (33, 133), (362, 263)  # subject's right / left
NOSE_TIP = 1
LIP_UPPER_INNER, LIP_LOWER_INNER, MOUTH_RIGHT, MOUTH_LEFT = 13, 14, 61, 291
BROW_RIGHT, BROW_LEFT = (70, 63, 105, 66, 107), (300, 293, 334, 296, 336)

# Eye openness (iris eyelid contour height / width), measured:
#   open  : dev/landmarks open_open 0.43 / 0.40, the wink's open eye 0.46, silentface T1 0.36 / 0.37,
#           jomariya_real_1 open frames 0.30-0.42 (mostly 0.33-0.40);
#   closed: closed_closed 0.17 / 0.25, the wink's closed eye 0.17, video blink frames 0.14-0.23.
EYE_CLOSED = 0.27  # below: closed
EYE_OPEN = 0.31  # above: open (the gap between the two is hysteresis)


def eye_openness(eyelid: np.ndarray) -> float:
    """(max y - min y) / (max x - min x) of the 16 eyelid-contour points (open > 0.31, closed < 0.27)."""
    e = np.asarray(eyelid, np.float64)[:16]
    width = float(e[:, 0].max() - e[:, 0].min())
    return float(e[:, 1].max() - e[:, 1].min()) / width if width > 0 else float("nan")


def _eye_centre(pts: np.ndarray, corners: tuple[int, int]) -> np.ndarray:
    return (pts[corners[0], :2] + pts[corners[1], :2]) / 2


def interocular(pts: np.ndarray) -> float:
    """Distance between the eye centres (midpoints of the eye corners), image pixels."""
    return float(np.linalg.norm(_eye_centre(pts, RIGHT_EYE_CORNERS) - _eye_centre(pts, LEFT_EYE_CORNERS)))


def mouth_open(pts: np.ndarray) -> float:
    """Inner-lip gap (13-14) / mouth width (61-291).  Measured: closed 0.00-0.13 (video, T1 0.10),
    smile with teeth 0.16-0.24 (closed_closed, open_open), wide-open laugh 0.43 (closed_open)."""
    w = float(np.linalg.norm(pts[MOUTH_RIGHT, :2] - pts[MOUTH_LEFT, :2]))
    return float(np.linalg.norm(pts[LIP_UPPER_INNER, :2] - pts[LIP_LOWER_INNER, :2])) / w if w > 0 else float("nan")


def smile(pts: np.ndarray) -> float:
    """Mouth width (61-291) / inter-ocular distance.  Measured: neutral 0.67-0.89 (video, varies
    with yaw), T1 0.74; smiling dev photos 1.01-1.06.  Compare with the same session's baseline."""
    iod = interocular(pts)
    return float(np.linalg.norm(pts[MOUTH_RIGHT, :2] - pts[MOUTH_LEFT, :2])) / iod if iod > 0 else float("nan")


def brows_raised(pts: np.ndarray) -> float:
    """Mean brow-centre (5 brow points) to eye-centre distance / inter-ocular distance.
    Measured: video 0.31-0.39, dev photos 0.32-0.45.  Compare with the same session's baseline."""
    iod = interocular(pts)
    if iod <= 0:
        return float("nan")
    r = np.linalg.norm(pts[list(BROW_RIGHT), :2].mean(0) - _eye_centre(pts, RIGHT_EYE_CORNERS))
    l = np.linalg.norm(pts[list(BROW_LEFT), :2].mean(0) - _eye_centre(pts, LEFT_EYE_CORNERS))
    return float((r + l) / 2 / iod)


def presence(logit: float) -> float:
    """Sigmoid of the face-mesh presence logit (1.00 on every dev face)."""
    return float(1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, float(logit))))))


def signals_from(mesh: "FaceMesh", eyes: "Eyes") -> FaceSignals:
    pts = mesh.points
    pose = mesh_pose(pts)
    return FaceSignals(
        left_eye_openness=eye_openness(eyes.left.eyelid),
        right_eye_openness=eye_openness(eyes.right.eyelid),
        yaw=pose.yaw,
        pitch=pose.pitch,
        roll=pose.roll,
        mouth_open=mouth_open(pts),
        smile=smile(pts),
        brows_raised=brows_raised(pts),
        presence=presence(mesh.presence_logit),
    )
