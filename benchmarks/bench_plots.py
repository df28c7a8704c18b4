"""PNG plots for docs/PERFORMANCE.md (matplotlib, Agg; installed from requirements-bench.txt).

``make_plots(results, out_dir)`` writes:

* ``throughput.png``  req/s versus Locust users per endpoint, with the in-process ceiling, the
  reference pipeline and the issue's 4x-reference goal as horizontal lines;
* ``latency.png``     p50 / p95 / p99 versus users, one panel per endpoint (100 ms goal line);
* ``batch.png``       the ``liveness_batch_size`` histogram at the FACIA peak, one bar per model;
* ``comparison.png``  single-image throughput: reference, in-process, HTTP endpoints;
* ``backends.png``    embedded vs Triton vs INT8 (req/s and p95 per compare level) and model-only
  float32 vs INT8;
* ``phone.png``       the phone-photo mix: req/s and p50/p95 versus users for FACIA and native,
  with the mix's reference peer, 4x it, the mix's in-process ceiling and the 100 ms line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"facia": "tab:blue", "native": "tab:orange", "grpc": "tab:green", "video": "tab:purple",
          "embedded": "tab:blue", "triton": "tab:red", "int8": "tab:olive"}
NAMES = {"facia": "FACIA /liveness (JSON)", "native": "native /v1/liveness (multipart)", "grpc": "gRPC LivenessDetection",
         "video": "video /v1/video-liveness (clips/s)"}
BUCKETS = ("1", "2", "3", "4", "6", "8", "12", "16", "24", "32")
BUCKET_LABELS = ("1", "2", "3", "4", "5-6", "7-8", "9-12", "13-16", "17-24", "25-32", ">32")


def _get(res: Any, name: str) -> Any:
    return res[name] if isinstance(res, dict) else getattr(res, name)


def _stamp(fig, quick: bool) -> None:
    if quick:
        fig.text(0.99, 0.01, "quick smoke run: not representative", ha="right", va="bottom", fontsize=8, color="tab:red")


def _by_endpoint(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["endpoint"], []).append(r)
    for v in out.values():
        v.sort(key=lambda r: r["users"])
    return out


def _log2_users(ax, users: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(users)
    ax.set_xticklabels([str(u) for u in users])
    ax.set_xlabel("Locust users (concurrent requests, no wait)")


def throughput(res: Any, path: Path, quick: bool) -> Path:
    sweep = _by_endpoint(_get(res, "sweep"))
    ceiling = (_get(res, "ceiling") or {}).get("images_per_s")
    ref = (_get(res, "reference") or {}).get("warm", {}).get("images_per_s")
    fig, ax = plt.subplots(figsize=(8, 4.8))
    users = sorted({r["users"] for rows in sweep.values() for r in rows})
    for ep, rows in sweep.items():
        ax.plot([r["users"] for r in rows], [r["rps"] for r in rows], "o-", color=COLORS[ep], label=NAMES[ep])
    if ceiling:
        ax.axhline(ceiling, color="gray", ls="--", lw=1, label=f"in-process ceiling {ceiling:.0f}/s")
    if ref:
        ax.axhline(ref, color="black", ls=":", lw=1, label=f"reference Silent-Face {ref:.0f} images/s")
        ax.axhline(4 * ref, color="tab:red", ls="-.", lw=1, label=f"goal 4× reference = {4 * ref:.0f}/s")
    if users:
        _log2_users(ax, users)
    ax.set_ylabel("requests / s")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput versus concurrency (served Bento, embedded backend)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    _stamp(fig, quick)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency(res: Any, path: Path, quick: bool) -> Path:
    sweep = _by_endpoint(_get(res, "sweep"))
    eps = [e for e in ("facia", "native", "grpc", "video") if e in sweep]
    n = max(1, len(eps))
    cols = 2 if n > 1 else 1
    rows_n = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 3.6 * rows_n), squeeze=False)
    for i, ep in enumerate(eps):
        ax = axes[i // cols][i % cols]
        rows = sweep[ep]
        us = [r["users"] for r in rows]
        for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
            ax.plot(us, [r[key] for r in rows], style, label=key, ms=4)
        if ep != "video":
            ax.axhline(100, color="tab:red", ls="-.", lw=1, label="100 ms")
        _log2_users(ax, us)
        ax.set_xlabel("users")
        ax.set_ylabel("ms")
        ax.set_ylim(bottom=0)
        ax.set_title(NAMES[ep].replace(" (clips/s)", " (one 4 s clip)"), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for j in range(len(eps), rows_n * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle("Latency percentiles versus concurrency")
    _stamp(fig, quick)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def batch(res: Any, path: Path, quick: bool) -> Path | None:
    facia = [r for r in _get(res, "sweep") if r["endpoint"] == "facia" and r["batch"]]
    if not facia:
        return None
    peak = max(facia, key=lambda r: r["rps"])
    models = sorted(peak["batch"])
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.8 / max(1, len(models))
    x = list(range(len(BUCKET_LABELS)))
    for k, m in enumerate(models):
        h = peak["batch"][m]
        total = h["invocations"] or 1
        vals = [h["buckets"][b] / total * 100 for b in BUCKETS] + [h["over"] / total * 100]
        ax.bar([xi + (k - (len(models) - 1) / 2) * width for xi in x], vals, width, label=f"{m} (mean {h['mean']:.2f})")
    ax.set_xticks(x)
    ax.set_xticklabels(BUCKET_LABELS)
    ax.set_xlabel("rows per model invocation")
    ax.set_ylabel("% of invocations")
    ax.set_ylim(0, 105)
    ax.set_title(f"liveness_batch_size at the FACIA peak ({peak['users']} users, {peak['rps']:.0f} req/s)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    _stamp(fig, quick)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def comparison(res: Any, path: Path, quick: bool) -> Path | None:
    ref = _get(res, "reference") or {}
    ceiling = _get(res, "ceiling") or {}
    bars: list[tuple[str, float, str]] = []
    if ref.get("literal"):
        bars.append(("reference, demo-literal\n(weights reloaded per image)", ref["literal"]["images_per_s"], "lightgray"))
    if ref.get("warm"):
        bars.append(("reference Silent-Face\n(warm, one at a time)", ref["warm"]["images_per_s"], "gray"))
    if ceiling:
        bars.append(("ours in-process,\none at a time", ceiling["seq_images_per_s"], "tab:cyan"))
        bars.append(("ours in-process ceiling", ceiling["images_per_s"], "tab:cyan"))
    for ep in ("facia", "native", "grpc"):
        rows = [r for r in _get(res, "sweep") if r["endpoint"] == ep]
        if rows:
            best = max(rows, key=lambda r: r["rps"])
            bars.append((f"HTTP peak {NAMES[ep].split(' (')[0]}", best["rps"], COLORS[ep]))
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(bars) + 1.4))
    ys = list(range(len(bars)))
    ax.barh(ys, [b[1] for b in bars], color=[b[2] for b in bars])
    for y, (_, v, _) in zip(ys, bars):
        ax.text(v, y, f" {v:.0f}", va="center", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels([b[0] for b in bars], fontsize=8)
    if ref.get("warm"):
        goal = 4 * ref["warm"]["images_per_s"]
        ax.axvline(goal, color="tab:red", ls="-.", lw=1, label=f"goal 4× reference = {goal:.0f}/s")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("images (requests) / s")
    ax.set_title("Single-image throughput on this machine")
    ax.grid(axis="x", alpha=0.3)
    _stamp(fig, quick)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def backends(res: Any, path: Path, quick: bool) -> Path | None:
    compare = _get(res, "compare")
    models = [m for m in _get(res, "models") if m["model"].startswith("minifasnet")]
    if not compare and not models:
        return None
    sweep = {r["users"]: r for r in _get(res, "sweep") if r["endpoint"] == "facia"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    levels = sorted({r["users"] for r in compare})
    variants = ["embedded"] + [v for v in ("triton", "int8") if any(r["variant"] == v for r in compare)]
    width = 0.8 / len(variants)
    for k, v in enumerate(variants):
        rows = [sweep.get(u) if v == "embedded" else next((r for r in compare if r["variant"] == v and r["users"] == u), None)
                for u in levels]
        xs = [i + (k - (len(variants) - 1) / 2) * width for i in range(len(levels))]
        label = {"embedded": "embedded float32", "triton": "Triton float32", "int8": "embedded INT8"}[v]
        axes[0].bar(xs, [r["rps"] if r else 0 for r in rows], width, color=COLORS[v], label=label)
        axes[1].bar(xs, [r["p95"] if r else 0 for r in rows], width, color=COLORS[v], label=label)
    for ax in axes[:2]:  # room for the legend above the bars
        ax.set_ylim(0, (ax.get_ylim()[1] or 1) * 1.35)
    for ax, title, unit in ((axes[0], "FACIA throughput", "requests / s"), (axes[1], "FACIA p95 latency", "ms")):
        ax.set_xticks(range(len(levels)))
        ax.set_xticklabels([f"{u} users" for u in levels])
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    names = sorted({m["model"] for m in models})
    for k, prec in enumerate(("float32", "INT8")):
        vals = [next((m["ms_per_call"] for m in models if m["model"] == n and m["precision"] == prec and m["batch"] == 1), 0)
                for n in names]
        axes[2].bar([i + (k - 0.5) * 0.4 for i in range(len(names))], vals, 0.4, label=prec,
                    color="tab:blue" if prec == "float32" else "tab:olive")
    axes[2].set_ylim(0, (axes[2].get_ylim()[1] or 1) * 1.35)
    axes[2].set_xticks(range(len(names)))
    axes[2].set_xticklabels(names, fontsize=8)
    axes[2].set_ylabel("ms per call (batch 1, 1 thread)")
    axes[2].set_title("Model-only: float32 (v1) vs INT8 (v2)", fontsize=10)
    axes[2].grid(axis="y", alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.suptitle("Embedded vs Triton backend, float32 vs INT8")
    _stamp(fig, quick)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def phone(res: Any, path: Path, quick: bool) -> Path | None:
    ph = (res.get("phone") if isinstance(res, dict) else getattr(res, "phone", None)) or {}
    sweep = _by_endpoint(ph.get("sweep") or [])
    if not sweep:
        return None
    ref = (ph.get("reference") or {}).get("warm", {}).get("images_per_s")
    ceiling = (ph.get("ceiling") or {}).get("images_per_s")
    users = sorted({r["users"] for rows in sweep.values() for r in rows})
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.4))
    for ep, rows in sweep.items():
        us = [r["users"] for r in rows]
        a.plot(us, [r["rps"] for r in rows], "o-", color=COLORS[ep], label=NAMES[ep])
        b.plot(us, [r["p50"] for r in rows], "o--", color=COLORS[ep], label=f"{NAMES[ep].split(' (')[0]} p50", ms=4)
        b.plot(us, [r["p95"] for r in rows], "s-", color=COLORS[ep], label=f"{NAMES[ep].split(' (')[0]} p95", ms=4)
    if ceiling:
        a.axhline(ceiling, color="gray", ls="--", lw=1, label=f"in-process ceiling on the mix {ceiling:.0f}/s")
    if ref:
        a.axhline(ref, color="black", ls=":", lw=1, label=f"reference on the mix {ref:.1f} images/s")
        a.axhline(4 * ref, color="tab:red", ls="-.", lw=1, label=f"goal 4× reference = {4 * ref:.0f}/s")
    b.axhline(100, color="tab:red", ls="-.", lw=1, label="100 ms")
    for ax, title, unit in ((a, "Throughput", "requests / s"), (b, "Latency", "ms")):
        _log2_users(ax, users)
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Phone-photo mix (2-12 MP JPEG) versus concurrency, served Bento")
    _stamp(fig, quick)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_plots(res: Any, out_dir: Path, quick: bool = False) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, fn in (("throughput", throughput), ("latency", latency), ("batch", batch), ("comparison", comparison),
                     ("backends", backends), ("phone", phone)):
        path = out_dir / f"{name}.png"
        result = fn(res, path, quick)
        if result is not None:
            made[name] = result
        elif path.exists():
            path.unlink()  # no data this run: no stale picture
    return made
