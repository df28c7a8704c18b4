"""The domain package never imports the web framework (service.py is the only place)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_liveness_package_does_not_import_bentoml():
    code = (
        "import sys, pkgutil, importlib, liveness\n"
        "for m in pkgutil.walk_packages(liveness.__path__, 'liveness.'):\n"
        "    if m.name != 'liveness.__main__': importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('bentoml', '_bentoml_sdk', '_bentoml_impl')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
