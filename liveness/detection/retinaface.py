"""RetinaFace (the Silent-Face reference detector), converted from Caffe by the converters.

Pre- and post-processing reproduce upstream ``Detection.get_bbox``: resize to ~192x192 area,
subtract the Caffe mean, decode SSD priors, NMS; boxes are upstream's integer (x, y, w, h).

Architecture ``retinaface`` (role ``detector``): the prior layout of ``retinaface_post`` (min
sizes 16/32, 64/128, 256/512 at strides 8, 16, 32) and these config.pbtxt ``parameters``, each
defaulting to upstream's value for a repository written before it existed:

=================  ========================================================  ==============
parameter          meaning                                                   default
=================  ========================================================  ==============
``color``          ``BGR`` or ``RGB``: channel order of the input tensor     ``BGR``
``mean``           subtracted per channel (in ``color`` order), raw 0..255   ``104,117,123``
``resize_area``    images of at least this many pixels are resized to about  ``36864``
                   it (192 x 192)
``variances``      CENTER_SIZE box decoding                                  ``0.1,0.1,0.2,0.2``
``conf_threshold`` DetectionOutput's score cut before NMS                    ``0.1``
``nms_threshold``  IoU above which a lower-scored box is suppressed          ``0.3``
``top_k``          boxes kept before NMS / after NMS (``keep_top_k``)        ``400`` / ``200``
=================  ========================================================  ==============
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from liveness.detection.base import Face
from liveness.detection.retinaface_post import detect_from_outputs, retinaface_priors
from liveness.inference.repository import ModelConfig

MEAN = np.array([104.0, 117.0, 123.0], np.float32)
REFERENCE_SIDE = 192  # upstream: images of at least 192x192 area are resized to about that area
VARIANCES = (0.1, 0.1, 0.2, 0.2)


@dataclass(frozen=True)
class RetinaMeta:
    width: int  # original image
    height: int
    net_h: int
    net_w: int


@dataclass(eq=False)
class RetinaFace:
    """``area=None`` is upstream's rule (resize only images of at least ``reference_side`` squared
    area); ``area=A`` resizes every image to about AxA area (the acquisition fallbacks)."""

    confidence: float = 0.6
    area: int | None = None
    model: str = "retinaface"
    mean: np.ndarray = None  # type: ignore[assignment]  # (3,) float32, default MEAN
    reference_side: float = REFERENCE_SIDE
    color: str = "BGR"
    variances: tuple[float, float, float, float] = VARIANCES
    conf_threshold: float = 0.1
    nms_threshold: float = 0.3
    top_k: int = 400
    keep_top_k: int = 200

    architecture = "retinaface"
    gives_keypoints = False

    def __post_init__(self) -> None:
        self.mean = MEAN if self.mean is None else np.asarray(self.mean, np.float32).reshape(3)

    @classmethod
    def from_config(cls, cfg: ModelConfig, confidence: float = 0.6, area: int | None = None) -> "RetinaFace":
        area_px = cfg.integer("resize_area", REFERENCE_SIDE * REFERENCE_SIDE, positive=True)
        side = math.isqrt(area_px)
        return cls(
            confidence,
            area,
            cfg.name,
            mean=np.asarray(cfg.numbers("mean", tuple(MEAN.tolist()), count=3), np.float32),
            reference_side=side if side * side == area_px else math.sqrt(area_px),
            color=cfg.text("color", "BGR", ("BGR", "RGB")),
            variances=cfg.numbers("variances", VARIANCES, count=4, positive=True),  # type: ignore[arg-type]
            conf_threshold=cfg.number("conf_threshold", 0.1),
            nms_threshold=cfg.number("nms_threshold", 0.3),
            top_k=cfg.integer("top_k", 400),
            keep_top_k=cfg.integer("keep_top_k", 200),
        )

    def with_area(self, area: int | None) -> "RetinaFace":
        """The same detector (model, preprocessing) with another resize rule."""
        return replace(self, area=area)

    def preprocess(self, bgr: np.ndarray) -> tuple[np.ndarray, RetinaMeta]:
        height, width = bgr.shape[:2]
        side = self.area or self.reference_side
        if self.area is not None or width * height >= side * side:
            ar = width / height
            size = (max(16, int(side * math.sqrt(ar))), max(16, int(side / math.sqrt(ar))))
            down = size[0] * size[1] < width * height and self.area is not None
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR)
        nh, nw = bgr.shape[:2]
        img = bgr[:, :, ::-1] if self.color == "RGB" else bgr
        x = (img.astype(np.float32) - self.mean).transpose(2, 0, 1)[None]
        return np.ascontiguousarray(x), RetinaMeta(width, height, nh, nw)

    def postprocess(self, outputs: list[np.ndarray], meta: RetinaMeta) -> list[Face]:
        loc, conf = outputs[0][0], outputs[1][0]
        rows = detect_from_outputs(
            loc, conf, retinaface_priors(meta.net_h, meta.net_w), variances=self.variances,
            conf_threshold=self.conf_threshold, nms_threshold=self.nms_threshold,
            top_k=self.top_k, keep_top_k=self.keep_top_k,
        )
        faces = []
        for row in rows:
            if row[2] < self.confidence:
                break  # rows are sorted by confidence
            left, top = row[3] * meta.width, row[4] * meta.height
            right, bottom = row[5] * meta.width, row[6] * meta.height
            faces.append(Face(int(left), int(top), int(right - left + 1), int(bottom - top + 1), float(row[2])))
        return faces
