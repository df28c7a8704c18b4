"""The start-up check of every model name the settings configure: each must be a folder of the
model repository whose config.pbtxt ``role`` is the one its setting needs, with an
``architecture`` a module of that role runs (``liveness.inference.repository.resolve_architecture``).

=======================  ===================================================================
setting                  needs
=======================  ===================================================================
``detector``             role ``detector``, architecture ``retinaface`` or ``yunet``
``detector_fallback_model``  role ``detector`` with keypoints (``yunet``) (when the fallback's YuNet
                         passes run: ``detector_fallback``, ``detector_fallback_sides`` and a
                         ``detector`` that is no YuNet itself)
``antispoof_models``     role ``antispoof`` (its parameters, liveness.antispoof.spec, are checked
                         when the pipeline builds it: AntiSpoofConfigError)
``landmark_models``      role ``landmarks``: one ``facemesh`` and one ``iris`` (when
                         ``challenges_enabled``)
``verification_models``  one role ``detector`` with keypoints (``yunet``) and one role
                         ``embedder`` (``mobilefacenet``) (when ``verification_enabled``)
=======================  ===================================================================

A wrong name refuses the start with one ``ModelRoleError`` listing every problem, e.g.
``antispoof_models names model 'retinaface', a model with role 'detector' (...); it needs a model
with role 'antispoof'``.
"""

from __future__ import annotations

from typing import Callable

from liveness.detection.modules import DETECTORS, detector_from_config
from liveness.inference.repository import ModelConfig, ModelConfigError, ModelRoleError, resolve_architecture
from liveness.landmarks.measure import LandmarkModels
from liveness.recognition.verify import verification_models
from liveness.settings import Settings

ConfigOf = Callable[[str], ModelConfig]

__all__ = ["ModelRoleError", "check_model_roles"]


def _configs(config_of: ConfigOf, setting: str, names: tuple[str, ...], problems: list[str]) -> list[ModelConfig] | None:
    out = []
    for name in names:
        try:
            out.append(config_of(name))
        except FileNotFoundError as e:
            problems.append(f"{setting} names model {name!r}, which is not in the model repository ({e})")
    return out if len(out) == len(names) else None


def _is_yunet(cfg: ModelConfig) -> bool:
    try:
        return resolve_architecture(cfg, "detector", DETECTORS) == "yunet"
    except ModelConfigError:
        return False  # reported by the detector's own check


def check_model_roles(settings: Settings, config_of: ConfigOf) -> None:
    """Raise ``ModelRoleError`` unless every configured model has the role its setting needs."""
    problems: list[str] = []

    def check(fn: Callable[[], object]) -> None:
        try:
            fn()
        except ModelConfigError as e:  # ModelRoleError included
            problems.append(str(e))

    det = _configs(config_of, "detector", (settings.detector,), problems)
    if det:
        check(lambda: detector_from_config(det[0], settings.detector_confidence, setting="detector"))
    if settings.detector_fallback and settings.detector_fallback_sides and det and not _is_yunet(det[0]):
        fb = _configs(config_of, "detector_fallback_model", (settings.detector_fallback_model,), problems)
        if fb:
            check(lambda: detector_from_config(fb[0], settings.detector_confidence,
                                               setting="detector_fallback_model", keypoints=True))
    # Roles only: an anti-spoof model's parameters are checked when it is built
    # (AntiSpoofSpec.from_config raises AntiSpoofConfigError naming the parameter).
    for cfg in _configs(config_of, "antispoof_models", settings.antispoof_models, problems) or ():
        if cfg.role not in ("", "antispoof"):
            problems.append(f"antispoof_models names model {cfg.name!r}, a model with role {cfg.role!r} "
                            f"({cfg.path / 'config.pbtxt'}); it needs a model with role 'antispoof'")
    if settings.challenges_enabled:
        lm = _configs(config_of, "landmark_models", settings.landmark_models, problems)
        if lm is not None:
            check(lambda: LandmarkModels.from_configs(lm, "landmark_models"))
    if settings.verification_enabled:
        vm = _configs(config_of, "verification_models", settings.verification_models, problems)
        if vm is not None:
            check(lambda: verification_models(vm, "verification_models"))
    if problems:
        raise ModelRoleError("the configured models do not fit their settings:\n  " + "\n  ".join(problems))
