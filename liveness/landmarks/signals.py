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
    yaw: float  # degrees; > 0 when the subject turns to THEIR left (face moves to image right)
    pitch: float  # degrees; > 0 when looking up
    roll: float  # degrees; > 0 when the head tilts to the subject's left shoulder
    mouth_open: float  # inner-lip gap / mouth width
    smile: float  # mouth width / inter-ocular distance (grows with a smile)
    brows_raised: float  # brow-to-eye distance / inter-ocular distance
    presence: float  # face-mesh presence probability 0..1
