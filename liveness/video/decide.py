"""The video verdict: BioID-style early stopping with FindFace-style minimum frames.

Frames are judged one by one in time order:

* a frame with a usable face is *live* when its fused score >= ``threshold``, else *spoof*;
* a frame without one (no face, several faces under ``multi_face_policy = "reject"``,
  unreadable) is a *failure* and carries its reason;
* as soon as ``live_to_stop`` frames were live -> ``LIVE``; as soon as ``spoof_to_stop`` were
  spoof -> ``SPOOF`` (``RejectedByPassiveLiveDetection``); as soon as ``max_failures``
  failures -> ``FAILURE_TO_ACQUIRE``.  The first rule to fire decides, nothing after it is
  judged;
* when the frames run out first: fewer than ``min_selected`` usable frames ->
  ``FAILURE_TO_ACQUIRE``; otherwise the majority of usable frames decides (a tie is spoof).
  With the defaults (30 frames, 7/7/5) this only happens to clips with fewer frames than that.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

REJECTED = "RejectedByPassiveLiveDetection"
FAILURE_TO_ACQUIRE = "FailureToAcquire"


class Verdict(str, enum.Enum):
    LIVE = "live"
    SPOOF = "spoof"
    FAILURE_TO_ACQUIRE = "failure_to_acquire"


@dataclass
class Judge:
    threshold: float
    live_to_stop: int = 7
    spoof_to_stop: int = 7
    max_failures: int = 5
    min_selected: int = 10
    live: int = 0
    spoof: int = 0
    failures: int = 0
    scores: list[float] = field(default_factory=list)
    verdict: Verdict | None = None
    stopped_early: bool = False

    @classmethod
    def from_settings(cls, s) -> "Judge":
        return cls(
            threshold=s.threshold,
            live_to_stop=s.video_live_frames_to_stop,
            spoof_to_stop=s.video_spoof_frames_to_stop,
            max_failures=s.video_max_failures,
            min_selected=s.video_min_selected_frames,
        )

    @property
    def done(self) -> bool:
        return self.verdict is not None

    @property
    def judged(self) -> int:
        return self.live + self.spoof + self.failures

    @property
    def usable(self) -> int:
        return self.live + self.spoof

    def is_live(self, score: float) -> bool:
        return score >= self.threshold

    def add(self, score: float | None) -> Verdict | None:
        """One frame in time order: its fused score, or None for a failure."""
        if self.done:
            raise RuntimeError("the verdict is already reached")
        if score is None:
            self.failures += 1
        else:
            self.scores.append(score)
            if self.is_live(score):
                self.live += 1
            else:
                self.spoof += 1
        if self.live >= self.live_to_stop:
            self.verdict = Verdict.LIVE
        elif self.spoof >= self.spoof_to_stop:
            self.verdict = Verdict.SPOOF
        elif self.failures >= self.max_failures:
            self.verdict = Verdict.FAILURE_TO_ACQUIRE
        self.stopped_early = self.done
        return self.verdict

    def finish(self) -> Verdict:
        """No more frames: decide from what was judged."""
        if self.verdict is None:
            if self.usable < self.min_selected:
                self.verdict = Verdict.FAILURE_TO_ACQUIRE
            else:
                self.verdict = Verdict.LIVE if self.live > self.spoof else Verdict.SPOOF
        return self.verdict

    @property
    def average(self) -> float | None:
        return sum(self.scores) / len(self.scores) if self.scores else None
