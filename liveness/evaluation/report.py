"""An evaluation's outputs: per-item CSV, JSON and Markdown summaries, DET curve and histograms.

``summarize`` is pure (results in, figures out); the ``write_*`` functions do the I/O.
matplotlib is imported only by the plotting functions, so the CLI's other commands (and
this module's import) never pay for it.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Sequence

from liveness.evaluation.dataset import LabelledSet
from liveness.evaluation.metrics import (
    ALL_ATTACKS,
    Acquisition,
    DetCurve,
    OperatingPoint,
    Outcome,
    Rate,
    acquisition,
    det_curves,
    operating_point,
    point_for_target,
)
from liveness.evaluation.runner import ItemResult

ITEMS_CSV = "items.csv"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
DET_PNG = "det.png"
HISTOGRAMS_PNG = "histograms.png"
INCLUSIVE_RULE = "live when score >= threshold"
SMALL_SET = 30  # below this many presentations in a class, intervals are too wide to act on


@dataclass(frozen=True)
class Evaluation:
    labels: str
    created: str
    threshold: float
    results: tuple[ItemResult, ...]
    skipped: dict[str, int]
    acquisition: Acquisition
    points: tuple[OperatingPoint, ...]  # operating first, then the targets
    recommended: OperatingPoint
    curves: tuple[DetCurve, ...]
    video_disagreements: tuple[str, ...]  # videos whose frame-vote verdict != mean score vs threshold
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def operating(self) -> OperatingPoint:
        return self.points[0]

    @property
    def model_columns(self) -> list[str]:
        return list(dict.fromkeys(m for r in self.results for m in r.model_scores))

    @property
    def models(self) -> list[str]:
        return sorted({m for r in self.results for m in r.models})

    @property
    def mixed_versions(self) -> list[str]:
        """Models answered by more than one version (a canary is running: keyless requests are
        split at its percentage), so the figures blend versions."""
        seen: dict[str, set[str]] = {}
        for m in self.models:
            name, _, version = m.rpartition(" ")
            seen.setdefault(name, set()).add(version)
        return sorted(name for name, versions in seen.items() if len(versions) > 1)

    def counts(self) -> dict[str, int]:
        c = {o.value: sum(r.outcome is o for r in self.results) for o in Outcome}
        c["items"] = len(self.results)
        c["bona_fide"] = sum(r.item.bona_fide for r in self.results)
        c["attack"] = c["items"] - c["bona_fide"]
        c["skipped_rows"] = sum(self.skipped.values())
        return c


def summarize(
    results: Sequence[ItemResult],
    labelled: LabelledSet,
    threshold: float,
    *,
    created: str,
    target_bpcer: float | None = None,
    target_apcer: float | None = None,
    default_target_apcer: float = 0.05,
    settings: dict[str, Any] | None = None,
) -> Evaluation:
    """The figures at the operating threshold, at BPCER 1 % and 5 %, at the target APCER, and
    the recommendation: for the targets given, or the APCER target (security first) when none
    is."""
    obs = [r.observation for r in results]
    apcer_goal = default_target_apcer if target_apcer is None else target_apcer
    points = [
        operating_point(obs, threshold, "operating"),
        point_for_target(obs, "bpcer_1pct", max_bpcer=0.01),
        point_for_target(obs, "bpcer_5pct", max_bpcer=0.05),
        point_for_target(obs, "target_apcer", max_apcer=apcer_goal),
    ]
    if target_bpcer is not None and target_bpcer not in (0.01, 0.05):
        points.append(point_for_target(obs, "target_bpcer", max_bpcer=target_bpcer))
    if target_bpcer is None:
        recommended = point_for_target(obs, "recommended", max_apcer=apcer_goal)
    else:
        recommended = point_for_target(obs, "recommended", max_bpcer=target_bpcer, max_apcer=target_apcer)
    disagreements = tuple(
        r.item.file for r in results
        if r.item.media == "video" and r.outcome is Outcome.SCORED and r.verdict is not None
        and (r.verdict == "live") != (r.score >= threshold)
    )
    return Evaluation(
        labels=str(labelled.source), created=created, threshold=threshold, results=tuple(results),
        skipped=labelled.skipped_by_label(), acquisition=acquisition(obs), points=tuple(points),
        recommended=recommended, curves=tuple(det_curves(obs)), video_disagreements=disagreements,
        settings=dict(settings or {}),
    )


# -- per item --------------------------------------------------------------------------------


def _num(x: float | None, digits: int = 6) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def write_items_csv(ev: Evaluation, path: Path) -> None:
    model_cols = ev.model_columns
    header = ["file", "label", "attack", "subject", "media", "score", "verdict", "outcome", "error",
              "acquisition", *(f"score_{m}" for m in model_cols), "frames_judged", "message", "models",
              "seconds", "path", "line"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in ev.results:
            it = r.item
            w.writerow([
                it.file, "bona fide" if it.bona_fide else "attack", it.attack, it.subject, it.media,
                _num(r.score), r.verdict or "", r.outcome.value, r.code or "", r.acquisition or "",
                *(_num(r.model_scores.get(m)) for m in model_cols),
                "" if r.frames_judged is None else r.frames_judged, r.message or "", " ".join(r.models),
                f"{r.seconds:.3f}", str(it.path), it.line,
            ])


# -- summaries -------------------------------------------------------------------------------


def summary_dict(ev: Evaluation) -> dict[str, Any]:
    return {
        "labels": ev.labels,
        "created": ev.created,
        "decision_rule": INCLUSIVE_RULE,
        "operating_threshold": ev.threshold,
        "settings": ev.settings,
        "models": ev.models,
        "counts": ev.counts(),
        "skipped_labels": ev.skipped,
        "acquisition": ev.acquisition.as_dict(),
        "points": [p.as_dict() for p in ev.points],
        "recommended": {**ev.recommended.as_dict(), "rule": INCLUSIVE_RULE},
        "video_verdict_disagreements": list(ev.video_disagreements),
        "mixed_model_versions": ev.mixed_versions,
        "notes": [
            "APCER excludes attacks that failed to acquire (they were not accepted); see acquisition.fta_attack.",
            "bpcer_with_fta counts bona fide failures to acquire as rejections.",
            "Errors (corrupt, unsupported, missing files) are in no rate; see acquisition.errors_by_code.",
            "A video's score is the mean fused score of its judged frames; the service's video verdict is a "
            "frame vote with early stopping (docs/VIDEO.md), so the two can differ near the threshold.",
            "Intervals are Wilson 95% score intervals.",
        ],
    }


def write_json(ev: Evaluation, path: Path) -> None:
    path.write_text(json.dumps(summary_dict(ev), indent=2, default=str) + "\n", encoding="utf-8")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


def _rate(r: Rate) -> str:
    if r.n == 0:
        return "n/a (0 items)"
    return f"{r.k}/{r.n} = {r.value:.2%} [{r.low:.1%}, {r.high:.1%}]"


def _threshold(t: float | None) -> str:
    return "unreachable" if t is None else f"{t:g}"


def _small_set_warning(ev: Evaluation) -> str | None:
    op = ev.operating
    rates = [op.bpcer, *op.apcer.values()]
    if min(r.n for r in rates) >= SMALL_SET:
        return None
    widest = max((r.high - r.low for r in rates if r.n), default=1.0)
    return (f"Small set: {op.bpcer.n} scored bona fide and {op.apcer_all.n} scored attack presentations "
            f"(fewest per attack type: {min((r.n for r in op.apcer.values()), default=0)}); the 95% intervals are up to "
            f"{widest:.0%} wide. These figures cannot tell a good system from a bad one: evaluate on hundreds of "
            "presentations per attack type before choosing a threshold.")


def _mixed_warning(ev: Evaluation) -> str:
    return (f"Several versions of {', '.join(ev.mixed_versions)} answered (a canary is running), so these figures "
            "blend them; the per-item `models` column says which answered each item.")


def markdown(ev: Evaluation) -> str:
    op = ev.operating
    c = ev.counts()
    acq = ev.acquisition
    lines = [
        "# Liveness evaluation",
        "",
        f"Labels: `{ev.labels}`, run {ev.created}. Decision rule: **{INCLUSIVE_RULE}** (inclusive).",
        f"Models: {', '.join(ev.models) or 'none answered'}.",
        "",
        f"{c['items']} items: {c['scored']} scored, {c['fta']} failed to acquire, {c['error']} errors; "
        f"{c['skipped_rows']} rows skipped for their label"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(ev.skipped.items()))})." if ev.skipped else "."),
        "",
    ]
    warning = _small_set_warning(ev)
    if warning:
        lines += [f"> **{warning}**", ""]
    if ev.mixed_versions:
        lines += [f"> **{_mixed_warning(ev)}**", ""]
    lines += [
        f"## At the operating threshold {op.threshold:g}",
        "",
        "| figure | k/n = value [Wilson 95%] |",
        "|---|---|",
        *(f"| APCER {t} | {_rate(r)} |" for t, r in op.apcer.items()),
        f"| **APCER_max** ({op.apcer_max_type or 'n/a'}) | {_rate(op.apcer_max)} |",
        f"| APCER, all attacks pooled | {_rate(op.apcer_all)} |",
        f"| **BPCER** | {_rate(op.bpcer)} |",
        f"| BPCER counting bona fide FTA as rejections | {_rate(op.bpcer_with_fta)} |",
        f"| ACER = (APCER_max + BPCER) / 2 | {_pct(op.acer)} |",
        "",
        "## Failures to acquire and errors (threshold-independent)",
        "",
        "| figure | k/n = value [Wilson 95%] |",
        "|---|---|",
        f"| FTA, all | {_rate(acq.fta)} |",
        f"| FTA, bona fide | {_rate(acq.fta_bona_fide)} |",
        f"| FTA, attacks (not counted as accepted attacks) | {_rate(acq.fta_attack)} |",
        *(f"| FTA, {t} | {_rate(r)} |" for t, r in acq.fta_by_attack.items()),
        "",
        f"Errors (in no rate): {acq.errors}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(acq.errors_by_code.items()))})." if acq.errors else "."),
        "",
        "## Thresholds for targets",
        "",
        "| point | target | threshold | APCER_max | BPCER | BPCER incl. FTA | ACER |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in [*ev.points, ev.recommended]:
        lines.append(f"| {p.name} | {p.target or '-'} | {_threshold(p.threshold)} | {_rate(p.apcer_max)} | "
                     f"{_rate(p.bpcer)} | {_rate(p.bpcer_with_fta)} | {_pct(p.acer)} |")
    rec = ev.recommended
    lines += [
        "",
        "Thresholds are the midpoint of the gap between two observed scores that gives the best figures for "
        "the target, rounded to the fewest decimals that stay in the middle half of that gap.",
        "",
        "## Recommended threshold",
        "",
        (f"**{rec.threshold:g}** for {rec.target} ({INCLUSIVE_RULE}): `LIVENESS_THRESHOLD={rec.threshold:g}` "
         "(or `threshold` in liveness.toml)." if rec.threshold is not None
         else f"No threshold meets {rec.target} on this set."),
        "",
    ]
    if ev.video_disagreements:
        lines += [
            "## Videos whose verdict differs from their mean score",
            "",
            "The service decides a video by a frame vote with early stopping; the figures above use the mean "
            f"score of the judged frames. {len(ev.video_disagreements)} video(s) differ at {ev.threshold:g}: "
            + ", ".join(f"`{f}`" for f in ev.video_disagreements),
            "",
        ]
    lines += [
        "## Files",
        "",
        f"`{ITEMS_CSV}` (per item), `{SUMMARY_JSON}`, `{DET_PNG}` (DET curve), `{HISTOGRAMS_PNG}` (scores per class).",
        "",
    ]
    return "\n".join(lines)


def console_text(ev: Evaluation) -> str:
    op = ev.operating
    c = ev.counts()
    out = [
        f"{c['items']} items ({c['bona_fide']} bona fide, {c['attack']} attack): {c['scored']} scored, "
        f"{c['fta']} failed to acquire, {c['error']} errors; {c['skipped_rows']} rows skipped",
        f"At the operating threshold {op.threshold:g} ({INCLUSIVE_RULE}):",
        *(f"  APCER {t:<14} {_rate(r)}" for t, r in op.apcer.items()),
        f"  APCER_max            {_rate(op.apcer_max)}" + (f" ({op.apcer_max_type})" if op.apcer_max_type else ""),
        f"  APCER, all attacks   {_rate(op.apcer_all)}",
        f"  BPCER                {_rate(op.bpcer)}",
        f"  BPCER incl. FTA      {_rate(op.bpcer_with_fta)}",
        f"  ACER                 {_pct(op.acer)}",
        f"  FTA                  {_rate(ev.acquisition.fta)}",
        f"  errors               {ev.acquisition.errors}",
    ]
    for p in ev.points[1:]:
        out.append(f"At {p.target}: threshold {_threshold(p.threshold)}, APCER_max {_rate(p.apcer_max)}, "
                   f"BPCER {_rate(p.bpcer)}")
    warning = _small_set_warning(ev)
    if warning:
        out.append(f"WARNING: {warning}")
    if ev.mixed_versions:
        out.append(f"WARNING: {_mixed_warning(ev)}")
    rec = ev.recommended
    if rec.threshold is None:
        out.append(f"Recommended threshold: none meets {rec.target} on this set")
    else:
        out.append(f"Recommended threshold: {rec.threshold:g} for {rec.target} ({INCLUSIVE_RULE}); "
                   f"set LIVENESS_THRESHOLD={rec.threshold:g}")
    return "\n".join(out)


def write_markdown(ev: Evaluation, path: Path) -> None:
    path.write_text(markdown(ev), encoding="utf-8")


# -- plots -----------------------------------------------------------------------------------

_PROBIT_TICKS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8,
                 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9998, 0.9999)


def _figure(width: float = 6.4, height: float = 4.8):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend (Agg)

    return Figure(figsize=(width, height), dpi=100)


def plot_det(ev: Evaluation, path: Path) -> None:
    """DET on normal-deviate axes.  Rates of 0 and 1 have no normal deviate: they are drawn at
    the edge of the plotted range (half an item's share below 1/n), which the legend says."""
    fig = _figure()
    ax = fig.add_subplot()
    curves = ev.curves
    n_max = max([1, *(c.n_attack for c in curves), *(c.n_bona_fide for c in curves)])
    eps = min(0.01, 0.5 / n_max)
    nd = NormalDist()

    def z(p: float) -> float:
        return nd.inv_cdf(min(max(p, eps), 1 - eps))

    if not curves:
        ax.text(0.5, 0.5, "no scored bona fide and attack items", ha="center", va="center", transform=ax.transAxes)
    op = ev.operating
    for c in curves:
        # The pooled curve underneath: a type whose curve coincides with it stays visible.
        style = ({"linewidth": 3.0, "color": "0.6", "zorder": 1} if c.attack == ALL_ATTACKS
                 else {"linewidth": 1.3, "zorder": 2})
        line, = ax.step([z(a) for a in c.apcer], [z(b) for b in c.bpcer], where="post",
                        label=f"{c.attack} ({c.n_attack} attack, {c.n_bona_fide} bona fide)", **style)
        rate = op.apcer_all if c.attack == ALL_ATTACKS else op.apcer.get(c.attack)
        if rate is not None and rate.n and op.bpcer.n:
            ax.plot([z(rate.value)], [z(op.bpcer.value)], "o", color=line.get_color(), markersize=6)
    ticks = [t for t in _PROBIT_TICKS if eps <= t <= 1 - eps]
    ax.set_xticks([z(t) for t in ticks], [f"{t:.4g}" for t in (100 * t for t in ticks)], fontsize=7)
    ax.set_yticks([z(t) for t in ticks], [f"{t:.4g}" for t in (100 * t for t in ticks)], fontsize=7)
    pad = 0.08 * (z(1 - eps) - z(eps))  # so curves drawn at 0 % / 100 % are not hidden by the frame
    ax.set_xlim(z(eps) - pad, z(1 - eps) + pad)
    ax.set_ylim(z(eps) - pad, z(1 - eps) + pad)
    ax.set_xlabel("APCER (%)")
    ax.set_ylabel("BPCER (%)")
    ax.set_title(f"DET (dots: threshold {ev.threshold:g}; 0 and 100% drawn at the axis edges)", fontsize=9)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, format="png")


def plot_histograms(ev: Evaluation, path: Path) -> None:
    fig = _figure(7.2, 4.8)
    ax = fig.add_subplot()
    bins = [i / 40 for i in range(41)]
    groups: list[tuple[str, list[float]]] = [
        ("bona fide", [r.score for r in ev.results if r.outcome is Outcome.SCORED and r.item.bona_fide])
    ]
    for t in sorted({r.item.attack for r in ev.results if not r.item.bona_fide}):
        groups.append((f"attack: {t}", [r.score for r in ev.results if r.outcome is Outcome.SCORED
                                         and not r.item.bona_fide and r.item.attack == t]))
    drawn = False
    for name, scores in groups:
        if scores:
            ax.hist(scores, bins=bins, histtype="step", linewidth=1.6, label=f"{name} (n={len(scores)})")
            drawn = True
    ax.axvline(ev.threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {ev.threshold:g}")
    rec = ev.recommended.threshold
    if rec is not None and not math.isclose(rec, ev.threshold):
        ax.axvline(rec, color="grey", linestyle=":", linewidth=1, label=f"recommended {rec:g}")
    if not drawn:
        ax.text(0.5, 0.5, "no scored items", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_xlabel("liveness score (live when score >= threshold)")
    ax.set_ylabel("items")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Scores per class", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_all(ev: Evaluation, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in (ITEMS_CSV, SUMMARY_JSON, SUMMARY_MD, DET_PNG, HISTOGRAMS_PNG)}
    write_items_csv(ev, paths[ITEMS_CSV])
    write_json(ev, paths[SUMMARY_JSON])
    write_markdown(ev, paths[SUMMARY_MD])
    plot_det(ev, paths[DET_PNG])
    plot_histograms(ev, paths[HISTOGRAMS_PNG])
    return paths


__all__ = ["Evaluation", "summarize", "write_all", "console_text", "markdown", "summary_dict"]
