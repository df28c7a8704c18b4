"""Start and stop a real ``tritonserver`` (the one inside the ``nvidia-pytriton`` wheel).

Stdlib only: this runs from the main venv while the server, its Python backend stub and the
models' ``model.py`` run in ``.venv-triton`` (numpy<2, ONNX Runtime), see ``make triton``.

    with TritonServer(repo, http_port=8000, grpc_port=8001, metrics_port=8002) as server:
        ...  # server.http_url is ready

The wheel's binary needs, besides its own ``nvidia_pytriton.libs``: the Python backend stub for the
venv's Python version copied into ``backends/python/`` (prepared once under ``.triton/``), the
interpreter's own libdir on ``LD_LIBRARY_PATH`` (or the stub loads a mismatched system libpython),
and the venv's ``bin`` first on ``PATH`` (the stub's interpreter then uses the venv's site-packages).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

from liveness.ports import free_ports

REPO = Path(__file__).resolve().parents[2]


class TritonUnavailable(RuntimeError):
    """The Triton venv (or something inside it) is missing."""


def triton_venv() -> Path:
    return Path(os.environ.get("LIVENESS_TRITON_VENV", REPO / ".venv-triton"))


def triton_cache() -> Path:
    return Path(os.environ.get("LIVENESS_TRITON_CACHE", REPO / ".triton"))


@dataclass(frozen=True)
class Distribution:
    venv: Path
    python_version: str  # "3.11"
    python_libdir: Path  # holds libpython3.X.so.1.0 of the venv's interpreter
    dist: Path  # site-packages/pytriton/tritonserver
    libs: Path  # site-packages/nvidia_pytriton.libs

    @property
    def binary(self) -> Path:
        return self.dist / "bin" / "tritonserver"

    @classmethod
    def locate(cls, venv: Path | None = None) -> "Distribution":
        venv = Path(venv or triton_venv())
        python = venv / "bin" / "python"
        if not python.exists():
            raise TritonUnavailable(f"{venv} is not a venv; run `make triton`")
        probe = subprocess.run(
            [str(python), "-c", "import sys, sysconfig; print('%d.%d' % sys.version_info[:2]);"
             " print(sysconfig.get_config_var('LIBDIR')); print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True, env={"PATH": os.environ.get("PATH", "")},
        )
        version, libdir, site = probe.stdout.split("\n")[:3]
        dist = Path(site) / "pytriton" / "tritonserver"
        found = cls(venv, version, Path(libdir), dist, Path(site) / "nvidia_pytriton.libs")
        for need in (found.binary, found.libs, found.stub, dist / "backends" / "python" / "libtriton_python.so"):
            if not need.exists():
                raise TritonUnavailable(f"{need} missing; is nvidia-pytriton installed in {venv}? (`make triton`)")
        return found

    @property
    def stub(self) -> Path:
        return self.dist / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"

    def backends(self, cache: Path | None = None) -> Path:
        """``<cache>/backends`` with the Python backend and this Python's stub; idempotent, atomic."""
        root = Path(cache or triton_cache()) / f"backends-py{self.python_version}"
        target = root / "python"
        target.mkdir(parents=True, exist_ok=True)
        sources = [p for p in (self.dist / "backends" / "python").iterdir() if p.is_file()] + [self.stub]
        for src in sources:
            dst = target / src.name
            st = src.stat()
            if dst.exists() and dst.stat().st_size == st.st_size and int(dst.stat().st_mtime) == int(st.st_mtime):
                continue
            tmp = target / f".{src.name}.{os.getpid()}"
            shutil.copy2(src, tmp)
            os.replace(tmp, dst)  # a running server keeps the old inode
        return root

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [str(self.libs), str(self.python_libdir)] + [p for p in [os.environ.get("LD_LIBRARY_PATH")] if p]
        )
        env["PATH"] = os.pathsep.join([str(self.venv / "bin"), os.environ.get("PATH", "/usr/bin:/bin")])
        env["VIRTUAL_ENV"] = str(self.venv)
        env.setdefault("OMP_NUM_THREADS", "1")
        return env


class TritonServer:
    def __init__(
        self,
        repository: Path,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        model_control: Literal["none", "explicit", "poll"] = "none",
        load: Iterable[str] = (),
        log_path: Path | None = None,
        host: str = "127.0.0.1",
        venv: Path | None = None,
        extra_args: Iterable[str] = (),
    ):
        self.repository = Path(repository).resolve()
        spare = iter(free_ports(3))
        self.http_port = http_port or next(spare)
        self.grpc_port = grpc_port or next(spare)
        self.metrics_port = metrics_port or next(spare)
        self.model_control = model_control
        self.load = list(load)
        self.host = host
        self.venv = venv
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path) if log_path else triton_cache() / "logs" / f"tritonserver-{self.http_port}.log"
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def http_url(self) -> str:  # for tritonclient.http: "host:port"
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def command(self, dist: Distribution) -> list[str]:
        cmd = [
            str(dist.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={dist.backends()}",
            f"--model-control-mode={self.model_control}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false", "--allow-cpu-metrics=true",
            "--exit-on-error=true", "--log-verbose=0",
            # unique shared-memory names: other servers (other test runs) may share /dev/shm
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        cmd += [f"--load-model={name}" for name in self.load]
        return cmd + self.extra_args

    def start(self, timeout: float = 60.0) -> float:
        """Launch and wait for ``/v2/health/ready``; returns the seconds it took."""
        if self.process is not None:
            raise RuntimeError("already started")
        dist = Distribution.locate(self.venv)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(dist), env=dist.env(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        while time.perf_counter() - t0 < timeout:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"tritonserver exited with {code} during start:\n{self.log_tail()}")
            if self.is_ready():
                self.startup_seconds = time.perf_counter() - t0
                return self.startup_seconds
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"tritonserver not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, OSError):
            return 0

    def is_ready(self) -> bool:
        return self.process is not None and self.process.poll() is None and self._get("/v2/health/ready") == 200

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGINT (Triton unloads models and stops its stubs), then SIGKILL to its own process group."""
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # session started by us: pgid == pid
                proc.wait()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the server and its stubs (a crash, for failure tests); clears its shared memory."""
        proc, self.process = self.process, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        for leftover in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            leftover.unlink(missing_ok=True)

    @property
    def shm_prefix(self) -> str:
        return f"liveness_{os.getpid()}_{self.http_port}_"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> "TritonServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m liveness.inference.triton_server serve --repository R [-- COMMAND...]``

    Starts tritonserver and waits until it is ready; then runs COMMAND (e.g. ``bentoml serve``) and
    stops Triton when COMMAND exits, or, without COMMAND, serves until SIGINT/SIGTERM."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m liveness.inference.triton_server", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("serve", help="run tritonserver (and optionally a command while it runs)")
    sp.add_argument("--repository", type=Path, default=triton_cache() / "repository")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--http-port", type=int, default=8000)
    sp.add_argument("--grpc-port", type=int, default=8001)
    sp.add_argument("--metrics-port", type=int, default=8002)
    sp.add_argument("--model-control", choices=["none", "explicit", "poll"], default="explicit")
    sp.add_argument("--load", action="append", default=[], help="model to load at start (repeatable)")
    sp.add_argument("--log", type=Path, default=None, help="server log file (default under .triton/logs)")
    sp.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS... to run while Triton serves")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    server = TritonServer(args.repository, args.http_port, args.grpc_port, args.metrics_port, args.model_control,
                          args.load, log_path=args.log, host=args.host)
    stopping = False

    def on_signal(signum, _frame):  # SIGTERM: stop the command (if any), then Triton
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    child: subprocess.Popen | None = None
    signal.signal(signal.SIGTERM, on_signal)
    try:
        seconds = server.start(timeout=120)
        print(f"tritonserver ready in {seconds:.1f}s: http {server.http_url}, grpc {server.grpc_url}, "
              f"metrics {server.host}:{server.metrics_port}; log {server.log_path}", file=sys.stderr, flush=True)
        if command:
            child = subprocess.Popen(command)
            while True:
                try:
                    return child.wait()
                except KeyboardInterrupt:  # Ctrl-C reached the command too; wait for it to finish
                    continue
        while not stopping and server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
        return 0 if stopping else 1
    except KeyboardInterrupt:
        return 0
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
