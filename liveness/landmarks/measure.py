"""One frame's FaceSignals: face mesh on the face box, then iris on both eyes (one batch of 2),
both through the app's inference backend with the versions the caller's route chose.

The two models are the ``landmark_models`` setting's, told apart by their config.pbtxt
``architecture`` (``facemesh``, ``iris``; role ``landmarks``), so a renamed copy of either
folder works under its new name."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from liveness.detection.base import Face
from liveness.inference.repository import ModelConfig, ModelRoleError, resolve_architecture
from liveness.landmarks.facemesh import FaceMesh, FaceMeshModule
from liveness.landmarks.iris import Eyes, IrisModule
from liveness.landmarks.signals import FaceSignals, signals_from

if TYPE_CHECKING:
    from liveness.operations import Operations

# architecture -> module class (each has ``from_config(cfg)``)
LANDMARK_MODULES: dict[str, type[FaceMeshModule] | type[IrisModule]] = {"facemesh": FaceMeshModule, "iris": IrisModule}


@dataclass(frozen=True)
class LandmarkModels:
    facemesh: FaceMeshModule
    iris: IrisModule

    @property
    def names(self) -> list[str]:
        return [self.facemesh.model, self.iris.model]

    @classmethod
    def from_configs(cls, configs: Sequence[ModelConfig], setting: str | None = "landmark_models") -> "LandmarkModels":
        """One face mesh and one iris model among ``configs``.  Raises ``ModelRoleError``."""
        found: dict[str, list[ModelConfig]] = {}
        for cfg in configs:
            found.setdefault(resolve_architecture(cfg, "landmarks", LANDMARK_MODULES, setting), []).append(cfg)
        where = setting or "the landmark models"
        for arch in LANDMARK_MODULES:
            got = found.get(arch, [])
            if len(got) != 1:
                names = [c.name for c in configs]
                raise ModelRoleError(f"{where} {names} must name exactly one model of architecture {arch!r} "
                                     f"(found {len(got)}): challenges run a face mesh, then iris on its eyes")
        return cls(FaceMeshModule.from_config(found["facemesh"][0]), IrisModule.from_config(found["iris"][0]))


_cache: "weakref.WeakKeyDictionary[object, dict[tuple[str, ...], LandmarkModels]]" = weakref.WeakKeyDictionary()


def landmark_models(app: "Operations") -> LandmarkModels:
    """The app's landmark modules (``settings.landmark_models`` on its backend), built once."""
    names = tuple(app.settings.landmark_models)
    config_of: Callable[[str], ModelConfig] = app.backend.config
    try:
        per_app = _cache.setdefault(app, {})
    except TypeError:  # not weak-referenceable: build each time (tests' stand-ins)
        return LandmarkModels.from_configs([config_of(n) for n in names])
    models = per_app.get(names)
    if models is None:
        models = per_app[names] = LandmarkModels.from_configs([config_of(n) for n in names])
    return models


async def _cpu(app: "Operations", fn, *args):
    return await asyncio.get_running_loop().run_in_executor(app.executor, fn, *args)


async def measure_landmarks(
    app: "Operations", bgr: np.ndarray, face: Face, versions: Mapping[str, int]
) -> tuple[FaceMesh, Eyes]:
    """Face mesh and both eyes in image pixels (pre/post-processing off the event loop)."""
    lm = landmark_models(app)
    mesh_m, iris_m = lm.facemesh, lm.iris
    x, meta = await _cpu(app, mesh_m.preprocess, bgr, face)
    mesh = mesh_m.postprocess(await app.backend.infer(mesh_m.model, x, versions[mesh_m.model]), meta)
    xe, emeta = await _cpu(app, iris_m.preprocess, bgr, mesh.points)
    eyes = iris_m.postprocess(await app.backend.infer(iris_m.model, xe, versions[iris_m.model]), emeta)
    return mesh, eyes


async def measure_face(app: "Operations", bgr: np.ndarray, face: Face, versions: Mapping[str, int]) -> FaceSignals:
    """FaceSignals of ``face`` in the BGR frame, with the versions of the landmark models in ``versions``."""
    mesh, eyes = await measure_landmarks(app, bgr, face, versions)
    return signals_from(mesh, eyes)
