"""One typed settings object.  Precedence: environment (``LIVENESS_*``) > TOML file > defaults.

The TOML file is optional and named by ``LIVENESS_CONFIG_FILE`` (default ``liveness.toml`` in
the working directory if it exists).  README "Configuration" documents every field.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = Path(os.environ.get("LIVENESS_CONFIG_FILE", "liveness.toml"))
        self._data: dict[str, Any] = tomllib.loads(path.read_text()) if path.is_file() else {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIVENESS_", extra="ignore")

    # Models
    model_repository: Path = Path("model_repository")
    detector: Literal["retinaface", "yunet"] = "retinaface"
    detector_confidence: float = Field(0.6, ge=0.0, le=1.0)
    antispoof_models: tuple[str, ...] = ("minifasnet_v2", "minifasnet_v1se")

    # Decision
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    multi_face_policy: Literal["reject", "biggest"] = "biggest"
    # A second face whose area is below this fraction of the biggest one is background noise,
    # not a second person at the camera; it does not trigger the ``reject`` policy.
    multi_face_min_area_ratio: float = Field(0.25, ge=0.0, le=1.0)
    min_face_size: int = Field(64, ge=1)  # px, shorter side of the face box; below -> quality flag

    # Input limits, checked before any pixel is decoded
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=1024)

    # Inference
    backend: Literal["embedded", "triton"] = "embedded"
    triton_url: str = "127.0.0.1:8001"  # gRPC by default; host:port
    triton_protocol: Literal["grpc", "http"] = "grpc"
    triton_timeout_s: float = Field(5.0, gt=0)  # per inference call; then 503 + Retry-After
    model_policy_file: Path = Path("model_policy.toml")  # per-model version policy (optional file)
    ort_intra_op_threads: int = Field(1, ge=1)
    inference_concurrency: int = Field(2, ge=1)  # batches in flight per model
    cpu_threads: int = Field(2, ge=1)  # decode / crop worker threads

    # Keys and quotas
    auth_enabled: bool = True
    # sha256 (hex) of the admin key for /v1/admin/*; unset = admin API off.  `liveness admin-key`.
    admin_key_sha256: str | None = None
    db_path: Path = Path("data/liveness.sqlite3")
    mongodb_uri: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _TomlSource(settings_cls)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
