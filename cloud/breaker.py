"""A circuit breaker: stop calling an endpoint that keeps failing, then probe it once in a while.

closed ──(failure_threshold consecutive failures)──> open ──(cooldown_s passed, admit())──> half_open
half_open ──(probe succeeds)──> closed;  half_open ──(probe fails)──> open (fresh cooldown)

While half-open, the one probe is out and every other call is told to WAIT for its outcome rather
than be refused: shedding them (to the edge, whose queue then fills) while a healthy endpoint answers
the probe turned a recovery into a burst of 503s. When the probe succeeds they all go; when it fails
the breaker is open again and they are refused; when it ends without an outcome one of them is the next
probe. How long a call may wait is the caller's business (the cloud client: the call's own deadline).

What counts as a failure is the caller's business too: it reports only evidence that the endpoint is
down (see `hyrouter.cloud.endpoint`).

No I/O and no locks: it is meant for one asyncio event loop, where these methods never interleave.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from hyrouter.router._config import CircuitBreakerConfig


class BreakerState(enum.StrEnum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Admission(enum.StrEnum):
    """What a breaker says to a call that asks to go out."""

    GO = "go"
    WAIT = "wait"  # half-open with the probe out: wait for its outcome, then ask again
    REFUSE = "refuse"  # open, cooling down


class CircuitBreaker:
    """Counts consecutive failed calls and refuses calls for `cooldown_s` once there are too many.

    Callers ask `admit()` (or `allow()`) before each call and report its outcome with
    `record_success()` or `record_failure()`; a call that ends without telling anything about the
    endpoint (cancelled, or an answer that is no evidence either way) reports `release()`, so that a
    half-open breaker does not wait forever for its probe.
    """

    def __init__(
        self, failure_threshold: int, cooldown_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown_s <= 0:
            raise ValueError("cooldown_s must be positive")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_out = False

    @classmethod
    def from_config(
        cls, cfg: CircuitBreakerConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> CircuitBreaker:
        """A breaker with the threshold and cooldown of `cfg`."""
        return cls(cfg.failure_threshold, cfg.cooldown_s, clock=clock)

    @property
    def state(self) -> BreakerState:
        """The state as last changed; an open breaker whose cooldown passed stays open until `allow()`."""
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures recorded since the last success."""
        return self._failures

    @property
    def retry_at(self) -> float | None:
        """The clock time at which an open breaker lets a probe through; None unless open."""
        if self._state is not BreakerState.OPEN or self._opened_at is None:
            return None
        return self._opened_at + self.cooldown_s

    @property
    def probing(self) -> bool:
        """Whether a half-open breaker's probe is out (calls asking now are told to wait)."""
        return self._state is BreakerState.HALF_OPEN and self._probe_out

    def admit(self) -> Admission:
        """Whether a call may go out now, must wait for the probe's outcome, or is refused.

        An open breaker past its cooldown lets exactly one probe out; while it is out, others WAIT.
        """
        if self._state is BreakerState.CLOSED:
            return Admission.GO
        if self._state is BreakerState.OPEN:
            retry_at = self.retry_at
            if retry_at is not None and self._clock() < retry_at:
                return Admission.REFUSE
            self._state = BreakerState.HALF_OPEN
            self._probe_out = True
            return Admission.GO
        # half_open: only one probe at a time, so a recovering endpoint is not flooded.
        if self._probe_out:
            return Admission.WAIT
        self._probe_out = True
        return Admission.GO

    def allow(self) -> bool:
        """Whether a call may go out now (`admit()` is GO); a call told to wait is not allowed yet."""
        return self.admit() is Admission.GO

    def record_success(self) -> None:
        """A call succeeded: close the breaker and forget past failures."""
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = None
        self._probe_out = False

    def record_failure(self) -> None:
        """A call failed: open at the threshold, or again (with a fresh cooldown) if it was the probe."""
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._open()
        # Already open: a call that started before the breaker opened failed late; the cooldown
        # is not extended, or a burst of slow failures would keep the breaker open for longer.

    def release(self) -> None:
        """A call ended without evidence either way: a half-open breaker may send another probe."""
        if self._state is BreakerState.HALF_OPEN:
            self._probe_out = False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._probe_out = False

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self._state.value}, failures={self._failures}, retry_at={self.retry_at})"
        )
