"""Policy store (SQLite file and MongoDB via mongomock) and the rollout operations on it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from liveness.rollout.manager import PolicyBook, RolloutError
from liveness.rollout.policy import ModelPolicy
from liveness.rollout.store import MongoPolicyStore, SqlitePolicyStore


@pytest.fixture
def store(store_of):
    return store_of(SqlitePolicyStore, MongoPolicyStore)


def test_revision_records_and_persistence(store, tmp_path):
    assert store.revision() == 0 and store.records() == {}
    r1 = store.set("m", ModelPolicy("pin", version=2), previous=1)
    r2 = store.set("m", ModelPolicy("canary", version=2, candidate=3, percent=5), previous=1)
    assert r2 == r1 + 1 == store.revision()
    rec = store.records()["m"]
    assert rec.policy.candidate == 3 and rec.previous == 1
    if isinstance(store, SqlitePolicyStore):  # a new process sees the same state
        again = SqlitePolicyStore(tmp_path / "db.sqlite3")
        assert again.revision() == r2 and again.records()["m"].policy.mode == "canary"


def test_shadow_aggregates(store):
    store.record_shadow("m", 1, 2, 0.9, 0.8, 0.5)
    store.record_shadow("m", 1, 2, 0.6, 0.4, 0.5)  # verdicts differ
    (s,) = store.shadow_stats()
    assert (s.samples, s.agree) == (2, 1) and s.agreement == 0.5
    assert s.max_abs_diff == pytest.approx(0.2) and s.mean_abs_diff == pytest.approx(0.15)


def _repo_with_versions(tmp_path, model_repository, versions=(1, 2), corrupt=None):
    """A copy of one real model with extra versions (same file, its real parity reference)."""
    dst = tmp_path / "repo" / "minifasnet_v2"
    src = model_repository / "minifasnet_v2"
    dst.mkdir(parents=True)
    shutil.copy(src / "config.pbtxt", dst / "config.pbtxt")
    for v in versions:
        shutil.copytree(src / "1", dst / str(v))
    if corrupt is not None:
        (dst / str(corrupt) / "model.onnx").write_bytes(b"not a model")
    return dst.parent


def test_promote_rollback_and_experiments(tmp_path, model_repository):
    repo = _repo_with_versions(tmp_path, model_repository, (1, 2, 3))
    book = PolicyBook(repo, ["minifasnet_v2"], {"minifasnet_v2": ModelPolicy("pin", version=1)}, SqlitePolicyStore(tmp_path / "s.db"))
    assert book.states()["minifasnet_v2"].resolved.stable == 1
    book.promote("minifasnet_v2", 2)
    st = book.states()["minifasnet_v2"]
    assert (st.resolved.stable, st.previous) == (2, 1)
    book.experiment("minifasnet_v2", "canary", 3, 10)
    st = book.states()["minifasnet_v2"]
    assert (st.resolved.stable, st.resolved.candidate, st.resolved.percent) == (2, 3, 10)
    book.rollback("minifasnet_v2")  # stops the canary, keeps v2
    assert book.states()["minifasnet_v2"].resolved == book.states()["minifasnet_v2"].resolved.__class__(2, mode="pin")
    book.rollback("minifasnet_v2")  # back before the promote
    assert book.states()["minifasnet_v2"].resolved.stable == 1
    with pytest.raises(RolloutError, match="nothing to roll back"):
        book.rollback("minifasnet_v2")


def test_a_broken_version_is_refused_and_the_policy_is_unchanged(tmp_path, model_repository):
    repo = _repo_with_versions(tmp_path, model_repository, (1, 2), corrupt=2)
    store = SqlitePolicyStore(tmp_path / "s.db")
    book = PolicyBook(repo, ["minifasnet_v2"], {}, store)
    with pytest.raises(RolloutError, match="does not run"):
        book.promote("minifasnet_v2", 2)
    with pytest.raises(RolloutError, match="no version 7"):
        book.experiment("minifasnet_v2", "shadow", 7, 5)
    assert store.revision() == 0


def test_a_version_failing_parity_is_refused(tmp_path, model_repository):
    repo = _repo_with_versions(tmp_path, model_repository, (1, 2))
    ref = dict(np.load(repo / "minifasnet_v2" / "2" / "parity.npz"))
    ref["y"] = ref["y"] + np.array([5.0, -5.0, 0.0], np.float32)  # expected outputs it cannot meet
    np.savez(repo / "minifasnet_v2" / "2" / "parity.npz", **ref)
    book = PolicyBook(repo, ["minifasnet_v2"], {}, SqlitePolicyStore(tmp_path / "s.db"))
    with pytest.raises(RolloutError, match="parity"):
        book.promote("minifasnet_v2", 2)
