"""The image's runtime requirement set (image/build.sh, docs/DEPLOY.md "What is in the image").

    python image/runtime_requirements.py roots EXTRA...        -> top-level requirements, one a line
    python image/runtime_requirements.py pins REPORT.json LOCK -> name==version --hash=sha256:... lines

``roots``: pyproject's ``[project] dependencies`` plus the EXTRA requirements the service imports
lazily but pyproject does not declare (``tritonclient`` for ``backend = "triton"``).

``pins``: turns the report of ``pip install --dry-run --report`` (pip's own resolver, run with
``-c requirements.lock``) into hash-pinned lines, and refuses a resolution that strays from the lock:
every package must be pinned there, at that exact version.  requirements.lock also pins the test and
dev tools (pytest, locust, playwright, mongomock, onnx, ...); they are simply not reached from the
roots, so they never enter the image.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def roots(extra: list[str]) -> int:
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    for requirement in [*project["dependencies"], *extra]:
        print(requirement)
    return 0


def pins(report_path: str, lock_path: str) -> int:
    lock: dict[str, str] = {}
    for line in Path(lock_path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            lock[canonical(name)] = version.strip()
    report = json.loads(Path(report_path).read_text())
    errors, lines = [], []
    for item in report["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        info = item["download_info"]
        sha256 = info.get("archive_info", {}).get("hashes", {}).get("sha256")
        if not info["url"].endswith(".whl"):
            errors.append(f"{name} {version}: not a wheel ({info['url']})")
        if sha256 is None:
            errors.append(f"{name} {version}: no sha256 in pip's report")
        pinned = lock.get(canonical(name))
        if pinned != version:
            errors.append(f"{name} {version}: requirements.lock pins {pinned or 'nothing'}")
        lines.append(f"{name}=={version} --hash=sha256:{sha256}")
    if errors:
        print("runtime requirements do not match requirements.lock:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    print("\n".join(sorted(lines, key=str.lower)))
    return 0


if __name__ == "__main__":
    command, *args = sys.argv[1:] or ["help"]
    if command == "roots":
        sys.exit(roots(args))
    if command == "pins" and len(args) == 2:
        sys.exit(pins(*args))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
