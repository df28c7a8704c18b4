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

import numpy as np
import onnx

from converters.config_pbtxt import config_for
from converters.onnx_edit import session
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
    variants = []
    for v in spec.variants:
        tv = time.perf_counter()
        print(f"{step} {spec.name}: version {v.version}: {v.description}", flush=True)
        vmodel = v.transform(model, sources)
        print(f"{step} {spec.name}:   measuring version {v.version} against version {spec.version} on real faces", flush=True)
        vreport = v.evaluate(model, vmodel, sources)
        print(
            f"{step} {spec.name}:   max |dev| {vreport['max_abs_dev']:.4f} (tolerance {v.tolerance}), "
            f"mean {vreport.get('mean_abs_dev', float('nan')):.4f} over {vreport.get('n_crops', '?')} inputs",
            flush=True,
        )
        if "speedup" in vreport:
            sp = ", ".join(f"{b} {x:.2f}x" for b, x in vreport["speedup"].items())
            print(f"{step} {spec.name}:   speed-up vs version {spec.version}: {sp}", flush=True)
        problems = list(vreport.get("failures", []))
        if vreport["max_abs_dev"] > v.tolerance:
            problems.append(f"max |dev| {vreport['max_abs_dev']:.4f} exceeds {v.tolerance}")
        if problems:
            raise RuntimeError(f"{spec.name} version {v.version}: " + "; ".join(problems) + "; model not written")
        vreport["tolerance"] = v.tolerance
        vreport["description"] = v.description
        vreport["build_seconds"] = round(time.perf_counter() - tv, 1)
        variants.append((v, vmodel, vreport))
    reference = None
    if spec.reference_inputs is not None:
        x = spec.reference_inputs(sources)
        reference = {"x": x, "y": session(model).run(None, {spec.inputs[0].name: x})[0], "metric": spec.reference_metric, **spec.reference_extra}
    # Write next to the target then swap, so a failed build never leaves half a model behind
    # (every version of a model, its config and notes are swapped in together).
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=out))
    try:
        (tmp / str(spec.version)).mkdir()
        onnx.save(model, str(tmp / str(spec.version) / "model.onnx"))
        if reference is not None:
            np.savez(tmp / str(spec.version) / "parity.npz", tolerance=spec.parity_tolerance, **reference)
        for v, vmodel, vreport in variants:
            (tmp / str(v.version)).mkdir()
            onnx.save(vmodel, str(tmp / str(v.version) / "model.onnx"))
            if reference is not None:
                np.savez(tmp / str(v.version) / "parity.npz", tolerance=v.tolerance, **reference)
            for fname, text in (v.notes(vreport) if v.notes else {}).items():
                (tmp / str(v.version) / fname).write_text(text)
        (tmp / "config.pbtxt").write_text(config_for(spec))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = out / spec.name
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    digest = sha256_file(final / str(spec.version) / "model.onnx")
    written = ", ".join(f"{final}/{v}/model.onnx" for v in [spec.version] + [v.version for v, _, _ in variants])
    print(f"{step} {spec.name}: wrote {written} ({time.perf_counter() - t0:.1f}s)", flush=True)
    entry = {"version": spec.version, "role": spec.role, "sha256": digest, "parity_max_abs_diff": diffs}
    if variants:
        entry["variants"] = {
            str(v.version): {"sha256": sha256_file(final / str(v.version) / "model.onnx"), **vreport}
            for v, _, vreport in variants
        }
    return entry


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
