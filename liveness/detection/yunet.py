"""YuNet (libfacedetection): boxes plus five keypoints.  Decode identical to cv2.FaceDetectorYN.

Architecture ``yunet`` (role ``detector``): outputs ``cls``, ``obj``, ``bbox``, ``kps`` at strides
8, 16, 32 (config order), and these config.pbtxt ``parameters``, each defaulting to upstream's
value for a repository written before it existed:

=================  ==========================================================  ========
parameter          meaning                                                     default
=================  ==========================================================  ========
``color``          ``BGR`` or ``RGB``: channel order of the input (raw 0..255)  ``BGR``
``max_side``       longest side the image is downscaled to (the model finds     ``640``
                   faces of ~10-300 px)
``pad_multiple``   the input is zero-padded to a multiple of it                 ``32``
``nms_threshold``  IoU above which a lower-scored box is suppressed             ``0.3``
=================  ==========================================================  ========
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from liveness.detection.base import Face, nms
from liveness.inference.repository import ModelConfig

STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class YuNetMeta:
    scale: float  # original pixels per network pixel
    pad_h: int
    pad_w: int


@dataclass(eq=False)
class YuNet:
    confidence: float = 0.6
    nms_threshold: float = 0.3
    max_side: int = 640
    model: str = "yunet"
    pad_multiple: int = 32
    color: str = "BGR"

    architecture = "yunet"
    gives_keypoints = True

    @classmethod
    def from_config(cls, cfg: ModelConfig, confidence: float = 0.6, max_side: int | None = None) -> "YuNet":
        """``max_side``: overrides the config's (acquisition and verification fallback passes)."""
        return cls(
            confidence,
            cfg.number("nms_threshold", 0.3),
            cfg.integer("max_side", 640, positive=True) if max_side is None else max_side,
            cfg.name,
            cfg.integer("pad_multiple", 32, positive=True),
            cfg.text("color", "BGR", ("BGR", "RGB")),
        )

    def with_max_side(self, max_side: int) -> "YuNet":
        """The same detector (model, preprocessing) on another image size."""
        return replace(self, max_side=max_side)

    def preprocess(self, bgr: np.ndarray) -> tuple[np.ndarray, YuNetMeta]:
        h, w = bgr.shape[:2]
        # The model handles faces of ~10-300 px: a full-resolution selfie hides its face.
        scale = max(h, w) / self.max_side if max(h, w) > self.max_side else 1.0
        if scale != 1.0:
            bgr = cv2.resize(bgr, (round(w / scale), round(h / scale)), interpolation=cv2.INTER_AREA)
        rh, rw = bgr.shape[:2]
        m = self.pad_multiple
        ph, pw = -(-rh // m) * m, -(-rw // m) * m
        x = np.zeros((1, 3, ph, pw), np.float32)
        x[0, :, :rh, :rw] = (bgr[:, :, ::-1] if self.color == "RGB" else bgr).transpose(2, 0, 1)
        return x, YuNetMeta(scale, ph, pw)

    def postprocess(self, outputs: list[np.ndarray], meta: YuNetMeta) -> list[Face]:
        # outputs in config order: cls_8,16,32, obj_8,16,32, bbox_8,16,32, kps_8,16,32 (batch row 0)
        cls, obj, bbox, kps = (outputs[i : i + 3] for i in range(0, 12, 3))
        all_boxes, all_scores, all_kps = [], [], []
        for k, s in enumerate(STRIDES):
            cols = meta.pad_w // s
            score = np.sqrt(np.clip(cls[k][0, :, 0], 0, 1) * np.clip(obj[k][0, :, 0], 0, 1))
            idx = np.nonzero(score >= self.confidence)[0]
            if idx.size == 0:
                continue
            r, c = np.divmod(idx, cols)
            b = bbox[k][0, idx]
            cx, cy = (c + b[:, 0]) * s, (r + b[:, 1]) * s
            w, h = np.exp(b[:, 2]) * s, np.exp(b[:, 3]) * s
            all_boxes.append(np.stack([cx - w / 2, cy - h / 2, w, h], 1))
            all_scores.append(score[idx])
            p = kps[k][0, idx].reshape(-1, 5, 2)
            all_kps.append(np.stack([(p[:, :, 0] + c[:, None]) * s, (p[:, :, 1] + r[:, None]) * s], 2))
        if not all_boxes:
            return []
        boxes, scores, points = np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_kps)
        xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
        keep = nms(xyxy, scores, self.nms_threshold)
        f = meta.scale
        return [
            Face(
                float(boxes[i, 0] * f), float(boxes[i, 1] * f), float(boxes[i, 2] * f), float(boxes[i, 3] * f),
                float(scores[i]), points[i] * f,
            )
            for i in keep
        ]
