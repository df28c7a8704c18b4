"""The domain package ``liveness`` never imports a web framework, gRPC or the edge: the adapters
live in the top-level ``edge`` package and service.py, which may import all of them."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import REPO

# Top-level packages the domain may not import: the web frameworks (BentoML's three, Starlette,
# FastAPI), gRPC (grpc, grpc_tools) and the edge package that adapts the domain to them.
FORBIDDEN = ("bentoml", "_bentoml_sdk", "_bentoml_impl", "starlette", "fastapi", "grpc", "grpc_tools", "edge")


def test_liveness_package_does_not_import_web_frameworks():
    """Importing every domain module pulls in none of them (nor does anything they import)."""
    code = (
        "import sys, pkgutil, importlib, liveness\n"
        "for m in pkgutil.walk_packages(liveness.__path__, 'liveness.'):\n"
        "    if m.name != 'liveness.__main__': importlib.import_module(m.name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_liveness_sources_name_no_web_framework():
    """No import statement anywhere in the domain, deferred ones inside functions included."""
    bad = []
    for path in sorted((REPO / "liveness").rglob("*.py")):
        for name in _imported(ast.parse(path.read_text(), str(path))):
            if name.split(".")[0] in FORBIDDEN:
                bad.append(f"{path.relative_to(REPO)}: {name}")
    assert not bad, bad


def test_edge_may_import_them():
    """The check above is not vacuous: the edge (the adapters) does import Starlette and gRPC."""
    names = set().union(*(_imported(ast.parse(p.read_text())) for p in (REPO / "edge").glob("*.py")))
    assert {"starlette", "grpc"} <= {n.split(".")[0] for n in names}
