"""The engine holds a tenant's budget by reservation: exactly the requests the budget pays for reach
the cloud, however many arrive at once; each is settled to its actual cost, off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from hyrouter.cloud.app import create_app
from hyrouter.router import (
    Budget,
    BudgetExhausted,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CloudTimeout,
    CostLedger,
    EdgeBusy,
    HeuristicEstimator,
    InMemoryMetrics,
    Ledger,
    RateLimitExceeded,
    Reservation,
    RouterConfig,
    RoutingEngine,
    SqliteLedger,
    Tenant,
    hash_api_key,
    parse_config,
    worst_case_cost_usd,
)
from hyrouter.router._config import CloudPrice
from tests.fakes import FakeBackend

pytestmark = pytest.mark.anyio

HARD = "Prove step by step that sqrt 2 is irrational and explain why."
MAX_TOKENS = 100
PRICE = CloudPrice(prompt_per_1k=1.0, completion_per_1k=2.0)
K, N = 3, 10


def request(**kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {
            "model": "hybrid-router",
            "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": HARD}],
            **kw,
        }
    )


class Arrivals:
    """Counts requests reaching a backend; `all` is set once `n` have."""

    def __init__(self, n: int) -> None:
        self.n, self.count, self.all = n, 0, asyncio.Event()

    def arrive(self) -> None:
        self.count += 1
        if self.count >= self.n:
            self.all.set()


class Counted(FakeBackend):
    """A fake backend that counts arrivals and, with `hold`, holds every answer until `release` is
    set (so that no settlement frees money while requests are still being decided)."""

    def __init__(self, target: Any, arrivals: Arrivals, *, hold: bool = False) -> None:
        super().__init__(target)
        self.arrivals, self.release = arrivals, asyncio.Event()
        if not hold:
            self.release.set()

    async def complete(self, request: ChatCompletionRequest, *, max_tokens: int) -> ChatCompletionResponse:
        self.arrivals.arrive()
        await self.release.wait()
        return await super().complete(request, max_tokens=max_tokens)


class CountingLedger:
    """A ledger that counts its calls and the threads they come from."""

    def __init__(self, inner: Ledger) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.threads: set[int] = set()

    def _count(self, name: str) -> None:
        self.calls[name] += 1
        self.threads.add(threading.get_ident())

    def budget_left(self, tenant: str, budget: Budget | None) -> float | None:
        self._count("budget_left")
        return self.inner.budget_left(tenant, budget)

    def reserve(self, tenant: str, budget: Budget, cost_usd: float) -> Reservation | None:
        self._count("reserve")
        return self.inner.reserve(tenant, budget, cost_usd)

    def settle(self, reservation: Reservation, cost_usd: float) -> None:
        self._count("settle")
        self.inner.settle(reservation, cost_usd)

    def charge(self, tenant: str, cost_usd: float) -> None:
        self._count("charge")
        self.inner.charge(tenant, cost_usd)

    def credit_saving(self, tenant: str, saved_usd: float) -> None:
        self._count("credit_saving")
        self.inner.credit_saving(tenant, saved_usd)

    def admit(self, tenant: str, per_minute: int) -> float | None:
        self._count("admit")
        return self.inner.admit(tenant, per_minute)


def engine(
    ledger: Ledger, cloud: FakeBackend, *, budget_usd: float, edge: FakeBackend | None = None, **tier: Any
) -> RoutingEngine:
    config = parse_config(
        {
            "cloud": {"price": PRICE.model_dump()},
            "tiers": {"free": {"threshold": 0.5, "budget_usd": budget_usd, **tier}},
        }
    )
    return RoutingEngine(
        config,
        estimator=HeuristicEstimator(),
        edge=edge or FakeBackend("edge"),
        cloud=cloud,
        ledger=ledger,
    )


def worst_case(e: RoutingEngine) -> float:
    plan = e.plan(request(), Tenant("acme", "free"))
    assert plan.decision.target == "cloud"
    return worst_case_cost_usd(plan.prompt_tokens, MAX_TOKENS, PRICE)


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        yield CountingLedger(CostLedger())
    else:
        inner = SqliteLedger(tmp_path / "ledger.sqlite3")
        yield CountingLedger(inner)
        inner.close()


async def test_of_n_parallel_requests_exactly_the_k_the_budget_pays_for_reach_the_cloud(
    ledger: CountingLedger,
) -> None:
    arrivals = Arrivals(N)
    cloud = Counted("cloud", arrivals, hold=True)
    probe = engine(CostLedger(), FakeBackend("cloud"), budget_usd=1.0)
    e = engine(ledger, cloud, budget_usd=worst_case(probe) * (K + 0.5), edge=Counted("edge", arrivals))
    answers = asyncio.gather(*(e.complete(request(), Tenant("acme", "free")) for _ in range(N)))
    # Every request decided (k held at the cloud, the rest answered on the edge) before any settles.
    await asyncio.wait_for(arrivals.all.wait(), 10)
    cloud.release.set()
    routes = [a.route for a in await answers]
    assert Counter((r.target, r.reason) for r in routes if r) == {
        ("cloud", "score_above_threshold"): K,
        ("edge", "budget_exhausted"): N - K,
    }
    # Ledger calls per request: a cloud answer reserves and settles; a refused one reserves, and its
    # edge answer credits what it saved. None of them on the event loop's thread.
    assert ledger.calls == {"reserve": N, "settle": K, "credit_saving": N - K}
    assert threading.get_ident() not in ledger.threads
    # Settled to the actual cost (the fake's 10 + 2 tokens), the rest released: more fits now.
    actual = (10 * PRICE.prompt_per_1k + 2 * PRICE.completion_per_1k) / 1000
    assert ledger.inner.budget_left("acme", Budget(worst_case(probe) * (K + 0.5))) == pytest.approx(
        worst_case(probe) * (K + 0.5) - K * actual
    )


async def test_a_failed_cloud_call_releases_its_reservation(ledger: CountingLedger) -> None:
    probe = engine(CostLedger(), FakeBackend("cloud"), budget_usd=1.0)
    budget = worst_case(probe) * 1.5  # one request at a time
    e = engine(ledger, FakeBackend("cloud", fail=CloudTimeout("slow")), budget_usd=budget)
    for _ in range(3):  # each would find the budget held by the last were it not released
        answer = await e.complete(request(), Tenant("acme", "free"))
        assert answer.route is not None and answer.route.reason == "cloud_unavailable"
    assert ledger.calls["reserve"] == 3 and ledger.calls["settle"] == 3
    assert ledger.inner.budget_left("acme", Budget(budget)) == pytest.approx(budget)


async def test_a_stream_settles_its_reservation_when_it_ends(ledger: CountingLedger) -> None:
    probe = engine(CostLedger(), FakeBackend("cloud"), budget_usd=1.0)
    budget = worst_case(probe) * 1.5
    e = engine(ledger, FakeBackend("cloud", reply="one two three"), budget_usd=budget)
    for _ in range(2):
        stream = await e.stream(request(stream=True), Tenant("acme", "free"))
        assert stream.route.target == "cloud"
        assert len([chunk async for chunk in stream.chunks]) == 5
    assert ledger.calls["settle"] == 2


async def test_past_the_budget_what_the_edge_cannot_answer_is_refused_with_a_429() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    e = RoutingEngine(
        parse_config({"tiers": {"free": {"budget_usd": 0.0001}}}),
        estimator=HeuristicEstimator(),
        edge=FakeBackend("edge", lacks="tools"),
        cloud=FakeBackend("cloud"),
    )
    with pytest.raises(BudgetExhausted) as refused:
        await e.complete(request(tools=tools), Tenant("acme", "free"))
    assert refused.value.status_code == 429
    assert e.cloud is not None and e.cloud.calls == []  # type: ignore[attr-defined]
    metrics = e.metrics
    assert isinstance(metrics, InMemoryMetrics)  # the refusal is recorded as its decision
    assert metrics.errors == {"budget_exhausted": 1}
    assert metrics.decisions == {("cloud", "free", "budget_exhausted"): 1}


async def test_a_stream_closed_unread_releases_its_reservation(ledger: CountingLedger) -> None:
    probe = engine(CostLedger(), FakeBackend("cloud"), budget_usd=1.0)
    budget = worst_case(probe) * 1.5
    e = engine(ledger, FakeBackend("cloud", reply="one two three"), budget_usd=budget)
    for _ in range(2):  # the second would be past the budget were the first still held
        stream = await e.stream(request(stream=True), Tenant("acme", "free"))
        assert stream.route.target == "cloud"
        await stream.aclose()
    assert ledger.calls["settle"] == 2
    assert ledger.inner.budget_left("acme", Budget(budget)) == pytest.approx(budget)


async def test_a_fallback_to_the_cloud_is_paid_from_the_budget_or_not_taken(ledger: CountingLedger) -> None:
    probe = engine(CostLedger(), FakeBackend("cloud"), budget_usd=1.0)
    budget = worst_case(probe) * 1.5
    busy = FakeBackend("edge", fail=EdgeBusy("queue full"))
    e = engine(ledger, FakeBackend("cloud"), budget_usd=budget, edge=busy, threshold=1.0)
    answer = await e.complete(request(), Tenant("acme", "free"))  # the edge's, failed over to the cloud
    assert answer.route is not None and (answer.route.target, answer.route.reason) == ("cloud", "edge_busy")
    assert ledger.calls == {"reserve": 1, "settle": 1}
    ledger.inner.charge("acme", budget)  # spent
    with pytest.raises(EdgeBusy):  # the edge's own failure stands: the budget cannot pay the cloud
        await e.complete(request(), Tenant("acme", "free"))
    assert e.cloud is not None and len(e.cloud.calls) == 1  # type: ignore[attr-defined]


def test_the_http_app_answers_a_budget_refusal_with_a_429_insufficient_quota() -> None:
    config = parse_config(
        {
            "tiers": {"free": {"budget_usd": 0.0001}},
            "api_keys": [{"sha256": hash_api_key("k-free"), "tenant": "acme", "tier": "free"}],
        }
    )

    async def factory(config: RouterConfig) -> RoutingEngine:
        edge = FakeBackend("edge", lacks="tools")
        return RoutingEngine(config, estimator=HeuristicEstimator(), edge=edge, cloud=FakeBackend("cloud"))

    body = {
        "model": "hybrid-router",
        "messages": [{"role": "user", "content": HARD}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    with TestClient(create_app(config, engine_factory=factory)) as client:
        r = client.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer k-free"})
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "insufficient_quota"
    assert r.json()["error"]["code"] == "budget_exhausted"


async def test_past_the_tiers_requests_per_minute_a_request_is_refused_with_retry_after(
    ledger: CountingLedger,
) -> None:
    e = engine(ledger, FakeBackend("cloud"), budget_usd=1.0, requests_per_minute=K)
    for _ in range(K):
        await e.complete(request(), Tenant("acme", "free"))
    with pytest.raises(RateLimitExceeded) as refused:
        await e.complete(request(), Tenant("acme", "free"))
    assert refused.value.status_code == 429 and 1 <= int(refused.value.headers["retry-after"]) <= 60
    assert e.cloud is not None and len(e.cloud.calls) == K  # type: ignore[attr-defined]
    assert ledger.calls["admit"] == K + 1 and ledger.calls["reserve"] == K  # refused before any estimate
    assert threading.get_ident() not in ledger.threads


def test_the_http_app_answers_past_the_rate_limit_with_a_429_and_retry_after() -> None:
    config = parse_config(
        {
            "tiers": {"free": {"requests_per_minute": 1}},
            "api_keys": [{"sha256": hash_api_key("k-free"), "tenant": "acme", "tier": "free"}],
        }
    )

    async def factory(config: RouterConfig) -> RoutingEngine:
        return RoutingEngine(config, estimator=HeuristicEstimator(), edge=FakeBackend("edge"))

    body = {"model": "hybrid-router", "messages": [{"role": "user", "content": "hi"}]}
    with TestClient(create_app(config, engine_factory=factory)) as client:
        statuses = [
            client.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer k-free"})
            for _ in range(2)
        ]
    assert [r.status_code for r in statuses] == [200, 429]
    assert statuses[1].json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(statuses[1].headers["retry-after"]) <= 60


class SlowLedger(CostLedger):
    """A ledger whose reservations wait for `go`: a shared store that answers slowly."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.reserving = threading.Event()
        self.reserved = threading.Event()

    def reserve(self, tenant: str, budget: Budget, cost_usd: float) -> Reservation | None:
        self.reserving.set()
        self.go.wait(10)
        try:
            return super().reserve(tenant, budget, cost_usd)
        finally:
            self.reserved.set()


async def test_a_request_cancelled_while_its_budget_is_held_releases_the_hold() -> None:
    # The hold runs in a worker thread, which a cancel cannot stop: the reservation it still makes
    # is released once made, not kept against the tenant for an answer never given.
    ledger = SlowLedger()
    e = engine(ledger, FakeBackend("cloud"), budget_usd=1.0)
    task = asyncio.create_task(e.complete(request(), Tenant("acme", "free")))
    await asyncio.to_thread(ledger.reserving.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ledger.go.set()
    await asyncio.to_thread(ledger.reserved.wait, 10)
    budget = Budget(1.0, "total")  # the tier's default period
    for _ in range(100):  # the hold made after the cancel is released, in a worker thread of its own
        if ledger.budget_left("acme", budget) == pytest.approx(1.0):
            break
        await asyncio.sleep(0.02)
    assert ledger.budget_left("acme", budget) == pytest.approx(1.0), dict(ledger._spent)
