"""ONNX Runtime writes nothing outside what docs/PRIVACY.md lists: its usage telemetry (a
device id and an event database under ~/.cache/Microsoft/DeveloperTools/.onnxruntime) is off
in every process that imports liveness or converters.  Each case runs a real session in a
fresh interpreter with an empty home, then lists every file written there.

ONNX Runtime also stays silent when it believes it runs in CI (``CI`` set, as CI runners do, and
the vendor markers below), which would make every case here pass without testing anything: the
child gets an environment without them, as a user's server has."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "model_repository" / "minifasnet_v2" / "1" / "model.onnx"

RUN_A_SESSION = f"""
import numpy as np, onnxruntime as ort
s = ort.InferenceSession({str(MODEL)!r}, providers=["CPUExecutionProvider"])
s.run(None, {{s.get_inputs()[0].name: np.zeros((1, 3, 80, 80), np.float32)}})
"""


# Environment variables ONNX Runtime 1.32 reads as "this is a CI run" (strings of its library).
CI_MARKERS = {"CI", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "BUILDKITE", "JENKINS_URL", "TF_BUILD",
              "TEAMCITY_VERSION", "CODEBUILD_BUILD_ID", "BITBUCKET_BUILD_NUMBER"}


def files_written(tmp_path: Path, first_import: str) -> list[str]:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY" and k not in CI_MARKERS}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    subprocess.run([sys.executable, "-c", first_import + RUN_A_SESSION], cwd=REPO, env=env, check=True)
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


@pytest.mark.parametrize("first_import", ["import liveness.inference.embedded\n", "import converters\n"])
def test_no_onnxruntime_telemetry_files(tmp_path, first_import):
    assert files_written(tmp_path, first_import) == []


def test_the_check_sees_telemetry_when_it_is_on(tmp_path):
    # The same session without our packages: ONNX Runtime does write its files, so the test above
    # would notice them (also where this suite runs with CI=true: the markers are removed).
    written = files_written(tmp_path, "")
    assert any("onnxruntime" in p for p in written), written
