"""Face acquisition: the reference detector pass first, other passes only when it finds nothing.

Silent-Face's reference pass (RetinaFace on a ~192x192-area copy) is what MiniFASNet's scores were
calibrated on, so every image it handles keeps exactly its reference box and score.  It fails on
framings the upstream app never produced (measured, tools/realworld_media.py):

* faces filling 40-70% of a 1-3 MP selfie: RetinaFace at ~192 px gives them 0.1-0.5 confidence,
  while at ~128 px they score 0.95-0.99;
* small faces in 12 MP photos (a 120-320 px face in 4000x3000): lost at every RetinaFace scale we
  tried (96-960 px); YuNet at 640-960 px finds them at 0.85-0.93.

So, only when the reference pass finds no face above the cut, these run in order and the first
that finds one wins (``Acquisition.source`` names it; the native answer reports it):

1. ``retinaface_<A>``: RetinaFace on an AxA-area copy (A = 128 by default): large faces, and the
   box is RetinaFace's own, the one the anti-spoof crops were trained on.
2. ``yunet_<S>``: YuNet on a copy with longest side S (640, then 960).  Its boxes are taller and
   narrower than RetinaFace's, and MiniFASNet's crop rule scales the box 2.7-4x, so each YuNet
   face is *refined*: RetinaFace (reference rule) on a square around it, where the face fills a
   third of the side, the size RetinaFace is best at.  The refined box is used when it overlaps
   YuNet's (``.../refined``); otherwise YuNet's box converted to RetinaFace's geometry with the
   median relation measured on 74 dev faces both found (``.../mapped``).

With a YuNet ``detector`` (e.g. ``detector = "yunet"``) the primary pass is YuNet and the fallbacks
are the same model at other sides (its own boxes are what that configuration feeds the
classifiers anyway).  Pass names (``retinaface_128``, ``yunet_640``) name the architecture and
size, whatever the configured model folders are called.

Only images that fail the reference pass pay for the others; they share one downscaled working
copy of the image (longest side ``WORK_SIDE``), so a 12 MP photo is resized once, not per pass.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable, Sequence

import cv2
import numpy as np

from liveness.detection.base import DetectorModule, Face
from liveness.detection.retinaface import RetinaFace
from liveness.detection.yunet import YuNet

REFERENCE = "reference"
WORK_SIDE = 1280  # px, longest side of the copy the fallback passes start from
REFINE_CONTEXT = 3.0  # square side / face side for the refining RetinaFace pass
REFINE_MIN_IOU = 0.3
MAX_REFINED = 4  # faces refined per image (the biggest); more is a crowd, not a selfie
# RetinaFace box relative to YuNet's on the same face, median over 74 dev faces (images,
# verification set, video frames): centre dx/w, dy/h, then w and h ratios.
YUNET_TO_RETINA = (-0.004, 0.052, 1.173, 0.837)

Infer = Callable[[str, np.ndarray], Awaitable[list[np.ndarray]]]
Cpu = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Acquisition:
    faces: list[Face]  # above the confidence cut, in original-image pixels
    sources: list[str]  # per face: the pass (and refinement) that produced its box
    models: tuple[str, ...]  # detector models the winning pass ran

    def source_of(self, face: Face) -> str:
        for f, s in zip(self.faces, self.sources):
            if f is face:
                return s
        return REFERENCE


def scale_face(face: Face, f: float, dx: float = 0.0, dy: float = 0.0) -> Face:
    kps = None if face.keypoints is None else face.keypoints * f + np.array([dx, dy])
    return replace(face, x=face.x * f + dx, y=face.y * f + dy, w=face.w * f, h=face.h * f, keypoints=kps)


def yunet_to_retina_box(face: Face, width: int, height: int) -> Face:
    """YuNet's box in RetinaFace's geometry (wider, shorter, a little lower), inside the image."""
    ox, oy, sw, sh = YUNET_TO_RETINA
    cx, cy = face.x + face.w * (0.5 + ox), face.y + face.h * (0.5 + oy)
    w, h = face.w * sw, face.h * sh
    x0, y0 = max(0.0, cx - w / 2), max(0.0, cy - h / 2)
    x1, y1 = min(float(width), cx + w / 2), min(float(height), cy + h / 2)
    return replace(face, x=int(x0), y=int(y0), w=int(x1 - x0), h=int(y1 - y0))


def iou(a: Face, b: Face) -> float:
    ix = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    return inter / max(a.area + b.area - inter, 1e-9)


def working_copy(bgr: np.ndarray, side: int = WORK_SIDE) -> tuple[np.ndarray, float]:
    """(copy with longest side <= ``side``, original pixels per copy pixel)."""
    h, w = bgr.shape[:2]
    if max(h, w) <= side:
        return bgr, 1.0
    f = max(h, w) / side
    return cv2.resize(bgr, (round(w / f), round(h / f)), interpolation=cv2.INTER_AREA), f


def square_around(bgr: np.ndarray, face: Face, context: float) -> tuple[np.ndarray, float, float]:
    """A square of side ``context`` x the face's longer side centred on it (edge-replicated
    where it leaves the image), and its top-left corner in image pixels."""
    side = max(8, int(round(context * max(face.w, face.h))))
    x0 = int(round(face.x + face.w / 2 - side / 2))
    y0 = int(round(face.y + face.h / 2 - side / 2))
    h, w = bgr.shape[:2]
    pad_l, pad_t = max(0, -x0), max(0, -y0)
    pad_r, pad_b = max(0, x0 + side - w), max(0, y0 + side - h)
    crop = bgr[max(0, y0) : min(h, y0 + side), max(0, x0) : min(w, x0 + side)]
    if pad_l or pad_t or pad_r or pad_b:
        crop = cv2.copyMakeBorder(crop, pad_t, pad_b, pad_l, pad_r, cv2.BORDER_REPLICATE)
    return crop, float(x0), float(y0)


class FaceAcquirer:
    """The one detector path: ``acquire`` runs the primary pass, then the fallbacks."""

    def __init__(
        self,
        primary: DetectorModule,
        *,
        confidence: float,
        fallback: bool = True,
        retina_areas: Sequence[int] = (128,),
        yunet_sides: Sequence[int] = (640, 960),
        yunet_model: str = "yunet",
        yunet: YuNet | None = None,
    ) -> None:
        """``yunet``: the YuNet module (model and preprocessing, from its config) the YuNet passes
        run at their sides; default the primary when it is a YuNet, else ``YuNet(model=yunet_model)``.
        The RetinaFace passes and the refiner run the primary's model and preprocessing."""
        self.primary = primary
        self.fallback = fallback
        self.confidence = confidence
        self.retina_areas = tuple(retina_areas)
        self.yunet_sides = tuple(yunet_sides)
        if yunet is None:
            yunet = primary if isinstance(primary, YuNet) else YuNet(model=yunet_model)
        self.yunet_model = yunet.model
        self.refiner = replace(primary, confidence=confidence, area=None) if isinstance(primary, RetinaFace) else None
        # The fallback detectors, in the order they run (pure and stateless: built once).
        self._retina_passes = [
            (f"retinaface_{a}", replace(primary, confidence=confidence, area=a))
            for a in (self.retina_areas if self.refiner is not None else ())
        ]
        self._yunet_passes = [
            (f"yunet_{s}", replace(yunet, confidence=confidence, max_side=s)) for s in self.yunet_sides
        ]

    @property
    def models(self) -> list[str]:
        """Every detector model any pass may run (all must be routed and loaded)."""
        names = [self.primary.model]
        if self.fallback and self.yunet_sides and self.yunet_model not in names:
            names.append(self.yunet_model)
        return names

    async def acquire(self, bgr: np.ndarray, x: np.ndarray, meta: Any, infer: Infer, cpu: Cpu) -> Acquisition:
        """``x, meta``: the primary's own preprocessing of ``bgr`` (done beside decoding)."""
        faces = await cpu(self.primary.postprocess, await infer(self.primary.model, x), meta)
        if faces or not self.fallback:
            return Acquisition(faces, [REFERENCE] * len(faces), (self.primary.model,))
        work, f = await cpu(working_copy, bgr)
        for name, det in self._retina_passes:
            found = await self._run(det, work, f, infer, cpu)
            if found:
                return Acquisition(found, [name] * len(found), (self.primary.model,))
        for name, det in self._yunet_passes:
            found = await self._run(det, work, f, infer, cpu)
            if not found:
                continue
            if self.refiner is None:
                return Acquisition(found, [name] * len(found), (self.yunet_model,))
            refined, sources = await self._refine(bgr, found, infer, cpu)
            return Acquisition(refined, [f"{name}/{s}" for s in sources], (self.yunet_model, self.primary.model))
        return Acquisition([], [], (self.primary.model,))

    async def _run(self, det: DetectorModule, work: np.ndarray, f: float, infer: Infer, cpu: Cpu) -> list[Face]:
        x, meta = await cpu(det.preprocess, work)
        faces = await cpu(det.postprocess, await infer(det.model, x), meta)
        return [scale_face(face, f) for face in faces] if f != 1.0 else faces

    async def _refine(self, bgr: np.ndarray, located: list[Face], infer: Infer, cpu: Cpu) -> tuple[list[Face], list[str]]:
        """RetinaFace boxes for YuNet-located faces (the biggest ``MAX_REFINED``), by overlap."""
        assert self.refiner is not None
        height, width = bgr.shape[:2]
        order = sorted(located, key=lambda face: -face.area)[:MAX_REFINED]

        async def one(face: Face) -> tuple[Face, str]:
            crop, x0, y0 = await cpu(square_around, bgr, face, REFINE_CONTEXT)
            x, meta = await cpu(self.refiner.preprocess, crop)
            found = await cpu(self.refiner.postprocess, await infer(self.refiner.model, x), meta)
            best = max(((iou(scale_face(c, 1.0, x0, y0), face), c) for c in found), default=None, key=lambda t: t[0])
            if best is not None and best[0] >= REFINE_MIN_IOU:
                r = scale_face(best[1], 1.0, x0, y0)
                # Clip to the image as the reference pass's boxes are; keep YuNet's keypoints.
                rx, ry = max(0.0, r.x), max(0.0, r.y)
                rw, rh = min(float(width), r.x + r.w) - rx, min(float(height), r.y + r.h) - ry
                return replace(r, x=int(rx), y=int(ry), w=int(rw), h=int(rh), keypoints=face.keypoints), "refined"
            return yunet_to_retina_box(face, width, height), "mapped"

        results = await asyncio.gather(*(one(face) for face in order))
        return [r for r, _ in results], [s for _, s in results]

