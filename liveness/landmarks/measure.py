"""One frame's FaceSignals: face mesh on the face box, then iris on both eyes (one batch of 2),
both through the app's inference backend with the versions the caller's route chose."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Mapping

import numpy as np

from liveness.detection.base import Face
from liveness.landmarks.facemesh import FaceMesh, FaceMeshModule
from liveness.landmarks.iris import Eyes, IrisModule
from liveness.landmarks.signals import FaceSignals, signals_from

if TYPE_CHECKING:
    from liveness.operations import Operations

FACEMESH = FaceMeshModule()
IRIS = IrisModule()


async def _cpu(app: "Operations", fn, *args):
    return await asyncio.get_running_loop().run_in_executor(app.executor, fn, *args)


async def measure_landmarks(
    app: "Operations", bgr: np.ndarray, face: Face, versions: Mapping[str, int]
) -> tuple[FaceMesh, Eyes]:
    """Face mesh and both eyes in image pixels (pre/post-processing off the event loop)."""
    x, meta = await _cpu(app, FACEMESH.preprocess, bgr, face)
    mesh = FACEMESH.postprocess(await app.backend.infer(FACEMESH.model, x, versions[FACEMESH.model]), meta)
    xe, emeta = await _cpu(app, IRIS.preprocess, bgr, mesh.points)
    eyes = IRIS.postprocess(await app.backend.infer(IRIS.model, xe, versions[IRIS.model]), emeta)
    return mesh, eyes


async def measure_face(app: "Operations", bgr: np.ndarray, face: Face, versions: Mapping[str, int]) -> FaceSignals:
    """FaceSignals of ``face`` in the BGR frame, with ``versions["facemesh"]`` and ``versions["iris"]``."""
    mesh, eyes = await measure_landmarks(app, bgr, face, versions)
    return signals_from(mesh, eyes)
