"""Old import path of the gRPC bearer-token helpers: the token service is ``liveness.tokens``."""

from liveness.tokens import MAX_TTL_S, BearerTokens, bearer_token

__all__ = ["MAX_TTL_S", "bearer_token", "verify_token"]


def verify_token(secret: bytes, token: str | None) -> str:
    """The key_id a valid bearer token signed with ``secret`` names (MISSING_/INVALID_API_KEY)."""
    return BearerTokens([secret]).verify(token)
