"""The detector module for a configured model: chosen by the ``role`` and ``architecture``
parameters of its config.pbtxt, never by the model's (folder) name."""

from __future__ import annotations

from typing import Union

from liveness.detection.retinaface import RetinaFace
from liveness.detection.yunet import YuNet
from liveness.inference.repository import ModelConfig, ModelRoleError, resolve_architecture

Detector = Union[RetinaFace, YuNet]
# architecture -> module class (each has ``from_config(cfg, confidence)``)
DETECTORS: dict[str, type[RetinaFace] | type[YuNet]] = {"retinaface": RetinaFace, "yunet": YuNet}


def detector_from_config(
    cfg: ModelConfig, confidence: float = 0.6, *, setting: str | None = "detector", keypoints: bool = False
) -> Detector:
    """The detector module for ``cfg`` (role ``detector``).  ``keypoints``: refuse an architecture
    that gives no five keypoints (face alignment needs them).  Raises ``ModelRoleError``."""
    arch = resolve_architecture(cfg, "detector", DETECTORS, setting)
    cls = DETECTORS[arch]
    if keypoints and not cls.gives_keypoints:
        have = ", ".join(a for a, c in DETECTORS.items() if c.gives_keypoints)
        where = f"{setting} names" if setting else "model"
        raise ModelRoleError(f"{where} detector {cfg.name!r} (architecture {arch!r}), which gives no facial "
                             f"keypoints; face alignment needs a keypoint detector ({have})")
    return cls.from_config(cfg, confidence)
