"""Fixtures of the edge adapter tests: the real core (``LivenessApp``: SQLite key store, charging,
routing, pipeline) on the fake inference backend (tests/fakes.py), in ``tmp_path``."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from liveness.sessions import SessionService
from liveness.settings import Settings
from tests.edge.helpers import FACE
from tests.fakes import MODEL_REPOSITORY, FakeBackend, FakeClock, fake_app, retinaface_responder


@pytest.fixture
def make_core(tmp_path, monkeypatch, closed_after) -> Callable[..., Any]:
    """``make_core(backend=None, **settings)`` -> a LivenessApp on a FakeBackend (by default one
    that finds ``FACE`` in every image, p(live) 0.9 from both anti-spoof models); closed after
    the test.  Its key store is ``app.keys`` (SQLite in tmp_path).  Face verification is off
    unless a test turns it on (``verification_enabled=True``)."""

    def make(backend: FakeBackend | None = None, **overrides: Any) -> Any:
        settings = Settings(**{
            "model_repository": MODEL_REPOSITORY, "db_path": tmp_path / "db.sqlite3",
            "model_policy_file": tmp_path / "no-policy.toml", "jwt_secret": "j" * 32,
            "verification_enabled": False, **overrides,
        })
        if backend is None:
            backend = FakeBackend(retinaface=retinaface_responder([FACE]))
        return closed_after(fake_app(settings, backend, monkeypatch))

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sessions(core, clock) -> Iterator[SessionService]:
    """A SessionService on the module's ``core`` fixture and the test's ``clock``, closed after
    the test."""
    service = SessionService(core, core.settings, clock=clock)
    yield service
    service.close()

