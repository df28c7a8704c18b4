from __future__ import annotations

from pathlib import Path

import asyncio
import os
import tempfile

import pytest

# Stores opened by in-process tests go to a throw-away file, never the repo's data/ folder.
os.environ.setdefault("LIVENESS_DB_PATH", os.path.join(tempfile.mkdtemp(prefix="liveness-tests-"), "liveness.sqlite3"))

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media" / "dev"
SOURCES = REPO.parent / "shared" / "models"
MODEL_REPOSITORY = REPO / "model_repository"


@pytest.fixture(scope="session")
def media() -> Path:
    if not MEDIA.is_dir():
        pytest.fail(f"test media not found at {MEDIA} (../shared must sit beside the repo)")
    return MEDIA


@pytest.fixture(scope="session")
def model_repository() -> Path:
    if not (MODEL_REPOSITORY / "build_report.json").is_file():
        pytest.fail("model_repository is not built; run `make models`")
    return MODEL_REPOSITORY


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def closed_after():
    """``closed_after(x)`` -> ``x``, closed after the test (in the order they were given): for
    factory fixtures that open stores or apps."""
    opened = []

    def keep(obj):
        opened.append(obj)
        return obj

    yield keep
    for obj in opened:
        obj.close()


@pytest.fixture(params=["sqlite", "mongo"])
def store_of(request, tmp_path):
    """``store_of(SqliteX, MongoX)``: a store of that family on a real SQLite file, then on
    mongomock (no MongoDB server installs here); closed after the test."""
    import mongomock

    opened = []

    def open_store(sqlite_cls, mongo_cls):
        if request.param == "sqlite":
            s = sqlite_cls(tmp_path / "db.sqlite3")  # a second call opens the same data, like a restart
        else:
            s = mongo_cls(mongomock.MongoClient())
        opened.append(s)
        return s

    yield open_store
    for s in opened:
        s.close()


@pytest.fixture(scope="module")
def app(model_repository):
    """The real pipeline in-process (embedded ONNX Runtime, real models, no auth)."""
    from liveness.app import LivenessApp
    from liveness.settings import Settings

    a = LivenessApp(Settings(model_repository=model_repository, auth_enabled=False))
    yield a
    a.close()
