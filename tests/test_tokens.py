"""The token service (liveness.tokens): the three kinds (gRPC bearer, liveness session, challenge
result) cannot be taken for one another, one secret ring (rotation, ``kid``, legacy verify-only
secrets, precedence of the settings), expiry on an injected clock with each kind's leeway, and
``python -m liveness tokens create``."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from liveness.cli import main
from liveness.errors import INVALID_API_KEY, INVALID_SESSION_TOKEN, MISSING_API_KEY, SESSION_TOKEN_EXPIRED, LivenessError
from liveness.keys import SqliteKeyStore
from liveness.keys.tokens import verify_token  # the old import path still works
from liveness.settings import Settings
from liveness.tokens import (
    MAX_TTL_S,
    BearerTokens,
    ResultTokens,
    SecretRing,
    SessionTokens,
    TokenService,
    bearer_token,
    fingerprint,
    looks_like_token,
    token_ring,
    token_service,
    verify_result_token,
)
from tests.fakes import FakeClock

SECRET = b"s" * 48
OLD, NEW = b"old-secret-" * 4, b"new-secret-" * 4
T0 = 1_000_000.0


def _error(fn, *args, **kwargs) -> LivenessError:
    with pytest.raises(LivenessError) as e:
        fn(*args, **kwargs)
    return e.value


def _claims(token: str) -> dict:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def _service(*secrets: bytes, t: float = T0) -> tuple[TokenService, FakeClock]:
    clock = FakeClock(t)
    return TokenService(list(secrets) or [SECRET], clock), clock


def _settings(**kw) -> Settings:
    """Settings with exactly the token settings given (init values win over env and TOML)."""
    return Settings(**{"token_secrets": (), "jwt_secret": None, "session_token_secrets": (), **kw})


class Source:
    """A store's ``token_secret()``, counting reads."""

    def __init__(self, secret: bytes) -> None:
        self.secret, self.reads = secret, 0

    def token_secret(self) -> bytes:
        self.reads += 1
        return self.secret


# ----------------------------------------------------------------------------- bearer tokens (gRPC)


def test_bearer_round_trip_claims_and_kid():
    svc, _ = _service()
    token = svc.bearer.issue("abc123", 60)
    assert svc.bearer.verify(token) == "abc123"
    claims = _claims(token)
    assert set(claims) == {"typ", "sub", "iat", "exp", "jti"} and claims["typ"] == "api_key"
    assert claims["iat"] == int(T0) and claims["exp"] - claims["iat"] == 60
    assert jwt.get_unverified_header(token)["kid"] == fingerprint(SECRET) != SECRET.decode()
    assert svc.bearer.issue("abc123", 60) != token  # a fresh jti every time


def test_bearer_expiry_on_the_injected_clock_without_leeway():
    svc, clock = _service()
    token = svc.bearer.issue("abc123", 60)
    clock.advance(59)
    assert svc.bearer.verify(token) == "abc123"
    clock.advance(1)  # at exp: expired (no leeway, as PyJWT judged it before)
    err = _error(svc.bearer.verify, token)
    assert err.kind is INVALID_API_KEY and "expired" in err.message
    assert svc.bearer.verify(token, now=T0 + 30) == "abc123"  # an explicit now wins over the clock


def test_bearer_from_the_future_is_refused():
    svc, clock = _service()
    token = svc.bearer.issue("abc123", 600, now=T0 + 120)
    assert _error(svc.bearer.verify, token).kind is INVALID_API_KEY
    clock.advance(120)
    assert svc.bearer.verify(token) == "abc123"


def test_tampered_bearer_is_refused_and_never_echoed():
    svc, _ = _service()
    token = svc.bearer.issue("abc123", 60)
    header, body, sig = token.split(".")
    forged_body = base64.urlsafe_b64encode(json.dumps(_claims(token) | {"sub": "x"}).encode()).rstrip(b"=").decode()
    for bad in (f"{header}.{forged_body}.{sig}", f"{header}.{body}.{sig[:-2]}xx", token + "x", "garbage", "a.b.c"):
        err = _error(svc.bearer.verify, bad)
        assert err.kind is INVALID_API_KEY and bad not in err.message and body not in err.message


def test_wrong_secret_alg_none_and_missing_claims_are_refused():
    svc, _ = _service()
    token = svc.bearer.issue("abc123", 60)
    assert _error(BearerTokens([b"t" * 48], FakeClock(T0)).verify, token).kind is INVALID_API_KEY
    unsigned = jwt.encode(_claims(token), None, algorithm="none")
    assert _error(svc.bearer.verify, unsigned).kind is INVALID_API_KEY
    for claim in ("jti", "sub", "exp", "iat"):
        partial = jwt.encode({k: v for k, v in _claims(token).items() if k != claim}, SECRET, algorithm="HS256")
        assert _error(svc.bearer.verify, partial).kind is INVALID_API_KEY, claim


def test_missing_bearer():
    svc, _ = _service()
    for missing in (None, ""):
        assert _error(svc.bearer.verify, missing).kind is MISSING_API_KEY


@pytest.mark.parametrize("ttl", [0, -5, MAX_TTL_S + 1, True, 1.5])
def test_ttl_validation(ttl):
    with pytest.raises(ValueError):
        TokenService([SECRET]).bearer.issue("abc123", ttl)
    with pytest.raises(ValueError):
        TokenService([SECRET]).bearer.issue("", 60)


def test_bearer_parsing():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    for bad in (None, "", "abc", "Basic abc", "Bearer ", "Bearer"):
        assert bearer_token(bad) is None


def test_old_import_path():
    token = TokenService([SECRET]).bearer.issue("abc123", 60)
    assert verify_token(SECRET, token) == "abc123"
    assert _error(verify_token, SECRET, None).kind is MISSING_API_KEY


# ----------------------------------------------------------------------------- kinds cannot be confused


def _one_of_each(svc: TokenService) -> dict[str, str]:
    return {
        "bearer": svc.bearer.issue("key-1", 600),
        "session": svc.session.issue("sid-1", "passive", T0, 600),
        "result": svc.result.issue({"iss": "liveness", "sid": "sid-1", "verdict": "passed"}, T0, 600),
    }


def test_each_kind_verifies_only_as_itself():
    svc, _ = _service()
    tokens = _one_of_each(svc)
    assert [_claims(t)["typ"] for t in tokens.values()] == ["api_key", "liveness_session", "challenge_result"]
    assert svc.bearer.verify(tokens["bearer"]) == "key-1"
    assert svc.session.verify(tokens["session"]).session_id == "sid-1"
    assert svc.result.verify(tokens["result"])["verdict"] == "passed"
    for kind, token in tokens.items():
        if kind != "bearer":
            assert _error(svc.bearer.verify, token).kind is INVALID_API_KEY, kind
        if kind != "session":
            assert _error(svc.session.verify, token).kind is INVALID_SESSION_TOKEN, kind
        if kind != "result":
            with pytest.raises(jwt.InvalidTokenError):
                svc.result.verify(token)


def test_a_forged_typ_or_the_claims_of_another_kind_do_not_help():
    """Same secret, every claim the other kind needs, but the typ says what the token is."""
    svc, _ = _service()
    base = {"sub": "key-1", "sid": "sid-1", "mode": "passive", "verdict": "passed", "iat": int(T0),
            "exp": int(T0) + 600, "jti": "j"}
    as_session = jwt.encode({**base, "typ": "liveness_session"}, SECRET, algorithm="HS256")
    as_result = jwt.encode({**base, "typ": "challenge_result"}, SECRET, algorithm="HS256")
    as_bearer = jwt.encode({**base, "typ": "api_key"}, SECRET, algorithm="HS256")
    unknown = jwt.encode({**base, "typ": "something_else"}, SECRET, algorithm="HS256")
    assert _error(svc.bearer.verify, as_session).kind is INVALID_API_KEY
    assert _error(svc.bearer.verify, as_result).kind is INVALID_API_KEY
    assert _error(svc.session.verify, as_bearer).kind is INVALID_SESSION_TOKEN
    assert _error(svc.session.verify, as_result).kind is INVALID_SESSION_TOKEN
    for token in (as_bearer, as_session):
        with pytest.raises(jwt.InvalidTokenError):
            svc.result.verify(token)
    assert _error(svc.bearer.verify, unknown).kind is INVALID_API_KEY
    assert _error(svc.session.verify, unknown).kind is INVALID_SESSION_TOKEN


def test_a_token_without_typ_is_accepted_only_as_an_api_key_token():
    """gRPC tokens made before the typ claim: still bearer tokens, never anything else."""
    svc, _ = _service()
    legacy = jwt.encode({"sub": "key-1", "sid": "sid-1", "mode": "passive", "verdict": "passed", "iat": int(T0),
                         "exp": int(T0) + 600, "jti": "j"}, SECRET, algorithm="HS256")
    assert "kid" not in jwt.get_unverified_header(legacy)
    assert svc.bearer.verify(legacy) == "key-1"
    assert _error(svc.session.verify, legacy).kind is INVALID_SESSION_TOKEN
    with pytest.raises(jwt.InvalidTokenError):
        svc.result.verify(legacy)


def test_looks_like_token():
    svc, _ = _service()
    assert all(looks_like_token(t) for t in _one_of_each(svc).values())
    assert not any(looks_like_token(k) for k in ("lk_abc", "", None, "eyJ.only-two"))


# ----------------------------------------------------------------------------- session tokens


def test_session_expiry_has_five_seconds_of_leeway_and_ignores_iat():
    svc, clock = _service()
    token = svc.session.issue("sid-1", "video", T0 + 30, 60)  # iat in the future: not judged
    claims = svc.session.verify(token)
    assert (claims.session_id, claims.mode, claims.expires_at) == ("sid-1", "video", int(T0) + 90)
    clock.advance(94)
    assert svc.session.verify(token).session_id == "sid-1"  # 4 s past exp: within the skew leeway
    clock.advance(1)
    err = _error(svc.session.verify, token)
    assert err.kind is SESSION_TOKEN_EXPIRED and err.status == 401 and token not in err.message


def test_malformed_session_token():
    svc, _ = _service()
    for bad in ("garbage", "", "eyJ.not.jwt"):
        err = _error(svc.session.verify, bad)
        assert err.kind is INVALID_SESSION_TOKEN and (not bad or bad not in err.message)


# ----------------------------------------------------------------------------- result tokens


def test_result_tokens_verify_with_the_shared_secret():
    """What customers do: ``verify_result_token(jwt_secret, token)``, or any JWT library."""
    jwt_secret = "j" * 40
    svc = token_service(_settings(jwt_secret=jwt_secret, session_token_secrets=("t" * 40,)))
    token = svc.result.issue({"iss": "liveness", "sid": "sid-1", "verdict": "failed", "reasons": ["x"]},
                             time.time() - 1, 600)
    assert verify_result_token(jwt_secret.encode(), token)["reasons"] == ["x"]
    assert verify_result_token(jwt_secret, token)["sid"] == "sid-1"
    assert jwt.decode(token, jwt_secret, algorithms=["HS256"])["typ"] == "challenge_result"
    with pytest.raises(jwt.InvalidTokenError):
        verify_result_token(b"t" * 40, token)  # a verify-only secret of the ring is not what signs


def test_result_expiry_on_the_clock():
    tokens = ResultTokens([SECRET], FakeClock(T0))
    token = tokens.issue({"sid": "s", "verdict": "passed"}, T0, 10)
    assert tokens.verify(token, now=T0 + 9.9)["sid"] == "s"
    with pytest.raises(jwt.ExpiredSignatureError):
        tokens.verify(token, now=T0 + 10)
    with pytest.raises(jwt.InvalidTokenError):
        tokens.verify(token, now=T0 - 1)  # issued in the future


# ----------------------------------------------------------------------------- the ring


def test_rotation_first_signs_all_verify():
    old_svc, _ = _service(OLD)
    before = _one_of_each(old_svc)
    rotated, _ = _service(NEW, OLD)
    assert rotated.bearer.verify(before["bearer"]) == "key-1"  # old tokens verify until they expire
    assert rotated.session.verify(before["session"]).session_id == "sid-1"
    assert rotated.result.verify(before["result"])["sid"] == "sid-1"
    after = _one_of_each(rotated)
    assert {jwt.get_unverified_header(t)["kid"] for t in after.values()} == {fingerprint(NEW)}
    new_only, _ = _service(NEW)
    assert new_only.bearer.verify(after["bearer"]) == "key-1"  # the first secret signs
    assert _error(old_svc.bearer.verify, after["bearer"]).kind is INVALID_API_KEY
    assert _error(new_only.session.verify, before["session"]).kind is INVALID_SESSION_TOKEN  # old secret dropped


def test_kid_names_a_secret_but_every_one_is_tried():
    ring = SecretRing([NEW, OLD])
    assert ring.kids == (fingerprint(NEW), fingerprint(OLD)) and ring.signer == (fingerprint(NEW), NEW)
    assert ring.verifiers(fingerprint(OLD)) == [OLD, NEW] and ring.verifiers(None) == [NEW, OLD]
    # a token whose kid names another secret (or none we know) still verifies with the right one
    claims = {"typ": "liveness_session", "sid": "s", "mode": "passive", "iat": int(T0), "exp": int(T0) + 60}
    odd = jwt.encode(claims, OLD, algorithm="HS256", headers={"kid": fingerprint(NEW)})
    assert SessionTokens(ring, FakeClock(T0)).verify(odd).session_id == "s"


def test_ring_drops_duplicates_and_empties_and_needs_a_secret():
    assert len(SecretRing([NEW, "", NEW.decode(), OLD])) == 2
    with pytest.raises(ValueError):
        SecretRing(["", b""])


def test_ring_precedence_token_secrets_win_and_read_no_store():
    keys, sessions, challenges = Source(b"k" * 40), Source(b"s" * 40), Source(b"c" * 40)
    settings = _settings(token_secrets=("n" * 40, "o" * 40), jwt_secret="j" * 40, session_token_secrets=("t" * 40,))
    ring = token_ring(settings, keys=keys, sessions=sessions, challenges=challenges)
    assert ring.kids == (fingerprint(b"n" * 40), fingerprint(b"o" * 40))
    assert keys.reads == sessions.reads == challenges.reads == 0


def test_ring_precedence_of_the_older_settings():
    def ring(**kw) -> tuple[str, ...]:
        return token_ring(_settings(**kw), keys=Source(b"k" * 40), sessions=Source(b"s" * 40),
                          challenges=Source(b"c" * 40)).kids

    k, s, c, j, t = (fingerprint(x * 40) for x in (b"k", b"s", b"c", b"j", b"t"))
    # both set: jwt_secret signs, the session secrets verify, nothing stored is needed
    assert ring(jwt_secret="j" * 40, session_token_secrets=("t" * 40,)) == (j, t)
    # jwt_secret only: the session store's secret keeps pre-upgrade session tokens verifying;
    # the key store's does not (setting jwt_secret always invalidated the stored one's tokens)
    assert ring(jwt_secret="j" * 40) == (j, s)
    # session secrets only: they sign; the key and challenge stores' secrets stay verify-only
    assert ring(session_token_secrets=("t" * 40,)) == (t, k, c)
    # nothing configured: the key store's secret signs, the others verify
    assert ring() == (k, c, s)
    assert token_ring(_settings(), sessions=Source(b"s" * 40), challenges=Source(b"c" * 40)).kids == (c, s)
    with pytest.raises(ValueError):
        token_ring(_settings())


def test_tokens_issued_before_the_upgrade_keep_verifying(tmp_path):
    """No secret configured: each kind was signed with its own store's secret; after the upgrade
    the key store's secret signs everything and the others stay verify-only."""
    from liveness.challenges.store import SqliteSessionStore as ChallengeStore
    from liveness.sessions.store import SqliteSessionStore

    keys = SqliteKeyStore(tmp_path / "db.sqlite3")
    sessions, challenges = SqliteSessionStore(tmp_path / "db.sqlite3"), ChallengeStore(tmp_path / "db.sqlite3")
    try:
        clock = FakeClock(T0)
        old_session = SessionTokens([sessions.token_secret()]).issue("sid-1", "passive", T0, 600)
        old_bearer = BearerTokens([keys.token_secret()]).issue("key-1", 600, now=T0)
        svc = token_service(_settings(), keys=keys, sessions=sessions, challenges=challenges, clock=clock)
        assert svc.ring.signer[1] == keys.token_secret()
        assert svc.session.verify(old_session).session_id == "sid-1"
        assert svc.bearer.verify(old_bearer) == "key-1"
        fresh = svc.session.issue("sid-2", "passive", T0, 600)
        assert jwt.get_unverified_header(fresh)["kid"] == fingerprint(keys.token_secret())
        clock.advance(606)
        assert _error(svc.session.verify, old_session).kind is SESSION_TOKEN_EXPIRED  # ...until they expire
        # configuring jwt_secret invalidates bearer tokens of the stored secret, as it always did
        configured = token_service(_settings(jwt_secret="j" * 40), keys=keys, sessions=sessions, challenges=challenges,
                                   clock=FakeClock(T0))
        assert _error(configured.bearer.verify, old_bearer).kind is INVALID_API_KEY
        assert configured.session.verify(old_session).session_id == "sid-1"
    finally:
        keys.close()
        sessions.close()
        challenges.close()


def test_token_secrets_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("LIVENESS_CONFIG_FILE", str(tmp_path / "none.toml"))
    monkeypatch.setenv("LIVENESS_TOKEN_SECRETS", json.dumps(["a" * 32, "b" * 40]))
    assert Settings().token_secrets == ("a" * 32, "b" * 40)
    with pytest.raises(ValueError):
        Settings(token_secrets=("short",))


# ----------------------------------------------------------------------------- CLI


def _cli_env(tmp_path, monkeypatch):
    db = tmp_path / "keys.sqlite3"
    monkeypatch.setenv("LIVENESS_DB_PATH", str(db))
    for name in ("LIVENESS_MONGODB_URI", "LIVENESS_JWT_SECRET", "LIVENESS_TOKEN_SECRETS", "LIVENESS_SESSION_TOKEN_SECRETS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIVENESS_CONFIG_FILE", str(tmp_path / "none.toml"))
    return db


def test_cli_tokens_create(tmp_path, monkeypatch, capsys):
    db = _cli_env(tmp_path, monkeypatch)
    assert main(["keys", "create", "--name", "acme", "--limit", "3"]) == 0
    capsys.readouterr()
    assert main(["tokens", "create", "--key", "acme", "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    store = SqliteKeyStore(db)
    try:
        key_id = store.get("acme").key_id
        assert verify_token(store.token_secret(), token) == key_id
        # what a worker does: the whole ring (sessions' stored secret verify-only)
        from liveness.sessions.store import SqliteSessionStore

        sessions = SqliteSessionStore(db)
        try:
            assert token_service(_settings(), keys=store, sessions=sessions).bearer.verify(token) == key_id
        finally:
            sessions.close()
        store.revoke("acme")
    finally:
        store.close()
    assert main(["tokens", "create", "--key", "acme", "--ttl", "120"]) == 1  # revoked: no new tokens
    assert "revoked" in capsys.readouterr().err
    assert main(["tokens", "create", "--key", "nope", "--ttl", "120"]) == 1
    assert main(["keys", "create", "--name", "other", "--limit", "1"]) == 0
    assert main(["tokens", "create", "--key", "other", "--ttl", "0"]) == 1
    assert "ttl" in capsys.readouterr().err


def test_cli_signs_with_the_configured_secret(tmp_path, monkeypatch, capsys):
    db = _cli_env(tmp_path, monkeypatch)
    monkeypatch.setenv("LIVENESS_JWT_SECRET", "j" * 40)
    assert main(["keys", "create", "--name", "acme", "--limit", "3"]) == 0
    assert main(["tokens", "create", "--key", "acme", "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert jwt.get_unverified_header(token)["kid"] == fingerprint(b"j" * 40)
    store = SqliteKeyStore(db)
    try:
        assert verify_token(b"j" * 40, token) == store.get("acme").key_id
    finally:
        store.close()
