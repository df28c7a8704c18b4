"""Bearer tokens for the gRPC API (liveness.keys.tokens) and ``python -m liveness tokens create``."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import jwt
import pytest

from liveness.cli import main
from liveness.errors import INVALID_API_KEY, MISSING_API_KEY, LivenessError
from liveness.keys import SqliteKeyStore
from liveness.keys.tokens import bearer_token, make_token, signing_secret, verify_token

SECRET = b"s" * 48


def _kind(fn, *args):
    with pytest.raises(LivenessError) as e:
        fn(*args)
    return e.value.kind, e.value.message


def _claims(token: str) -> dict:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_round_trip_and_claims():
    token = make_token(SECRET, "abc123", 60)
    assert verify_token(SECRET, token) == "abc123"
    claims = _claims(token)
    assert set(claims) == {"sub", "iat", "exp", "jti"}
    assert claims["exp"] - claims["iat"] == 60
    assert make_token(SECRET, "abc123", 60) != token  # a fresh jti every time


def test_expired_token_is_refused():
    past = datetime.now(timezone.utc) - timedelta(seconds=120)
    token = make_token(SECRET, "abc123", 60, now=past)
    kind, message = _kind(verify_token, SECRET, token)
    assert kind is INVALID_API_KEY and "expired" in message


def test_tampered_token_is_refused():
    token = make_token(SECRET, "abc123", 60)
    header, body, sig = token.split(".")
    claims = _claims(token) | {"sub": "someone-else"}
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    for bad in (f"{header}.{forged_body}.{sig}", f"{header}.{body}.{sig[:-2]}xx", token + "x", "garbage", "a.b.c"):
        kind, message = _kind(verify_token, SECRET, bad)
        assert kind is INVALID_API_KEY and bad not in message


def test_wrong_secret_and_algorithm_are_refused():
    token = make_token(SECRET, "abc123", 60)
    assert _kind(verify_token, b"t" * 48, token)[0] is INVALID_API_KEY
    # alg=none (unsigned) and a missing claim are refused too
    unsigned = jwt.encode(_claims(token), None, algorithm="none")
    assert _kind(verify_token, SECRET, unsigned)[0] is INVALID_API_KEY
    no_jti = jwt.encode({k: v for k, v in _claims(token).items() if k != "jti"}, SECRET, algorithm="HS256")
    assert _kind(verify_token, SECRET, no_jti)[0] is INVALID_API_KEY


def test_missing_token():
    for missing in (None, ""):
        assert _kind(verify_token, SECRET, missing)[0] is MISSING_API_KEY


@pytest.mark.parametrize("ttl", [0, -5, 10**9, True, 1.5])
def test_ttl_validation(ttl):
    with pytest.raises(ValueError):
        make_token(SECRET, "abc123", ttl)


def test_bearer_parsing():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    for bad in (None, "", "abc", "Basic abc", "Bearer ", "Bearer"):
        assert bearer_token(bad) is None


def test_signing_secret_prefers_the_configured_one(tmp_path):
    store = SqliteKeyStore(tmp_path / "k.sqlite3")
    try:
        assert signing_secret("c" * 40, store) == b"c" * 40
        assert signing_secret(None, store) == store.token_secret()
    finally:
        store.close()


def test_cli_tokens_create(tmp_path, monkeypatch, capsys):
    db = tmp_path / "keys.sqlite3"
    monkeypatch.setenv("LIVENESS_DB_PATH", str(db))
    monkeypatch.delenv("LIVENESS_MONGODB_URI", raising=False)
    monkeypatch.delenv("LIVENESS_JWT_SECRET", raising=False)
    monkeypatch.setenv("LIVENESS_CONFIG_FILE", str(tmp_path / "none.toml"))
    assert main(["keys", "create", "--name", "acme", "--limit", "3"]) == 0
    capsys.readouterr()
    assert main(["tokens", "create", "--key", "acme", "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    store = SqliteKeyStore(db)
    try:
        key_id = store.get("acme").key_id
        assert verify_token(store.token_secret(), token) == key_id
        store.revoke("acme")
    finally:
        store.close()
    assert main(["tokens", "create", "--key", "acme", "--ttl", "120"]) == 1  # revoked: no new tokens
    assert "revoked" in capsys.readouterr().err
    assert main(["tokens", "create", "--key", "nope", "--ttl", "120"]) == 1
    assert main(["keys", "create", "--name", "other", "--limit", "1"]) == 0
    assert main(["tokens", "create", "--key", "other", "--ttl", "0"]) == 1
    assert "ttl" in capsys.readouterr().err
