"""Build ``model_repository/`` (Triton layout) from the upstream weights.

    python -m converters.build [--sources DIR] [--out DIR] [--only NAME ...]

Every source file is checked against ``converters/sources.sha256`` first; every model is
parity-checked against its source on real faces before it is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import onnx

from converters.config_pbtxt import config_for
from converters.spec import ModelSpec

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCES = os.environ.get("LIVENESS_MODEL_SOURCES", str(HERE.parent.parent / "shared" / "models"))


class SourceError(RuntimeError):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pinned_hashes(manifest: Path = HERE / "sources.sha256") -> dict[str, str]:
    out = {}
    for line in manifest.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            digest, rel = line.split(maxsplit=1)
            out[rel] = digest
    return out


def verify_sources(specs: list[ModelSpec], sources: Path) -> dict[str, str]:
    pins = pinned_hashes()
    problems = []
    checked = {}
    for spec in specs:
        for rel in spec.sources:
            path = sources / rel
            if rel not in pins:
                problems.append(f"{rel}: not pinned in converters/sources.sha256")
            elif not path.is_file():
                problems.append(f"{path}: missing (model {spec.name})")
            else:
                got = sha256_file(path)
                if got != pins[rel]:
                    problems.append(f"{path}: sha256 {got} != pinned {pins[rel]} (changed file, model {spec.name})")
                checked[rel] = got
    if problems:
        raise SourceError("model sources failed verification:\n  " + "\n  ".join(problems))
    return checked


def build_one(spec: ModelSpec, sources: Path, out: Path, step: str) -> dict:
    t0 = time.perf_counter()
    print(f"{step} {spec.name}: converting {', '.join(spec.sources)}", flush=True)
    model = spec.build(sources)
    print(f"{step} {spec.name}: parity check on real faces", flush=True)
    diffs = spec.parity(model, sources)
    for what, d in diffs.items():
        print(f"{step} {spec.name}:   {what}: max |diff| {d:.2e}", flush=True)
    worst = max(diffs.values()) if diffs else 0.0
    if worst > spec.parity_tolerance:
        raise RuntimeError(f"{spec.name}: parity {worst:.2e} exceeds {spec.parity_tolerance:.0e}; not written")
    # Write next to the target then swap, so a failed build never leaves half a model behind.
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=out))
    (tmp / str(spec.version)).mkdir()
    model_path = tmp / str(spec.version) / "model.onnx"
    onnx.save(model, str(model_path))
    (tmp / "config.pbtxt").write_text(config_for(spec))
    final = out / spec.name
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    digest = sha256_file(final / str(spec.version) / "model.onnx")
    print(f"{step} {spec.name}: wrote {final}/{spec.version}/model.onnx ({time.perf_counter() - t0:.1f}s)", flush=True)
    return {"version": spec.version, "role": spec.role, "sha256": digest, "parity_max_abs_diff": diffs}


def main(argv: list[str] | None = None) -> int:
    from converters.models import CATALOGUE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=Path, default=Path(DEFAULT_SOURCES), help="upstream weights (LIVENESS_MODEL_SOURCES)")
    ap.add_argument("--out", type=Path, default=HERE.parent / "model_repository")
    ap.add_argument("--only", nargs="*", help="model names to (re)build; default all")
    args = ap.parse_args(argv)

    specs = [s for s in CATALOGUE if not args.only or s.name in args.only]
    if args.only and len(specs) != len(args.only):
        known = ", ".join(s.name for s in CATALOGUE)
        print(f"unknown model in --only; known: {known}", file=sys.stderr)
        return 2
    sources = args.sources.resolve()
    try:
        source_hashes = verify_sources(specs, sources)
    except SourceError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"sources OK: {len(source_hashes)} files verified in {sources}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report_path = args.out / "build_report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {"models": {}}
    for i, spec in enumerate(specs, 1):
        report["models"][spec.name] = build_one(spec, sources, args.out, f"[{i}/{len(specs)}]")
    report["sources"] = {**report.get("sources", {}), **source_hashes}
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"model repository ready: {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
