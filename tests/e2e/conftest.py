"""End-to-end fixtures: the served Bento (``bentoml serve service:Liveness``) on a free port,
keys issued through the admin CLI, and the shared dev media (used by path, never copied).

One server is shared by the whole e2e session (starting one takes a few seconds on 2 cores);
``server_factory`` starts extra servers, e.g. a second one on the same key DB for the restart test.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from liveness.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
MEDIA = REPO.parent / "shared" / "media" / "dev"
IMAGES = MEDIA / "images"
T1 = IMAGES / "silentface_image_T1.jpg"
F1 = IMAGES / "silentface_image_F1.jpg"
F2 = IMAGES / "silentface_image_F2.jpg"

# Reference Silent-Face pipeline scores for the spoof samples.
REFERENCE_SCORES = {"F1": 0.0723, "F2": 0.1813}
SCORE_TOL = 1e-3

# Test modules import the helpers below as ``e2e_conftest``: the bare name ``conftest`` is
# ambiguous next to tests/conftest.py.
sys.modules.setdefault("e2e_conftest", sys.modules[__name__])

BENTOML = str(Path(sys.executable).parent / "bentoml")
READY_TIMEOUT_S = 300.0  # a deadline for a hung start only: a busy 2-core machine starts slowly



def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Everything under tests/e2e is an e2e test, whether or not the module marks itself.
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


# ----------------------------------------------------------------------------- helpers


def read_bytes(path: Path) -> bytes:
    if not path.is_file():
        pytest.fail(f"test media missing: {path}")
    return path.read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def post_partial_body(port: int, path: str, headers: dict[str, str], announced: int, first_chunk: bytes,
                      timeout: float = 60.0) -> tuple[bytes, bytes]:
    """POST ``path`` over a plain socket announcing a body of ``announced`` bytes (Content-Length)
    but sending only ``first_chunk`` of it, then read the response (up to its Content-Length, or
    until the server closes): (its status line and headers, its body)."""
    head = "".join([f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n",
                    *(f"{name}: {value}\r\n" for name, value in headers.items()),
                    f"Content-Length: {announced}\r\n\r\n"]).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head + first_chunk)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.find(b"\r\n\r\n") + 4 + _content_length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status_and_headers, _, body = data.partition(b"\r\n\r\n")
    return status_and_headers, body


def _content_length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def _clean_env(db_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVENESS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["LIVENESS_DB_PATH"] = str(db_path)
    env.update(extra or {})
    return env


def run_cli(db_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "liveness", *args],
        cwd=REPO, env=_clean_env(db_path), capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"CLI {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class ApiKey(str):
    """A raw API key (the str value) that remembers its name and DB, for ``usage``."""

    name: str
    db_path: Path

    def __new__(cls, raw: str, name: str, db_path: Path) -> "ApiKey":
        obj = super().__new__(cls, raw)
        obj.name = name
        obj.db_path = db_path
        return obj


def create_key(db_path: Path, limit: int, period: str = "total", name: str | None = None) -> ApiKey:
    name = name or f"e2e-{uuid.uuid4().hex[:10]}"
    proc = run_cli(db_path, "keys", "create", "--name", name, "--limit", str(limit), "--period", period)
    raw = proc.stdout.strip().splitlines()[-1].strip()
    assert raw.startswith("lk_"), proc.stdout
    return ApiKey(raw, name, db_path)


def key_usage(key: ApiKey) -> dict:
    """``python -m liveness keys usage <name> --json``."""
    return json.loads(run_cli(key.db_path, "keys", "usage", key.name, "--json").stdout)


# ----------------------------------------------------------------------------- server


@dataclass
class Server:
    port: int
    db_path: Path
    log_path: Path
    proc: subprocess.Popen = field(repr=False)
    grpc_port: int = 0  # every server gets its own free gRPC port (LIVENESS_GRPC_PORT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"bentoml serve exited with code {self.proc.returncode} before becoming ready.\n"
                    f"--- server log tail ---\n{self.log_tail()}"
                )
            try:
                r = httpx.get(self.url + "/readyz", timeout=2.0)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                last = type(e).__name__
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"server on port {self.port} not ready after {timeout:.0f}s (last /readyz: {last}).\n"
            f"--- server log tail ---\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        # Workers may outlive the arbiter for a moment; make sure the group is gone.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_server(db_path: Path, log_dir: Path, extra_env: dict[str, str] | None = None) -> Server:
    # Never the default 50051 for gRPC: servers of parallel sessions would share it (SO_REUSEPORT).
    port, grpc_port = free_ports(2)
    # Its own BENTOML_HOME: `bentoml serve` empties the Prometheus multiprocess folder under the
    # home at start-up, so servers sharing one wiped each other's /metrics (a flake of the
    # metrics tests whenever a module started a second server while the shared one ran).
    home = log_dir / f"bentoml-home-{port}"
    extra_env = {"LIVENESS_GRPC_PORT": str(grpc_port), "BENTOML_HOME": str(home), **(extra_env or {})}
    log_path = log_dir / f"server-{port}.log"
    log = open(log_path, "wb")
    try:
        proc = subprocess.Popen(
            [BENTOML, "serve", "service:Liveness", "--port", str(port)],
            cwd=REPO, env=_clean_env(db_path, extra_env),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()
    server = Server(port=port, db_path=db_path, log_path=log_path, proc=proc,
                    grpc_port=int(extra_env["LIVENESS_GRPC_PORT"]))
    try:
        server.wait_ready()
    except RuntimeError as e:
        server.stop()
        pytest.fail(str(e), pytrace=False)
    return server


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def db_path(e2e_dir: Path) -> Path:
    return e2e_dir / "keys.sqlite3"


@pytest.fixture(scope="session")
def server(db_path: Path, e2e_dir: Path) -> Iterator[Server]:
    srv = start_server(db_path, e2e_dir)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers on demand (``factory(db_path)``); every one is stopped at teardown."""
    started: list[Server] = []

    def factory(db: Path, extra_env: dict[str, str] | None = None) -> Server:
        srv = start_server(db, tmp_path, extra_env)
        started.append(srv)
        return srv

    try:
        yield factory
    finally:
        for srv in started:
            srv.stop()


@pytest.fixture(scope="session")
def make_key(db_path: Path) -> Callable[..., ApiKey]:
    """``make_key(limit, period="total")`` -> a fresh raw key on the shared server's DB."""

    def make(limit: int, period: str = "total") -> ApiKey:
        return create_key(db_path, limit, period)

    return make


@pytest.fixture(scope="session")
def usage() -> Callable[[ApiKey], dict]:
    return key_usage


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        yield c


# ----------------------------------------------------------------------------- triton backend
# A real tritonserver (Python backend + ONNX Runtime, from .venv-triton) on the Python-backend twin
# of model_repository, and a Bento with LIVENESS_BACKEND=triton in front of it.  Tests using these
# are skipped only when .venv-triton is missing.


def require_triton_venv() -> None:
    from liveness.inference.triton_server import triton_venv

    if not (triton_venv() / "bin" / "python").exists():
        pytest.skip(f"{triton_venv()} missing: create it with `make triton-venv`")


def triton_env(triton, repository: Path, protocol: str = "grpc", **extra: str) -> dict[str, str]:
    """Environment of a Bento that serves through ``triton`` (a TritonServer).

    The per-call inference timeout is generous (a busy machine can queue a burst for seconds);
    the test of the timeout itself sets its own ``LIVENESS_TRITON_TIMEOUT_S``."""
    return {
        "LIVENESS_BACKEND": "triton",
        "LIVENESS_TRITON_PROTOCOL": protocol,
        "LIVENESS_TRITON_URL": triton.grpc_url if protocol == "grpc" else triton.http_url,
        "LIVENESS_MODEL_REPOSITORY": str(repository),  # the repository Triton serves
        "LIVENESS_TRITON_TIMEOUT_S": "60",
        **extra,
    }


@pytest.fixture(scope="session")
def triton_repository(e2e_dir: Path) -> Path:
    require_triton_venv()
    from converters.triton_python import write_python_backend_repository

    dst = e2e_dir / "triton-repository"
    write_python_backend_repository(REPO / "model_repository", dst)
    return dst


@pytest.fixture(scope="session")
def triton_server(triton_repository: Path, e2e_dir: Path):
    """Explicit model control, nothing loaded: the Bento loads what it needs."""
    from liveness.inference.triton_server import TritonServer

    srv = TritonServer(triton_repository, model_control="explicit", log_path=e2e_dir / "tritonserver.log")
    srv.start(timeout=300)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def triton_bento(triton_server, triton_repository: Path, db_path: Path, e2e_dir: Path) -> Iterator[Server]:
    srv = start_server(db_path, e2e_dir, triton_env(triton_server, triton_repository))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def triton_client(triton_bento: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=triton_bento.url, timeout=60.0) as c:
        yield c


# ----------------------------------------------------------------------------- media


@pytest.fixture(scope="session")
def t1_jpeg() -> bytes:
    return read_bytes(T1)


@pytest.fixture(scope="session")
def f1_jpeg() -> bytes:
    return read_bytes(F1)


@pytest.fixture(scope="session")
def f2_jpeg() -> bytes:
    return read_bytes(F2)


def gif_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 30, 200)).save(buf, format="GIF")
    return buf.getvalue()


PDF_BYTES = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


def truncated_jpeg(jpeg: bytes) -> bytes:
    return jpeg[: len(jpeg) // 2]


def gray_jpeg(width: int = 640, height: int = 480) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_header_png(width: int = 30000, height: int = 30000) -> bytes:
    """A small (~110 KB) but fully valid 1-bit greyscale PNG that declares width x height pixels
    (all-black rows, deflated in a stream so it never exists uncompressed in memory)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed 1-bit pixels
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def bomb_png() -> bytes:
    data = huge_header_png()
    assert len(data) < 1024 * 1024, len(data)
    return data
