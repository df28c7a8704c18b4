"""The active-challenge state machine: pure functions of a JSON-able state and per-frame observations.

Nothing here touches a model, a store or a clock: the service measures a frame (passive score,
face box, colour histogram, ``FaceSignals``), stamps it with the server time and calls
:func:`advance`, which updates the session's state dict in place.  The state is plain JSON (the
session store keeps it as text), so any worker can continue any session and a restart loses
nothing.

Step detectors (thresholds in :class:`Thresholds`, injectable; "left"/"right" are the SUBJECT's):

* ``blink``: both eyes seen open (``min(l, r) > eye_open``), then both closed
  (``max(l, r) < eye_closed``) for at most ``blink_max_closed_s``, then both open again.
* ``wink``: one eye closed (``< eye_closed``) while the other is open (``> eye_open``), then
  both open again.
* ``turn_left`` / ``turn_right``: the yaw must first be seen near the centre (``|yaw| <
  turn_deg / 2``) during the step, then pass ``turn_deg`` in the asked direction (a photo held
  already turned never completes it).
* ``look_center``: ``|yaw| < center_yaw_deg`` and ``|pitch| < center_pitch_deg`` on
  ``center_frames`` consecutive measured frames.
* ``smile`` / ``raise_brows``: the signal rises ``smile_rise`` / ``brows_rise`` (relative) above
  the lowest value seen so far in the session (the neutral face is its own baseline).
* ``open_mouth``: ``mouth_open`` seen below ``mouth_closed`` during the step, then above
  ``mouth_opened``.

A frame with ``presence < min_presence`` has no usable signals (the face box still counts for
face presence and identity).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from liveness.challenges.identity import changed, continuity
from liveness.landmarks.signals import EYE_CLOSED, EYE_OPEN, FaceSignals

CHALLENGES: tuple[str, ...] = (
    "blink", "turn_left", "turn_right", "look_center", "smile", "open_mouth", "raise_brows", "wink",
)

INSTRUCTIONS: dict[str, str] = {
    "blink": "Please blink your eyes",
    "turn_left": "Please turn your head to the left",
    "turn_right": "Please turn your head to the right",
    "look_center": "Please look straight at the camera",
    "smile": "Please smile",
    "open_mouth": "Please open your mouth",
    "raise_brows": "Please raise your eyebrows",
    "wink": "Please wink with one eye",
}
NO_FACE_INSTRUCTION = "No face detected. Please position your face in the frame."
DONE_INSTRUCTION = "All challenges completed. Call complete to get the verdict."

# Session statuses (the store's ``status`` column)
ACTIVE = "active"  # steps in progress
STEPS_DONE = "steps_done"  # every step done; frames still add passive evidence until complete
FAILED = "failed"  # a hard failure (timeout, face lost, identity change); complete gives "failed"
COMPLETED = "completed"  # complete was called: the verdict is final

# Failure reasons (``reason`` in answers, ``reasons`` in the verdict)
STEP_TIMEOUT = "step_timeout"
FACE_LOST = "face_lost"
IDENTITY_CHANGED = "identity_changed"
STEPS_INCOMPLETE = "steps_incomplete"
PASSIVE_SCORE_LOW = "passive_score_low"
TOO_FEW_FRAMES = "too_few_frames"


@dataclass(frozen=True)
class Thresholds:
    # The one set of challenge thresholds (measured on the dev media: liveness/landmarks/signals.py).
    eye_closed: float = EYE_CLOSED
    eye_open: float = EYE_OPEN
    blink_max_closed_s: float = 1.0  # dev-video blinks last 0.03-0.13 s
    turn_deg: float = 20.0  # the dev video's turns reach +26 / -13 deg from a centred start; between turns |yaw| <= 7
    center_yaw_deg: float = 10.0
    center_pitch_deg: float = 15.0
    center_frames: int = 2
    smile_rise: float = 0.15  # smile > baseline x 1.15 (neutral 0.67-0.89 vs smiling 1.01-1.06)
    brows_rise: float = 0.12  # brows_raised > baseline x 1.12 (untested on real media: no such clip)
    mouth_closed: float = 0.12
    mouth_opened: float = 0.35  # closed <= 0.13, teeth-smile <= 0.24, wide open 0.43
    min_presence: float = 0.5


@dataclass(frozen=True)
class Limits:
    step_timeout_s: float = 20.0
    face_missing_s: float = 2.0
    max_center_jump: float = 0.5
    min_area_ratio: float = 0.5
    min_appearance: float = 0.6


@dataclass(frozen=True)
class Observation:
    """What the service measured on one frame."""

    box: tuple[float, float, float, float] | None  # x, y, w, h; None = no usable face
    passive: float | None = None  # fused live probability of the frame
    hist: tuple[float, ...] | None = None  # colour histogram of the face crop (identity.py)
    signals: FaceSignals | None = None


@dataclass
class Event:
    step_completed: bool = False
    completed_step: str | None = None
    failed: str | None = None  # a reason when this frame failed the session
    identity: dict[str, float] = field(default_factory=dict)


def new_state(steps: list[str], now: float) -> dict[str, Any]:
    unknown = [s for s in steps if s not in CHALLENGES]
    if unknown or not steps:
        raise ValueError(f"unknown challenges {unknown}" if unknown else "no challenges")
    return {
        "steps": list(steps),
        "index": 0,
        "status": ACTIVE,
        "reason": None,
        "created": now,
        "step_started": now,
        "first_frame": None,
        "last_frame": None,
        "last_face": None,
        "frames": 0,
        "face_frames": 0,
        "passive_sum": 0.0,
        "passive_n": 0,
        "box": None,
        "hist": None,
        "detector": {},  # the current step's detector state
        "baseline": {},  # session-long minima of smile / brows_raised / mouth_open
        "completed": [],  # [{"step", "at"}]
        "best_score": None,
        "blinks": 0,  # blinks seen over the whole session, whatever step was asked (``total_blinks``)
        "blink_counter": {},  # the session-long blink detector's state
    }


def instruction(state: dict[str, Any], face_seen: bool = True) -> str:
    if state["status"] in (STEPS_DONE, COMPLETED) and state["index"] >= len(state["steps"]):
        return DONE_INSTRUCTION
    if state["status"] == FAILED:
        return f"Verification failed: {state['reason']}"
    if not face_seen:
        return NO_FACE_INSTRUCTION
    return INSTRUCTIONS[state["steps"][state["index"]]]


def current_challenge(state: dict[str, Any]) -> str | None:
    """The step being asked for; None once every step is done or the session failed."""
    if state["status"] != ACTIVE or state["index"] >= len(state["steps"]):
        return None
    return state["steps"][state["index"]]


def passive_mean(state: dict[str, Any]) -> float | None:
    return state["passive_sum"] / state["passive_n"] if state["passive_n"] else None


def _fail(state: dict[str, Any], event: Event, reason: str) -> Event:
    state["status"] = FAILED
    state["reason"] = reason
    event.failed = reason
    return event


def advance(state: dict[str, Any], obs: Observation, t: float, limits: Limits, th: Thresholds) -> Event:
    """Apply one frame at server time ``t`` (seconds).  Only ACTIVE and STEPS_DONE sessions move."""
    event = Event()
    if state["status"] not in (ACTIVE, STEPS_DONE):
        return event
    state["frames"] += 1
    if state["first_frame"] is None:
        state["first_frame"] = t
    state["last_frame"] = t
    active = state["status"] == ACTIVE
    if active and t - state["step_started"] > limits.step_timeout_s:
        return _fail(state, event, STEP_TIMEOUT)
    if obs.box is None:
        since = state["last_face"] if state["last_face"] is not None else state["first_frame"]
        if t - since > limits.face_missing_s:
            return _fail(state, event, FACE_LOST)
        return event
    # Identity continuity against the previous face (consecutive face frames)
    if state["box"] is not None:
        event.identity = continuity(state["box"], obs.box, state["hist"], obs.hist)
        if changed(event.identity, limits.max_center_jump, limits.min_area_ratio, limits.min_appearance):
            return _fail(state, event, IDENTITY_CHANGED)
    state["box"] = list(obs.box)
    state["hist"] = list(obs.hist) if obs.hist is not None else None
    state["last_face"] = t
    state["face_frames"] += 1
    if obs.passive is not None:
        state["passive_sum"] += float(obs.passive)
        state["passive_n"] += 1
    sig = obs.signals
    if sig is None or sig.presence < th.min_presence:
        return event
    _count_blinks(state, sig, t, th)
    if not active:
        return event
    base = state["baseline"]
    for name, value in (("smile", sig.smile), ("brows", sig.brows_raised), ("mouth", sig.mouth_open)):
        if math.isfinite(value):
            base[name] = min(base.get(name, value), value)
    step = state["steps"][state["index"]]
    if _DETECTORS[step](state["detector"], sig, t, base, th):
        state["completed"].append({"step": step, "at": t})
        state["index"] += 1
        state["step_started"] = t
        state["detector"] = {}
        event.step_completed = True
        event.completed_step = step
        if state["index"] >= len(state["steps"]):
            state["status"] = STEPS_DONE
    return event


def _count_blinks(state: dict[str, Any], sig: FaceSignals, t: float, th: Thresholds) -> None:
    """Count every blink of the session (the blink step's rule, run on all measured frames):
    Liveness_service reports ``total_blinks`` at completion.  Rows stored before this counter
    existed start it at 0."""
    detector = state.setdefault("blink_counter", {})
    if _blink(detector, sig, t, {}, th):
        state["blinks"] = state.get("blinks", 0) + 1
        state["blink_counter"] = {"phase": "open"}  # the eyes just reopened: the next blink may start


# -- step detectors: (detector state, signals, t, baselines, thresholds) -> done ---------------


def _blink(d: dict[str, Any], s: FaceSignals, t: float, base: dict[str, float], th: Thresholds) -> bool:
    lo, hi = min(s.left_eye_openness, s.right_eye_openness), max(s.left_eye_openness, s.right_eye_openness)
    phase = d.get("phase", "wait_open")
    if phase == "wait_open":
        if lo > th.eye_open:
            d["phase"] = "open"
    elif phase == "open":
        if hi < th.eye_closed:
            d["phase"], d["closed_at"] = "closed", t
    elif phase == "closed":
        if lo > th.eye_open:
            if t - d["closed_at"] <= th.blink_max_closed_s:
                return True
            d["phase"] = "open"  # eyes shut too long: not a blink, start over
    return False


def _wink(d: dict[str, Any], s: FaceSignals, t: float, base: dict[str, float], th: Thresholds) -> bool:
    l, r = s.left_eye_openness, s.right_eye_openness
    phase = d.get("phase", "wait_open")
    if phase == "wait_open":
        if min(l, r) > th.eye_open:
            d["phase"] = "open"
    elif phase == "open":
        if (l < th.eye_closed and r > th.eye_open) or (r < th.eye_closed and l > th.eye_open):
            d["phase"] = "winked"
    elif phase == "winked":
        if min(l, r) > th.eye_open:
            return True
    return False


def _turn(sign: float):
    def detect(d: dict[str, Any], s: FaceSignals, t: float, base: dict[str, float], th: Thresholds) -> bool:
        if abs(s.yaw) < th.turn_deg / 2:
            d["centered"] = True
        return bool(d.get("centered")) and sign * s.yaw > th.turn_deg

    return detect


def _center(d: dict[str, Any], s: FaceSignals, t: float, base: dict[str, float], th: Thresholds) -> bool:
    if abs(s.yaw) < th.center_yaw_deg and abs(s.pitch) < th.center_pitch_deg:
        d["run"] = d.get("run", 0) + 1
    else:
        d["run"] = 0
    return d["run"] >= th.center_frames


def _smile(d: dict[str, Any], s: FaceSignals, t: float, base: dict[str, float], th: Thresholds) -> bool:
    return "smile" in base and s.smile > base["smile"] * (1 + th.smile_rise)


def _brows(d: dict[str, Any], s: FaceSignals, t: float, base: dict[str, float], th: Thresholds) -> bool:
    return "brows" in base and s.brows_raised > base["brows"] * (1 + th.brows_rise)


def _mouth(d: dict[str, Any], s: FaceSignals, t: float, base: dict[str, float], th: Thresholds) -> bool:
    if s.mouth_open < th.mouth_closed:
        d["closed"] = True
    return bool(d.get("closed")) and s.mouth_open > th.mouth_opened


_DETECTORS = {
    "blink": _blink,
    "wink": _wink,
    "turn_left": _turn(+1.0),  # yaw > 0: the subject turns to THEIR left
    "turn_right": _turn(-1.0),
    "look_center": _center,
    "smile": _smile,
    "open_mouth": _mouth,
    "raise_brows": _brows,
}
assert set(_DETECTORS) == set(CHALLENGES)


def detect(step: str, detector: dict[str, Any], sig: FaceSignals, t: float, baseline: dict[str, float],
           th: Thresholds) -> bool:
    """One frame through one step's detector (``detector`` is its mutable state, ``{}`` to
    start): the same rules ``advance`` applies, for tools and tests that replay signals."""
    return _DETECTORS[step](detector, sig, t, baseline, th)


def thresholds_dict(th: Thresholds) -> dict[str, Any]:
    return asdict(th)
