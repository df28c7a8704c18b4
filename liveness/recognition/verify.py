"""Face verification: is the face in a liveness image the person of a reference photo?

    detect (YuNet: box + 5 keypoints) -> align (ArcFace template) -> embed (MobileFaceNet)
    -> L2-normalise -> cosine -> threshold

Every model call goes through ``InferenceBackend.infer(model, batch, version)``, so it is
batched with concurrent requests and runs the version the rollout policy routed; CPU work
(resize, decode of the detector outputs, warp, quality) runs in the given executor.

The two models are the ``verification_models`` setting's, told apart by their config.pbtxt
``role``: a ``detector`` that gives five keypoints (architecture ``yunet``) and an ``embedder``
(architecture ``mobilefacenet``) whose ``template`` parameter is the alignment template
(``FaceVerifier.from_settings``; ``verification_models()``).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from liveness.detection.base import Face
from liveness.detection.choose import choose_face
from liveness.detection.modules import detector_from_config
from liveness.detection.yunet import YuNet
from liveness.errors import MODEL_UNAVAILABLE, LivenessError
from liveness.inference.base import InferenceBackend
from liveness.inference.repository import ModelConfig, ModelRoleError, ModelVersion, resolve_architecture
from liveness.recognition.align import ALIGNED_SIZE
from liveness.recognition.mobilefacenet import MobileFaceNet, cosine
from liveness.recognition.quality import RecognitionQuality, assess
from liveness.settings import Settings

T = TypeVar("T")

# The models a FaceVerifier runs when it is not told (the verification_models setting's default).
DETECTOR_MODEL, EMBEDDER_MODEL = Settings.model_fields["verification_models"].default
# architecture -> embedder module class (``from_config(cfg)``)
EMBEDDERS: dict[str, type[MobileFaceNet]] = {"mobilefacenet": MobileFaceNet}
# Default decision threshold on the cosine (docs/VERIFICATION.md: tools/calibrate_verification.py).
DEFAULT_THRESHOLD = 0.42
# A second face counts (MULTIPLE_FACES) when its box area is at least this share of the biggest
# one's, i.e. its side >= half the biggest's: a person in the background of a selfie is smaller.
# The liveness pipeline's rule (liveness.detection.choose); the default of multi_face_min_area_ratio.
MULTI_FACE_MIN_AREA_RATIO = Settings.model_fields["multi_face_min_area_ratio"].default
# probe(): the verifier's face must overlap the liveness pipeline's face at least this much.
# RetinaFace and YuNet boxes of one face differ in convention (IoU ~0.6-0.8 on the dev photos),
# two different faces hardly overlap.
MIN_TARGET_IOU = 0.3


@dataclass(frozen=True)
class FaceTemplate:
    """One face, ready to compare.  Only ``embedding`` needs to be stored for a reference."""

    embedding: np.ndarray  # (128,) float32, L2-normalised
    face: Face  # the YuNet face (box, score, 5 keypoints) in the image's pixels
    quality: RecognitionQuality
    model: ModelVersion  # the embedder: embeddings of different models/versions are not comparable
    detector: ModelVersion | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def describe(self) -> dict[str, object]:
        """What an answer may say about the face (``verify_image``, ``/v1/verify``): no embedding."""
        return {"face_rectangle": self.face.rectangle(), "quality_for_recognition": self.quality.level,
                "reasons": list(self.quality.reasons)}


@dataclass(frozen=True)
class VerifyResult:
    is_identical: bool  # cosine >= threshold
    # max(0, cosine), in [0, 1]: the cosine itself for similar faces; every dissimilar pair
    # (cosine <= 0, which is where unrelated faces centre) maps to 0.  Not a probability.
    match_confidence: float
    cosine: float = 0.0
    threshold: float = DEFAULT_THRESHOLD


def iou(a: Face, b: Face) -> float:
    ax1, ay1, bx1, by1 = a.x + a.w, a.y + a.h, b.x + b.w, b.y + b.h
    iw = max(0.0, min(ax1, bx1) - max(a.x, b.x))
    ih = max(0.0, min(ay1, by1) - max(a.y, b.y))
    inter = iw * ih
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def match_confidence(cos: float) -> float:
    """The documented mapping cosine -> [0, 1]: max(0, cosine)."""
    return float(min(1.0, max(0.0, cos)))


FALLBACK_SIDES = (960, 320)  # px, YuNet's longest side when the usual one finds no face


def embedder_from_config(cfg: ModelConfig, setting: str | None = "verification_models") -> MobileFaceNet:
    """The embedder module for ``cfg`` (role ``embedder``), by its architecture."""
    return EMBEDDERS[resolve_architecture(cfg, "embedder", EMBEDDERS, setting)].from_config(cfg)


def verification_models(
    configs: Sequence[ModelConfig], setting: str | None = "verification_models"
) -> tuple[ModelConfig, ModelConfig]:
    """(detector, embedder) among ``configs``, told apart by role: exactly one of each, the
    detector one that gives keypoints.  Raises ``ModelRoleError``."""
    where = setting or "the verification models"
    names = [c.name for c in configs]
    by_role: dict[str, list[ModelConfig]] = {"detector": [], "embedder": []}
    for cfg in configs:
        if cfg.role not in by_role:
            raise ModelRoleError(f"{where} names model {cfg.name!r}, a model with role {cfg.role or '(none)'!r} "
                                 f"({cfg.path / 'config.pbtxt'}); face verification needs a detector and an embedder")
        by_role[cfg.role].append(cfg)
    for role, got in by_role.items():
        if len(got) != 1:
            raise ModelRoleError(f"{where} {names} must name exactly one model with role {role!r} (found {len(got)})")
    det, emb = by_role["detector"][0], by_role["embedder"][0]
    detector_from_config(det, setting=setting, keypoints=True)  # checks its architecture
    embedder_from_config(emb, setting)
    return det, emb


class FaceVerifier:
    def __init__(
        self,
        backend: InferenceBackend,
        executor: Executor,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        detector_confidence: float = 0.6,
        detector_config: ModelConfig | None = None,
        embedder_config: ModelConfig | None = None,
        multi_face_min_area_ratio: float = MULTI_FACE_MIN_AREA_RATIO,
        fallback: bool = True,
    ) -> None:
        """``detector_config`` / ``embedder_config``: the two models (default the ``yunet`` and
        ``mobilefacenet`` of the backend's repository); ``from_settings`` picks them by role from
        ``verification_models``."""
        self.backend = backend
        self.executor = executor
        self.threshold = float(threshold)
        self.multi_face_min_area_ratio = multi_face_min_area_ratio
        det_cfg = detector_config or backend.config(DETECTOR_MODEL)
        detector = detector_from_config(det_cfg, detector_confidence, setting=None, keypoints=True)
        assert isinstance(detector, YuNet)
        self.detector = detector
        # Same idea as liveness.detection.acquire: only when YuNet finds nothing at its usual
        # size, a bigger copy (small faces in 12 MP photos) then a smaller one (a face filling
        # the frame, over YuNet's ~300 px range at 640).
        self.fallbacks = [detector.with_max_side(s) for s in FALLBACK_SIDES if fallback]
        self.embedder = embedder_from_config(embedder_config or backend.config(EMBEDDER_MODEL), None)

    @classmethod
    def from_settings(cls, backend: InferenceBackend, executor: Executor, settings: Settings) -> "FaceVerifier":
        """The verifier the settings describe: ``verification_models`` (by role),
        ``verify_threshold``, ``detector_confidence``, ``detector_fallback`` and
        ``multi_face_min_area_ratio`` (the pipeline's rule for a second face)."""
        det_cfg, emb_cfg = verification_models([backend.config(m) for m in settings.verification_models])
        return cls(
            backend, executor, threshold=settings.verify_threshold, detector_confidence=settings.detector_confidence,
            detector_config=det_cfg, embedder_config=emb_cfg,
            multi_face_min_area_ratio=settings.multi_face_min_area_ratio, fallback=settings.detector_fallback,
        )

    @property
    def model_names(self) -> list[str]:
        return [self.detector.model, self.embedder.model]

    async def _cpu(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    @staticmethod
    def _version(versions: Mapping[str, int], model: str) -> int:
        try:
            return int(versions[model])
        except KeyError:
            raise LivenessError(MODEL_UNAVAILABLE, f"no version of model {model} is routed for face verification") from None

    # -- steps ---------------------------------------------------------------------------------

    async def detect(self, bgr: np.ndarray, versions: Mapping[str, int]) -> list[Face]:
        """YuNet faces above ``detector_confidence``, best first (the first size that finds any)."""
        model = self.detector.model
        version = self._version(versions, model)
        faces: list[Face] = []
        for det in (self.detector, *self.fallbacks):
            x, meta = await self._cpu(det.preprocess, bgr)
            faces = await self._cpu(det.postprocess, await self.backend.infer(model, x, version), meta)
            if faces:
                break
        return faces

    def _prepare(self, bgr: np.ndarray, faces: Sequence[Face]) -> tuple[np.ndarray, list[RecognitionQuality]]:
        rows, qualities = [], []
        emb = self.embedder
        # Quality is measured on the 112x112 crop (its thresholds are in those pixels).
        tpl112 = emb.template * (ALIGNED_SIZE / emb.size)
        for face in faces:
            aligned = emb.align(bgr, face.keypoints)
            rows.append(emb.preprocess(aligned))
            qualities.append(assess(bgr, face, aligned if emb.size == ALIGNED_SIZE else None, tpl112))
        return np.stack(rows), qualities

    async def embed_aligned(self, aligned: Sequence[np.ndarray], versions: Mapping[str, int]) -> np.ndarray:
        """Aligned BGR faces (``embedder.align``, 112x112) -> (N, 128) L2-normalised embeddings, as one batch."""
        model = self.embedder.model
        x = await self._cpu(lambda: np.stack([self.embedder.preprocess(a) for a in aligned]))
        (out,) = await self.backend.infer(model, x, self._version(versions, model))
        return np.stack([self.embedder.postprocess(r) for r in out])

    async def templates(self, bgr: np.ndarray, faces: Sequence[Face], versions: Mapping[str, int]) -> list[FaceTemplate]:
        """Align, embed (one batch for all ``faces``) and assess the given faces of one image."""
        if not faces:
            return []
        t0 = time.perf_counter()
        model = self.embedder.model
        version = self._version(versions, model)
        x, qualities = await self._cpu(self._prepare, bgr, faces)
        (out,) = await self.backend.infer(model, x, version)
        info = self.backend.version_info(model, version)
        det = self.detector.model
        det_info = self.backend.version_info(det, versions[det]) if det in versions else None
        ms = round((time.perf_counter() - t0) * 1000, 2)
        return [
            FaceTemplate(self.embedder.postprocess(row), face, q, info, det_info, {"embed": ms})
            for row, face, q in zip(out, faces, qualities)
        ]

    # -- the API -------------------------------------------------------------------------------

    async def reference(self, bgr: np.ndarray, versions: Mapping[str, int]) -> FaceTemplate:
        """The one face of a reference photo.  Raises ``LivenessError``: NO_FACE without a face,
        MULTIPLE_FACES with a second face of at least ``multi_face_min_area_ratio`` of the
        biggest one's area."""
        t0 = time.perf_counter()
        faces = await self.detect(bgr, versions)
        t1 = time.perf_counter()
        biggest = choose_face(faces, "reject", self.multi_face_min_area_ratio,
                              one_person="the reference image must show exactly one person")
        (template,) = await self.templates(bgr, [biggest], versions)
        return _with_detect_time(template, t1 - t0)

    async def probe(self, bgr: np.ndarray, versions: Mapping[str, int], target: Face | None) -> FaceTemplate | None:
        """The face to compare in a liveness image or frame: the YuNet face that overlaps
        ``target`` most (the liveness pipeline's chosen face, e.g. RetinaFace's box, in the same
        image's pixels; IoU >= ``MIN_TARGET_IOU``), or the biggest when ``target`` is None.
        None when there is no such face."""
        t0 = time.perf_counter()
        faces = await self.detect(bgr, versions)
        t1 = time.perf_counter()
        if not faces:
            return None
        if target is None:
            chosen = max(faces, key=lambda f: f.area)
        else:
            best_iou, chosen = max(((iou(f, target), f) for f in faces), key=lambda t: t[0])
            if best_iou < MIN_TARGET_IOU:
                return None
        (template,) = await self.templates(bgr, [chosen], versions)
        return _with_detect_time(template, t1 - t0)

    def match(self, a: np.ndarray | FaceTemplate, b: np.ndarray | FaceTemplate) -> VerifyResult:
        """Compare two embeddings (or templates).  ``is_identical`` = cosine >= threshold;
        ``match_confidence`` = max(0, cosine)."""
        if isinstance(a, FaceTemplate) and isinstance(b, FaceTemplate) and a.model.sha256 != b.model.sha256:
            raise ValueError(f"templates from different embedders ({a.model.name} {a.model.version} vs "
                             f"{b.model.name} {b.model.version}) are not comparable")
        ea = a.embedding if isinstance(a, FaceTemplate) else a
        eb = b.embedding if isinstance(b, FaceTemplate) else b
        c = cosine(ea, eb)
        return VerifyResult(c >= self.threshold, match_confidence(c), c, self.threshold)


def _with_detect_time(t: FaceTemplate, seconds: float) -> FaceTemplate:
    return FaceTemplate(t.embedding, t.face, t.quality, t.model, t.detector, {"detect": round(seconds * 1000, 2), **t.timings_ms})
