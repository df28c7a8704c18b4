"""Active liveness challenges (blink, head turns, smile, ...) over a session of frames.

    state machine (pure)            liveness.challenges.steps
    identity continuity             liveness.challenges.identity
    session store (SQLite/Mongo)    liveness.challenges.store
    the service                     liveness.challenges.service

No web framework is imported here; the edge (edge.apis, edge.challenge_ws) adds the HTTP routes.
"""

from liveness.challenges.service import ChallengeService, verify_result_token
from liveness.challenges.steps import CHALLENGES

__all__ = ["CHALLENGES", "ChallengeService", "verify_result_token"]
