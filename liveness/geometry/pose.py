"""Head pose: one ``Pose`` type, two estimators (from the 468-point face mesh, from five keypoints).

Conventions, the same for both estimators (angles in degrees; "left"/"right" are the SUBJECT's,
image x grows to the right and y downwards):

* ``yaw``   > 0 when the subject turns to THEIR left: the nose moves towards the image right;
* ``pitch`` > 0 when the subject looks up;
* ``roll``  > 0 when the head tilts to the subject's left shoulder (image right): the angle, in
  the image, of the line from the image-left eye to the image-right eye.

``mesh_pose`` (active challenges, ``liveness.landmarks.signals``) measures angles out of the
image plane from the mesh's x, y and z; ``keypoint_pose`` (quality for recognition,
``liveness.recognition.quality``) estimates them from a detector's five keypoints with a generic
face model.  Both are approximate and meant for gating, not for measurement; their numbers for
one face differ (different points, different models), only the directions agree.

From the face mesh (``points``: (468, 3) in image pixels, z = relative depth, smaller = nearer,
in the scale of x):

  yaw   = angle of the cheek-to-cheek line (mesh 234 -> 454) out of the image plane (x, z);
  pitch = angle of the forehead-chin line (mesh 10 -> 152) out of the image plane;
  roll  = angle of the outer eye corners' line (33 -> 263) in the image.

  Measured on ../shared/media/dev: yaw of the frontal dev photos -0.6..+0.1 (T1 +23, slightly
  turned); jomariya_real_1 turns +26 (frames 160-170, nose to image right) and -13 (frames
  520-570, nose to image left), between turns -7..+5.  Pitch of the frontal dev photos -17..+9,
  jomariya_real_1 level frames -10..+2, looking down at the phone -20..-32.  Roll of the dev
  photos -1.7..-0.1, T1 10.

From five keypoints (YuNet's order: image-left eye, image-right eye, nose tip, image-left mouth
corner, image-right mouth corner):

  roll  = the angle of the line from the image-left to the image-right eye;
  then, in the roll-corrected frame, with e = half the eye distance,
  yaw   = atan((nose_x - eye_mid_x) / e / 0.7)   (a nose tip ~0.7 e in front of the eyes);
  pitch = atan((0.58 - (nose_y - eye_y) / (mouth_y - eye_y)) / 0.405)
          (0.58 = YuNet's median ratio on the frontal dev faces; 0.405 = d ratio / d tan(pitch)
          of a generic 3D face model at pitch 0).

  Coarse (+-10 deg, and a broad smile lowers the pitch estimate): the dev photos give
  |yaw| <= 32 and |pitch| <= 12.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class Pose(NamedTuple):
    """Degrees; signs as in the module docstring.  A tuple, so ``yaw, pitch, roll = pose`` works."""

    yaw: float
    pitch: float
    roll: float


# -- from the face mesh ------------------------------------------------------------------------

# MediaPipe face-mesh indices (subject's right / left).
MESH_CHEEK_RIGHT, MESH_CHEEK_LEFT = 234, 454  # face outline at the ears
MESH_FOREHEAD, MESH_CHIN = 10, 152
MESH_RIGHT_EYE_OUTER, MESH_LEFT_EYE_OUTER = 33, 263


def mesh_yaw(points: np.ndarray) -> float:
    d = points[MESH_CHEEK_LEFT] - points[MESH_CHEEK_RIGHT]
    return math.degrees(math.atan2(float(d[2]), float(d[0])))


def mesh_pitch(points: np.ndarray) -> float:
    d = points[MESH_CHIN] - points[MESH_FOREHEAD]
    return math.degrees(math.atan2(float(points[MESH_FOREHEAD, 2] - points[MESH_CHIN, 2]), float(math.hypot(d[0], d[1]))))


def mesh_roll(points: np.ndarray) -> float:
    d = points[MESH_LEFT_EYE_OUTER, :2] - points[MESH_RIGHT_EYE_OUTER, :2]
    return math.degrees(math.atan2(float(d[1]), float(d[0])))


def mesh_pose(points: np.ndarray) -> Pose:
    """Pose of a face mesh (468, 3) in image pixels."""
    return Pose(mesh_yaw(points), mesh_pitch(points), mesh_roll(points))


# -- from five keypoints -----------------------------------------------------------------------

NOSE_DEPTH = 0.7  # nose tip in front of the eyes, in half eye distances
FRONTAL_PITCH_RATIO = 0.58  # (nose_y - eye_y) / (mouth_y - eye_y) of a frontal face (YuNet, dev faces)
PITCH_SLOPE = 0.405  # d ratio / d tan(pitch) of a generic 3D face at pitch 0


def roll_frame(keypoints: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(roll in degrees, eye distance, the (5, 2) keypoints rotated so the eye line is horizontal)."""
    kp = np.asarray(keypoints, np.float64).reshape(-1, 2)
    dx, dy = kp[1] - kp[0]
    eye_dist = math.hypot(dx, dy)
    roll = math.degrees(math.atan2(dy, dx))
    if eye_dist < 1e-6:
        return roll, 0.0, kp.copy()
    c, s = dx / eye_dist, dy / eye_dist
    return roll, eye_dist, kp @ np.array([[c, -s], [s, c]])


def keypoint_pose(keypoints: np.ndarray) -> Pose:
    """Pose from five keypoints (YuNet's order) in image pixels; approximate (module docstring)."""
    kp = np.asarray(keypoints, np.float64).reshape(5, 2)
    roll, eye_dist, r = roll_frame(kp)
    if eye_dist < 1e-6:
        return Pose(0.0, 0.0, roll)
    eye_mid, nose, mouth_mid = (r[0] + r[1]) / 2, r[2], (r[3] + r[4]) / 2
    yaw = math.degrees(math.atan((nose[0] - eye_mid[0]) / (eye_dist / 2) / NOSE_DEPTH))
    span = mouth_mid[1] - eye_mid[1]
    if abs(span) < 1e-6:
        return Pose(yaw, 0.0, roll)
    ratio = (nose[1] - eye_mid[1]) / span
    return Pose(yaw, math.degrees(math.atan((FRONTAL_PITCH_RATIO - ratio) / PITCH_SLOPE)), roll)
