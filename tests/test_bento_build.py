"""`bentoml build` packages the service, its model repository and nothing private."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_bentoml_build_packages_service_and_models(tmp_path, model_repository):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = str(Path(sys.executable).parent / "bentoml")
    out = subprocess.run([bentoml, "build", "--output", "tag"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    tag = out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    src = tmp_path / "bentoml" / "bentos" / name / version / "src"
    assert (src / "service.py").is_file() and (src / "bentofile.yaml").is_file()
    assert (src / "model_repository" / "minifasnet_v2" / "1" / "model.onnx").is_file()
    assert (src / "model_repository" / "retinaface" / "config.pbtxt").is_file()
    assert (src / "proto" / "liveness" / "bws" / "v1" / "liveness.proto").is_file()
    assert (src / "edge" / "apis.py").is_file() and not (src / "edge" / "_proto").exists()  # regenerated on import
    shipped = [p.relative_to(src).as_posix() for p in src.rglob("*")]
    assert not [p for p in shipped if p.startswith(("tests/", "data/", ".venv")) or p.endswith((".sqlite3", ".jpg", ".mp4"))]
    bento_yaml = (src.parent / "bento.yaml").read_text()
    assert "/v1/liveness" in bento_yaml and "/v1/video-liveness" in bento_yaml
