"""The engine's books: what a finished request cost or saved, its route, and who hears of it.

`OutcomeRecording` is the part of `RoutingEngine` that talks to the ledger and the observers; it is
its own module so that the engine's module holds the routing. Every call into a ledger or an observer
is guarded: a store or an observer that fails is logged and never fails the request it records.
Calls into a shared ledger (SQLite, DynamoDB) do I/O: the engine makes them in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from hyrouter.router._accounting import (
    Budget,
    CostLedger,
    Ledger,
    Reservation,
    cloud_cost_usd,
    worst_case_cost_usd,
)
from hyrouter.router._backend import ChatBackend, Target, approximate_tokens
from hyrouter.router._cascade import Verdict
from hyrouter.router._confidence import Calibration
from hyrouter.router._config import RouterConfig, TierConfig
from hyrouter.router._errors import RateLimitExceeded, RouterError
from hyrouter.router._metrics import DecisionObserver, RequestOutcome
from hyrouter.router._plan import RoutePlan, Tenant
from hyrouter.router._policy import Decision, Policy
from hyrouter.router._wire import ChatCompletionRequest, RouteInfo, Usage

logger = logging.getLogger("hybrid_router")
T = TypeVar("T")


class OutcomeRecording:
    """Pricing, the ledger and the observers, for `RoutingEngine` (which sets these attributes)."""

    config: RouterConfig
    backends: dict[Target, ChatBackend]
    policy: Policy
    ledger: Ledger
    observers: list[DecisionObserver]
    calibration: Calibration

    def _count_tokens(self, request: ChatCompletionRequest) -> int:
        """The prompt tokens of `request`: exact where a backend can tell (the edge model's tokenizer)."""
        counter = self.backends.get("edge") or self.backends.get("cloud")
        if counter is None:
            return approximate_tokens(request.messages)
        return counter.count_tokens(request.messages)

    def _budget_left(self, tenant: Tenant, tier: TierConfig) -> float | None:
        """The tenant's budget left; unlimited (logged) when the ledger cannot say: a budget store
        outage must not turn every request away."""
        budget = None if tier.budget_usd is None else Budget(tier.budget_usd, tier.budget_period)
        try:
            return self.ledger.budget_left(tenant.name, budget)
        except Exception:
            logger.exception(
                "ledger %r failed; %s's budget is not enforced for now", self.ledger, tenant.name
            )
            return None

    def _admit(self, tenant: Tenant) -> None:
        """Count the request against its tier's `requests_per_minute`: `RateLimitExceeded` (with
        `Retry-After`) past it. Blocking; a ledger that fails is logged and admits."""
        per_minute = self.policy.tier(tenant.tier).requests_per_minute
        if per_minute is None:
            return
        try:
            wait = self.ledger.admit(tenant.name, per_minute)
        except Exception:
            logger.exception(
                "ledger %r failed; %s's rate limit is not enforced for now", self.ledger, tenant.name
            )
            return
        if wait is not None:
            retry = max(1, math.ceil(wait))
            raise RateLimitExceeded(
                f"This tenant has sent its {per_minute} requests for this minute; retry in {retry} s.",
                headers={"retry-after": str(retry)},
            )

    def _reserve(self, plan: RoutePlan, request: ChatCompletionRequest, max_tokens: int) -> RoutePlan:
        """`plan` holding its worst-case cost (`max_tokens` completion tokens) of the tenant's budget,
        or decided again as past the budget (the edge, else a `BudgetExhausted` refusal) when the
        ledger refuses it. Blocking: called in a worker thread.

        Unlimited tiers and edge decisions reserve nothing; a ledger that fails is logged and the
        request goes on unreserved (a budget store outage must not turn every request away).
        """
        decision, given = plan.decision, plan.given
        if decision.target != "cloud" or given is None:
            return plan
        held, reservation = self._hold(plan, decision, max_tokens)
        if held:
            return replace(plan, reservation=reservation)
        spent = replace(given, facts=replace(given.facts, budget_left_usd=0.0))
        try:
            decided = self.policy.decide(spent)
            if decided.target == "edge" and not plan.exact_tokens:  # decide on the edge's exact count
                counted = self._count_tokens(request)
                spent = replace(spent, facts=replace(spent.facts, prompt_tokens=counted))
                plan = replace(plan, prompt_tokens=counted, exact_tokens=True)
                decided = self.policy.decide(spent)
            return replace(plan, decision=decided)
        except RouterError as exc:
            self._record_refusal(exc, plan, request)
            raise

    def _hold(self, plan: RoutePlan, decision: Decision, max_tokens: int) -> tuple[bool, Reservation | None]:
        """Reserve the worst case of `plan` for `decision` (a cloud one): (True, the reservation), or
        (True, None) where nothing needs holding (an unlimited tier; a ledger that failed, logged),
        or (False, None) when the budget cannot pay for it. Blocking."""
        tier = self.policy.tier(decision.tier)
        if tier.budget_usd is None:
            return True, None
        budget = Budget(tier.budget_usd, tier.budget_period)
        cost = worst_case_cost_usd(plan.prompt_tokens, max_tokens, self.config.cloud.price)
        try:
            reservation = self.ledger.reserve(decision.tenant, budget, cost)
        except Exception:
            logger.exception(
                "ledger %r failed; %s's budget is not enforced for now", self.ledger, decision.tenant
            )
            return True, None
        return reservation is not None, reservation

    async def _hold_off_loop(
        self, plan: RoutePlan, decision: Decision, max_tokens: int
    ) -> tuple[bool, Reservation | None]:
        """`_hold` in a worker thread (a shared ledger does I/O), its hold never lost to a cancel."""
        held: tuple[bool, Reservation | None] = await self._off_loop_holding(
            decision.tenant, lambda: self._hold(plan, decision, max_tokens), lambda r: r[1]
        )
        return held

    async def _off_loop_holding(
        self, tenant: str, work: Callable[[], T], reservation_of: Callable[[T], Reservation | None]
    ) -> T:
        """`work` in a worker thread, where it may reserve budget (`reservation_of` its result).

        The thread cannot be stopped: should the caller be cancelled meanwhile (its deadline, a
        client gone, a shutdown), the reservation the thread still makes is released as soon as it
        is made, rather than kept against the tenant's budget for an answer never given.
        """
        future = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:

            def release(done: asyncio.Future[T]) -> None:
                if done.cancelled() or done.exception() is not None:
                    return
                reservation = reservation_of(done.result())
                if reservation is not None:
                    done.get_loop().run_in_executor(None, self._book, tenant, reservation, 0.0, 0.0)

            future.add_done_callback(release)
            raise

    def _record_refusal(self, exc: RouterError, plan: RoutePlan, request: ChatCompletionRequest) -> None:
        """Record a policy's refusal (no backend it allows can answer) as the decision it made."""
        if exc.decision is not None:  # an error that decided nothing (a prompt too long) is not one
            self._observe(
                plan, exc.decision, 0.0, status=exc.status_code, stream=bool(request.stream), error=exc
            )

    def _keeps_prompts(self, tier: str) -> bool:
        """Whether outcome records of `tier` keep the prompt's text (`TierConfig.store_prompts`)."""
        config = self.config.tiers.get(tier)
        return config is not None and config.store_prompts

    def _route_info(
        self,
        decision: Decision,
        cost: float = 0.0,
        saved: float = 0.0,
        *,
        upstream: RouteInfo | None = None,
        model: str | None = None,
    ) -> RouteInfo:
        """The route of `decision`; behind a router upstream, the model is the one that answered there
        (`model`, when given: the one that gave a cached answer)."""
        backend = self.backends.get(decision.target)
        if model is None:
            model = upstream.model if upstream else backend.model_id if backend else ""
        return RouteInfo.from_decision(
            decision, model=model, cost_usd=cost, cost_saved_usd=saved, upstream=upstream
        )

    async def _record(
        self,
        plan: RoutePlan,
        decision: Decision,
        started: float,
        *,
        status: int,
        stream: bool,
        usage: Usage | None = None,
        error: RouterError | None = None,
        upstream: RouteInfo | None = None,
        failover: tuple[str, int] | None = None,
        model: str | None = None,
        completion_id: str | None = None,
        cloud_part: Usage | None = None,
        verdict: Verdict | None = None,
        answer: str | None = None,
    ) -> RouteInfo:
        """Book a finished request's cost or saving (settling its reservation) and tell the observers.

        `cloud_part` is what the cloud streamed of an answer another backend finished (a mid-stream
        failover): it is paid for, and only the rest counts as saved.
        """
        upstream_ms = (time.perf_counter() - started) * 1000.0
        usage = usage or Usage()
        price = self.config.cloud.price
        cost = cloud_cost_usd(usage, price) if decision.target == "cloud" and error is None else 0.0
        # An edge answer and a cached one save what the cloud would have charged for them.
        saves = decision.target in ("edge", "cache") and error is None
        saved = cloud_cost_usd(usage, price) if saves else 0.0
        if cloud_part is not None:
            cost += cloud_cost_usd(cloud_part, price)
            rest = max(0, usage.completion_tokens - cloud_part.completion_tokens)
            saved = cloud_cost_usd(Usage(completion_tokens=rest), price) if saves else 0.0
        if plan.reservation is not None or cost or saved:
            await self._book_off_loop(decision.tenant, plan.reservation, cost, saved)
        return self._observe(
            plan,
            decision,
            upstream_ms,
            status=status,
            stream=stream,
            usage=usage,
            error=error,
            upstream=upstream,
            failover=failover,
            cost=cost,
            saved=saved,
            model=model,
            completion_id=completion_id,
            verdict=verdict,
            answer=answer,
        )

    async def _book_off_loop(
        self, tenant: str, reservation: Reservation | None, cost: float, saved: float
    ) -> None:
        """`_book` in a worker thread (a shared ledger does I/O)."""
        if isinstance(self.ledger, CostLedger):  # a lock and no I/O: no thread needed
            self._book(tenant, reservation, cost, saved)
        else:
            await asyncio.to_thread(self._book, tenant, reservation, cost, saved)

    def _book(self, tenant: str, reservation: Reservation | None, cost: float, saved: float) -> None:
        """Settle the reservation at `cost` (0 releases it all), else charge `cost`; credit `saved`."""
        try:
            if reservation is not None:
                self.ledger.settle(reservation, cost)
            elif cost:
                self.ledger.charge(tenant, cost)
            if saved:
                self.ledger.credit_saving(tenant, saved)
        except Exception:  # the answer is given and paid for: a ledger outage must not lose it
            logger.exception("ledger %r failed to record %s's spend", self.ledger, tenant)

    def _observe(
        self,
        plan: RoutePlan,
        decision: Decision,
        upstream_ms: float,
        *,
        status: int,
        stream: bool,
        usage: Usage | None = None,
        error: RouterError | None = None,
        upstream: RouteInfo | None = None,
        failover: tuple[str, int] | None = None,
        cost: float = 0.0,
        saved: float = 0.0,
        model: str | None = None,
        completion_id: str | None = None,
        verdict: Verdict | None = None,
        answer: str | None = None,
    ) -> RouteInfo:
        usage = usage or Usage()
        route = self._route_info(decision, cost, saved, upstream=upstream, model=model)
        if verdict is not None:
            verdict.annotate(route)
        outcome = RequestOutcome(
            decision=decision,
            model=route.model,
            status=status,
            stream=stream,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            estimator_ms=plan.estimator_ms,
            upstream_ms=upstream_ms,
            cost_usd=cost,
            cost_saved_usd=saved,
            error_code=error.code if error else None,
            failover_from=failover[0] if failover else None,
            failover_at_tokens=failover[1] if failover else None,
            completion_id=completion_id,
            features=plan.features,
            request=plan.request,
            keep_prompt=self._keeps_prompts(decision.tier),
            confidence=None if verdict is None else verdict.confidence,
            calibration=None if verdict is None or verdict.confidence is None else self.calibration.name,
            edge_tokens_discarded=None if verdict is None else verdict.discarded_tokens,
            answer=answer,
        )
        for observer in self.observers:
            try:
                observer.record(outcome)
            except Exception:  # an observer's failure must never fail the request it observes
                logger.exception("observer %r failed", observer)
        return route
