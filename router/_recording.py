"""The engine's books: what a finished request cost or saved, its route, and who hears of it.

`OutcomeRecording` is the part of `RoutingEngine` that talks to the ledger and the observers; it is
its own module so that the engine's module holds the routing. Every call into a ledger or an observer
is guarded: a store or an observer that fails is logged and never fails the request it records.
"""

from __future__ import annotations

import logging
import time

from router._accounting import Ledger, cloud_cost_usd
from router._backend import ChatBackend, Target
from router._config import RouterConfig, TierConfig
from router._errors import RouterError
from router._metrics import DecisionObserver, RequestOutcome
from router._plan import RoutePlan, Tenant
from router._policy import Decision
from router._wire import ChatCompletionRequest, RouteInfo, Usage

logger = logging.getLogger("hybrid_router")


class OutcomeRecording:
    """Pricing, the ledger and the observers, for `RoutingEngine` (which sets these attributes)."""

    config: RouterConfig
    backends: dict[Target, ChatBackend]
    ledger: Ledger
    observers: list[DecisionObserver]

    def _budget_left(self, tenant: Tenant, tier: TierConfig) -> float | None:
        """The tenant's budget left; unlimited (logged) when the ledger cannot say: a budget store
        outage must not turn every request away."""
        try:
            return self.ledger.budget_left(tenant.name, tier.budget_usd)
        except Exception:
            logger.exception(
                "ledger %r failed; %s's budget is not enforced for now", self.ledger, tenant.name
            )
            return None

    def _record_refusal(self, exc: RouterError, plan: RoutePlan, request: ChatCompletionRequest) -> None:
        """Record a policy's refusal (no backend it allows can answer) as the decision it made."""
        if exc.decision is not None:  # an error that decided nothing (a prompt too long) is not one
            stream = bool(request.stream)
            self._record(
                plan, exc.decision, time.perf_counter(), status=exc.status_code, stream=stream, error=exc
            )

    def _keeps_prompts(self, tier: str) -> bool:
        """Whether outcome records of `tier` keep the prompt's text (`TierConfig.store_prompts`)."""
        config = self.config.tiers.get(tier)
        return config is not None and config.store_prompts

    def _route_info(
        self, decision: Decision, cost: float = 0.0, saved: float = 0.0, *, upstream: RouteInfo | None = None
    ) -> RouteInfo:
        """The route of `decision`; behind a router upstream, the model is the one that answered there."""
        backend = self.backends.get(decision.target)
        model = upstream.model if upstream else backend.model_id if backend else ""
        return RouteInfo.from_decision(
            decision, model=model, cost_usd=cost, cost_saved_usd=saved, upstream=upstream
        )

    def _record(
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
        completion_id: str | None = None,
    ) -> RouteInfo:
        usage = usage or Usage()
        price = self.config.cloud.price
        cost = cloud_cost_usd(usage, price) if decision.target == "cloud" and error is None else 0.0
        saved = cloud_cost_usd(usage, price) if decision.target == "edge" and error is None else 0.0
        try:
            if cost:
                self.ledger.charge(decision.tenant, cost)
            if saved:
                self.ledger.credit_saving(decision.tenant, saved)
        except Exception:  # the answer is given and paid for: a ledger outage must not lose it
            logger.exception("ledger %r failed to record %s's spend", self.ledger, decision.tenant)
        route = self._route_info(decision, cost, saved, upstream=upstream)
        outcome = RequestOutcome(
            decision=decision,
            model=route.model,
            status=status,
            stream=stream,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            estimator_ms=plan.estimator_ms,
            upstream_ms=(time.perf_counter() - started) * 1000.0,
            cost_usd=cost,
            cost_saved_usd=saved,
            error_code=error.code if error else None,
            failover_from=failover[0] if failover else None,
            failover_at_tokens=failover[1] if failover else None,
            completion_id=completion_id,
            features=plan.features,
            request=plan.request,
            keep_prompt=self._keeps_prompts(decision.tier),
        )
        for observer in self.observers:
            try:
                observer.record(outcome)
            except Exception:  # an observer's failure must never fail the request it observes
                logger.exception("observer %r failed", observer)
        return route
