"""MiniFASNet (Silent-Face) anti-spoof classifier: crop at the model's scale, raw BGR, softmax."""

from __future__ import annotations

import numpy as np

from liveness.antispoof.crop import crop_face
from liveness.detection.base import Face
from liveness.inference.repository import ModelConfig

LIVE_CLASS = 1  # classes 0 and 2 are the two spoof classes


class MiniFASNet:
    def __init__(self, model: str, scale: float, size: int = 80) -> None:
        self.model = model
        self.scale = scale
        self.size = size

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "MiniFASNet":
        # The crop scale lives in config.pbtxt, written by the converters from the upstream file name.
        return cls(cfg.name, float(cfg.param("crop_scale")), int(cfg.param("input_size")))

    def preprocess(self, bgr: np.ndarray, face: Face) -> np.ndarray:
        """(1, 3, size, size) float32, raw 0..255 BGR: upstream's patched ToTensor does no scaling."""
        crop = crop_face(bgr, face.bbox, self.scale, self.size)
        return crop.transpose(2, 0, 1)[None].astype(np.float32)

    @staticmethod
    def postprocess(logits: np.ndarray) -> np.ndarray:
        """Logits (N, 3) -> softmax probabilities (N, 3)."""
        z = logits.astype(np.float64)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
