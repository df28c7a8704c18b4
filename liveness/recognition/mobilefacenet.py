"""MobileFaceNet (foamliu, ArcFace loss on MS-Celeb-1M): 5-point-aligned 112x112 face -> 128-d
embedding, compared by cosine.  Preprocessing exactly as upstream (MANIFEST "Recognition:
MobileFaceNet"): RGB, /255, ImageNet mean/std, NCHW; the raw output is L2-normalised here."""

from __future__ import annotations

import numpy as np

from liveness.inference.repository import ModelConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EMBEDDING_DIM = 128


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


class MobileFaceNet:
    model = "mobilefacenet"

    def __init__(
        self,
        model: str = "mobilefacenet",
        size: int = 112,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        self.model = model
        self.size = size
        # x_chw = (rgb / 255 - mean) / std  ==  rgb * _scale + _shift
        self._scale = (1.0 / (255.0 * np.asarray(std, np.float32))).reshape(3, 1, 1)
        self._shift = (-np.asarray(mean, np.float32) / np.asarray(std, np.float32)).reshape(3, 1, 1)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "MobileFaceNet":
        # The converters write the preprocessing into config.pbtxt (converters/models.py).
        color = cfg.param("color")
        if color != "RGB":
            raise ValueError(f"model {cfg.name}: expected color RGB in config.pbtxt, got {color!r}")
        return cls(cfg.name, int(cfg.param("input_size")), _floats(cfg.param("mean")), _floats(cfg.param("std")))

    def preprocess(self, aligned_bgr: np.ndarray) -> np.ndarray:
        """An aligned ``size`` x ``size`` BGR uint8 face -> (3, size, size) float32 (RGB, ImageNet-normalised).
        Stack rows with ``np.stack`` for a batch."""
        if aligned_bgr.shape != (self.size, self.size, 3):
            raise ValueError(f"expected an aligned {self.size}x{self.size}x3 face, got {aligned_bgr.shape}")
        rgb_chw = aligned_bgr[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
        return (rgb_chw * self._scale + self._shift).astype(np.float32)

    @staticmethod
    def postprocess(row: np.ndarray) -> np.ndarray:
        """One raw output row (128,) -> the L2-normalised embedding (128,) float32."""
        v = np.asarray(row, np.float64).reshape(-1)
        n = float(np.linalg.norm(v))
        if not np.isfinite(n) or n < 1e-12:
            raise ValueError("degenerate embedding (zero or non-finite norm)")
        return (v / n).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity in [-1, 1] (inputs need not be normalised)."""
    a64, b64 = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if a64.shape != b64.shape:
        raise ValueError(f"embeddings differ in size: {a64.shape} vs {b64.shape}")
    den = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    return float(np.clip(a64 @ b64 / den, -1.0, 1.0)) if den > 0 else 0.0
