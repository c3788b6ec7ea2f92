"""The device's view of its link to the cloud router: online or offline, and the measured round trip.

A network failure marks the link offline; while it is, requests are answered locally at once (no
connection attempt, so nothing waits). After `offline_retry_s` the link is *due* for a probe: the next
request that wants the cloud first probes (`GET /v1/models`, short timeout), and a success brings
the device back online without a restart. Probes also measure the round trip, the `link_rtt_ms`
device signal; an old measurement is not used.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Weight of a new round-trip sample in the moving average.
RTT_SMOOTHING = 0.5


class LinkMonitor:
    """Online/offline state with a retry time, and a smoothed round-trip time."""

    def __init__(
        self,
        *,
        offline_retry_s: float,
        rtt_max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.offline_retry_s = offline_retry_s
        self.rtt_max_age_s = rtt_max_age_s
        self._clock = clock
        self._offline_since: float | None = None
        self._retry_at = 0.0
        self.last_error: str | None = None
        self._rtt_ms: float | None = None
        self._rtt_at = 0.0

    @property
    def offline(self) -> bool:
        """Whether the last call over the link failed (until one succeeds)."""
        return self._offline_since is not None

    def may_try(self) -> bool:
        """Whether a call may go out now: online, or offline long enough to try again."""
        return self._offline_since is None or self._clock() >= self._retry_at

    def due_for_probe(self, *, need_rtt: bool) -> bool:
        """Whether to probe before escalating: offline but due, or (when wanted) no fresh round trip."""
        if self._offline_since is not None:
            return self._clock() >= self._retry_at
        return need_rtt and self.rtt_ms is None

    @property
    def rtt_ms(self) -> float | None:
        """The smoothed round trip in milliseconds, or None when unmeasured or too old."""
        if self._rtt_ms is None or self._clock() - self._rtt_at > self.rtt_max_age_s:
            return None
        return self._rtt_ms

    def record_success(self, rtt_ms: float | None = None) -> None:
        """A call went through: the link is up."""
        self._offline_since = None
        self.last_error = None
        if rtt_ms is not None:
            fresh = self.rtt_ms
            self._rtt_ms = rtt_ms if fresh is None else RTT_SMOOTHING * rtt_ms + (1 - RTT_SMOOTHING) * fresh
            self._rtt_at = self._clock()

    def record_failure(self, error: str) -> None:
        """A call failed in the network: the link is down until a call succeeds."""
        now = self._clock()
        if self._offline_since is None:
            self._offline_since = now
        self._retry_at = now + self.offline_retry_s
        self.last_error = error
