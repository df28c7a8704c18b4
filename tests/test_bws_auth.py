"""BWS 3 client credentials (liveness.keys.bws) on both key stores, JWT verification on an
injected clock, and the AccuracyLevel mapping of edge.bws_grpc (docs/GRPC.md "BioID BWS 3")."""

from __future__ import annotations

import base64

import jwt
import mongomock
import pytest

from fakes import FakeClock
from liveness.errors import LivenessError
from liveness.keys import KeyLookupError, SqliteKeyStore
from liveness.keys.bws import AUDIENCE, LEEWAY_S, MAX_LIFETIME_S, BwsTokenVerifier, sign_client_jwt
from liveness.keys.mongo_store import MongoKeyStore


@pytest.fixture(params=["sqlite", "mongo"])
def store(request, tmp_path):
    s = SqliteKeyStore(tmp_path / "keys.sqlite3") if request.param == "sqlite" else MongoKeyStore(mongomock.MongoClient())
    yield s
    s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)


@pytest.fixture
def client(store):
    key = store.create("app", 10)
    issued = store.create_bws_client("app")
    return key.info.key_id, issued.client.client_id, issued.key_b64


def code_of(verifier: BwsTokenVerifier, token: str | None) -> str:
    with pytest.raises(LivenessError) as e:
        verifier.verify(token)
    assert not token or token not in e.value.message  # never echoed
    return e.value.code


def test_issued_client_key_is_512_bits_and_stored_for_hmac(store, client):
    key_id, client_id, key_b64 = client
    assert len(base64.b64decode(key_b64)) == 64
    assert store.bws_client_key(client_id) == (key_id, base64.b64decode(key_b64))
    (listed,) = store.list_bws_clients()
    assert listed.client_id == client_id and listed.key_id == key_id and not listed.revoked
    assert "key" not in repr(listed).lower().replace("key_id", "")  # a listing never shows the key


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_a_client_signed_jwt_names_the_bound_key(store, client, clock, alg):
    key_id, client_id, key_b64 = client
    token = sign_client_jwt(client_id, key_b64, now=clock(), algorithm=alg)
    assert BwsTokenVerifier(store, clock).verify(token) == key_id


def test_expiry_nbf_and_iat_are_judged_on_the_injected_clock_with_leeway(store, client, clock):
    _, client_id, key_b64 = client
    verifier = BwsTokenVerifier(store, clock)
    token = sign_client_jwt(client_id, key_b64, now=clock(), ttl_s=60)
    clock.advance(60 + LEEWAY_S - 0.5)
    verifier.verify(token)  # within the leeway
    clock.advance(1.0)
    assert code_of(verifier, token) == "invalid_api_key"
    future = sign_client_jwt(client_id, key_b64, now=clock() + 60)  # iat and nbf a minute ahead
    assert code_of(verifier, future) == "invalid_api_key"
    clock.advance(60 - LEEWAY_S + 0.5)
    verifier.verify(future)


def test_claims_must_be_bws_claims(store, client, clock):
    _, client_id, key_b64 = client
    verifier = BwsTokenVerifier(store, clock)
    raw = base64.b64decode(key_b64)
    now = int(clock())

    def signed(**claims) -> str:
        base = {"sub": client_id, "iss": client_id, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 600}
        return jwt.encode({k: v for k, v in {**base, **claims}.items() if v is not None}, raw, algorithm="HS256")

    assert verifier.verify(signed())
    assert verifier.verify(signed(aud=[AUDIENCE, "other"]))  # a list holding BWS is BWS's
    for bad in (signed(aud="BWS2"), signed(aud=None), signed(iss="someone-else"), signed(iss=None),
                signed(exp=None), signed(exp="soon"), signed(iat=now - 10, exp=now + MAX_LIFETIME_S)):
        assert code_of(verifier, bad) == "invalid_api_key"
    other_key = jwt.encode({"sub": client_id, "iss": client_id, "aud": AUDIENCE, "exp": now + 600},
                           b"x" * 64, algorithm="HS256")
    assert code_of(verifier, other_key) == "invalid_api_key"
    unsigned = jwt.encode({"sub": client_id, "iss": client_id, "aud": AUDIENCE, "exp": now + 600}, None, algorithm="none")
    assert code_of(verifier, unsigned) == "invalid_api_key"
    unknown = sign_client_jwt("not-a-client", key_b64, now=now)
    assert code_of(verifier, unknown) == "invalid_api_key"
    assert code_of(verifier, "garbage") == "invalid_api_key"
    assert code_of(verifier, None) == "missing_api_key"
    assert code_of(verifier, "") == "missing_api_key"


def test_revoking_the_client_stops_its_tokens_at_once(store, client, clock):
    _, client_id, key_b64 = client
    verifier = BwsTokenVerifier(store, clock)
    token = sign_client_jwt(client_id, key_b64, now=clock())
    verifier.verify(token)
    revoked = store.revoke_bws_client(client_id)
    assert revoked.revoked and store.revoke_bws_client(client_id).revoked_at == revoked.revoked_at  # idempotent
    assert code_of(verifier, token) == "invalid_api_key"
    with pytest.raises(KeyLookupError):
        store.revoke_bws_client("nope")


def test_no_client_for_a_revoked_key(store):
    store.create("gone", 1)
    store.revoke("gone")
    with pytest.raises(ValueError, match="revoked"):
        store.create_bws_client("gone")
    with pytest.raises(KeyLookupError):
        store.create_bws_client("no-such-key")


def test_cli_issues_a_client_whose_jwt_verifies(tmp_path, monkeypatch, capsys):
    from liveness.cli import main

    db = tmp_path / "cli.sqlite3"
    monkeypatch.setenv("LIVENESS_DB_PATH", str(db))
    monkeypatch.delenv("LIVENESS_MONGODB_URI", raising=False)
    assert main(["keys", "create", "--name", "cli-app", "--limit", "3"]) == 0
    capsys.readouterr()
    assert main(["keys", "bws-client", "cli-app"]) == 0
    client_id, key_b64 = capsys.readouterr().out.strip().splitlines()[-2:]
    with SqliteKeyStore(db) as s:
        assert BwsTokenVerifier(s).verify(sign_client_jwt(client_id, key_b64)) == s.get("cli-app").key_id
    assert main(["keys", "bws-revoke", client_id]) == 0
    assert main(["keys", "bws-client", "no-such-key"]) == 1


def test_accuracy_levels_never_go_below_the_operating_threshold():
    from edge.bws_grpc import IMPOSTOR_MEAN, IMPOSTOR_SD, LEVEL_Z, accuracy_level

    assert accuracy_level(0.41, 0.42) == 0
    assert accuracy_level(0.42, 0.42) == 5  # every extrapolated cut is below 0.42: a match is LEVEL_5
    assert accuracy_level(0.99, 0.42) == 5
    # with a lower operating threshold the levels follow the impostor fit's cuts
    cuts = {level: IMPOSTOR_MEAN + z * IMPOSTOR_SD for level, z in LEVEL_Z}
    assert accuracy_level(cuts[1] + 1e-6, 0.2) == 1
    assert accuracy_level(cuts[3] + 1e-6, 0.2) == 3
    assert accuracy_level(0.21, 0.2) == 0  # above the threshold but below LEVEL_1's cut
    assert [accuracy_level(cuts[n] + 1e-6, 0.0) for n in (1, 2, 3, 4, 5)] == [1, 2, 3, 4, 5]


def test_eyes_are_named_by_the_persons_side():
    from edge.bws_grpc import _face

    face = _face(0.9, [(100.0, 50.0), (160.0, 52.0)])  # detector order: image-left eye first
    assert (face.right_eye.x, face.left_eye.x) == (100.0, 160.0)
