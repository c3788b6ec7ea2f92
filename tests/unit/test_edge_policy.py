"""The on-device policy (pure): tiers, privacy, offline, and each device signal's documented effect."""

from __future__ import annotations

from typing import Any

import pytest

from hyrouter.edge import (
    DeviceReason,
    DeviceSignals,
    DeviceTierPolicy,
    EdgeOffline,
    PersonalDataKeptLocal,
    SignalPolicy,
    decide_on_device,
    find_personal_data,
)
from hyrouter.edge._privacy import luhn_valid
from hyrouter.router import (
    BackendHealth,
    ContextLengthExceeded,
    NoBackendAvailable,
    RequestFacts,
    RouteReason,
    TierConfig,
)

UP = BackendHealth(available=True)
DOWN = BackendHealth(available=False, detail="not loaded")
FREE = DeviceTierPolicy(routing=TierConfig(threshold=0.7))
PREMIUM = DeviceTierPolicy(routing=TierConfig(cloud="forced"))
STRICT = DeviceTierPolicy(routing=TierConfig(cloud="forced", fallback_to_edge=False))
EDGE_ONLY = DeviceTierPolicy(routing=TierConfig(cloud="never"))
CALM = DeviceSignals(battery_pct=80, charging=False, free_memory_mb=2000, temperature_c=40, link_rtt_ms=50)


def facts(prompt_tokens: int = 20, *, edge: BackendHealth = UP, cloud: BackendHealth = UP) -> RequestFacts:
    return RequestFacts(
        prompt_tokens=prompt_tokens,
        max_tokens=16,
        edge=edge,
        cloud=cloud,
        edge_context_window=512,
        cloud_context_window=4096,
    )


def run(
    score: float,
    policy: DeviceTierPolicy = FREE,
    *,
    signals: DeviceSignals = CALM,
    online: bool = True,
    **kwargs: Any,
) -> Any:
    kwargs.setdefault("facts", facts())
    return decide_on_device(
        score=score,
        tier_name="t",
        policy=policy,
        tenant="device",
        estimator="heuristic@1.0.0",
        signals=signals,
        online=online,
        **kwargs,
    )


def test_the_score_decides_as_on_the_server() -> None:
    low, high = run(0.2), run(0.9)
    assert (low.target, low.reason, low.offline) == ("edge", RouteReason.SCORE_BELOW_THRESHOLD, False)
    assert (high.target, high.reason, high.threshold) == ("cloud", RouteReason.SCORE_ABOVE_THRESHOLD, 0.7)


def test_offline_answers_locally_with_reason_offline() -> None:
    decision = run(0.9, online=False)
    assert (decision.target, decision.reason, decision.offline, decision.fallback) == (
        "edge",
        DeviceReason.OFFLINE,
        True,
        True,
    )
    forced = run(0.1, PREMIUM, online=False)
    assert (forced.target, forced.reason, forced.original_reason) == (
        "edge",
        DeviceReason.OFFLINE,
        RouteReason.TIER_FORCES_CLOUD,
    )
    # A request the score keeps local is not "offline" by reason, but the flag says so.
    local = run(0.1, online=False)
    assert (local.reason, local.offline) == (RouteReason.SCORE_BELOW_THRESHOLD, True)


def test_offline_with_a_tier_that_forbids_local_answers_is_a_clear_error() -> None:
    with pytest.raises(EdgeOffline, match="offline") as caught:
        run(0.1, STRICT, online=False)
    assert caught.value.code == "offline" and caught.value.status_code == 503


def test_no_cloud_configured_is_not_offline() -> None:
    decision = run(0.9, facts=facts(cloud=BackendHealth(available=False, detail="not configured")))
    assert (decision.target, decision.reason, decision.offline) == (
        "edge",
        RouteReason.CLOUD_UNAVAILABLE,
        False,
    )


@pytest.mark.parametrize(
    ("signals", "reason", "note"),
    [
        (DeviceSignals(battery_pct=15, charging=False), DeviceReason.LOW_BATTERY, "battery 15% not charging"),
        (DeviceSignals(battery_pct=15), DeviceReason.LOW_BATTERY, "battery 15% not charging"),
        (DeviceSignals(free_memory_mb=100), DeviceReason.LOW_MEMORY, "free memory 100 MB"),
        (DeviceSignals(temperature_c=80), DeviceReason.THERMAL, "temperature 80 °C"),
    ],
)
def test_prefer_cloud_signals_escalate_what_the_score_keeps_local(
    signals: DeviceSignals, reason: DeviceReason, note: str
) -> None:
    decision = run(0.2, signals=signals)
    assert (decision.target, decision.reason, decision.signals) == ("cloud", reason, (note,))


def test_a_charging_battery_is_not_low() -> None:
    assert run(0.2, signals=DeviceSignals(battery_pct=5, charging=True)).target == "edge"


@pytest.mark.parametrize(
    ("signals", "reason"),
    [
        (DeviceSignals(link_rtt_ms=900), DeviceReason.SLOW_LINK),
        (DeviceSignals(metered=True), DeviceReason.METERED_LINK),
    ],
)
def test_prefer_local_signals_keep_what_the_score_escalates(
    signals: DeviceSignals, reason: DeviceReason
) -> None:
    decision = run(0.9, signals=signals)
    assert (decision.target, decision.reason) == ("edge", reason)


def test_the_link_wins_over_the_battery() -> None:
    both = DeviceSignals(battery_pct=5, charging=False, link_rtt_ms=900)
    assert run(0.2, signals=both).reason is RouteReason.SCORE_BELOW_THRESHOLD
    assert run(0.9, signals=both).reason is DeviceReason.SLOW_LINK


def test_signals_never_override_the_tier() -> None:
    slow = DeviceSignals(link_rtt_ms=5000, metered=True)
    assert run(0.1, PREMIUM, signals=slow).reason is RouteReason.TIER_FORCES_CLOUD
    flat = DeviceSignals(battery_pct=1, charging=False, temperature_c=99)
    assert run(0.1, EDGE_ONLY, signals=flat).reason is RouteReason.TIER_FORBIDS_CLOUD


def test_signal_effects_are_configurable_per_tier() -> None:
    relaxed = DeviceTierPolicy(
        routing=TierConfig(threshold=0.7),
        signals=SignalPolicy(
            low_battery_pct=None, min_free_memory_mb=None, hot_celsius=90, slow_link_rtt_ms=2000
        ),
    )
    stressed = DeviceSignals(
        battery_pct=3, charging=False, free_memory_mb=10, temperature_c=85, link_rtt_ms=900
    )
    assert run(0.2, relaxed, signals=stressed).target == "edge"
    assert run(0.9, relaxed, signals=stressed).target == "cloud"


def test_signals_are_ignored_offline() -> None:
    decision = run(0.2, signals=DeviceSignals(battery_pct=3, charging=False), online=False)
    assert decision.target == "edge"


def test_personal_data_stays_local_when_asked() -> None:
    decision = run(0.9, PREMIUM, personal_data=("email",), keep_private_local=True)
    assert (decision.target, decision.reason, decision.personal_data) == (
        "edge",
        DeviceReason.PRIVATE_DATA,
        ("email",),
    )
    assert run(0.9, personal_data=("email",), keep_private_local=False).target == "cloud"


def test_personal_data_with_a_tier_that_forbids_local_answers_is_refused() -> None:
    with pytest.raises(PersonalDataKeptLocal, match=r"personal data \(card\)") as caught:
        run(0.1, STRICT, personal_data=("card",), keep_private_local=True)
    assert caught.value.status_code == 400


def test_personal_data_too_long_for_the_device_model() -> None:
    with pytest.raises(ContextLengthExceeded, match="answered on the device"):
        run(0.1, personal_data=("phone",), keep_private_local=True, facts=facts(600))


def test_the_device_model_down_escalates_or_fails() -> None:
    assert run(0.1, facts=facts(edge=DOWN)).reason is RouteReason.EDGE_UNAVAILABLE
    with pytest.raises(NoBackendAvailable):
        run(0.1, EDGE_ONLY, facts=facts(edge=DOWN))


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("write to jane.doe@example.co.uk please", ["email"]),
        ("call me on +1 (415) 555-0132", ["phone"]),
        ("my number is 020 7946 0958", ["phone"]),
        ("card 4111 1111 1111 1111, exp 12/29", ["card"]),
        ("card 4111-1111-1111-1111 and mail a@b.io", ["card", "email"]),
        ("What is the capital of France?", []),
        ("In 1999 there were 2000 people; pi is 3.14159265", []),
        ("The meeting is on 2024-05-01", []),
        ("Compute 1234567 * 89", []),
    ],
)
def test_find_personal_data(text: str, kinds: list[str]) -> None:
    assert find_personal_data(text) == kinds


def test_only_the_configured_kinds_are_looked_for() -> None:
    assert find_personal_data("a@b.io +44 20 7946 0958", kinds=["phone"]) == ["phone"]


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("5500005555555559")
    assert not luhn_valid("4111111111111112")
