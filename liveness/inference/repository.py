"""Read the Triton-layout model repository: configs, versions, file digests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from liveness.inference import pbtxt


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
        name=pbtxt.first(cfg, "name", model_dir.name),
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
