"""liveness.geometry.pose: one Pose type, two estimators with the same sign conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from liveness.detection.base import Face
from liveness.geometry import pose as P
from liveness.landmarks.facemesh import FaceMesh
from liveness.landmarks.iris import Eye, Eyes
from liveness.landmarks.signals import signals_from
from liveness.recognition import ARCFACE_TEMPLATE, assess

# A generic head, frontal, in image axes: x to the image right, y down, z away from the camera
# (the face mesh's convention: smaller z = nearer).  Units: half the eye distance.
HEAD_5 = np.array([
    [-1.0, 0.0, 0.0],  # image-left eye (subject's right)
    [1.0, 0.0, 0.0],  # image-right eye
    [0.0, 0.58, -0.7],  # nose tip, in front of the eyes; 0.58 = the frontal ratio of keypoint_pose
    [-0.7, 1.0, -0.2],  # image-left mouth corner
    [0.7, 1.0, -0.2],
])
HEAD_MESH = {
    P.MESH_CHEEK_RIGHT: [-1.6, 0.3, 0.8],
    P.MESH_CHEEK_LEFT: [1.6, 0.3, 0.8],
    P.MESH_FOREHEAD: [0.0, -0.9, -0.2],
    P.MESH_CHIN: [0.0, 1.6, -0.2],
    P.MESH_RIGHT_EYE_OUTER: [-1.2, 0.0, 0.1],
    P.MESH_LEFT_EYE_OUTER: [1.2, 0.0, 0.1],
}


def _rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """The documented senses: yaw turns the nose to the image right, pitch looks up (the chin
    comes nearer), roll tilts the head to the subject's left shoulder (image right)."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def _posed(**angles: float) -> tuple[np.ndarray, np.ndarray]:
    """(5 keypoints (5, 2), face mesh (468, 3)) of the head at these angles, in image pixels
    (orthographic, 40 px per unit, centred at (320, 240))."""
    rot = _rotation(**angles)
    scale, centre = 40.0, np.array([320.0, 240.0, 0.0])
    kp = (HEAD_5 @ rot.T) * scale + centre
    mesh = np.zeros((468, 3))
    for i, p in HEAD_MESH.items():
        mesh[i] = (np.asarray(p) @ rot.T) * scale + centre
    return kp[:, :2], mesh


def test_pose_is_a_named_tuple():
    pose = P.Pose(1.0, 2.0, 3.0)
    yaw, pitch, roll = pose
    assert (yaw, pitch, roll) == (pose.yaw, pose.pitch, pose.roll) == (1.0, 2.0, 3.0)


def test_frontal_head_is_level_for_both_estimators():
    kp, mesh = _posed()
    for pose in (P.keypoint_pose(kp), P.mesh_pose(mesh)):
        assert pose.yaw == pytest.approx(0, abs=1e-9) and pose.roll == pytest.approx(0, abs=1e-9)
    assert P.keypoint_pose(kp).pitch == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("axis", ["yaw", "pitch", "roll"])
@pytest.mark.parametrize("angle", [-20.0, 20.0])
def test_both_estimators_share_the_sign_conventions(axis, angle):
    kp, mesh = _posed(**{axis: angle})
    for pose in (P.keypoint_pose(kp), P.mesh_pose(mesh)):
        assert math.copysign(1, getattr(pose, axis)) == math.copysign(1, angle), (axis, angle, pose)
    # roll is measured in the image plane by both: exact
    if axis == "roll":
        assert P.keypoint_pose(kp).roll == pytest.approx(angle) and P.mesh_pose(mesh).roll == pytest.approx(angle)


def test_keypoint_pose_numbers():
    """The recognition-quality numbers (tests/test_recognition.py::test_pose_and_occlusion_hints)."""
    frontal = ARCFACE_TEMPLATE.copy()
    frontal[2, 0] = (frontal[0, 0] + frontal[1, 0]) / 2  # nose between the eyes ...
    frontal[2, 1] = 51.6 + 0.58 * (92.3 - 51.6)  # ... at YuNet's frontal height
    yaw, pitch, roll = P.keypoint_pose(frontal)
    assert abs(yaw) < 1 and abs(pitch) < 1 and abs(roll) < 1
    turned = frontal.copy()
    turned[2, 0] += 0.7 * math.tan(math.radians(50)) * (turned[1, 0] - turned[0, 0]) / 2
    assert P.keypoint_pose(turned).yaw == pytest.approx(50, abs=0.5)
    roll_kp, eye_dist, r = P.roll_frame(ARCFACE_TEMPLATE)
    assert eye_dist == pytest.approx(np.hypot(*(ARCFACE_TEMPLATE[1] - ARCFACE_TEMPLATE[0])))
    assert r[0, 1] == pytest.approx(r[1, 1])  # eye line horizontal in the roll frame
    # degenerate keypoints: no yaw/pitch, never an exception
    assert P.keypoint_pose(np.zeros((5, 2))) == (0.0, 0.0, 0.0)


def test_challenge_signals_and_recognition_quality_use_the_pose_module():
    kp, mesh = _posed(yaw=15, pitch=-10, roll=5)
    eye = Eye(np.tile([[0.0, 0.0, 0.0], [10.0, 4.0, 0.0]], (36, 1))[:71], np.zeros((5, 3)))
    sig = signals_from(FaceMesh(mesh, 10.0), Eyes(left=eye, right=eye))
    assert (sig.yaw, sig.pitch, sig.roll) == tuple(P.mesh_pose(mesh))

    bgr = np.full((480, 640, 3), 128, np.uint8)
    x0, y0 = kp.min(0) - 30
    x1, y1 = kp.max(0) + 30
    q = assess(bgr, Face(x0, y0, x1 - x0, y1 - y0, 0.95, kp))
    assert (q.metrics["yaw_deg"], q.metrics["pitch_deg"], q.metrics["roll_deg"]) == tuple(P.keypoint_pose(kp))
