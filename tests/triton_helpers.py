"""Shared pieces of the tests that start a real tritonserver (tests/test_triton_*.py): their marks,
the server as a context manager for a module fixture, and an HTTP client fixture of the module's
``server`` (imported by those modules, as ``tests.triton_helpers``).

Importing this module skips the importing test module when tritonclient is not installed."""

from __future__ import annotations

from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from liveness.inference.triton_server import TritonServer, triton_venv

TRITON_MARKS = [
    pytest.mark.triton,
    pytest.mark.skipif(
        not (triton_venv() / "bin" / "python").exists(),
        reason=f"{triton_venv()} missing: create it with `make triton-venv`",
    ),
]
httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[grpc,http] not installed in this venv")


@contextmanager
def running_triton(repository: Path, log_path: Path, **options: Any) -> Iterator[TritonServer]:
    """A ready tritonserver on ``repository`` (explicit model control; ``options`` as
    ``TritonServer`` takes them, e.g. ``load=[...]``), stopped after the block."""
    srv = TritonServer(repository, model_control="explicit", log_path=log_path, **options)
    seconds = srv.start(timeout=120)
    print(f"\ntritonserver ready in {seconds:.2f}s (http {srv.http_port}, grpc {srv.grpc_port})")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def http(server):
    """An HTTP client of the module's ``server`` fixture, closed after the module."""
    with closing(httpclient.InferenceServerClient(server.http_url)) as client:
        yield client
