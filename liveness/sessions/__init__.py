"""App-server sessions (Azure Face liveness-session style): the app server, holding the API key,
creates a session and hands its short-lived token to a phone or browser, which runs the check
with that token only; the app server then reads the result and deletes the session.  Optional
face verification against a reference image (``*-verify`` modes).  README "Sessions"; the parts
are listed in liveness.sessions.service, the session tokens are a kind of liveness.tokens."""

from liveness.sessions.model import MODES, SessionParams, SessionRecord, parse_params
from liveness.sessions.service import Grant, SessionService, require_sessions
from liveness.sessions.store import SessionStore, open_session_store

__all__ = [
    "MODES", "Grant", "SessionParams", "SessionRecord", "SessionService", "SessionStore",
    "open_session_store", "parse_params", "require_sessions",
]
