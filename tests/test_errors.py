"""The error catalogue's HTTP side: when a client is told to come back later."""

from liveness.errors import (
    FRAME_TOO_FAST,
    MODEL_UNAVAILABLE,
    NOT_READY,
    QUOTA_EXCEEDED,
    TOO_MANY_FAILED_ATTEMPTS,
    UNSUPPORTED_FORMAT,
    LivenessError,
)


def test_retry_after_on_every_503_and_on_429s_that_know_when():
    assert LivenessError(NOT_READY, "loading").headers() == {"Retry-After": "1"}
    err = LivenessError(MODEL_UNAVAILABLE, "triton down", {"retry_after": 3, "backend": "triton"})
    assert err.retry_after == 3 and err.headers() == {"Retry-After": "3"}
    assert LivenessError(TOO_MANY_FAILED_ATTEMPTS, "cool down", {"retry_after": 240}).headers() == {"Retry-After": "240"}
    assert LivenessError(FRAME_TOO_FAST, "slow down", {"retry_after": 1}).retry_after == 1
    # A spent quota does not come back by waiting a second.
    assert LivenessError(QUOTA_EXCEEDED, "spent").headers() is None
    assert LivenessError(UNSUPPORTED_FORMAT, "gif").retry_after is None
    assert LivenessError(UNSUPPORTED_FORMAT, "gif").envelope() == {"error": {"code": "unsupported_format", "message": "gif"}}
