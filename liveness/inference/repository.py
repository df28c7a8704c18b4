"""Read the Triton-layout model repository: configs, versions, file digests.

What a model *is* comes from its ``config.pbtxt`` ``parameters`` (string values; Triton ignores
them, the service reads them):

* ``role``: what the service uses it for, one of ``ROLES`` (detector, antispoof, landmarks,
  embedder);
* ``architecture``: which pre/post-processing code drives it (retinaface, yunet, facemesh, iris,
  mobilefacenet; anti-spoof models need none, ``liveness.antispoof.spec`` describes them fully);
* the preprocessing numbers that module reads (mean, std, colour, input size, template, ...).

So a model is found by its folder name (what the settings name), and what runs it by role and
architecture (``resolve_architecture``): a renamed copy of a folder works under its new name.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from liveness.inference import pbtxt

ROLES = ("detector", "antispoof", "landmarks", "embedder")


class ModelConfigError(ValueError):
    """A config.pbtxt cannot drive the module it is configured for (names the model and parameter)."""


class ModelRoleError(ModelConfigError):
    """A configured model has the wrong role (or an architecture no module of that role runs)."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class ModelConfig:
    name: str
    path: Path
    max_batch_size: int
    max_queue_delay_us: int
    preferred_batch_sizes: tuple[int, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    versions: tuple[int, ...]  # present on disk, ascending
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def latest(self) -> int:
        return self.versions[-1]

    def model_file(self, version: int) -> Path:
        return self.path / str(version) / "model.onnx"

    def param(self, key: str) -> str:
        try:
            return self.parameters[key]
        except KeyError:
            raise KeyError(f"model {self.name}: config.pbtxt has no parameter {key!r}") from None

    @property
    def role(self) -> str:
        """The ``role`` parameter ("" when the config has none)."""
        return self.parameters.get("role", "").strip()

    @property
    def architecture(self) -> str:
        """The ``architecture`` parameter ("" when the config has none; see ``resolve_architecture``)."""
        return self.parameters.get("architecture", "").strip()

    # -- typed parameters: a missing key gives ``default``; a malformed value is an error naming
    # -- the model, its file and the key (a default of None makes the key required).

    def error(self, message: str) -> ModelConfigError:
        return ModelConfigError(f"model {self.name!r} ({self.path / 'config.pbtxt'}): {message}")

    def _raw(self, key: str, default: object) -> str | None:
        value = self.parameters.get(key)
        if value is None or not value.strip():
            if default is None:
                raise self.error(f"parameter {key!r} is missing")
            return None
        return value.strip()

    def text(self, key: str, default: str | None = None, choices: Sequence[str] | None = None) -> str:
        raw = self._raw(key, default)
        value = default if raw is None else raw
        assert value is not None
        if choices is not None and value not in choices:
            raise self.error(f"parameter {key!r} is {value!r}; expected one of {', '.join(choices)}")
        return value

    def number(self, key: str, default: float | None = None, *, positive: bool = False) -> float:
        return self._scalar(key, default, float, "a number", lambda v: math.isfinite(v) and (v > 0 or not positive),
                            f"a {'positive ' if positive else ''}finite number")

    def integer(self, key: str, default: int | None = None, *, positive: bool = False) -> int:
        return self._scalar(key, default, int, "an integer", lambda v: v > 0 or not positive, "a positive integer")

    def _scalar(self, key: str, default: Any, cast: Callable[[str], Any], noun: str,
                ok: Callable[[Any], bool], expected: str) -> Any:
        raw = self._raw(key, default)
        if raw is None:
            return cast(default)
        try:
            v = cast(raw)
        except ValueError:
            raise self.error(f"parameter {key!r} is {raw!r}, not {noun}") from None
        if not ok(v):
            raise self.error(f"parameter {key!r} is {raw!r}; expected {expected}")
        return v

    def numbers(
        self, key: str, default: Sequence[float] | None = None, *, count: int | None = None, positive: bool = False
    ) -> tuple[float, ...]:
        """Comma-separated numbers; with ``count``, exactly that many (one value is repeated)."""
        raw = self._raw(key, default)
        if raw is None:
            return tuple(float(v) for v in default)  # type: ignore[union-attr]
        try:
            vals = [float(p) for p in raw.split(",")]
        except ValueError:
            raise self.error(f"parameter {key!r} is {raw!r}, not comma-separated numbers") from None
        if count is not None and len(vals) == 1:
            vals *= count
        if count is not None and len(vals) != count:
            raise self.error(f"parameter {key!r} is {raw!r}; expected {count} numbers")
        if not all(math.isfinite(v) and (v > 0 or not positive) for v in vals):
            raise self.error(f"parameter {key!r} is {raw!r}; expected {'positive ' if positive else ''}finite numbers")
        return tuple(vals)

    def check_square_input(self, size: int) -> None:
        """The first input must be ``[3, size, size]`` (or dynamic) when the config declares it."""
        if not self.inputs:
            return
        dims = self.inputs[0].dims
        if len(dims) != 3 or dims[0] != 3 or any(d not in (-1, size) for d in dims[1:]):
            raise self.error(f"input {self.inputs[0].name!r} dims {list(dims)} do not match [3, {size}, {size}] "
                             f"(input_size {size})")


def resolve_architecture(cfg: ModelConfig, role: str, known: Iterable[str], setting: str | None = None) -> str:
    """The architecture of ``cfg``, checked to be a model of ``role`` that one of the ``known``
    architectures runs.  Raises ``ModelRoleError`` naming the setting that configured it.

    An older repository (written before the ``architecture`` parameter existed) still works: a
    config without it is taken to be the architecture its folder is named after, when that is a
    known one (``retinaface/``, ``yunet/``, ...); a renamed copy needs the parameter.
    """
    known = tuple(known)
    where = f"{setting} names model {cfg.name!r}" if setting else f"model {cfg.name!r}"
    file = cfg.path / "config.pbtxt"
    arch = cfg.architecture or (cfg.path.name if cfg.path.name in known else "")
    got = cfg.role
    if got and got != role:
        raise ModelRoleError(f"{where}, a model with role {got!r} ({file}); it needs a model with role {role!r}")
    if not arch:
        raise ModelRoleError(f"{where} ({file}), which has no 'architecture' parameter; "
                             f"a {role} model needs one of: {', '.join(known)}")
    if arch not in known:
        raise ModelRoleError(f"{where} ({file}) with architecture {arch!r}; the {role} modules are: {', '.join(known)}")
    return arch


@dataclass(frozen=True)
class ModelVersion:
    """What answered: reported in every response (like Azure's ``modelVersionUsed``)."""

    name: str
    version: int
    sha256: str

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256[:16]}


def _tensors(items: list[dict]) -> tuple[TensorInfo, ...]:
    return tuple(
        TensorInfo(pbtxt.first(t, "name"), tuple(t.get("dims", [])), str(pbtxt.first(t, "data_type"))) for t in items
    )


def load_config(model_dir: Path) -> ModelConfig:
    cfg = pbtxt.loads((model_dir / "config.pbtxt").read_text())
    batching = pbtxt.first(cfg, "dynamic_batching", {})
    params = {
        pbtxt.first(p, "key"): pbtxt.first(pbtxt.first(p, "value", {}), "string_value", "")
        for p in cfg.get("parameters", [])
    }
    versions = tuple(sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and (p / "model.onnx").is_file()))
    if not versions:
        raise FileNotFoundError(f"{model_dir}: no <version>/model.onnx; run `make models`")
    return ModelConfig(
        # The folder name is the model's name (what settings and routing call it): a renamed copy
        # of a folder is that model under its new name even before its ``name:`` is edited (Triton
        # itself wants the two to match).
        name=model_dir.name,
        path=model_dir,
        max_batch_size=int(pbtxt.first(cfg, "max_batch_size", 1)),
        max_queue_delay_us=int(pbtxt.first(batching, "max_queue_delay_microseconds", 0)),
        preferred_batch_sizes=tuple(batching.get("preferred_batch_size", [])),
        inputs=_tensors(cfg.get("input", [])),
        outputs=_tensors(cfg.get("output", [])),
        versions=versions,
        parameters=params,
    )


def load_repository(root: Path) -> dict[str, ModelConfig]:
    if not root.is_dir():
        raise FileNotFoundError(f"model repository {root} does not exist; run `make models`")
    return {d.name: load_config(d) for d in sorted(root.iterdir()) if (d / "config.pbtxt").is_file()}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class LocalRepository:
    """The repository on this machine, read lazily and rescanned when a version is asked for
    that was not there before (a new version folder can appear while serving)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._configs: dict[str, ModelConfig] = {}

    def config(self, model: str) -> ModelConfig:
        cfg = self._configs.get(model)
        if cfg is None:
            model_dir = self.root / model
            if not (model_dir / "config.pbtxt").is_file():
                raise FileNotFoundError(f"model repository {self.root} has no model {model!r}; run `make models`")
            cfg = self._configs[model] = load_config(model_dir)
        return cfg

    def available_versions(self, model: str) -> list[int]:
        self._configs.pop(model, None)
        return list(self.config(model).versions)

    def model_file(self, model: str, version: int) -> Path:
        path = self.config(model).model_file(version)
        if not path.is_file():
            self._configs.pop(model, None)
            path = self.config(model).model_file(version)
            if not path.is_file():
                raise FileNotFoundError(f"{model} has no version {version} in {self.root}")
        return path
