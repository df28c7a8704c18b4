"""Quota accounting and dynamic batching under truly concurrent load on the served Bento."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import httpx
import pytest

from e2e_conftest import b64, truncated_jpeg

pytestmark = pytest.mark.e2e


async def _burst(url: str, requests: list[dict]) -> list[httpx.Response]:
    """Fire every request at once; a barrier makes all of them wait until all are ready."""
    limits = httpx.Limits(max_connections=len(requests) + 4, max_keepalive_connections=len(requests) + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120.0, limits=limits) as client:
        gate = asyncio.Event()

        async def one(kwargs: dict) -> httpx.Response:
            await gate.wait()
            return await client.post(**kwargs)

        tasks = [asyncio.create_task(one(kw)) for kw in requests]
        await asyncio.sleep(0)  # let every task reach the gate
        gate.set()
        return await asyncio.gather(*tasks)


def burst(url: str, requests: list[dict]) -> list[httpx.Response]:
    return asyncio.run(_burst(url, requests))


def raw(key: str, data: bytes) -> dict:
    return {"url": "/v1/liveness", "content": data, "headers": {"X-API-Key": key, "content-type": "image/jpeg"}}


def facia(key: str, data: bytes) -> dict:
    return {"url": "/liveness", "json": {"hash_id": key, "selfie_image": b64(data)}}


@pytest.mark.parametrize("api", ["native", "facia"])
def test_concurrent_requests_never_overspend(server, make_key, usage, t1_jpeg, api):
    key = make_key(10)
    make = raw if api == "native" else facia
    ok_status = 200 if api == "native" else 201
    responses = burst(server.url, [make(key, t1_jpeg) for _ in range(50)])
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {ok_status: 10, 429: 40}, (statuses, server.log_tail())
    u = usage(key)
    assert (u["used"], u["remaining"], u["limit"]) == (10, 0, 10), u
    assert u["succeeded"] == 10, u


def mixed_burst(server, make_key, t1_jpeg):
    """10 valid + 10 corrupt (truncated JPEG) requests at once on a key with limit 10."""
    key = make_key(10)
    bad = truncated_jpeg(t1_jpeg)
    responses = burst(server.url, [raw(key, t1_jpeg if i % 2 == 0 else bad) for i in range(20)])
    return key, responses[0::2], responses[1::2]


def test_concurrent_corrupt_images_are_never_charged(server, make_key, usage, t1_jpeg):
    """What holds whatever the interleaving: a corrupt image never succeeds and is never
    charged, a valid one never fails for a reason other than quota, and the key is charged
    exactly once per success.  (A corrupt request that arrives while the quota is fully
    reserved gets 429: the service checks the quota before it looks at the image.)"""
    key, valid, corrupt = mixed_burst(server, make_key, t1_jpeg)
    v = Counter(r.status_code for r in valid)
    c = Counter(r.status_code for r in corrupt)
    assert set(c) <= {400, 429}, c
    assert all(r.json()["error"]["code"] == "corrupt_image" for r in corrupt if r.status_code == 400)
    assert all(r.json()["error"]["code"] == "quota_exceeded" for r in corrupt if r.status_code == 429)
    assert set(v) <= {200, 429}, v
    u = usage(key)
    assert u["used"] == v[200] and u["succeeded"] == v[200], (u, v)
    assert u["used"] + u["remaining"] == 10, u


def test_concurrent_corrupt_images_do_not_block_valid_ones(server, make_key, usage, t1_jpeg):
    """A unit is reserved only once the image has proved valid, so corrupt uploads racing valid
    ones of the same key never hold the quota the valid ones need."""
    key, valid, corrupt = mixed_burst(server, make_key, t1_jpeg)
    v = Counter(r.status_code for r in valid)
    c = Counter(r.status_code for r in corrupt)
    u = usage(key)
    assert v == {200: 10}, f"valid: {dict(v)}, corrupt: {dict(c)}, usage after the burst: {u}"
    # A corrupt upload that arrives once the key is spent may be refused as 429 before decoding.
    assert set(c) <= {400, 429} and c[400] >= 1, f"corrupt: {dict(c)}"
    assert (u["used"], u["remaining"]) == (10, 0), u


_BATCH_LINE = re.compile(r'^liveness_batch_size_(count|bucket)\{([^}]*)\} (\S+)$', re.M)


def batch_histogram(text: str, model: str) -> tuple[float, dict[str, float]]:
    """-> (observation count, {le: cumulative count}) for one model."""
    count, buckets = 0.0, {}
    for kind, labels, value in _BATCH_LINE.findall(text):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if lab.get("model") != model:
            continue
        if kind == "count":
            count = float(value)
        else:
            buckets[lab["le"]] = float(value)
    return count, buckets


def test_dynamic_batching_under_load(server, make_key, t1_jpeg):
    n = 32
    key = make_key(4 * n)
    seen = []
    for attempt in range(3):
        before_count, before = batch_histogram(httpx.get(server.url + "/metrics").text, "minifasnet_v2")
        responses = burst(server.url, [raw(key, t1_jpeg) for _ in range(n)])
        assert [r.status_code for r in responses] == [200] * n, [r.text for r in responses if r.status_code != 200]
        after_count, after = batch_histogram(httpx.get(server.url + "/metrics").text, "minifasnet_v2")
        invocations = after_count - before_count
        single_rows = after.get("1.0", 0.0) - before.get("1.0", 0.0)
        seen.append((invocations, single_rows))
        # Each request sends one face crop: fewer invocations than requests (or any invocation
        # that was not a single row) means some batch carried several requests' rows.
        if invocations < n or single_rows < invocations:
            return
    pytest.fail(f"no batch with more than one row in 3 bursts of {n}: (invocations, 1-row batches) = {seen}")
