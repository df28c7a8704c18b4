"""Which face of an image is *the* face: the biggest; a rival (another face of at least
``min_area_ratio`` x its area, i.e. a side of at least ~half the biggest's at 0.25) means a
second person at the camera.  One rule for the liveness pipeline and for verification references
(both read the ``multi_face_min_area_ratio`` setting)."""

from __future__ import annotations

from typing import Literal, Sequence

from liveness.detection.base import Face
from liveness.errors import MULTIPLE_FACES, NO_FACE, LivenessError

Policy = Literal["reject", "biggest"]


def rivals_of(faces: Sequence[Face], biggest: Face, min_area_ratio: float) -> list[Face]:
    """The other faces of at least ``min_area_ratio`` x the biggest one's area."""
    return [f for f in faces if f is not biggest and f.area >= min_area_ratio * biggest.area]


def choose_face(
    faces: Sequence[Face],
    policy: str,
    min_area_ratio: float,
    *,
    one_person: str = "exactly one person must be in the image",
) -> Face:
    """The biggest face.  Raises ``LivenessError``: NO_FACE without a face; MULTIPLE_FACES when
    ``policy`` is ``reject`` and it has rivals (the message ends with ``one_person``, its details
    say ``faces``)."""
    if not faces:
        raise LivenessError(NO_FACE, "No face was found in the image.")
    biggest = max(faces, key=lambda f: f.area)
    rivals = rivals_of(faces, biggest, min_area_ratio)
    if rivals and policy == "reject":
        raise LivenessError(
            MULTIPLE_FACES,
            f"{len(rivals) + 1} faces were found; {one_person}.",
            {"faces": len(rivals) + 1},
        )
    return biggest
