"""A patch of BentoML's private API, pinned to bentoml==1.4.39 (pyproject.toml).

BentoML 1.4.39 rebuilds the pydantic JSON schema of a root-input model on every request
(IORootModel.model_validate_json): 11% of the worker's GIL time under load (py-spy, see
docs/PERFORMANCE.md).  The schema of a class never changes, so compute it once per class.
"""

from __future__ import annotations

from typing import Any

from _bentoml_sdk.io_models import IORootModel

_schema_cache: dict[tuple[type, str], dict[str, Any]] = {}
_original_schema = IORootModel.model_json_schema.__func__  # type: ignore[attr-defined]


def _cached_schema(cls: type, *args: Any, **kwargs: Any) -> dict[str, Any]:
    if args or kwargs:
        return _original_schema(cls, *args, **kwargs)
    key = (cls, "default")
    if key not in _schema_cache:
        _schema_cache[key] = _original_schema(cls)
    return dict(_schema_cache[key])


def cache_root_input_schemas() -> None:
    """Install the cache (idempotent); service.py calls it before declaring the service."""
    IORootModel.model_json_schema = classmethod(_cached_schema)  # type: ignore[method-assign]
