"""Passive single-image liveness:
decode -> validate -> acquire the face (reference pass, then fallbacks) -> choose face -> crop per
model -> batched inference -> fuse -> decide.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

import numpy as np

from liveness.antispoof.model import AntiSpoofModel
from liveness.decision import decide, fuse
from liveness.detection.acquire import FaceAcquirer
from liveness.detection.base import DetectorModule, Face
from liveness.detection.choose import choose_face
from liveness.detection.modules import detector_from_config
from liveness.detection.yunet import YuNet
from liveness.errors import NO_FACE, LivenessError
from liveness.imaging import DecodedImage, ImageLimits, decode_image
from liveness.inference.base import InferenceBackend
from liveness.inference.repository import LocalRepository, ModelConfig, ModelVersion
from liveness.model_roles import check_model_roles
from liveness.settings import Settings

__all__ = ["LivenessResult", "PassivePipeline", "PreparedFace", "choose_face", "make_acquirer", "make_detector",
           "quality_flags"]

T = TypeVar("T")
ConfigOf = Callable[[str], ModelConfig]  # model (folder) name -> its config (InferenceBackend.config)
# The model the YuNet fallback passes run when the detector is not a YuNet (acquire.py).

# Quality flags (README "Quality flags"): reasons a verdict is less trustworthy, never a verdict.
FACE_TOO_SMALL = "face_too_small"
FACE_CUT_OFF = "face_cut_off"
MULTIPLE_FACES_FLAG = "multiple_faces"


@dataclass(frozen=True)
class LivenessResult:
    is_live: bool
    score: float
    threshold: float
    face: Face
    faces_found: int
    quality_flags: tuple[str, ...]
    model_scores: dict[str, float]
    models: tuple[ModelVersion, ...]
    image_size: tuple[int, int]  # width, height after EXIF orientation
    timings_ms: dict[str, float] = field(default_factory=dict)
    # Which detector pass found the face: "reference" (RetinaFace at ~192 px, Silent-Face's own)
    # or a fallback pass (liveness.detection.acquire).
    acquisition: str = "reference"


@dataclass(frozen=True)
class PreparedFace:
    """A validated image reduced to its chosen face and the crops each classifier needs."""

    face: Face
    faces_found: int
    crops: tuple[np.ndarray, ...]
    image_size: tuple[int, int]  # width, height after EXIF orientation
    timings: dict[str, float]
    models: tuple[ModelVersion, ...]  # the detector version that found the face
    acquisition: str = "reference"  # the detector pass that found it (LivenessResult.acquisition)


def quality_flags(face: Face, width: int, height: int, n_faces: int, min_face_size: int) -> tuple[str, ...]:
    flags = []
    if min(face.w, face.h) < min_face_size:
        flags.append(FACE_TOO_SMALL)
    # RetinaFace clips its boxes to the frame and YuNet extrapolates past it: either way a box
    # that reaches the border means part of the face is outside the image.
    margin = max(2.0, 0.01 * max(width, height))
    if face.x < margin or face.y < margin or face.x + face.w > width - margin or face.y + face.h > height - margin:
        flags.append(FACE_CUT_OFF)
    if n_faces > 1:
        flags.append(MULTIPLE_FACES_FLAG)
    return tuple(flags)


def _config_of(settings: Settings, config_of: ConfigOf | None) -> ConfigOf:
    return config_of or LocalRepository(settings.model_repository).config


def make_detector(settings: Settings, config_of: ConfigOf | None = None) -> DetectorModule:
    """The module for the ``detector`` model, by its config's role and architecture (RetinaFace,
    YuNet), with its preprocessing from the same config.  ``config_of``: the backend's
    ``config``; default the settings' model repository."""
    cfg = _config_of(settings, config_of)(settings.detector)
    return detector_from_config(cfg, settings.detector_confidence, setting="detector")


def make_acquirer(
    settings: Settings, detector: DetectorModule | None = None, config_of: ConfigOf | None = None
) -> FaceAcquirer:
    """The reference detector and its fallback passes, as the settings say.  The YuNet passes run
    the detector itself when it is a YuNet, else the ``detector_fallback_model`` of the repository."""
    config_of = _config_of(settings, config_of)
    detector = detector or make_detector(settings, config_of)
    yunet = None
    if not isinstance(detector, YuNet) and settings.detector_fallback and settings.detector_fallback_sides:
        yunet = detector_from_config(config_of(settings.detector_fallback_model), settings.detector_confidence,
                                     setting="detector_fallback_model", keypoints=True)
    return FaceAcquirer(
        detector,
        confidence=settings.detector_confidence,
        fallback=settings.detector_fallback,
        retina_areas=settings.detector_fallback_areas,
        yunet_sides=settings.detector_fallback_sides,
        yunet=yunet,  # type: ignore[arg-type]
    )


class PassivePipeline:
    def __init__(self, backend: InferenceBackend, settings: Settings, executor: Executor) -> None:
        self.backend = backend
        self.settings = settings
        self.executor = executor
        # Every configured model name is checked against its config's role first, so a wrong one
        # (antispoof_models naming a detector, ...) refuses the start with the setting's name.
        check_model_roles(settings, backend.config)
        self.detector = make_detector(settings, backend.config)
        self.acquirer = make_acquirer(settings, self.detector, backend.config)
        # Any anti-spoof model is configuration: its config.pbtxt parameters (liveness.antispoof.spec).
        self.classifiers = [AntiSpoofModel.from_config(backend.config(m)) for m in settings.antispoof_models]
        self.limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
                                  max_decode_bytes=settings.max_decode_mb * 1024 * 1024)

    @property
    def model_names(self) -> list[str]:
        return [*self.acquirer.models, *(c.model for c in self.classifiers)]

    async def _cpu(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _decode_and_prepare(self, data: bytes | Callable[[], bytes],
                            scale: int | None = None) -> tuple[DecodedImage, bytes, np.ndarray, Any]:
        """Decode (reduced as ``decode_min_side`` allows, or by ``scale``) and the detector's input."""
        raw = data() if callable(data) else data
        img = decode_image(raw, self.limits, min_long_side=self.settings.decode_min_side or None, scale=scale)
        x, meta = self.detector.preprocess(img.bgr)
        return img, raw, x, meta

    def finest_needed(self, face: Face, width: int, height: int, scale: int) -> int:
        """The coarsest decode (``scale`` or finer, powers of two) at which ``face``, found in a
        ``width`` x ``height`` decode at ``scale``, keeps a shorter side of at least
        2 x ``min_face_size`` (the detector boxes small faces less exactly) and every classifier's
        crop at least the model's input size (never upsampled from a coarse decode)."""
        if scale == 1:
            return 1
        side = max(face.w, face.h)
        bound = scale * min(
            min(face.w, face.h) / (2 * self.settings.min_face_size),
            *(min(c.spec.crop_scale * side, max(width, height)) / c.spec.input_size for c in self.classifiers),
        )
        fine = scale
        while fine > 1 and fine > bound:
            fine //= 2
        return fine

    def _choose_and_crop(self, faces: list[Face], bgr: np.ndarray) -> tuple[Face, list[np.ndarray]]:
        face = choose_face(faces, self.settings.multi_face_policy, self.settings.multi_face_min_area_ratio)
        return face, [c.preprocess(bgr, face) for c in self.classifiers]

    async def prepare(self, data: bytes | Callable[[], bytes], versions: Mapping[str, int]) -> PreparedFace:
        """Decode, detect, choose the face and crop: everything that can fail on bad input.

        ``data`` may be a callable (e.g. base64 decoding), run off the event loop with decoding.
        A big JPEG is decoded reduced (``decode_min_side``); when the face it holds is too small
        for that (``finest_needed``) the image is decoded and searched again as finely as the
        face needs, so small faces are judged as a full decode would.  The face comes back in
        the full image's pixels."""
        t0 = time.perf_counter()
        img, raw, x, meta = await self._cpu(self._decode_and_prepare, data)
        t1 = time.perf_counter()
        timings = {"decode": t1 - t0}
        size = (img.width, img.height)
        try:
            prepared = await self._detect(img.bgr, x, meta, size, timings, t1, versions, img.scale)
        except LivenessError as err:
            if img.scale == 1 or err.code != NO_FACE.code:
                raise
            fine = 1  # a face the coarse decode hides (tiny, blurred): look again in full
        else:
            if img.scale == 1:
                return prepared
            small = prepared.face.scaled(1 / img.scale)
            fine = self.finest_needed(small, img.bgr.shape[1], img.bgr.shape[0], img.scale)
            if fine == img.scale:
                return prepared
        t2 = time.perf_counter()
        finer, _, x, meta = await self._cpu(self._decode_and_prepare, raw, fine)
        t3 = time.perf_counter()
        timings = {"decode": timings["decode"] + t3 - t2, "detect": t2 - t1}  # the first search counts too
        return await self._detect(finer.bgr, x, meta, size, timings, t3, versions, fine)

    async def prepare_bgr(self, bgr: np.ndarray, versions: Mapping[str, int]) -> PreparedFace:
        t0 = time.perf_counter()
        x, meta = await self._cpu(self.detector.preprocess, bgr)
        return await self._detect(bgr, x, meta, (bgr.shape[1], bgr.shape[0]), {}, t0, versions)

    async def _detect(
        self,
        bgr: np.ndarray,
        x: np.ndarray,
        meta: Any,
        size: tuple[int, int],
        timings: dict[str, float],
        t1: float,
        versions: Mapping[str, int],
        scale: int = 1,
    ) -> PreparedFace:
        """Acquire, choose and crop in ``bgr`` (a decode reduced by ``scale``); the face comes
        back in full-image pixels (``size``)."""
        def infer(model: str, inputs: np.ndarray):
            return self.backend.infer(model, inputs, versions[model])

        found = await self.acquirer.acquire(bgr, x, meta, infer, self._cpu)
        face, crops = await self._cpu(self._choose_and_crop, found.faces, bgr)
        timings["detect"] = timings.get("detect", 0.0) + time.perf_counter() - t1
        return PreparedFace(
            face.scaled(scale), len(found.faces), tuple(crops), size, timings,
            tuple(self.backend.version_info(m, versions[m]) for m in found.models), found.source_of(face),
        )

    async def classify_probs(self, prepared: PreparedFace, versions: Mapping[str, int]) -> dict[str, float]:
        """Each classifier's p(live) for the prepared face, with the given versions, by model name
        (in ``antispoof_models`` order)."""
        logits = await asyncio.gather(
            *(self.backend.infer(c.model, crop, versions[c.model]) for c, crop in zip(self.classifiers, prepared.crops))
        )
        return {c.model: float(c.postprocess(out[0])[0]) for c, out in zip(self.classifiers, logits)}

    async def classify(self, prepared: PreparedFace, versions: Mapping[str, int]) -> LivenessResult:
        """Anti-spoof models on the crops, fused and decided.  Fails only on our side."""
        t2 = time.perf_counter()
        scores = await self.classify_probs(prepared, versions)
        score = fuse(scores, self.settings.fusion, self.settings.fusion_weights)
        threshold = self.settings.threshold
        timings = {**prepared.timings, "classify": time.perf_counter() - t2}
        face, (width, height) = prepared.face, prepared.image_size
        return LivenessResult(
            is_live=decide(score, threshold),
            score=score,
            threshold=threshold,
            face=face,
            faces_found=prepared.faces_found,
            quality_flags=quality_flags(face, width, height, prepared.faces_found, self.settings.min_face_size),
            model_scores=scores,
            models=prepared.models + tuple(self.backend.version_info(c.model, versions[c.model]) for c in self.classifiers),
            image_size=prepared.image_size,
            timings_ms={k: round(v * 1000, 2) for k, v in timings.items()},
            acquisition=prepared.acquisition,
        )

    async def check_bytes(self, data: bytes | Callable[[], bytes], versions: Mapping[str, int]) -> LivenessResult:
        return await self.classify(await self.prepare(data, versions), versions)
