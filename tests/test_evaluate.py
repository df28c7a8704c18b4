"""`liveness evaluate`: the ISO/IEC 30107-3 arithmetic by hand on synthetic sets (no models),
the labels reader on awkward CSVs, the report files, then the whole tool as a user runs it."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from liveness.evaluation.dataset import Item, read_labels
from liveness.evaluation.metrics import (
    Observation,
    Outcome,
    accepted,
    acquisition,
    choose_threshold,
    cut_threshold,
    det_curves,
    operating_point,
    point_for_target,
    wilson,
)
from tests.conftest import MEDIA, MODEL_REPOSITORY, REPO

Z2 = 1.959963984540054 ** 2

B, A = True, False  # bona fide, attack


def scored(bona_fide: bool, score: float, attack: str = "") -> Observation:
    return Observation(bona_fide, attack if not bona_fide else "", Outcome.SCORED, score)


# -- Wilson ----------------------------------------------------------------------------------


def test_wilson_zero_of_ten():
    # k = 0: low = 0, high = z^2 / (n + z^2) = 3.841459 / 13.841459
    r = wilson(0, 10)
    assert (r.k, r.n, r.value, r.low) == (0, 10, 0.0, 0.0)
    assert r.high == pytest.approx(Z2 / (10 + Z2), abs=1e-12)
    assert r.high == pytest.approx(0.277533, abs=1e-6)


def test_wilson_five_of_ten():
    # centre (p + z^2/2n) / (1 + z^2/n) = 0.5; half-width z/(1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2)
    #   = 1.959964 / 1.384146 * sqrt(0.025 + 0.009604) = 0.263407
    r = wilson(5, 10)
    assert r.value == 0.5
    assert r.low == pytest.approx(0.236593, abs=1e-6)
    assert r.high == pytest.approx(0.763407, abs=1e-6)


def test_wilson_edges():
    full = wilson(10, 10)  # mirror image of 0/10
    assert full.high == 1.0 and full.low == pytest.approx(1 - Z2 / (10 + Z2), abs=1e-12)
    empty = wilson(0, 0)
    assert (empty.value, empty.low, empty.high) == (None, None, None)
    assert wilson(0, 1).high == pytest.approx(Z2 / (1 + Z2))  # 0.793: one item says almost nothing
    with pytest.raises(ValueError):
        wilson(3, 2)


# -- figures at a threshold ------------------------------------------------------------------

# 10 scored bona fide, 2 bona fide FTA, 1 bona fide error; print: 4 scored + 1 FTA; replay: 3
# scored + 1 error (one of them exactly at the threshold); one attack without a type.
SYNTHETIC = [
    *(scored(B, s) for s in (0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.55, 0.45, 0.3, 0.2)),
    Observation(B, "", Outcome.FTA, code="no_face"),
    Observation(B, "", Outcome.FTA, code="failure_to_acquire"),
    Observation(B, "", Outcome.ERROR, code="corrupt_image"),
    *(scored(A, s, "print") for s in (0.1, 0.2, 0.6, 0.05)),
    Observation(A, "print", Outcome.FTA, code="no_face"),
    *(scored(A, s, "replay") for s in (0.5, 0.3, 0.05)),
    Observation(A, "replay", Outcome.ERROR, code="file_not_found"),
]


def test_figures_counted_by_hand_at_threshold_05():
    p = operating_point(SYNTHETIC, 0.5)
    # bona fide below 0.5: 0.45, 0.3, 0.2 -> 3 of the 10 scored
    assert (p.bpcer.k, p.bpcer.n) == (3, 10)
    # ... plus the 2 bona fide FTAs as rejections, over 12 (the error is in neither)
    assert (p.bpcer_with_fta.k, p.bpcer_with_fta.n) == (5, 12)
    # print accepted: 0.6 -> 1/4 (the FTA is not an accepted attack, nor in n)
    assert (p.apcer["print"].k, p.apcer["print"].n) == (1, 4)
    # replay accepted: 0.5 exactly (inclusive, like the service) -> 1/3
    assert (p.apcer["replay"].k, p.apcer["replay"].n) == (1, 3)
    assert p.apcer_max_type == "replay" and (p.apcer_max.k, p.apcer_max.n) == (1, 3)
    assert (p.apcer_all.k, p.apcer_all.n) == (2, 7)
    assert p.acer == pytest.approx((1 / 3 + 3 / 10) / 2)
    assert (p.bpcer.low, p.bpcer.high) == pytest.approx((0.107791, 0.603222), abs=1e-6)


def test_acquisition_and_errors_counted_by_hand():
    a = acquisition(SYNTHETIC)
    # not errors: 12 bona fide + 5 print + 3 replay = 20; FTAs: 2 + 1
    assert (a.fta.k, a.fta.n) == (3, 20)
    assert (a.fta_bona_fide.k, a.fta_bona_fide.n) == (2, 12)
    assert (a.fta_attack.k, a.fta_attack.n) == (1, 8)
    assert {t: (r.k, r.n) for t, r in a.fta_by_attack.items()} == {"print": (1, 5), "replay": (0, 3)}
    assert a.errors == 2 and a.errors_by_code == {"corrupt_image": 1, "file_not_found": 1}


def test_apcer_max_tie_prefers_the_better_supported_type():
    obs = [scored(B, 0.9), *(scored(A, s, "print") for s in (0.9, 0.1)), *(scored(A, s, "mask") for s in (0.9, 0.9, 0.1, 0.1))]
    p = operating_point(obs, 0.5)
    assert p.apcer["print"].value == p.apcer["mask"].value == 0.5
    assert p.apcer_max_type == "mask"


def test_acceptance_rule_is_the_service_rule():
    from liveness.decision import decide

    for score, t in ((0.5, 0.5), (0.4999999, 0.5), (1.0, 1.0), (0.0, 0.0), (0.7, 0.3)):
        assert accepted(score, t) is decide(score, t)


# -- threshold choice ------------------------------------------------------------------------


def test_cut_threshold_midpoint_rule():
    assert cut_threshold(0.1813, 0.9936) == 0.6  # mid 0.587, rounded within the middle half
    assert cut_threshold(0.2, 0.3) == 0.25  # 0.2 or 0.3 would sit on a score
    assert cut_threshold(None, 0.2) == 0.1  # accept all: the gap down to 0
    assert cut_threshold(0.6, None) == 0.8  # reject all: the gap up to 1
    assert cut_threshold(1.0, None) is None  # nothing in [0, 1] rejects a score of 1
    hi = math.nextafter(0.5, 1.0)
    assert cut_threshold(0.5, hi) == hi  # adjacent floats: the accepted score itself
    for lo, hi in ((0.1, 0.2), (0.33, 0.34), (0.0723, 0.0724), (0.9, 1.0)):
        t = cut_threshold(lo, hi)
        assert lo < t <= hi and abs(t - (lo + hi) / 2) <= (hi - lo) / 4


# Ties: a bona fide and an attack both at 0.6, and two bona fide at 0.6.
TIES = [scored(B, 0.9), scored(B, 0.6), scored(B, 0.6), scored(B, 0.3), scored(A, 0.6, "print"), scored(A, 0.2, "print")]


def test_threshold_at_target_bpcer_with_ties():
    # Cuts: accept all (APCER 2/2); >= 0.3 (BPCER 0/4, APCER 1/2); >= 0.6 (BPCER 1/4, APCER 1/2);
    # >= 0.9 (BPCER 3/4, APCER 0/2); none.  For BPCER <= 25 % the smallest APCER is 1/2, reached
    # with BPCER 0 between 0.2 and 0.3: not at the largest feasible cut, which costs BPCER 1/4.
    assert choose_threshold(TIES, max_bpcer=0.25) == 0.25
    assert choose_threshold(TIES, max_bpcer=0.0) == 0.25
    # BPCER <= 75 % admits the cut above the tie at 0.6: exactly at the target counts.
    assert choose_threshold(TIES, max_bpcer=0.75) == 0.8
    p = point_for_target(TIES, "t", max_bpcer=0.75)
    assert (p.bpcer.k, p.bpcer.n, p.apcer_max.k) == (3, 4, 0)


def test_threshold_at_target_apcer_with_ties():
    # APCER 0 needs the 0.6 attack rejected, so the tied bona fide go with it.
    assert choose_threshold(TIES, max_apcer=0.0) == 0.8
    assert choose_threshold(TIES, max_apcer=0.5) == 0.25  # lowest BPCER (0/4) at APCER 1/2
    both = choose_threshold(TIES, max_bpcer=0.25, max_apcer=0.0)
    assert both is None  # no cut meets both


def test_tied_scores_are_never_split():
    for t in [cut_threshold(None, 0.2), 0.25, 0.6, 0.8, choose_threshold(TIES, max_bpcer=0.25)]:
        decisions = {accepted(o.score, t) for o in TIES if o.score == 0.6}
        assert len(decisions) == 1


def test_threshold_unreachable_and_degenerate_sets():
    assert choose_threshold([scored(B, 0.9)], max_bpcer=0.05) is None  # no attacks
    assert choose_threshold([scored(A, 0.9, "print")], max_apcer=0.05) is None  # no bona fide
    # An attack at 1.0 can only be rejected above 1: APCER 0 is unreachable.
    assert choose_threshold([scored(B, 1.0), scored(A, 1.0, "print")], max_apcer=0.0) is None
    p = point_for_target([scored(B, 1.0), scored(A, 1.0, "print")], "t", max_apcer=0.0)
    assert p.threshold is None and p.target == "APCER_max <= 0%"


def test_recommended_threshold_reproduces_its_figures():
    # BPCER <= 10 % allows rejecting bona fide 0.2.  Cut 0.15 (keep it, BPCER 0) and cut 0.25
    # (lose it, BPCER 1/10) both let replay 0.5 and 0.3 through (APCER_max 2/3); 0.25 also stops
    # print 0.2 (pooled 3/7 against 4/7), and the BPCER budget is met, so 0.25 wins.
    t = choose_threshold(SYNTHETIC, max_bpcer=0.1)
    assert t == 0.25
    p = operating_point(SYNTHETIC, t)
    assert (p.bpcer.k, p.apcer_max.k, p.apcer_max.n, p.apcer_max_type) == (1, 2, 3, "replay")
    assert (p.apcer["print"].k, p.apcer_all.k) == (1, 3)
    # With no BPCER to spare, the cut below bona fide 0.2 is the best left.
    assert choose_threshold(SYNTHETIC, max_bpcer=0.0) == 0.15


def test_det_curves():
    curves = {c.attack: c for c in det_curves(SYNTHETIC)}
    assert set(curves) == {"print", "replay", "all attacks"}
    c = curves["print"]
    assert (c.apcer[0], c.bpcer[0], c.apcer[-1], c.bpcer[-1]) == (1.0, 0.0, 0.0, 1.0)
    assert all(a >= b for a, b in zip(c.apcer, c.apcer[1:])) and all(a <= b for a, b in zip(c.bpcer, c.bpcer[1:]))


# -- the labels file -------------------------------------------------------------------------


def test_labels_bom_crlf_alias_spaces_and_skips(tmp_path):
    (tmp_path / "sub dir").mkdir()
    (tmp_path / "sub dir" / "a b.jpg").write_bytes(b"x")
    absolute = tmp_path / "abs.mp4"
    text = ("Subject,FILE,Label,Attack_Type,extra\r\n"
            "s1,sub dir/a b.jpg,Bona Fide,none,1\r\n"
            f"s2,{absolute},ATTACK,Replay,2\r\n"
            "s3,sub dir\\a b.jpg,fake,,3\r\n"
            "s4,x.gif,mixed,live+print,4\r\n"
            "\r\n"
            "s5,missing.jpg,spoof,mask\r\n")
    path = tmp_path / "labels.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    ls = read_labels(path)
    got = [(i.line, i.bona_fide, i.attack, i.subject, i.media) for i in ls.items]
    assert got == [(2, True, "", "s1", "image"), (3, False, "replay", "s2", "video"),
                   (4, False, "unknown", "s3", "image"), (7, False, "mask", "s5", "image")]
    assert ls.items[0].path == tmp_path / "sub dir" / "a b.jpg"
    assert ls.items[1].path == absolute
    assert ls.items[2].path == tmp_path / "sub dir" / "a b.jpg"  # Windows separators forgiven
    assert ls.items[3].path == tmp_path / "missing.jpg" and not ls.items[3].path.exists()
    assert ls.skipped_by_label() == {"mixed": 1}


def test_labels_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        read_labels(tmp_path / "nope.csv")
    (tmp_path / "bad.csv").write_text("path,class\na.jpg,real\n")
    with pytest.raises(ValueError, match="no 'file' column"):
        read_labels(tmp_path / "bad.csv")
    (tmp_path / "none.csv").write_text("file,label\na.jpg,mixed\n")
    with pytest.raises(ValueError, match="no row with a bona fide or attack label"):
        read_labels(tmp_path / "none.csv")


def test_dev_labels_csv_reads(media):
    ls = read_labels(media / "labels.csv")
    assert [(i.path.name, i.bona_fide, i.attack) for i in ls.items] == [
        ("silentface_image_T1.jpg", True, ""), ("silentface_image_F1.jpg", False, "print"),
        ("silentface_image_F2.jpg", False, "replay"), ("jomariya_real_1.mp4", True, "")]
    assert ls.skipped_by_label() == {"mixed": 1}


# -- report files without models -------------------------------------------------------------


def _is_png(path: Path) -> bool:
    import cv2
    import numpy as np

    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None


def test_report_files_from_synthetic_results(tmp_path):
    from liveness.evaluation.dataset import LabelledSet
    from liveness.evaluation.report import summarize, write_all
    from liveness.evaluation.runner import ItemResult

    results = []
    for i, o in enumerate(SYNTHETIC):
        item = Item(i + 2, f"f {i}.jpg", tmp_path / f"f {i}.jpg", o.bona_fide, o.attack, "")
        results.append(ItemResult(item, o.outcome, o.score, None if o.score is None else
                                  ("live" if o.score >= 0.5 else "spoof"), o.code, acquisition="reference",
                                  model_scores={} if o.score is None else {"m1": o.score, "m2": o.score}))
    ev = summarize(results, LabelledSet(tmp_path / "labels.csv", ()), 0.5, created="now", target_bpcer=0.1)
    paths = write_all(ev, tmp_path / "out")
    assert all(_is_png(paths[n]) for n in ("det.png", "histograms.png"))
    rows = list(csv.DictReader(open(paths["items.csv"], encoding="utf-8")))
    assert len(rows) == len(SYNTHETIC) and {"score_m1", "score_m2", "acquisition", "error"} <= set(rows[0])
    summary = json.loads(paths["summary.json"].read_text())
    op = summary["points"][0]
    assert (op["bpcer"]["k"], op["bpcer"]["n"], op["apcer_max"]["k"], op["apcer_max"]["n"]) == (3, 10, 1, 3)
    assert summary["recommended"]["threshold"] == choose_threshold(SYNTHETIC, max_bpcer=0.1)
    assert summary["acquisition"]["errors"] == 2
    assert "Recommended threshold" in paths["summary.md"].read_text()


def test_report_warns_when_a_canary_splits_versions(tmp_path):
    from liveness.evaluation.dataset import LabelledSet
    from liveness.evaluation.report import console_text, summarize
    from liveness.evaluation.runner import ItemResult

    def result(bona_fide, score, version):
        item = Item(2, "f.jpg", tmp_path / "f.jpg", bona_fide, "" if bona_fide else "print", "")
        return ItemResult(item, Outcome.SCORED, score, models=("retinaface v1", f"minifasnet_v2 v{version}"))

    ev = summarize([result(True, 0.9, 1), result(False, 0.1, 2)], LabelledSet(tmp_path, ()), 0.5, created="now")
    assert ev.mixed_versions == ["minifasnet_v2"]
    assert "Several versions of minifasnet_v2 answered" in console_text(ev)


def test_progress_is_silent_off_a_terminal():
    from liveness.evaluation.runner import StderrProgress

    buf = io.StringIO()
    p = StderrProgress(buf)
    p(1, 2)
    p(2, 2)
    assert buf.getvalue() == ""


def test_cli_reports_a_missing_labels_file(capsys):
    from liveness.cli import main

    assert main(["evaluate", "/nonexistent/labels.csv"]) == 1
    assert "labels file not found" in capsys.readouterr().err


# -- end to end, as a user runs it -----------------------------------------------------------

REFERENCE = {"T1": 0.9936, "F1": 0.0723, "F2": 0.1813}  # fused scores, default detector (RetinaFace)


def test_evaluate_end_to_end_on_dev_media(tmp_path, model_repository):
    images = MEDIA / "images"
    corrupt = tmp_path / "broken selfie.jpg"
    corrupt.write_bytes((images / "silentface_image_T1.jpg").read_bytes()[:3000])
    rows = [
        ("file", "label", "attack", "subject"),
        (str(images / "silentface_image_T1.jpg"), "real", "", "sf"),
        (str(images / "silentface_image_F1.jpg"), "spoof", "print", "sf"),
        (str(images / "silentface_image_F2.jpg"), "spoof", "replay", "sf"),
        (str(MEDIA / "videos" / "jomariya_real_1.mp4"), "real", "", "jo"),
        (corrupt.name, "spoof", "print", ""),
    ]
    labels = tmp_path / "my labels.csv"
    with open(labels, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\r\n").writerows(rows)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVENESS_")}
    env.update(LIVENESS_DB_PATH=str(tmp_path / "db.sqlite3"), LIVENESS_MODEL_REPOSITORY=str(model_repository),
               LIVENESS_MODEL_POLICY_FILE=str(REPO / "model_policy.toml"),
               LIVENESS_CONFIG_FILE=str(tmp_path / "no-liveness.toml"))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "liveness", "evaluate", str(labels), "--out", str(out), "--threshold", "0.5",
         "--target-bpcer", "0.05", "--jobs", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr  # no progress bar off a terminal
    m = re.search(r"^Recommended threshold: ([0-9.]+) for BPCER <= 5%", proc.stdout, re.M)
    assert m, proc.stdout
    recommended = float(m.group(1))
    assert 0.1813 < recommended <= 0.9936

    items = {Path(r["path"]).name: r for r in csv.DictReader(open(out / "items.csv", encoding="utf-8"))}
    for name, ref in REFERENCE.items():
        row = items[f"silentface_image_{name}.jpg"]
        assert float(row["score"]) == pytest.approx(ref, abs=1e-3)
        assert row["outcome"] == "scored" and row["acquisition"]
        assert float(row["score_minifasnet_v2"]) >= 0 and float(row["score_minifasnet_v1se"]) >= 0
    video = items["jomariya_real_1.mp4"]
    assert (video["media"], video["outcome"], video["verdict"]) == ("video", "scored", "live")
    assert float(video["score"]) >= 0.5
    broken = items[corrupt.name]
    assert (broken["outcome"], broken["error"]) == ("error", "corrupt_image")

    summary = json.loads((out / "summary.json").read_text())
    op = summary["points"][0]
    assert op["threshold"] == 0.5
    assert (op["apcer_all"]["k"], op["apcer_all"]["n"]) == (0, 2)
    assert (op["bpcer"]["k"], op["bpcer"]["n"]) == (0, 2)
    assert {t: (r["k"], r["n"]) for t, r in op["apcer"].items()} == {"print": (0, 1), "replay": (0, 1)}
    assert summary["acquisition"]["errors_by_code"] == {"corrupt_image": 1}
    assert summary["recommended"]["threshold"] == recommended
    assert _is_png(out / "det.png") and _is_png(out / "histograms.png")
    assert (out / "summary.md").read_text().startswith("# Liveness evaluation")
