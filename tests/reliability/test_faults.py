"""The fault campaign: every upstream fault × every kind of tier × streamed or not, on the real router.

One router (and one fault-injecting upstream) per fault mode, so each mode starts with a closed breaker;
every case then asserts what the caller gets (the status and an answer or an OpenAI error object), that
it came within the deadline, the route the router recorded for it (headers, `route`, `/metrics`), and,
once per mode, the breaker's state from `/healthz`. Tiers: `free` (the cloud allowed, a hard prompt
sends it there; falls back), `premium` (the cloud forced; falls back to the edge), `strict` (the cloud
forced, no fallback).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.faults import ANSWER, PARTIAL, FaultUpstream
from tests.servers import ADMIN, KEYS, make_router_config, running_router

pytestmark = pytest.mark.reliability

HARD = "Prove step by step that the square root of 2 is irrational, and explain why the proof works."
DEADLINE_S = 8.0  # every tier's deadline: room for the cloud's total and an edge fallback after it
MARGIN_S = 4.0  # a loaded 2-core machine; the bound is the deadline plus this, never a tight time
CLOUD = {
    "timeouts": {"connect": 0.5, "read": 1.5, "total": 2.5},
    "retries": {"max_attempts": 2, "backoff_base_s": 0.05, "backoff_max_s": 0.2},
    # One failure per failed call: the breaker opens at a mode's last case, so every case reaches the
    # upstream (a breaker that counted retries, or counted twice, would open early and fail later cases).
    "breaker": {"failure_threshold": 6, "cooldown_s": 60.0},
}
TIERS = ("free", "premium", "strict")
CASES_PER_MODE = 2 * len(TIERS)
DECIDED = {"free": "score_above_threshold", "premium": "tier_forces_cloud", "strict": "tier_forces_cloud"}

#: Faults that show the endpoint down, a stream cut included: after a mode's six calls the breaker is open.
OPENS_BREAKER = {
    "refuse",
    "hang",
    "reset_before",
    "reset_after",
    "truncated",
    "malformed_sse",
    "error_event",
    "unavailable_503",
    "bad_gateway_502",
}
#: Faults that say nothing about the endpoint's health: the breaker stays closed.
KEEPS_BREAKER_CLOSED = {"error_500", "blames_request", "rate_limited", "slow"}
#: Faults after the first token of a stream: a tier with fallback continues on the edge.
MID_STREAM = {"reset_after", "truncated", "malformed_sse", "error_event"}


@dataclass(frozen=True)
class Refusal:
    """What a tier without fallback gets: the status and the error codes it may carry."""

    status: int
    codes: frozenset[str]


_DOWN = frozenset({"cloud_unavailable", "no_backend_available"})
_FAILED = frozenset({"cloud_error"})  # the endpoint answered, and badly: a 502, as a gateway says
#: The strict tier's error, by fault, when it arrives before any content (a status line, not an event).
STRICT = {
    "refuse": Refusal(503, _DOWN),
    "error_500": Refusal(502, _FAILED),
    "blames_request": Refusal(400, frozenset({"invalid_request"})),
    "rate_limited": Refusal(429, frozenset({"rate_limit_exceeded"})),
    "hang": Refusal(504, frozenset({"cloud_timeout"})),
    "reset_before": Refusal(502, _FAILED),
    "reset_after": Refusal(502, _FAILED),
    "truncated": Refusal(502, _FAILED),
    "malformed_sse": Refusal(502, _FAILED),
    "error_event": Refusal(502, _FAILED),
    "unavailable_503": Refusal(502, _FAILED),
    "bad_gateway_502": Refusal(502, _FAILED),
}


@dataclass
class Campaign:
    """One fault mode's upstream and router."""

    mode: str
    upstream: FaultUpstream
    base: str

    def metrics(self) -> dict[str, Any]:
        response = httpx.get(f"{self.base}/metrics", headers=ADMIN, params={"format": "json"}, timeout=10)
        response.raise_for_status()
        return dict(response.json())


@pytest.fixture(scope="module", params=FaultUpstream.MODES)
def campaign(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Campaign]:
    mode = str(request.param)
    config = make_router_config(None, cloud=CLOUD, server={"deadline_s": DEADLINE_S})
    with FaultUpstream(mode) as upstream:
        config["cloud"]["url"] = upstream.url
        with running_router(config, tmp_path_factory.mktemp(mode)) as base:
            yield Campaign(mode, upstream, base)


def ask(base: str, tier: str, *, stream: bool) -> tuple[httpx.Response, float]:
    body = {
        "model": "hybrid-router",
        "messages": [{"role": "user", "content": HARD}],
        "max_tokens": 4,
        "temperature": 0,
        "stream": stream,
    }
    started = time.monotonic()
    response = httpx.post(
        f"{base}/v1/chat/completions",
        json=body,
        timeout=DEADLINE_S + 30,  # far past the bound: a hang shows as a failed bound, not a timeout
        headers={"authorization": f"Bearer {KEYS[tier]}"},
    )
    return response, time.monotonic() - started


def sse_events(response: httpx.Response) -> list[Any]:
    """The `data:` events of an SSE body, `[DONE]` as the string."""
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    return [event if event == "[DONE]" else json.loads(event) for event in events]


def assert_error_object(body: Any) -> dict[str, Any]:
    error = body["error"]
    assert isinstance(error, dict) and error["message"] and error["type"], body
    assert set(error) >= {"message", "type", "param", "code"}, body
    return error


def new_decision(before: dict[str, Any], after: dict[str, Any]) -> tuple[str, str, str]:
    """The one decision `/metrics` counted between two snapshots."""

    def counts(snapshot: dict[str, Any]) -> dict[tuple[str, str, str], int]:
        return {(d["target"], d["tier"], d["reason"]): d["count"] for d in snapshot["decisions"]}

    old, new = counts(before), counts(after)
    grown = [key for key, n in new.items() if n != old.get(key, 0)]
    assert len(grown) == 1 and new[grown[0]] == old.get(grown[0], 0) + 1, (before, after)
    return grown[0]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("tier", TIERS)
def test_fault(campaign: Campaign, tier: str, stream: bool) -> None:
    mode = campaign.mode
    before = campaign.metrics()
    response, elapsed = ask(campaign.base, tier, stream=stream)
    assert elapsed < DEADLINE_S + MARGIN_S, (mode, tier, stream, elapsed)
    recorded = new_decision(before, campaign.metrics())
    headers = response.headers

    if mode == "slow":  # late, not failed: the cloud answers every tier
        assert response.status_code == 200, response.text
        assert (headers["x-route-target"], headers["x-route-reason"]) == ("cloud", DECIDED[tier])
        assert headers["x-route-fallback"] == "false"
        assert recorded == ("cloud", tier, DECIDED[tier])
        text = answer_text(response, stream)
        assert text == "".join(ANSWER)
        return

    if tier == "strict" and stream and mode in MID_STREAM:  # words sent, then a clean error event
        assert response.status_code == 200, response.text
        assert headers["x-route-target"] == "cloud"
        events = sse_events(response)
        assert events[-1] == "[DONE]"
        error = assert_error_object(events[-2])
        assert error["code"] in ("cloud_stream_cut", "cloud_error"), error
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-2] if e.get("choices"))
        assert text and "".join(PARTIAL).startswith(text), text  # what the cloud sent, nothing more
        assert recorded == ("cloud", tier, DECIDED[tier])
        assert campaign.metrics()["errors"].get(error["code"], 0) >= 1
        return

    if tier == "strict":
        refusal = STRICT[mode]
        assert response.status_code == refusal.status, (mode, stream, response.status_code, response.text)
        error = assert_error_object(response.json())
        assert error["code"] in refusal.codes, error
        if mode == "rate_limited":
            assert headers["retry-after"] == "9"
        assert "127.0.0.1" not in response.text  # the endpoint's URL stays in the log
        assert recorded == ("cloud", tier, DECIDED[tier])
        return

    # A tier with fallback gets a degraded edge answer: before any content, or continued after it.
    assert response.status_code == 200, (mode, tier, stream, response.text)
    if stream and mode in MID_STREAM:
        events = sse_events(response)
        assert events[-1] == "[DONE]" and not any("error" in e for e in events[:-1]), events
        (finish,) = [e for e in events[:-1] if e.get("choices") and e["choices"][0]["finish_reason"]]
        route = finish["route"]
        assert (route["target"], route["reason"], route["fallback"]) == ("edge", "cloud_unavailable", True)
        assert route["failover_at_tokens"] >= 1
        text = answer_text(response, stream)
        assert text.startswith(PARTIAL[0]), text
        assert campaign.metrics()["failovers"], campaign.metrics()
        assert recorded == ("edge", tier, "cloud_unavailable")
        return
    assert (headers["x-route-target"], headers["x-route-reason"]) == ("edge", "cloud_unavailable")
    assert headers["x-route-fallback"] == "true"
    assert headers["x-route-tier"] == tier
    assert answer_text(response, stream) is not None
    assert recorded == ("edge", tier, "cloud_unavailable")


def answer_text(response: httpx.Response, stream: bool) -> str:
    if not stream:
        return str(response.json()["choices"][0]["message"]["content"])
    events = sse_events(response)
    assert events[-1] == "[DONE]" and not any("error" in e for e in events[:-1]), events
    assert any(e.get("choices") and e["choices"][0]["finish_reason"] for e in events[:-1]), events
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e.get("choices"))


def test_breaker_after_the_mode(campaign: Campaign) -> None:
    """After the six cases: open where the fault shows the endpoint down, closed where it does not."""
    metrics = campaign.metrics()
    assert sum(d["count"] for d in metrics["decisions"]) == CASES_PER_MODE  # one decision per case
    if campaign.mode != "refuse":
        assert campaign.upstream.requests >= CASES_PER_MODE  # every case reached the upstream
    health = httpx.get(f"{campaign.base}/healthz", headers=ADMIN, timeout=10).json()
    assert health["edge"]["available"], health
    if campaign.mode in OPENS_BREAKER:
        assert not health["cloud"]["available"] and health["cloud"]["detail"] == "circuit open", health
        assert health["status"] == "degraded"
    else:
        assert campaign.mode in KEEPS_BREAKER_CLOSED
        assert health["cloud"]["available"], health
        assert health["status"] == "ok"


def test_an_open_breaker_refuses_at_once_and_says_so(campaign: Campaign) -> None:
    """With the breaker open, no call goes out: a tier with fallback gets the edge, a strict tier a 503
    (recorded as the decision it could not carry out). Closed, a call still goes out."""
    calls = campaign.upstream.requests
    if campaign.mode not in OPENS_BREAKER:
        ask(campaign.base, "strict", stream=False)
        assert campaign.upstream.requests > calls  # the breaker stayed closed: the call reached the upstream
        return
    for tier in TIERS:
        before = campaign.metrics()
        response, elapsed = ask(campaign.base, tier, stream=False)
        assert elapsed < DEADLINE_S + MARGIN_S
        recorded = new_decision(before, campaign.metrics())
        if tier == "strict":
            assert response.status_code == 503, response.text
            assert assert_error_object(response.json())["code"] == "no_backend_available"
            assert recorded == ("cloud", tier, DECIDED[tier])
        else:
            assert response.status_code == 200, response.text
            assert response.headers["x-route-fallback"] == "true"
            assert recorded == ("edge", tier, "cloud_unavailable")
    assert campaign.upstream.requests == calls
