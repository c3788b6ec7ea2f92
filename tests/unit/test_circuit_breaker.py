"""The circuit breaker's state machine, on a fake clock."""

from __future__ import annotations

import pytest

from hyrouter.cloud.breaker import Admission, BreakerState, CircuitBreaker
from hyrouter.router._config import CircuitBreakerConfig


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_breaker(clock: FakeClock, threshold: int = 2, cooldown: float = 10.0) -> CircuitBreaker:
    breaker = CircuitBreaker(threshold, cooldown, clock=clock)
    for _ in range(threshold):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    return breaker


def test_starts_closed_and_allows() -> None:
    breaker = CircuitBreaker(3, 5.0, clock=FakeClock())
    assert breaker.state is BreakerState.CLOSED
    assert breaker.state == "closed"
    assert breaker.retry_at is None
    assert all(breaker.allow() for _ in range(10))


def test_opens_at_threshold_of_consecutive_failures() -> None:
    clock = FakeClock(100.0)
    breaker = CircuitBreaker(3, 5.0, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_at == 105.0
    assert not breaker.allow()


def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(2, 5.0, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    assert breaker.failures == 0
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_open_refuses_until_cooldown_then_lets_exactly_one_probe() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock, cooldown=10.0)
    clock.now += 9.9
    assert not breaker.allow()
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.1
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.retry_at is None
    assert not breaker.allow()
    assert not breaker.allow()


def test_half_open_tells_others_to_wait_for_the_probe_not_to_go_elsewhere() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock)
    assert breaker.admit() is Admission.REFUSE
    clock.now += 10.0
    assert breaker.admit() is Admission.GO and breaker.probing
    assert breaker.admit() is Admission.WAIT
    breaker.release()  # the probe said nothing: a waiting call becomes the next probe
    assert breaker.admit() is Admission.GO and breaker.admit() is Admission.WAIT
    breaker.record_success()
    assert breaker.admit() is Admission.GO and not breaker.probing
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 10.0
    assert breaker.admit() is Admission.GO
    breaker.record_failure()  # the probe failed: the waiting calls are refused
    assert breaker.admit() is Admission.REFUSE and not breaker.probing


def test_successful_probe_closes() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock)
    clock.now += 10.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failures == 0
    assert breaker.allow()
    assert breaker.allow()


def test_failed_probe_reopens_with_a_fresh_cooldown() -> None:
    clock = FakeClock(100.0)
    breaker = open_breaker(clock, cooldown=10.0)
    clock.now = 125.0
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_at == 135.0
    assert not breaker.allow()
    clock.now = 135.0
    assert breaker.allow()


def test_release_lets_another_probe_through() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock)
    clock.now += 10.0
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()


def test_late_failure_while_open_does_not_extend_the_cooldown() -> None:
    clock = FakeClock(100.0)
    breaker = open_breaker(clock, cooldown=10.0)
    clock.now = 105.0
    breaker.record_failure()
    assert breaker.retry_at == 110.0


def test_from_config() -> None:
    clock = FakeClock(0.0)
    breaker = CircuitBreaker.from_config(
        CircuitBreakerConfig(failure_threshold=1, cooldown_s=2.5), clock=clock
    )
    assert breaker.failure_threshold == 1
    assert breaker.cooldown_s == 2.5
    breaker.record_failure()
    assert breaker.retry_at == 2.5


@pytest.mark.parametrize(("threshold", "cooldown"), [(0, 1.0), (1, 0.0)])
def test_rejects_invalid_settings(threshold: int, cooldown: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold, cooldown)
