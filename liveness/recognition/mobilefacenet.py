"""MobileFaceNet (foamliu, ArcFace loss on MS-Celeb-1M): 5-point-aligned 112x112 face -> 128-d
embedding, compared by cosine.  Preprocessing exactly as upstream (MANIFEST "Recognition:
MobileFaceNet"): RGB, /255, ImageNet mean/std, NCHW; the raw output is L2-normalised here.

Everything the module needs is read from the model's config.pbtxt ``parameters``
(``from_config``; architecture ``mobilefacenet``, role ``embedder``).  Each has a default, the
value upstream uses, so a repository written before a parameter existed still works:

==================  ====================================================  ==============================
parameter           meaning                                               default
==================  ====================================================  ==============================
``input_size``      side S of the square aligned input (matches the       ``112``
                    input dims)
``color``           ``RGB`` or ``BGR``: channel order of the input        ``RGB``
``input_divisor``   pixel values are divided by it first                  ``255``
``mean``, ``std``   per channel, after the division: ``(x/d - mean)/std``  ImageNet ``0.485,0.456,0.406``
                                                                          / ``0.229,0.224,0.225``
``template``        the five alignment points (x, y in S x S pixels, in   the ArcFace template
                    the detector's keypoint order), comma-separated       (``align.ARCFACE_TEMPLATE``)
==================  ====================================================  ==============================
"""

from __future__ import annotations

import numpy as np

from liveness.inference.repository import ModelConfig
from liveness.recognition.align import ALIGNED_SIZE, ARCFACE_TEMPLATE, align_face

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EMBEDDING_DIM = 128


class MobileFaceNet:
    architecture = "mobilefacenet"

    def __init__(
        self,
        model: str = "mobilefacenet",
        size: int = ALIGNED_SIZE,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        *,
        divisor: float = 255.0,
        color: str = "RGB",
        template: np.ndarray | None = None,
    ) -> None:
        self.model = model
        self.size = size
        self.color = color
        # (5, 2) alignment points in size x size pixels
        self.template = (ARCFACE_TEMPLATE * (size / ALIGNED_SIZE) if template is None
                         else np.asarray(template, np.float64).reshape(5, 2))
        # x_chw = (rgb / divisor - mean) / std  ==  rgb * _scale + _shift
        self._scale = (1.0 / (divisor * np.asarray(std, np.float32))).reshape(3, 1, 1)
        self._shift = (-np.asarray(mean, np.float32) / np.asarray(std, np.float32)).reshape(3, 1, 1)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "MobileFaceNet":
        # The converters write the preprocessing into config.pbtxt (converters/models.py).
        size = cfg.integer("input_size", ALIGNED_SIZE, positive=True)
        cfg.check_square_input(size)
        default_template = tuple((ARCFACE_TEMPLATE * (size / ALIGNED_SIZE)).reshape(-1))
        return cls(
            cfg.name,
            size,
            cfg.numbers("mean", IMAGENET_MEAN, count=3),
            cfg.numbers("std", IMAGENET_STD, count=3, positive=True),
            divisor=cfg.number("input_divisor", 255.0, positive=True),
            color=cfg.text("color", "RGB", ("RGB", "BGR")),
            template=np.asarray(cfg.numbers("template", default_template, count=10)).reshape(5, 2),
        )

    def align(self, bgr: np.ndarray, keypoints5: np.ndarray) -> np.ndarray:
        """The face in ``bgr`` warped onto this embedder's template: ``size`` x ``size`` BGR uint8."""
        return align_face(bgr, keypoints5, self.size, self.template)

    def preprocess(self, aligned_bgr: np.ndarray) -> np.ndarray:
        """An aligned ``size`` x ``size`` BGR uint8 face -> (3, size, size) float32 (in ``color``
        order, normalised).  Stack rows with ``np.stack`` for a batch."""
        if aligned_bgr.shape != (self.size, self.size, 3):
            raise ValueError(f"expected an aligned {self.size}x{self.size}x3 face, got {aligned_bgr.shape}")
        img = aligned_bgr[:, :, ::-1] if self.color == "RGB" else aligned_bgr
        chw = img.transpose(2, 0, 1).astype(np.float32)
        return (chw * self._scale + self._shift).astype(np.float32)

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
