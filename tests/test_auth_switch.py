"""Authentication can be switched off only explicitly, and the service says so loudly."""

from __future__ import annotations

import asyncio
import logging

import pytest

from liveness.app import LivenessApp
from liveness.errors import MISSING_API_KEY, LivenessError
from liveness.settings import Settings


def test_auth_off_accepts_requests_without_a_key_and_warns(model_repository, media, caplog):
    with caplog.at_level(logging.WARNING, logger="liveness"):
        app = LivenessApp(Settings(model_repository=model_repository, auth_enabled=False))
    try:
        assert any("AUTHENTICATION IS DISABLED" in r.getMessage() for r in caplog.records)
        data = (media / "images" / "silentface_image_T1.jpg").read_bytes()
        assert asyncio.run(app.check_image(None, data)).is_live
    finally:
        app.close()


def test_auth_is_on_by_default(model_repository, media, tmp_path):
    app = LivenessApp(Settings(model_repository=model_repository, db_path=tmp_path / "k.sqlite3"))
    try:
        data = (media / "images" / "silentface_image_T1.jpg").read_bytes()
        with pytest.raises(LivenessError) as e:
            asyncio.run(app.check_image(None, data))
        assert e.value.kind is MISSING_API_KEY
    finally:
        app.close()
