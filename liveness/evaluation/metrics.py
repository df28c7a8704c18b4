"""ISO/IEC 30107-3 figures from labelled scores: pure functions, no I/O, no numpy.

Conventions (docs/ACCURACY.md repeats them for readers of a report):

* A presentation is *accepted* (classified bona fide) when ``score >= threshold``: the
  service's own rule (``liveness.decision.decide``), inclusive at the threshold.
* APCER (per attack type) = accepted attacks / attacks *that were scored*.  An attack that
  failed to acquire (no face, no usable video frames) is not an accepted attack: the
  service answered with an error, not "live".  It is counted in the FTA figures instead.
* BPCER = rejected bona fide / bona fide that were scored; ``bpcer_with_fta`` also counts
  bona fide failures to acquire as rejections (what a genuine user experiences).
* Errors that are not acquisition failures (corrupt or unsupported files, missing files)
  are in no rate; they are counted separately so they are never silently dropped.
* Thresholds recommended for a target are chosen between observed scores: the midpoint of
  the gap that realises the best decisions, rounded to the fewest decimals that stay in the
  middle half of that gap (``cut_threshold``).  Scores live in [0, 1], so 0 and 1 bound the
  lowest and highest gaps.
"""

from __future__ import annotations

import bisect
import enum
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

Z95 = 1.959963984540054  # two-sided 95 % standard-normal quantile
ALL_ATTACKS = "all attacks"


class Outcome(str, enum.Enum):
    SCORED = "scored"
    FTA = "fta"  # failure to acquire: no face, no usable frames
    ERROR = "error"  # not a liveness outcome: corrupt, unsupported, missing file, ...


@dataclass(frozen=True)
class Observation:
    bona_fide: bool
    attack: str  # attack type for attacks ("unknown" when unlabelled); ignored for bona fide
    outcome: Outcome
    score: float | None = None  # required when SCORED
    code: str | None = None  # why, for FTA and ERROR (no_face, corrupt_image, file_not_found, ...)


@dataclass(frozen=True)
class Rate:
    """k of n, with a Wilson score interval.  ``value``/``low``/``high`` are None when n == 0."""

    k: int
    n: int
    value: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict[str, object]:
        return {"k": self.k, "n": self.n, "value": self.value, "low": self.low, "high": self.high}

    def __str__(self) -> str:
        if self.n == 0:
            return f"{self.k}/0 (undefined)"
        return f"{self.k}/{self.n} = {self.value:.2%} [{self.low:.2%}, {self.high:.2%}]"


def wilson(k: int, n: int, z: float = Z95) -> Rate:
    """Wilson score interval: unlike the normal approximation it stays inside [0, 1] and is
    not degenerate at 0/n, which is the usual case for a good PAD system on a small set."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got {k}/{n}")
    if n == 0:
        return Rate(0, 0, None, None, None)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # Clamp float noise: at k == 0 the lower bound is exactly 0, at k == n the upper exactly 1.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Rate(k, n, p, low, high)


@dataclass(frozen=True)
class Acquisition:
    """Threshold-independent counts: failures to acquire and non-liveness errors."""

    fta: Rate  # over all items that were not errors
    fta_bona_fide: Rate
    fta_attack: Rate
    fta_by_attack: dict[str, Rate]
    errors: int
    errors_by_code: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "fta": self.fta.as_dict(), "fta_bona_fide": self.fta_bona_fide.as_dict(),
            "fta_attack": self.fta_attack.as_dict(),
            "fta_by_attack": {t: r.as_dict() for t, r in self.fta_by_attack.items()},
            "errors": self.errors, "errors_by_code": dict(self.errors_by_code),
        }


@dataclass(frozen=True)
class OperatingPoint:
    name: str
    threshold: float | None  # None: no settable threshold meets the target
    apcer: dict[str, Rate]  # per attack type (sorted by name)
    apcer_max_type: str | None
    apcer_max: Rate  # the worst type's rate (n == 0 when there are no scored attacks)
    apcer_all: Rate  # all attack types pooled
    bpcer: Rate
    bpcer_with_fta: Rate
    acer: float | None  # (APCER_max + BPCER) / 2: two proportions averaged, so no k/n of its own
    target: str | None = None  # e.g. "BPCER <= 5%"

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name, "target": self.target, "threshold": self.threshold,
            "apcer": {t: r.as_dict() for t, r in self.apcer.items()},
            "apcer_max_type": self.apcer_max_type, "apcer_max": self.apcer_max.as_dict(),
            "apcer_all": self.apcer_all.as_dict(), "bpcer": self.bpcer.as_dict(),
            "bpcer_with_fta": self.bpcer_with_fta.as_dict(), "acer": self.acer,
        }


def accepted(score: float, threshold: float) -> bool:
    """The service's rule (liveness.decision.decide), restated here so this module stays pure."""
    return score >= threshold


def _scored(obs: Iterable[Observation]) -> list[Observation]:
    out = []
    for o in obs:
        if o.outcome is Outcome.SCORED:
            if o.score is None or not math.isfinite(o.score):
                raise ValueError(f"a scored observation needs a finite score: {o}")
            out.append(o)
    return out


def attack_types(obs: Iterable[Observation]) -> list[str]:
    return sorted({o.attack for o in obs if not o.bona_fide})


def acquisition(obs: Sequence[Observation]) -> Acquisition:
    acquired = [o for o in obs if o.outcome is not Outcome.ERROR]
    bf = [o for o in acquired if o.bona_fide]
    pa = [o for o in acquired if not o.bona_fide]

    def fta(group: list[Observation]) -> Rate:
        return wilson(sum(o.outcome is Outcome.FTA for o in group), len(group))

    codes: dict[str, int] = {}
    for o in obs:
        if o.outcome is Outcome.ERROR:
            codes[o.code or "unknown"] = codes.get(o.code or "unknown", 0) + 1
    return Acquisition(
        fta=fta(acquired), fta_bona_fide=fta(bf), fta_attack=fta(pa),
        fta_by_attack={t: fta([o for o in pa if o.attack == t]) for t in attack_types(pa)},
        errors=len(obs) - len(acquired), errors_by_code=codes,
    )


def operating_point(obs: Sequence[Observation], threshold: float, name: str = "operating",
                    target: str | None = None) -> OperatingPoint:
    scored = _scored(obs)
    bf = [o for o in scored if o.bona_fide]
    bf_fta = sum(1 for o in obs if o.bona_fide and o.outcome is Outcome.FTA)
    pa = [o for o in scored if not o.bona_fide]
    rejected_bf = sum(not accepted(o.score, threshold) for o in bf)
    per_type = {
        t: wilson(sum(accepted(o.score, threshold) for o in pa if o.attack == t), sum(o.attack == t for o in pa))
        for t in attack_types(pa)
    }
    bpcer = wilson(rejected_bf, len(bf))
    worst_type, worst = _worst(per_type)
    acer = None if worst.n == 0 or bpcer.n == 0 else (worst.value + bpcer.value) / 2
    return OperatingPoint(
        name=name, threshold=threshold, apcer=per_type, apcer_max_type=worst_type, apcer_max=worst,
        apcer_all=wilson(sum(accepted(o.score, threshold) for o in pa), len(pa)),
        bpcer=bpcer, bpcer_with_fta=wilson(rejected_bf + bf_fta, len(bf) + bf_fta), acer=acer, target=target,
    )


def _worst(per_type: Mapping[str, Rate]) -> tuple[str | None, Rate]:
    """The type with the highest APCER; on a tie the one with more presentations (the better
    supported figure), then by name so the answer is deterministic."""
    rated = [(t, r) for t, r in per_type.items() if r.n > 0]
    if not rated:
        return None, Rate(0, 0, None, None, None)
    return min(rated, key=lambda tr: (-tr[1].value, -tr[1].n, tr[0]))


def unreachable(name: str, target: str) -> OperatingPoint:
    empty = Rate(0, 0, None, None, None)
    return OperatingPoint(name, None, {}, None, empty, empty, empty, empty, None, target)


# -- threshold choice ------------------------------------------------------------------------


def cut_threshold(lo: float | None, hi: float | None) -> float | None:
    """A threshold t with ``lo < t <= hi``: ``lo`` (the highest score to reject) is rejected,
    ``hi`` (the lowest score to accept) accepted.  ``lo=None``: accept everything (t <= hi);
    ``hi=None``: reject everything (t > lo, t <= 1).  The midpoint of the gap, rounded to the
    fewest decimals that stay within the middle half of it: a value a person can type into
    LIVENESS_THRESHOLD that keeps at least a quarter of the gap's margin on each side, so a
    score that moves a little (another CPU, a re-encoded file) keeps its decision.  None when
    no threshold in [0, 1] does it (``lo >= 1``)."""
    low = 0.0 if lo is None else lo
    high = 1.0 if hi is None else hi
    if lo is not None and lo >= 1.0:
        return None

    def ok(t: float) -> bool:
        return (t >= 0.0 if lo is None else t > lo) and t <= high

    mid = (low + high) / 2
    margin = (high - low) / 4
    for decimals in range(1, 16):
        t = round(mid, decimals)
        if abs(t - mid) <= margin and ok(t):
            return t
    if ok(mid):
        return mid
    # lo and hi are adjacent floats: the accepted score itself (inclusive) is the only choice.
    return high if ok(high) else None


@dataclass(frozen=True)
class _Cut:
    """Accept every scored item with score >= distinct[j]: j == len(distinct) accepts none."""

    j: int
    bpcer: float | None
    apcer_max: float | None
    apcer_all: float | None


def _cuts(obs: Sequence[Observation]) -> tuple[list[float], list[_Cut]]:
    scored = _scored(obs)
    distinct = sorted({o.score for o in scored})
    bf = sorted(o.score for o in scored if o.bona_fide)
    pa_all = sorted(o.score for o in scored if not o.bona_fide)
    by_type = {t: sorted(o.score for o in scored if not o.bona_fide and o.attack == t) for t in attack_types(scored)}
    cuts = []
    for j in range(len(distinct) + 1):
        t = distinct[j] if j < len(distinct) else math.inf
        # bisect_left counts scores < t: rejected; the rest (>= t) accepted, as the service decides.
        bpcer = bisect.bisect_left(bf, t) / len(bf) if bf else None
        apcer_all = (len(pa_all) - bisect.bisect_left(pa_all, t)) / len(pa_all) if pa_all else None
        apcers = [(len(s) - bisect.bisect_left(s, t)) / len(s) for s in by_type.values() if s]
        cuts.append(_Cut(j, bpcer, max(apcers) if apcers else None, apcer_all))
    return distinct, cuts


def _threshold_of(distinct: Sequence[float], j: int) -> float | None:
    lo = distinct[j - 1] if j > 0 else None
    hi = distinct[j] if j < len(distinct) else None
    return cut_threshold(lo, hi)


def choose_threshold(obs: Sequence[Observation], max_bpcer: float | None = None,
                     max_apcer: float | None = None) -> float | None:
    """The threshold meeting the targets with the best figures; None when none does.

    * ``max_bpcer`` only: the smallest APCER_max with BPCER <= max_bpcer; among equally good
      cuts the smallest pooled APCER (the BPCER budget is met, so fewer attacks come first),
      then the smallest BPCER;
    * ``max_apcer`` only: the smallest BPCER with APCER_max <= max_apcer (then the smallest
      APCER_max, then pooled APCER);
    * both: both constraints, ranked as for ``max_bpcer``.
    Only cuts between distinct observed scores are candidates: every threshold between two
    neighbouring scores makes the same decisions, so that is all the data can tell apart.
    Tied scores can never be split.  Needs scored bona fide and scored attacks: a threshold
    trades one class against the other."""
    if max_bpcer is None and max_apcer is None:
        raise ValueError("need a target")
    distinct, cuts = _cuts(obs)
    if not distinct:
        return None
    feasible = []
    for c in cuts:
        if c.bpcer is None or c.apcer_max is None:
            return None  # a threshold trades one class against the other: both must be there
        if max_bpcer is not None and c.bpcer > max_bpcer + 1e-12:
            continue
        if max_apcer is not None and c.apcer_max > max_apcer + 1e-12:
            continue
        if _threshold_of(distinct, c.j) is None:
            continue  # would need a threshold above 1
        feasible.append(c)
    if not feasible:
        return None
    if max_bpcer is not None:
        best = min(feasible, key=lambda c: (c.apcer_max, c.apcer_all, c.bpcer, c.j))
    else:
        best = min(feasible, key=lambda c: (c.bpcer, c.apcer_max, c.apcer_all, c.j))
    return _threshold_of(distinct, best.j)


def target_label(max_bpcer: float | None = None, max_apcer: float | None = None) -> str:
    parts = []
    if max_bpcer is not None:
        parts.append(f"BPCER <= {max_bpcer * 100:.4g}%")
    if max_apcer is not None:
        parts.append(f"APCER_max <= {max_apcer * 100:.4g}%")
    return " and ".join(parts)


def point_for_target(obs: Sequence[Observation], name: str, max_bpcer: float | None = None,
                     max_apcer: float | None = None) -> OperatingPoint:
    label = target_label(max_bpcer, max_apcer)
    t = choose_threshold(obs, max_bpcer, max_apcer)
    return unreachable(name, label) if t is None else operating_point(obs, t, name, label)


# -- curves ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetCurve:
    """(APCER, BPCER) at every cut, from accepting everything to accepting nothing."""

    attack: str  # an attack type or ALL_ATTACKS
    apcer: tuple[float, ...]
    bpcer: tuple[float, ...]
    n_attack: int
    n_bona_fide: int


def det_curves(obs: Sequence[Observation]) -> list[DetCurve]:
    scored = _scored(obs)
    bf = sorted(o.score for o in scored if o.bona_fide)
    if not bf:
        return []
    distinct = sorted({o.score for o in scored})
    ts = [*distinct, math.inf]
    bpcer = tuple(bisect.bisect_left(bf, t) / len(bf) for t in ts)
    groups = [(t, [o.score for o in scored if not o.bona_fide and o.attack == t]) for t in attack_types(scored)]
    if len(groups) > 1:
        groups.append((ALL_ATTACKS, [o.score for o in scored if not o.bona_fide]))
    curves = []
    for name, scores in groups:
        s = sorted(scores)
        apcer = tuple((len(s) - bisect.bisect_left(s, t)) / len(s) for t in ts)
        curves.append(DetCurve(name, apcer, bpcer, len(s), len(bf)))
    return curves
