"""The checks of image/smoke.sh (standard library only; any Python 3.8+ runs it).

    smoke_checks.py image LAYOUT BUNDLE OUTDIR [DOCKER_ARCHIVE]   image config + runtime spec -> OUTDIR/run.*
    smoke_checks.py rootfs ROOTFS FORBIDDEN_DIR...                what must not be in the image
    smoke_checks.py free-ports N
    smoke_checks.py wait URL TIMEOUT_S SERVER_PID                 until URL answers 200
    smoke_checks.py get URL STATUS [BODY_SUBSTRING]
    smoke_checks.py liveness BASE_URL KEY IMAGE live|spoof        native and FACIA endpoints
    smoke_checks.py tcp PORT
    smoke_checks.py procs ROOTFS UID                              the server's processes, their user and RSS
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HEALTH_LABEL = "io.liveness.healthcheck"
SECRET_ENV = ("LIVENESS_ADMIN_KEY_SHA256", "LIVENESS_JWT_SECRET", "LIVENESS_MONGODB_URI")


def fail(message: str) -> None:
    print(f"SMOKE FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def ok(message: str) -> None:
    print(f"  ok  {message}", flush=True)


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)
    ok(message)


# -- image config -----------------------------------------------------------------------------------


def _blob(layout: Path, digest: str) -> bytes:
    algorithm, value = digest.split(":", 1)
    return (layout / "blobs" / algorithm / value).read_bytes()


def image(layout_dir: str, bundle_dir: str, outdir: str, docker_archive: str = "") -> None:
    layout, bundle, out = Path(layout_dir), Path(bundle_dir), Path(outdir)
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]))
    config_doc = json.loads(_blob(layout, manifest["config"]["digest"]))
    config = config_doc.get("config", {})
    rootfs = bundle / "rootfs"

    user = config.get("User", "")
    uid, _, gid = user.partition(":")
    check(uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0,
          f"runs as a non-root user ({user!r})")
    ports = set(config.get("ExposedPorts", {}))
    check({"3000/tcp", "50051/tcp"} <= ports, f"exposes HTTP 3000 and gRPC 50051 ({sorted(ports)})")
    volumes = set(config.get("Volumes", {}))
    check("/data" in volumes, f"declares the data volume ({sorted(volumes)})")
    env = dict(item.split("=", 1) for item in config.get("Env", []))
    check(env.get("LIVENESS_DB_PATH", "").startswith("/data/"),
          f"key store inside the volume (LIVENESS_DB_PATH={env.get('LIVENESS_DB_PATH')})")
    check(env.get("BENTOML_HOME", "").startswith("/tmp/"), f"BENTOML_HOME writable ({env.get('BENTOML_HOME')})")
    check(env.get("ORT_DISABLE_TELEMETRY") == "1" and env.get("BENTOML_DO_NOT_TRACK") == "True",
          "ONNX Runtime telemetry and BentoML usage tracking off (ORT_DISABLE_TELEMETRY, BENTOML_DO_NOT_TRACK)")
    leaked = [name for name in env if name in SECRET_ENV or "SECRET" in name or "PASSWORD" in name]
    check(not leaked, f"no secrets in the environment ({sorted(env)})")
    cmd = config.get("Entrypoint") or []
    cmd = [*cmd, *(config.get("Cmd") or [])]
    check("serve" in cmd and "service:Liveness" in cmd, f"command serves the Bento ({' '.join(cmd)})")

    label = config.get("Labels", {}).get(HEALTH_LABEL)
    check(label is not None, f"health probe recorded in label {HEALTH_LABEL}")
    probe = json.loads(label)["test"][1]
    probe_path = rootfs / probe.lstrip("/")
    check(probe_path.is_file() and os.access(probe_path, os.X_OK), f"health probe {probe} is in the image")
    if "Healthcheck" in config:
        ok(f"OCI config carries a Healthcheck: {config['Healthcheck']}")
    else:
        ok("OCI config has no Healthcheck (the OCI image spec has no such field): label + docs instead")
    if docker_archive:
        with tarfile.open(docker_archive) as archive:
            entry = json.load(archive.extractfile("manifest.json"))[0]
            docker_config = json.load(archive.extractfile(entry["Config"]))["config"]
        health = docker_config.get("Healthcheck") or {}
        check(probe in health.get("Test", []), f"docker-archive HEALTHCHECK {health.get('Test')}")

    # How umoci turned the image into a runtime bundle: exactly what a container engine would run.
    spec = json.loads((bundle / "config.json").read_text())
    process = spec["process"]
    check(process["user"]["uid"] == int(uid), f"runtime spec user uid {process['user']['uid']}")
    (out / "run.env").write_text("\n".join(process["env"]) + "\n")
    (out / "run.args").write_text(json.dumps(process["args"]))
    (out / "run.cwd").write_text(process["cwd"])
    (out / "run.user").write_text(f"{process['user']['uid']}:{process['user']['gid']}")
    layers = manifest["layers"]
    ok(f"{len(layers)} layer(s), {sum(layer['size'] for layer in layers) / 2**20:.0f} MiB compressed, "
       f"created {config_doc.get('created', '?')[:19]}")


# -- rootfs contents ------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def rootfs(root_dir: str, *forbidden_dirs: str) -> None:
    root = Path(root_dir)
    app = root / "opt/liveness/app"
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
        files.extend(Path(dirpath) / name for name in filenames)
    rel = [str(p.relative_to(root)) for p in files]

    wheels = [r for r in rel if r.endswith(".whl") or "/wheelhouse" in f"/{r}"]
    check(not wheels, f"no wheel or wheelhouse file ({wheels[:3]})")
    caches = [r for r in rel if r.startswith(("root/.cache", "tmp/", "var/cache/apt/", "var/lib/apt/lists/"))]
    check(not caches, f"no pip/apt cache, nothing in /tmp ({caches[:3]})")
    project_only = [d for d in ("tests", "benchmarks", "converters", "loadtests", "docs", "data", ".venv", ".git")
                    if (app / d).exists()]
    conftests = [r for r in rel if r.startswith("opt/liveness/app/") and r.endswith("conftest.py")]
    check(not project_only and not conftests,
          f"no tests, benchmarks, converters, dev data in the app dir ({project_only + conftests})")
    secrets = [r for r in rel if r.endswith((".sqlite3", ".sqlite3-wal", "liveness.toml")) or r.startswith("data/")]
    check(not secrets, f"no key store, config file or data ({secrets[:3]})")
    check(not (root / "etc/resolv.conf").exists(), "no /etc/resolv.conf from the build host")
    check((app / "edge/_proto/liveness_pb2_grpc.py").is_file(), "gRPC code generated at build time")

    # Byte-identical copies of test media or test files, whatever their name.
    by_size: dict[int, list[Path]] = {}
    for path in files:
        if path.is_file() and not path.is_symlink():
            by_size.setdefault(path.stat().st_size, []).append(path)
    leaks, scanned = [], 0
    for directory in forbidden_dirs:
        for forbidden in Path(directory).rglob("*"):
            if not forbidden.is_file() or forbidden.stat().st_size < 64:
                continue  # tiny files (empty __init__.py, ...) match by accident
            if forbidden.parent.name == "licenses":
                continue  # upstream licence texts: the image ships them on purpose (/opt/liveness/licenses)
            scanned += 1
            candidates = by_size.get(forbidden.stat().st_size, [])
            if candidates:
                digest = _sha256(forbidden)
                leaks += [f"{c.relative_to(root)} == {forbidden}" for c in candidates if _sha256(c) == digest]
    check(not leaks, f"none of {scanned} files of {', '.join(forbidden_dirs)} is in the image ({leaks[:3]})")
    total = sum(p.stat().st_size for p in files if p.is_file() and not p.is_symlink())
    ok(f"{len(files)} files, {total / 2**20:.0f} MiB")


# -- the running service ------------------------------------------------------------------------------


def free_ports(count: str) -> None:
    sockets = []
    for _ in range(int(count)):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in sockets))
    for s in sockets:
        s.close()


def _request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
             timeout: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait(url: str, timeout_s: str, server_pid: str) -> None:
    start = time.monotonic()
    while time.monotonic() - start < float(timeout_s):
        try:
            exited = "\tZ" in Path(f"/proc/{server_pid}/status").read_text().split("State:", 1)[1][:4]
        except OSError:
            exited = True
        if exited:
            fail("the server exited while starting")
        try:
            if _request(url, timeout=2)[0] == 200:
                ok(f"{url} answered 200 after {time.monotonic() - start:.1f} s")
                return
        except OSError:
            pass
        time.sleep(0.5)
    fail(f"{url} not 200 within {timeout_s} s")


def get(url: str, status: str, substring: str = "") -> None:
    code, body = _request(url)
    check(code == int(status) and substring in body.decode(errors="replace"),
          f"GET {url.split('/', 3)[-1]} -> {code} {body[:60].decode(errors='replace').strip()!r}")


def liveness(base: str, key: str, image_path: str, expected: str) -> None:
    data = Path(image_path).read_bytes()
    name = Path(image_path).name
    code, body = _request(f"{base}/v1/liveness", data, {"X-API-Key": key, "Content-Type": "image/jpeg"})
    doc = json.loads(body)
    check(code == 200 and doc.get("decision") == expected,
          f"POST /v1/liveness {name}: {code} decision={doc.get('decision')} score={doc.get('score')} (want {expected})")
    payload = json.dumps({"hash_id": key, "selfie_image": base64.b64encode(data).decode()}).encode()
    code, body = _request(f"{base}/liveness", payload, {"Content-Type": "application/json"})
    result = json.loads(body).get("liveness_result", {})
    check(code == 201 and result.get("is_live") == (1 if expected == "live" else 0),
          f"POST /liveness (FACIA) {name}: {code} {result}")


def tcp(port: str) -> None:
    with socket.create_connection(("127.0.0.1", int(port)), timeout=5):
        pass
    ok(f"gRPC port {port} accepts connections")


def procs(root_dir: str, uid: str) -> None:
    root = os.path.realpath(root_dir)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/root") != root:
                continue
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        found.append((pid, status["Uid"].split()[0], int(status.get("VmRSS", "0 kB").split()[0]), cmdline))
    check(bool(found) and all(u == uid for _, u, _, _ in found),
          f"{len(found)} server processes, all uid {uid} ({sorted({u for _, u, _, _ in found})})")
    for pid, _, rss, cmdline in found:
        print(f"        pid {pid:>7}  rss {rss / 1024:6.0f} MiB  {cmdline[:90]}")
    ok(f"total RSS {sum(r for _, _, r, _ in found) / 1024:.0f} MiB")


if __name__ == "__main__":
    commands = {"image": image, "rootfs": rootfs, "free-ports": free_ports, "wait": wait, "get": get,
                "liveness": liveness, "tcp": tcp, "procs": procs}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    commands[sys.argv[1]](*sys.argv[2:])
