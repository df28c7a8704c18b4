"""Per-model serving policy, read from one TOML file (``LIVENESS_MODEL_POLICY``) and changed at
run time by rollout operations.

    [minifasnet_v2]
    mode = "canary"      # latest | pin | canary | shadow
    version = 1          # the stable version (pin/canary/shadow); omitted = latest on disk
    candidate = 2        # canary or shadow version
    percent = 10         # canary: % of API keys (sticky); shadow: % of requests sampled
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

Mode = Literal["latest", "pin", "canary", "shadow"]
MODES: tuple[str, ...] = ("latest", "pin", "canary", "shadow")


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class ModelPolicy:
    mode: Mode = "latest"
    version: int | None = None
    candidate: int | None = None
    percent: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PolicyError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.mode == "pin" and self.version is None:
            raise PolicyError("mode 'pin' needs a version")
        if self.mode in ("canary", "shadow"):
            if self.candidate is None:
                raise PolicyError(f"mode {self.mode!r} needs a candidate version")
            if not 0 <= self.percent <= 100:
                raise PolicyError("percent must be within 0..100")

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelPolicy":
        unknown = set(d) - {"mode", "version", "candidate", "percent"}
        if unknown:
            raise PolicyError(f"unknown policy fields: {sorted(unknown)}")
        return cls(
            mode=d.get("mode", "latest"),
            version=int(d["version"]) if d.get("version") is not None else None,
            candidate=int(d["candidate"]) if d.get("candidate") is not None else None,
            percent=float(d.get("percent", 0.0)),
        )


def load_policy_file(path: Path | None) -> dict[str, ModelPolicy]:
    if path is None or not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
        return {model: ModelPolicy.from_dict(d) for model, d in data.items()}
    except (tomllib.TOMLDecodeError, TypeError, ValueError) as e:
        raise PolicyError(f"{path}: {e}") from e
