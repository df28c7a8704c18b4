"""``python -m liveness evaluate LABELS.csv``: labels -> serving pipeline -> figures -> files."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path

from liveness.evaluation.dataset import read_labels
from liveness.evaluation.report import console_text, summarize, write_all
from liveness.evaluation.runner import StderrProgress, run
from liveness.settings import Settings

DEFAULT_TARGET_APCER = 0.05


def default_out(now: dt.datetime) -> Path:
    return Path("evaluation") / now.strftime("%Y%m%d-%H%M%S")


def evaluate(
    labels: str,
    out: str | None = None,
    threshold: float | None = None,
    target_bpcer: float | None = None,
    target_apcer: float | None = None,
    jobs: int = 4,
) -> int:
    for name, value in (("--threshold", threshold), ("--target-bpcer", target_bpcer), ("--target-apcer", target_apcer)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], got {value:g}")
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    if importlib.util.find_spec("matplotlib") is None:
        # Checked now, not after an hour of scoring: the plots are written last.  The service's
        # runtime set (pyproject, the OCI image) does not include it; requirements.lock does.
        raise ValueError("matplotlib is not installed (needed for the plots): pip install matplotlib==3.11.2 "
                         "-c requirements.lock")
    labelled = read_labels(labels)  # before loading any model: a bad CSV fails in milliseconds
    for label, count in sorted(labelled.skipped_by_label().items()):
        print(f"warning: skipped {count} row(s) labelled {label!r} (neither bona fide nor attack)", file=sys.stderr)
    settings = Settings()  # env + liveness.toml: what the service reads
    configured = settings.threshold
    if threshold is not None:
        # Applied to the app too, so the per-item verdicts (and the video frame votes) are the
        # service's answers at this threshold, not at the configured one.
        settings = settings.model_copy(update={"threshold": threshold})
    now = dt.datetime.now().astimezone()
    out_dir = Path(out) if out else default_out(now)
    results = run(settings, labelled.items, jobs=jobs, progress=StderrProgress())
    ev = summarize(
        results, labelled, settings.threshold, created=now.isoformat(timespec="seconds"),
        target_bpcer=target_bpcer, target_apcer=target_apcer, default_target_apcer=DEFAULT_TARGET_APCER,
        settings={
            "threshold": settings.threshold, "configured_threshold": configured, "detector": settings.detector,
            "detector_confidence": settings.detector_confidence, "antispoof_models": list(settings.antispoof_models),
            "multi_face_policy": settings.multi_face_policy, "backend": settings.backend,
            "model_repository": str(settings.model_repository), "model_policy_file": str(settings.model_policy_file),
            # Where this version of the service has them.
            **{k: getattr(settings, k) for k in ("fusion", "fusion_weights", "detector_fallback")},
        },
    )
    paths = write_all(ev, out_dir)
    print(console_text(ev))
    print(f"Wrote {out_dir}/: " + ", ".join(p.name for p in paths.values()))
    return 0
