"""Routing: pin/latest/canary/shadow resolve to versions; canary is sticky per API key."""

from __future__ import annotations

import pytest

from liveness.rollout.policy import ModelPolicy, PolicyError, load_policy_file
from liveness.rollout.router import Resolved, Router, canary_bucket, resolve


def test_resolve_modes():
    assert resolve(ModelPolicy(), latest=3) == Resolved(3)
    assert resolve(ModelPolicy("pin", version=1), latest=3) == Resolved(1, mode="pin")
    r = resolve(ModelPolicy("canary", version=1, candidate=2, percent=10), latest=3)
    assert (r.stable, r.candidate, r.mode, r.percent) == (1, 2, "canary", 10)
    assert resolve(ModelPolicy("shadow", candidate=2, percent=50), latest=1).stable == 1


@pytest.mark.parametrize(
    "bad",
    [{"mode": "pin"}, {"mode": "canary", "version": 1}, {"mode": "shadow", "candidate": 2, "percent": 120}, {"mode": "x"}],
)
def test_invalid_policies_are_refused(bad):
    with pytest.raises(PolicyError):
        ModelPolicy.from_dict(bad)


def test_policy_file(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[minifasnet_v2]\nmode = "pin"\nversion = 1\n[minifasnet_v1se]\nmode = "canary"\nversion = 1\ncandidate = 2\npercent = 5\n')
    p = load_policy_file(f)
    assert p["minifasnet_v2"] == ModelPolicy("pin", version=1)
    assert p["minifasnet_v1se"].candidate == 2
    f.write_text('[m]\nmode = "pin"\n')
    with pytest.raises(PolicyError, match="needs a version"):
        load_policy_file(f)
    assert load_policy_file(tmp_path / "missing.toml") == {}


def test_canary_is_sticky_per_key_and_close_to_its_percentage():
    router = Router({"m": Resolved(1, 2, "canary", 20.0), "d": Resolved(5)})
    keys = [f"key{i}" for i in range(4000)]
    first = {k: router.route(k).primary["m"] for k in keys}
    assert all(router.route(k).primary["m"] == first[k] for k in keys[:500])  # sticky
    share = sum(v == 2 for v in first.values()) / len(keys)
    assert 0.17 < share < 0.23
    assert all(router.route(k).primary["d"] == 5 for k in keys[:50])
    assert 0 <= canary_bucket("m", "key1") < 100


def test_shadow_never_changes_the_serving_version_and_samples_at_its_rate():
    draws = iter([0.05, 0.5, 0.09, 0.95] * 250)
    router = Router({"m": Resolved(1, 2, "shadow", 10.0)}, rand=lambda: next(draws))
    routes = [router.route("k") for _ in range(1000)]
    assert all(r.primary["m"] == 1 for r in routes)
    assert sum("m" in r.shadow for r in routes) == 500  # draws 0.05 and 0.09 are under 10%
    assert router.required() == {("m", 1), ("m", 2)}
