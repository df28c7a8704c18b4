"""edge.json_body: the one JSON parser every HTTP route and the WebSocket use.  Deep or packed
bodies are refused as invalid_request before Python's recursive parser sees them."""

from __future__ import annotations

import json

import pytest

from edge.json_body import MAX_CONTAINERS, MAX_DEPTH, nesting_depth, parse_object
from liveness.errors import INVALID_REQUEST, LivenessError


def refused(data) -> LivenessError:
    with pytest.raises(LivenessError) as ei:
        parse_object(data)
    assert ei.value.kind is INVALID_REQUEST and ei.value.status == 400
    return ei.value


@pytest.mark.parametrize("opener,closer", [("[", "]"), ('{"a":', "}")])
def test_a_thousand_levels_in_two_kilobytes_is_invalid_request_not_a_recursion_error(opener, closer):
    body = ('{"x":' + opener * 1000 + "1" + closer * 1000 + "}").encode()
    assert len(body) < 8000
    err = refused(body)
    assert err.details == {"max_depth": MAX_DEPTH} and "nested too deeply" in err.message


def test_the_limit_is_exact():
    ok = '{"x":' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    assert nesting_depth(ok.encode()) == MAX_DEPTH
    assert parse_object(ok)["x"] is not None
    refused('{"x":' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}")


def test_brackets_inside_strings_do_not_count():
    doc = {"image": "[" * 5000 + '\\"{' * 100, "n": [[1]]}
    body = json.dumps(doc).encode()
    assert nesting_depth(body) == 3
    assert parse_object(body) == doc


def test_a_packed_body_is_refused_before_it_is_parsed():
    err = refused(b"[" + b"[]," * (MAX_CONTAINERS + 1) + b"[]]")
    assert err.details == {"max_containers": MAX_CONTAINERS}


@pytest.mark.parametrize("body,message", [
    (b"not json", "not valid JSON"), (b"[1, 2]", "must be an object"), (b"\xff\xfe", "not valid JSON"),
])
def test_invalid_bodies(body, message):
    assert message in refused(body).message


def test_ordinary_bodies_and_the_empty_body():
    assert parse_object(b"") == {}
    assert parse_object(b'  {"session_id": "abc", "image": "AAAA"} ') == {"session_id": "abc", "image": "AAAA"}
    with pytest.raises(LivenessError):
        parse_object(b"", empty_ok=False)
