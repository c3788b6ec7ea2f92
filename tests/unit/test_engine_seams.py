"""Every seam of the one engine takes a second implementation: backends, policy, estimator selector,
ledger and observers; and the device SDK reaches the same engine methods as the server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from hyrouter.edge import EdgeRouter, EdgeRouterConfig, StaticSignals
from hyrouter.router import (
    BackendError,
    Budget,
    ChatCompletionRequest,
    ChatMessage,
    CloudUnavailable,
    Decision,
    DecisionLog,
    HeuristicEstimator,
    PolicyInput,
    RequestFacts,
    RequestOutcome,
    Reservation,
    RouteReason,
    RoutingEngine,
    Tenant,
    TierConfig,
    TierPolicy,
    parse_config,
)
from tests.fakes import FakeBackend

pytestmark = pytest.mark.anyio

CONFIG = parse_config({"tiers": {"free": {"threshold": 0.7, "budget_usd": 1.0}}})
TENANT = Tenant("acme", "free")


def request(text: str = "What is the capital of France?", **kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "hybrid-router", "messages": [{"role": "user", "content": text}], **kw}
    )


class Fixed:
    """An estimator that always gives `score`."""

    def __init__(self, name: str, score: float) -> None:
        self.name, self.version, self.value = name, "1.0.0", score

    def score(self, messages: Sequence[ChatMessage]) -> float:
        return self.value


class CanaryByTenant:
    """A second estimator for one tenant, the primary for the rest: a canary's shape."""

    def __init__(self, primary: Fixed, canary: Fixed, tenant: str) -> None:
        self.primary, self.canary, self.tenant = primary, canary, tenant

    def select(self, request: ChatCompletionRequest, tenant: Tenant) -> Fixed:
        return self.canary if tenant.name == self.tenant else self.primary


class ToNamedBackend:
    """A policy that sends everything to a backend named `name` (as a cache will be)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inner = TierPolicy(CONFIG.tiers)

    def tier(self, name: str) -> TierConfig:
        return self.inner.tier(name)

    def decide(self, given: PolicyInput) -> Decision:
        decided = self.inner.decide(given)
        return Decision(
            target=self.name,
            reason=decided.reason,
            score=given.score,
            threshold=None,
            tier=given.tier_name,
            tenant=given.tenant,
            estimator=given.estimator,
        )

    def fall_back(self, decision: Decision, failure: BackendError, facts: RequestFacts) -> Decision:
        return decision.fall_back("edge", RouteReason.CLOUD_UNAVAILABLE)


class NoMoney:
    """A ledger where every budget is spent (an unlimited one stays unlimited); records charges."""

    def __init__(self) -> None:
        self.charged: list[tuple[str, float]] = []

    def budget_left(self, tenant: str, budget: Budget | None) -> float | None:
        return None if budget is None else 0.0

    def reserve(self, tenant: str, budget: Budget, cost_usd: float) -> Reservation | None:
        return None

    def settle(self, reservation: Reservation, cost_usd: float) -> None:
        raise AssertionError("nothing was reserved")

    def admit(self, tenant: str, per_minute: int) -> float | None:
        return None

    def charge(self, tenant: str, cost_usd: float) -> None:
        self.charged.append((tenant, cost_usd))

    def credit_saving(self, tenant: str, saved_usd: float) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.outcomes: list[RequestOutcome] = []

    def record(self, outcome: RequestOutcome) -> None:
        self.outcomes.append(outcome)


class Broken:
    def record(self, outcome: RequestOutcome) -> None:
        raise RuntimeError("observer bug")


async def test_backends_by_name_and_a_policy_that_picks_a_third_one() -> None:
    cache = FakeBackend("cache", model_id="cache-model", reply="cached")
    engine = RoutingEngine(
        CONFIG,
        estimator=HeuristicEstimator(),
        backends={"edge": FakeBackend("edge"), "cloud": FakeBackend("cloud"), "cache": cache},
        policy=ToNamedBackend("cache"),
    )
    answer = await engine.complete(request(), TENANT)
    assert answer.route is not None and (answer.route.target, answer.route.model) == ("cache", "cache-model")
    assert answer.choices[0].message.content == "cached" and cache.calls


async def test_the_policy_decides_the_fallback() -> None:
    cache = FakeBackend("cache", fail=CloudUnavailable("cache down"))
    engine = RoutingEngine(
        CONFIG,
        estimator=HeuristicEstimator(),
        backends={"edge": FakeBackend("edge", reply="from edge"), "cache": cache},
        policy=ToNamedBackend("cache"),
    )
    answer = await engine.complete(request(), TENANT)
    assert answer.route is not None
    assert (answer.route.target, answer.route.reason, answer.route.fallback) == (
        "edge",
        "cloud_unavailable",
        True,
    )


async def test_an_estimator_selector_scores_a_canary_tenant_with_another_estimator() -> None:
    selector = CanaryByTenant(Fixed("primary", 0.1), Fixed("canary", 0.9), tenant="beta")
    engine = RoutingEngine(CONFIG, estimators=selector, edge=FakeBackend("edge"), cloud=FakeBackend("cloud"))
    assert engine.estimator.name == "primary"
    main = engine.plan(request(), TENANT).decision
    beta = engine.plan(request(), Tenant("beta", "free")).decision
    assert (main.target, main.estimator, main.score) == ("edge", "primary@1.0.0", 0.1)
    assert (beta.target, beta.estimator, beta.score) == ("cloud", "canary@1.0.0", 0.9)


async def test_a_ledger_decides_the_budget_and_is_charged() -> None:
    ledger = NoMoney()
    engine = RoutingEngine(
        CONFIG,
        estimator=Fixed("hard", 0.95),
        edge=FakeBackend("edge"),
        cloud=FakeBackend("cloud"),
        ledger=ledger,
    )
    assert engine.plan(request(), TENANT).decision.reason is RouteReason.BUDGET_EXHAUSTED
    answer = await engine.complete(request(), TENANT)  # run: the ledger refuses the reservation
    assert answer.route is not None and (answer.route.target, answer.route.reason) == (
        "edge",
        "budget_exhausted",
    )
    unlimited = RoutingEngine(
        parse_config({"tiers": {"free": {"threshold": 0.7}}}),
        estimator=Fixed("hard", 0.95),
        edge=FakeBackend("edge"),
        cloud=FakeBackend("cloud"),
        ledger=ledger,
    )
    await unlimited.complete(request(), TENANT)
    assert ledger.charged and ledger.charged[0][0] == "acme"


async def test_observers_see_every_outcome_and_a_broken_one_fails_nothing() -> None:
    recorder = Recorder()
    engine = RoutingEngine(
        CONFIG,
        estimator=HeuristicEstimator(),
        edge=FakeBackend("edge"),
        cloud=FakeBackend("cloud"),
        observers=[Broken(), recorder],
    )
    await engine.complete(request(), TENANT)
    stream = await engine.stream(request(), TENANT)
    assert [c async for c in stream.chunks]
    assert [(o.stream, o.status) for o in recorder.outcomes] == [(False, 200), (True, 200)]
    assert stream.route.cost_saved_usd > 0  # priced once the stream ended


async def test_the_device_sdk_routes_through_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """`EdgeRouter.complete` and `.stream` reach `RoutingEngine.complete` and `.stream`."""
    calls: list[str] = []
    real_complete, real_stream = RoutingEngine.complete, RoutingEngine.stream

    async def complete(self: RoutingEngine, *args: Any, **kwargs: Any) -> Any:
        calls.append("complete")
        return await real_complete(self, *args, **kwargs)

    async def stream(self: RoutingEngine, *args: Any, **kwargs: Any) -> Any:
        calls.append("stream")
        return await real_stream(self, *args, **kwargs)

    monkeypatch.setattr(RoutingEngine, "complete", complete)
    monkeypatch.setattr(RoutingEngine, "stream", stream)

    def no_network(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no escalation expected")

    router = EdgeRouter(
        EdgeRouterConfig(),
        local=FakeBackend("edge", reply="local answer"),
        signals=StaticSignals(),
        transport=httpx.MockTransport(no_network),
    )
    body = {"messages": [{"role": "user", "content": "Hi"}]}
    answer = await router.complete(body)
    routed = await router.stream(body)
    text = "".join([c.choices[0].delta.content or "" async for c in routed.chunks if c.choices])
    assert calls == ["complete", "stream"]
    assert answer.route is not None and answer.route.target == "edge" and text == "localanswer"
    assert routed.route.cost_saved_usd > 0
    await router.aclose()


def test_one_reason_enum_and_one_decision_type() -> None:
    from hyrouter.edge import DeviceDecision, DeviceReason

    assert DeviceReason is RouteReason and DeviceDecision is Decision


async def test_a_reconfigured_engine_keeps_its_seams() -> None:
    recorder, ledger = Recorder(), NoMoney()
    policy = ToNamedBackend("cache")
    engine = RoutingEngine(
        CONFIG,
        estimator=HeuristicEstimator(),
        backends={"edge": FakeBackend("edge"), "cache": FakeBackend("cache")},
        policy=policy,
        ledger=ledger,
        observers=[recorder],
    )
    again = engine.reconfigured(parse_config({"tiers": {"free": {"threshold": 0.2}}}))
    assert again.policy is policy and again.ledger is ledger and again.backends == engine.backends
    await again.complete(request(), TENANT)
    assert len(recorder.outcomes) == 1
    plain = RoutingEngine(CONFIG, estimator=HeuristicEstimator(), edge=FakeBackend("edge"))
    retiered = plain.reconfigured(parse_config({"tiers": {"free": {"threshold": 0.2}}}))
    assert retiered.policy.tier("free").threshold == 0.2  # a TierPolicy follows the new tiers


async def test_an_observer_plugged_in_after_construction_survives_a_reload() -> None:
    """The app appends its Prometheus exporter to the engine it built; a SIGHUP reload used to drop it."""
    engine = RoutingEngine(CONFIG, estimator=HeuristicEstimator(), edge=FakeBackend("edge"))
    plugged = Recorder()
    engine.observers.append(plugged)
    again = engine.reconfigured(parse_config({"tiers": {"free": {"threshold": 0.2}}}))
    await again.complete(request(), TENANT)
    assert len(plugged.outcomes) == 1
    assert sum(isinstance(o, DecisionLog) for o in again.observers) == 1  # made again, not twice
    assert again.observers.count(again.metrics) == 1


class BrokenLedger:
    def budget_left(self, tenant: str, budget_usd: float | None) -> float | None:
        raise ConnectionError("budget store down")

    def charge(self, tenant: str, cost_usd: float) -> None:
        raise ConnectionError("budget store down")

    def credit_saving(self, tenant: str, saved_usd: float) -> None:
        raise ConnectionError("budget store down")


async def test_a_ledger_outage_loses_no_answer_and_turns_no_one_away() -> None:
    engine = RoutingEngine(
        CONFIG,
        estimator=Fixed("hard", 0.95),
        edge=FakeBackend("edge"),
        cloud=FakeBackend("cloud", reply="from the cloud"),
        ledger=BrokenLedger(),
    )
    answer = await engine.complete(request(), TENANT)
    assert answer.route is not None and answer.route.reason == "score_above_threshold"
    assert answer.choices[0].message.content == "from the cloud"


class Tracked(FakeBackend):
    """A backend whose streams say whether they were closed."""

    def __init__(self) -> None:
        super().__init__("edge", reply="a long answer")
        self.closed = False

    async def stream(self, request: ChatCompletionRequest, *, max_tokens: int) -> Any:  # type: ignore[override]
        try:
            async for chunk in super().stream(request, max_tokens=max_tokens):
                yield chunk
        finally:
            self.closed = True


async def test_a_stream_closed_unread_frees_its_backend() -> None:
    edge = Tracked()
    engine = RoutingEngine(CONFIG, estimator=HeuristicEstimator(), edge=edge, cloud=FakeBackend("cloud"))
    stream = await engine.stream(request(), TENANT)
    assert not edge.closed  # held open under the route: the model's turn is taken
    await stream.aclose()
    assert edge.closed


async def test_a_refused_request_is_recorded_as_the_decision_it_could_not_carry_out() -> None:
    from hyrouter.router import BackendHealth, NoBackendAvailable

    recorder = Recorder()
    strict = parse_config({"tiers": {"strict": {"cloud": "forced", "fallback_to_edge": False}}})
    engine = RoutingEngine(
        strict,
        estimator=HeuristicEstimator(),
        edge=FakeBackend("edge"),
        cloud=FakeBackend("cloud", health=BackendHealth(available=False, detail="circuit open")),
        observers=[recorder],
    )
    with pytest.raises(NoBackendAvailable):
        await engine.complete(request(), Tenant("acme", "strict"))
    [outcome] = recorder.outcomes
    assert (outcome.decision.target, outcome.decision.reason, outcome.status) == (
        "cloud",
        "tier_forces_cloud",
        503,
    )
    assert outcome.error_code == "no_backend_available"
