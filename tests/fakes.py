"""Test doubles for the domain code: a fake clock and a fake ``InferenceBackend``.

``FakeBackend`` implements liveness.inference.base.InferenceBackend without ONNX Runtime or any
model file being read: configs come from the real ``model_repository/*/config.pbtxt`` (so the
pipeline builds its detectors and anti-spoof classifiers exactly as in production), and every
output is computed deterministically from the input by a *responder* per model:

* ``retinaface_responder(faces)``: ``loc`` / ``conf`` that the real RetinaFace post-processing
  (priors, decoding, NMS, confidence cut) turns back into exactly the boxes you chose;
* ``classifier_responder(cfg, p_live)``: logits whose softmax (or sigmoid_diff) is the p(live) you
  chose, per crop;
* every other model: zeros of its configured output shapes (YuNet: no face).

``faces`` and ``p_live`` may be callables of the model input, so a test can make the outcome
depend on the frame (e.g. its brightness), as the video tests do.

    backend = FakeBackend(retinaface=retinaface_responder([Box(100, 80, 200, 240)], image_size=(640, 480)),
                          minifasnet_v2=0.9, minifasnet_v1se=0.2)
    pipeline = PassivePipeline(backend, settings, executor)
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np

from liveness.antispoof.spec import AntiSpoofSpec
from liveness.detection.retinaface import MEAN as RETINA_MEAN
from liveness.detection.retinaface_post import retinaface_priors
from liveness.errors import MODEL_UNAVAILABLE, LivenessError
from liveness.inference.repository import LocalRepository, ModelConfig, ModelVersion

MODEL_REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"

Responder = Callable[[np.ndarray], list[np.ndarray]]  # a batch (N, ...) in -> outputs, config order
PLive = Union[float, Callable[[np.ndarray], float]]  # p(live), or p(live) of one crop (3, S, S)


# ----------------------------------------------------------------------------- clock


class FakeClock:
    """A ``liveness.clock.Clock`` that moves only when told to."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = float(start)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


# ----------------------------------------------------------------------------- detector


@dataclass(frozen=True)
class Box:
    """A face the fake detector finds: pixels of the image (with ``image_size``), else fractions
    of its width and height."""

    x: float
    y: float
    w: float
    h: float
    score: float = 0.99


def detector_image(x: np.ndarray) -> np.ndarray:
    """RetinaFace's input (1, 3, H, W) back to the (resized) BGR image it was made from."""
    return x[0].transpose(1, 2, 0) + RETINA_MEAN


def _normalised(box: Box, image_size: tuple[int, int] | None) -> tuple[float, float, float, float]:
    if image_size is None:
        return box.x, box.y, box.x + box.w, box.y + box.h
    width, height = image_size
    # RetinaFace.postprocess truncates: left = int(x1 * W), w = int(x2 * W - x1 * W + 1).  A
    # quarter pixel of margin each way survives float32 decoding and gives back exactly x, w.
    return ((box.x + 0.25) / width, (box.y + 0.25) / height,
            (box.x + box.w - 0.25) / width, (box.y + box.h - 0.25) / height)


def retinaface_responder(
    faces: Sequence[Box] | Callable[[np.ndarray], Sequence[Box]] = (),
    image_size: tuple[int, int] | None = None,
) -> Responder:
    """RetinaFace outputs encoding ``faces`` (or ``faces(x)`` for each input image ``x``) on the
    priors of the input's size.  Boxes must not overlap by more than NMS's IoU 0.3."""
    variances = np.array([0.1, 0.1, 0.2, 0.2], np.float64)

    def one(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        priors = retinaface_priors(x.shape[2], x.shape[3]).astype(np.float64)
        n = priors.shape[0]
        loc = np.zeros((n, 4), np.float32)
        conf = np.zeros((n, 2), np.float32)
        conf[:, 0] = 1.0  # background everywhere ...
        chosen = faces(x) if callable(faces) else faces
        if len(chosen) > n:
            raise ValueError("more faces than priors")
        for i, box in enumerate(chosen):  # ... but at one prior per face
            x1, y1, x2, y2 = _normalised(box, image_size)
            p = priors[i]
            pw, ph = p[2] - p[0], p[3] - p[1]
            pcx, pcy = (p[0] + p[2]) / 2, (p[1] + p[3]) / 2
            loc[i] = (
                ((x1 + x2) / 2 - pcx) / (variances[0] * pw),
                ((y1 + y2) / 2 - pcy) / (variances[1] * ph),
                np.log((x2 - x1) / pw) / variances[2],
                np.log((y2 - y1) / ph) / variances[3],
            )
            conf[i] = (1.0 - box.score, box.score)
        return loc, conf

    def respond(x: np.ndarray) -> list[np.ndarray]:
        rows = [one(x[i : i + 1]) for i in range(x.shape[0])]
        return [np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])]

    return respond


# ----------------------------------------------------------------------------- classifiers


def logits_for(spec: AntiSpoofSpec, p_live: float, classes: int) -> np.ndarray:
    """Logits whose post-processing (spec.activation, spec.live_class) gives back ``p_live``."""
    p = min(max(float(p_live), 1e-9), 1.0 - 1e-9)
    z = np.zeros(classes, np.float64)
    if spec.activation == "sigmoid_diff":
        z[spec.live_class] = np.log(p / (1.0 - p))
        return z
    z[:] = np.log((1.0 - p) / (classes - 1))
    z[spec.live_class] = np.log(p)
    return z


def classifier_responder(cfg: ModelConfig, p_live: PLive = 0.9) -> Responder:
    """Logits giving ``p_live`` (or ``p_live(crop)`` for each crop) for an anti-spoof model."""
    spec = AntiSpoofSpec.from_config(cfg)
    classes = int(cfg.outputs[0].dims[0])

    def respond(x: np.ndarray) -> list[np.ndarray]:
        ps = [p_live(x[i]) if callable(p_live) else p_live for i in range(x.shape[0])]
        return [np.stack([logits_for(spec, p, classes) for p in ps]).astype(np.float32)]

    return respond


def zeros_responder(cfg: ModelConfig) -> Responder:
    """Zeros of the configured output shapes (a dynamic dim counts as 1)."""

    def respond(x: np.ndarray) -> list[np.ndarray]:
        return [np.zeros((x.shape[0], *(d if d > 0 else 1 for d in o.dims)), np.float32) for o in cfg.outputs]

    return respond


def yunet_no_face(x: np.ndarray) -> list[np.ndarray]:
    """YuNet outputs (cls, obj, bbox, kps per stride 8/16/32) with every score 0: no face."""
    n, _, h, w = x.shape
    cells = [(h // s) * (w // s) for s in (8, 16, 32)]
    return [np.zeros((n, c, k), np.float32) for k in (1, 1, 4, 10) for c in cells]


# ----------------------------------------------------------------------------- backend


class FakeBackend:
    """``InferenceBackend`` on the real repository's configs, with outputs from responders.

    ``responders``: model name -> a ``Responder``; for an anti-spoof model, its p(live) instead
    (a float or a callable of one crop).  Defaults: RetinaFace finds nothing, YuNet finds
    nothing, anti-spoof models say p(live) = 0.9, everything else answers zeros.  Every version
    on disk is loaded at construction (``preload=False``: only what ``load``/``load_sync`` load).
    ``calls`` records (model, version, input shape) of every ``infer``."""

    name = "fake"

    def __init__(self, repository: Path = MODEL_REPOSITORY, *, preload: bool = True,
                 **responders: Responder | PLive) -> None:
        if not (repository / "retinaface" / "config.pbtxt").is_file():
            raise FileNotFoundError(f"{repository} has no model configs; run `make models`")
        self.repository = repository
        self.local = LocalRepository(repository)
        self._responders: dict[str, Responder] = {}
        for model, r in responders.items():
            self.respond(model, r)
        self.calls: list[tuple[str, int, tuple[int, ...]]] = []
        self.loads: list[tuple[str, int]] = []
        self._loaded: set[tuple[str, int]] = set()
        self._ready = False
        if preload:
            for d in sorted(repository.iterdir()):
                if (d / "config.pbtxt").is_file():
                    for v in self.config(d.name).versions:
                        self._loaded.add((d.name, v))

    def respond(self, model: str, responder: Responder | PLive) -> None:
        """Set what ``model`` answers: a ``Responder``; for an anti-spoof model, its p(live) (a
        float, or a callable of one crop (3, S, S) -> float)."""
        cfg = self.config(model)
        if cfg.parameters.get("role") == "antispoof":
            responder = classifier_responder(cfg, responder)  # type: ignore[arg-type]
        self._responders[model] = responder  # type: ignore[assignment]

    def _responder(self, model: str) -> Responder:
        r = self._responders.get(model)
        if r is None:
            cfg = self.config(model)
            if model == "retinaface":
                r = retinaface_responder(())
            elif model == "yunet":
                r = yunet_no_face
            elif cfg.parameters.get("role") == "antispoof":
                r = classifier_responder(cfg, 0.9)
            else:
                r = zeros_responder(cfg)
            self._responders[model] = r
        return r

    # -- InferenceBackend ----------------------------------------------------------------------

    def config(self, model: str) -> ModelConfig:
        return self.local.config(model)

    def available_versions(self, model: str) -> list[int]:
        return self.local.available_versions(model)

    def load_sync(self, model: str, version: int) -> ModelVersion:
        if version not in self.config(model).versions:
            raise FileNotFoundError(f"{model} has no version {version} in {self.repository}")
        self.loads.append((model, version))
        self._loaded.add((model, version))
        return self.version_info(model, version)

    async def load(self, model: str, version: int) -> ModelVersion:
        return self.load_sync(model, version)

    async def unload(self, model: str, version: int) -> None:
        self._loaded.discard((model, version))

    def mark_ready(self) -> None:
        self._ready = True

    def loaded_versions(self, model: str) -> list[int]:
        return sorted(v for m, v in self._loaded if m == model)

    def version_info(self, model: str, version: int) -> ModelVersion:
        return ModelVersion(model, version, hashlib.sha256(f"fake:{model}:{version}".encode()).hexdigest())

    async def infer(self, model: str, x: np.ndarray, version: int) -> list[np.ndarray]:
        if (model, version) not in self._loaded:
            raise LivenessError(MODEL_UNAVAILABLE, f"model {model} version {version} is not loaded")
        self.calls.append((model, version, tuple(x.shape)))
        await asyncio.sleep(0)  # a real backend always yields to the loop
        return self._responder(model)(x)

    @property
    def ready(self) -> bool:
        return self._ready

    def close(self) -> None:
        self._ready = False

    # -- for assertions ------------------------------------------------------------------------

    def models_called(self) -> list[str]:
        return list(dict.fromkeys(m for m, _, _ in self.calls))


# ----------------------------------------------------------------------------- the core on a fake backend


def fake_app(settings: Any, backend: FakeBackend, monkeypatch: Any) -> Any:
    """The real ``LivenessApp`` (keys, charging, routing, pipeline) on ``backend``.

    LivenessApp builds its backend itself (``liveness.app.make_backend``); that is the one seam
    patched here, so a change there breaks this helper and nothing else."""
    import liveness.app as app_module

    monkeypatch.setattr(app_module, "make_backend", lambda s, observer=None: backend)
    return app_module.LivenessApp(settings)

