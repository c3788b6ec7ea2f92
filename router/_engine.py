"""The engine: authenticate → estimate → decide → run the decision with fallback → account.

It owns no transport: the HTTP app, the Lambda handler and the on-device SDK all call it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from router._accounting import CostLedger, cloud_cost_usd
from router._backend import BackendHealth, ChatBackend, Target, approximate_tokens
from router._config import RouterConfig, TierConfig, hash_api_key
from router._errors import (
    AuthenticationError,
    BackendError,
    EdgeBusy,
    ModelNotFound,
    NoBackendAvailable,
    RouterError,
)
from router._estimator import ComplexityEstimator
from router._metrics import InMemoryMetrics, RequestOutcome, RouterMetrics, log_decision
from router._policy import Decision, RequestFacts, RouteReason, decide
from router._wire import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, RouteInfo, Usage

logger = logging.getLogger("hybrid_router")
T = TypeVar("T")

_NOT_CONFIGURED = BackendHealth(available=False, detail="not configured")


@dataclass(frozen=True)
class Tenant:
    """Who is calling: the tenant and tier an API key maps to."""

    name: str
    tier: str


@dataclass(frozen=True)
class RoutePlan:
    """A decision and the facts it was made from."""

    decision: Decision
    prompt_tokens: int
    requested_max_tokens: int | None
    estimator_ms: float


@dataclass
class RoutedStream:
    """A streamed answer whose route is known before the first byte is sent."""

    route: RouteInfo
    chunks: AsyncGenerator[ChatCompletionChunk, None]


class RoutingEngine:
    """Routes chat completions between the edge model and the cloud endpoint for configured tiers."""

    def __init__(
        self,
        config: RouterConfig,
        *,
        estimator: ComplexityEstimator,
        edge: ChatBackend | None = None,
        cloud: ChatBackend | None = None,
        metrics: RouterMetrics | None = None,
        ledger: CostLedger | None = None,
    ) -> None:
        self.config = config
        self.estimator = estimator
        self.edge = edge
        self.cloud = cloud
        self.metrics: RouterMetrics = metrics if metrics is not None else InMemoryMetrics()
        self.ledger = ledger if ledger is not None else CostLedger()
        self._keys = {entry.sha256: Tenant(entry.tenant, entry.tier) for entry in config.api_keys}
        self._key_ids = {key_id: Tenant(e.tenant, e.tier) for key_id, e in config.api_key_ids.items()}
        self._estimator_id = f"{estimator.name}@{estimator.version}"

    # -- who and where -------------------------------------------------------------------------

    def authenticate(self, api_key: str | None) -> Tenant:
        """The tenant an API key belongs to; the tier comes from the config, never the request."""
        if not api_key:
            raise AuthenticationError("Missing API key: send 'Authorization: Bearer <key>'.")
        tenant = self._keys.get(hash_api_key(api_key))
        if tenant is None:
            raise AuthenticationError("Incorrect API key provided.")
        return tenant

    def authenticate_key_id(self, key_id: str | None, api_key: str | None) -> Tenant:
        """The tenant of an API Gateway key: by its id in `api_key_ids`, else by its sha256 in `api_keys`.

        API Gateway has checked that the key exists; its tier still comes from the config, never the request.
        """
        tenant = self._key_ids.get(key_id) if key_id else None
        if tenant is None and api_key:
            tenant = self._keys.get(hash_api_key(api_key))
        if tenant is not None:
            return tenant
        if key_id or api_key:
            raise AuthenticationError(
                "This API key is not mapped to a tier; ask the platform team to add it."
            )
        raise AuthenticationError(
            "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
        )

    def backend(self, target: Target) -> ChatBackend:
        """The backend that serves `target`."""
        backend = self.edge if target == "edge" else self.cloud
        if backend is None:
            raise NoBackendAvailable(f"No {target} backend is configured.")
        return backend

    def health(self, target: Target) -> BackendHealth:
        """The state of `target`'s backend now."""
        backend = self.edge if target == "edge" else self.cloud
        return _NOT_CONFIGURED if backend is None else backend.health()

    def plan(self, request: ChatCompletionRequest, tenant: Tenant) -> RoutePlan:
        """Score the request and decide where it goes, without generating."""
        if request.model != self.config.served_model_name:
            raise ModelNotFound(
                f"The model '{request.model}' does not exist; this router serves "
                f"'{self.config.served_model_name}'.",
                param="model",
            )
        tier = self.config.tiers[tenant.tier]
        started = time.perf_counter()
        try:
            score = min(1.0, max(0.0, float(self.estimator.score(request.messages))))
        except Exception:  # an estimator bug must not fail the request: route it as undecided
            logger.exception("estimator %s failed; scoring 0.5", self._estimator_id)
            score = 0.5
        estimator_ms = (time.perf_counter() - started) * 1000.0
        counter = self.edge or self.cloud
        prompt_tokens = (
            counter.count_tokens(request.messages) if counter else approximate_tokens(request.messages)
        )
        requested = _cap(request.requested_max_tokens, tier)
        facts = RequestFacts(
            prompt_tokens=prompt_tokens,
            max_tokens=requested or self.config.edge.max_tokens,
            edge=self.health("edge"),
            cloud=self.health("cloud"),
            edge_context_window=self.edge.context_window if self.edge else 0,
            cloud_context_window=self.cloud.context_window if self.cloud else 0,
            budget_left_usd=self.ledger.budget_left(tenant.name, tier.budget_usd),
        )
        decision = decide(
            score=score,
            tier_name=tenant.tier,
            tier=tier,
            tenant=tenant.name,
            estimator=self._estimator_id,
            facts=facts,
        )
        return RoutePlan(decision, prompt_tokens, requested, estimator_ms)

    # -- running -------------------------------------------------------------------------------

    async def complete(self, request: ChatCompletionRequest, tenant: Tenant) -> ChatCompletionResponse:
        """Answer `request` for `tenant` in one response carrying its `route`."""
        plan = self.plan(request, tenant)
        started = time.perf_counter()

        async def run(target: Target) -> ChatCompletionResponse:
            return await self.backend(target).complete(request, max_tokens=self._max_tokens(target, plan))

        decision, response = await self._run_with_fallback(plan, started, run, stream=False)
        route = self._record(plan, decision, started, status=200, stream=False, usage=response.usage)
        response.route = route
        response.model = route.model
        return response

    async def stream(self, request: ChatCompletionRequest, tenant: Tenant) -> RoutedStream:
        """Start a streamed answer; it raises here, before any byte is sent, when it cannot start."""
        plan = self.plan(request, tenant)
        started = time.perf_counter()

        async def start(
            target: Target,
        ) -> tuple[AsyncIterator[ChatCompletionChunk], ChatCompletionChunk | None]:
            chunks = self.backend(target).stream(request, max_tokens=self._max_tokens(target, plan))
            try:
                return chunks, await anext(chunks)
            except StopAsyncIteration:
                return chunks, None

        decision, (chunks, first) = await self._run_with_fallback(plan, started, start, stream=True)
        route = self._route_info(decision)
        want_usage = bool(request.stream_options and request.stream_options.include_usage)
        return RoutedStream(route, self._relay(plan, decision, started, route, chunks, first, want_usage))

    async def _run_with_fallback(
        self, plan: RoutePlan, started: float, run: Callable[[Target], Awaitable[T]], *, stream: bool
    ) -> tuple[Decision, T]:
        """`run` on the decided target, then on the other one if the tier allows; failures are recorded."""
        decision = plan.decision
        try:
            try:
                return decision, await run(decision.target)
            except BackendError as exc:
                decision = self._fallback(plan, decision, exc)
                return decision, await run(decision.target)
        except RouterError as exc:
            self._record(plan, decision, started, status=exc.status_code, stream=stream, error=exc)
            raise

    def _max_tokens(self, target: Target, plan: RoutePlan) -> int:
        backend = self.backend(target)
        default = self.config.edge.max_tokens if target == "edge" else self.config.cloud.max_tokens
        room = max(1, backend.context_window - plan.prompt_tokens)
        return min(plan.requested_max_tokens or default, room)

    def _fallback(self, plan: RoutePlan, decision: Decision, exc: BackendError) -> Decision:
        """The decision to retry on the other backend, or `exc` re-raised when the tier forbids it."""
        tier = self.config.tiers[decision.tier]
        needed = plan.prompt_tokens + (plan.requested_max_tokens or self.config.edge.max_tokens)
        if decision.target == "cloud":
            other: Target = "edge"
            allowed = tier.fallback_to_edge
            reason = RouteReason.CLOUD_UNAVAILABLE
        else:
            other = "cloud"
            allowed = tier.fallback_to_cloud and tier.cloud != "never"
            reason = RouteReason.EDGE_BUSY if isinstance(exc, EdgeBusy) else RouteReason.EDGE_UNAVAILABLE
        backend = self.edge if other == "edge" else self.cloud
        if (
            allowed
            and not decision.fallback
            and backend is not None
            and backend.health().available
            and needed <= backend.context_window
        ):
            logger.warning(
                "%s failed (%s: %s); answering on %s", decision.target, exc.code, exc.message, other
            )
            return decision.fall_back(other, reason)
        raise exc

    async def _relay(
        self,
        plan: RoutePlan,
        decision: Decision,
        started: float,
        route: RouteInfo,
        chunks: AsyncIterator[ChatCompletionChunk],
        first: ChatCompletionChunk | None,
        want_usage: bool,
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        usage: Usage | None = None
        pieces = 0
        status, error = 200, None
        try:
            if first is not None:
                first.route = route
            last = first
            async for chunk in _chain(first, chunks):
                chunk.model = route.model
                usage = chunk.usage or usage
                pieces += sum(1 for c in chunk.choices if c.delta.content)
                last = chunk
                yield chunk
            if want_usage and usage is None and last is not None:
                # Some upstreams (llama.cpp's server) ignore stream_options: the client still gets usage.
                usage = Usage(
                    prompt_tokens=plan.prompt_tokens,
                    completion_tokens=pieces,
                    total_tokens=plan.prompt_tokens + pieces,
                )
                yield ChatCompletionChunk(id=last.id, model=route.model, choices=[], usage=usage)
        except RouterError as exc:
            status, error = exc.status_code, exc
            raise
        finally:
            await _aclose(chunks)
            if usage is None:  # counted from the chunks: one token each for llama.cpp and vLLM
                usage = Usage(
                    prompt_tokens=plan.prompt_tokens,
                    completion_tokens=pieces,
                    total_tokens=plan.prompt_tokens + pieces,
                )
            self._record(plan, decision, started, status=status, stream=True, usage=usage, error=error)

    # -- accounting ----------------------------------------------------------------------------

    def _route_info(self, decision: Decision, cost: float = 0.0, saved: float = 0.0) -> RouteInfo:
        backend = self.edge if decision.target == "edge" else self.cloud
        model = backend.model_id if backend else ""
        return RouteInfo.from_decision(decision, model=model, cost_usd=cost, cost_saved_usd=saved)

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
    ) -> RouteInfo:
        usage = usage or Usage()
        price = self.config.cloud.price
        cost = cloud_cost_usd(usage, price) if decision.target == "cloud" and error is None else 0.0
        saved = cloud_cost_usd(usage, price) if decision.target == "edge" and error is None else 0.0
        if cost:
            self.ledger.charge(decision.tenant, cost)
        if saved:
            self.ledger.credit_saving(decision.tenant, saved)
        route = self._route_info(decision, cost, saved)
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
        )
        self.metrics.record(outcome)
        log_decision(outcome)
        return route


def _cap(requested: int | None, tier: TierConfig) -> int | None:
    if requested is None or tier.max_tokens is None:
        return requested if requested is not None else tier.max_tokens
    return min(requested, tier.max_tokens)


async def _chain(
    first: ChatCompletionChunk | None, rest: AsyncIterator[ChatCompletionChunk]
) -> AsyncIterator[ChatCompletionChunk]:
    if first is not None:
        yield first
    async for chunk in rest:
        yield chunk


async def _aclose(chunks: AsyncIterator[ChatCompletionChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
