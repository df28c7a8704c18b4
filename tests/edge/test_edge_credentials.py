"""edge/credentials.py: the one place a credential is read off a request (README "Native":
X-API-Key, else ``Authorization: Bearer``, else ``hash_id``), session-token recognition, and
the admin key (X-Admin-Key against the configured sha256, constant time)."""

from __future__ import annotations

import hashlib

import pytest
from starlette.datastructures import Headers

from edge.credentials import ADMIN_OFF, ADMIN_WRONG, api_key_from, authorise_admin, check_admin_key, is_session_token
from liveness.errors import ADMIN_DISABLED, INVALID_ADMIN_KEY, LivenessError

ADMIN = "the-admin-key"
ADMIN_SHA = hashlib.sha256(ADMIN.encode()).hexdigest()


def headers(**h: str) -> Headers:
    """Request headers as Starlette gives them (case-insensitive); ``x_api_key`` -> ``X-Api-Key``."""
    return Headers({k.replace("_", "-").title(): v for k, v in h.items()})


@pytest.mark.parametrize(("hdrs", "fields", "expected"), [
    ({"x_api_key": "lk_header"}, {}, "lk_header"),
    ({"authorization": "Bearer lk_bearer"}, {}, "lk_bearer"),
    ({"authorization": "bearer lk_lower"}, {}, "lk_lower"),          # the scheme is case-insensitive
    ({"authorization": "BEARER   lk_spaced  "}, {}, "lk_spaced"),
    ({}, {"hash_id": "lk_field"}, "lk_field"),
    ({}, {"hash_id": b"lk_form_part"}, "lk_form_part"),               # a multipart field is bytes
    ({}, {"hash_id": "  lk_padded \n"}, "lk_padded"),
    # precedence: X-API-Key > Authorization: Bearer > hash_id
    ({"x_api_key": "lk_header", "authorization": "Bearer lk_bearer"}, {"hash_id": "lk_field"}, "lk_header"),
    ({"authorization": "Bearer lk_bearer"}, {"hash_id": "lk_field"}, "lk_bearer"),
    # an empty or unusable slot falls through to the next one
    ({"x_api_key": "", "authorization": "Bearer lk_bearer"}, {}, "lk_bearer"),
    ({"authorization": "Basic dXNlcjpwdw=="}, {"hash_id": "lk_field"}, "lk_field"),
    ({"authorization": "Bearer "}, {"hash_id": "lk_field"}, "lk_field"),
    # nothing usable: None, never "" (the key store then answers missing_api_key)
    ({}, {}, None),
    ({"x_api_key": "   "}, {}, None),
    ({"authorization": "Bearer"}, {}, None),
    ({}, {"hash_id": ""}, None),
    ({}, {"hash_id": 12345}, None),
    ({}, {"hash_id": None}, None),
])
def test_api_key_from_header_bearer_and_field(hdrs, fields, expected):
    assert api_key_from(headers(**hdrs), fields) == expected


def test_header_names_are_case_insensitive_on_a_request_and_lower_case_on_plain_mappings():
    assert api_key_from(Headers({"X-API-KEY": "lk_a"}), {}) == "lk_a"
    assert api_key_from({"x-api-key": "lk_b"}, {}) == "lk_b"  # gRPC metadata and tests: lower-case keys
    assert api_key_from({"authorization": "Bearer eyJa.b.c"}, {}) == "eyJa.b.c"


@pytest.mark.parametrize(("credential", "is_token"), [
    ("eyJhbGciOiJIUzI1NiJ9.eyJzaWQiOiJ4In0.sig", True),
    ("eyJ.a.b", True),
    ("lk_AbCdEf0123", False),
    ("eyJonly.one-dot", False),
    ("eyJ.a.b.c", False),
    ("xeyJ.a.b", False),
    (None, False),
    (b"eyJ.a.b", False),
])
def test_session_tokens_are_told_apart_from_api_keys(credential, is_token):
    assert is_session_token(credential) is is_token


def test_admin_key_checks():
    check_admin_key(ADMIN, ADMIN_SHA)  # the configured key: no error
    check_admin_key(ADMIN, ADMIN_SHA.upper())  # the sha256 may be configured in upper-case hex

    with pytest.raises(LivenessError) as off:
        check_admin_key(ADMIN, None)
    assert (off.value.kind, off.value.status, off.value.message) == (ADMIN_DISABLED, 403, ADMIN_OFF)
    with pytest.raises(LivenessError) as off:
        check_admin_key(ADMIN, "")
    assert off.value.kind is ADMIN_DISABLED  # an empty setting is "off", not "every key is wrong"

    for wrong in ("", "the-admin-ke", ADMIN + " ", ADMIN_SHA):
        with pytest.raises(LivenessError) as e:
            check_admin_key(wrong, ADMIN_SHA)
        assert (e.value.kind, e.value.status, e.value.message) == (INVALID_ADMIN_KEY, 401, ADMIN_WRONG)

    with pytest.raises(LivenessError) as e:
        check_admin_key("nope", ADMIN_SHA, off="custom off", wrong="custom wrong")
    assert e.value.message == "custom wrong"
    with pytest.raises(LivenessError) as e:
        check_admin_key("nope", None, off="custom off", wrong="custom wrong")
    assert e.value.message == "custom off"


def test_authorise_admin_reads_x_admin_key():
    authorise_admin(Headers({"X-Admin-Key": ADMIN}), ADMIN_SHA)
    with pytest.raises(LivenessError) as e:
        authorise_admin(Headers({"Authorization": f"Bearer {ADMIN}"}), ADMIN_SHA)  # only X-Admin-Key counts
    assert e.value.kind is INVALID_ADMIN_KEY
    with pytest.raises(LivenessError) as e:
        authorise_admin(Headers({}), None)
    assert e.value.kind is ADMIN_DISABLED
