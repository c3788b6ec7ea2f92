"""The engine: authenticate → estimate → decide → run the decision with fallback → account.

The only place a request is routed. It owns no transport: the HTTP app, the Lambda handler and the
on-device SDK (`edge.EdgeRouter`) all call it, and differ only in what they plug into its seams:

- backends: a map from a target's name ("edge", "cloud") to a `ChatBackend`;
- the policy (`Policy`): `TierPolicy` for a config's tiers; the device policy wraps it;
- the estimator selector (`EstimatorSelector`): which estimator scores a request;
- the ledger (`Ledger`): budgets and spend per tenant;
- observers (`DecisionObserver`): every finished request with its decision and outcome (metrics,
  the decision log, and whatever else is plugged in);
- outcome capture (`OutcomeWriter`): an observer that writes outcome records off the request path,
  and joins feedback to them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TypeVar, cast

from router._accounting import CostLedger, Ledger
from router._backend import BackendHealth, ChatBackend, Target, approximate_tokens
from router._config import RouterConfig
from router._errors import (
    BackendError,
    DeadlineExceeded,
    ModelNotFound,
    NoBackendAvailable,
    RouterError,
)
from router._estimator import ComplexityEstimator, EstimatorSelector, FeatureEstimator, SingleEstimator
from router._failover import (
    continued,
    continues_cut_streams,
    deadline_at,
    deadline_chunk,
    deadline_scope,
    start_continuation,
    until,
)
from router._metrics import DecisionLog, DecisionObserver, InMemoryMetrics, RouterMetrics
from router._outcomes import OutcomeWriter
from router._plan import (
    ApiKeys,
    RoutedStream,
    RoutePlan,
    Tenant,
    aclose_stream,
    cap_max_tokens,
    chain_chunks,
)
from router._policy import Decision, Policy, PolicyInput, RequestFacts, TierPolicy
from router._recording import OutcomeRecording
from router._wire import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, RouteInfo, Usage

logger = logging.getLogger("hybrid_router")
T = TypeVar("T")
_Head = list[ChatCompletionChunk]  # a stream's chunks up to its first content, held back

_NOT_CONFIGURED = BackendHealth(available=False, detail="not configured", configured=False)


class RoutingEngine(OutcomeRecording):
    """Routes chat completions between named backends (the edge model, the cloud endpoint) per tier."""

    def __init__(
        self,
        config: RouterConfig,
        *,
        estimator: ComplexityEstimator | None = None,
        estimators: EstimatorSelector | None = None,
        edge: ChatBackend | None = None,
        cloud: ChatBackend | None = None,
        backends: Mapping[Target, ChatBackend] | None = None,
        policy: Policy | None = None,
        metrics: RouterMetrics | None = None,
        ledger: Ledger | None = None,
        observers: Sequence[DecisionObserver] = (),
        log_decisions: bool = True,
        outcomes: OutcomeWriter | None = None,
    ) -> None:
        """An engine for `config`; every seam has a default.

        `estimator` is shorthand for `estimators=SingleEstimator(estimator)`, and `edge=`/`cloud=`
        for entries of `backends`. The policy defaults to `TierPolicy(config.tiers)`, the ledger to an
        in-process `CostLedger`; `metrics` (default `InMemoryMetrics`) and, unless `log_decisions` is
        false, the decision log observe before `observers`. `outcomes` observes last, and asks the
        estimator for its features; `aclose` writes what it still holds.
        """
        if estimators is None:
            if estimator is None:
                raise ValueError("RoutingEngine needs an estimator or an estimator selector")
            estimators = SingleEstimator(estimator)
        self.config = config
        self.estimators = estimators
        self.backends: dict[Target, ChatBackend] = dict(backends or {})
        for name, backend in (("edge", edge), ("cloud", cloud)):
            if backend is not None:
                self.backends[name] = backend
        self.policy: Policy = policy if policy is not None else TierPolicy(config.tiers)
        self.metrics: RouterMetrics = metrics if metrics is not None else InMemoryMetrics()
        self.ledger: Ledger = ledger if ledger is not None else CostLedger()
        self._extra_observers = tuple(observers)
        self._log_decisions = log_decisions
        decision_log: list[DecisionObserver] = [DecisionLog()] if log_decisions else []
        self.outcomes = outcomes
        capture: list[DecisionObserver] = [outcomes] if outcomes is not None else []
        self.observers: list[DecisionObserver] = [self.metrics, *decision_log, *observers, *capture]
        self.keys = ApiKeys(config)

    def reconfigured(self, config: RouterConfig) -> RoutingEngine:
        """An engine for `config` on this one's backends, estimators, metrics, ledger and observers.

        For a change of tiers or keys that needs nothing rebuilt. A `TierPolicy` is made anew on the
        new tiers; any other policy is kept (it reads its own state).
        """
        policy = TierPolicy(config.tiers) if isinstance(self.policy, TierPolicy) else self.policy
        return RoutingEngine(
            config,
            estimators=self.estimators,
            backends=self.backends,
            policy=policy,
            metrics=self.metrics,
            ledger=self.ledger,
            observers=self._extra_observers,
            log_decisions=self._log_decisions,
            outcomes=self.outcomes,
        )

    @property
    def estimator(self) -> ComplexityEstimator:
        """The primary estimator (the selector may score some requests with another)."""
        return self.estimators.primary

    @property
    def edge(self) -> ChatBackend | None:
        """The backend named "edge", if any."""
        return self.backends.get("edge")

    @property
    def cloud(self) -> ChatBackend | None:
        """The backend named "cloud", if any."""
        return self.backends.get("cloud")

    @property
    def mode(self) -> str:
        """Which backends this deployment has: "hybrid", "edge-only", "cloud-only" (or "none")."""
        has_edge, has_cloud = "edge" in self.backends, "cloud" in self.backends
        if has_edge and has_cloud:
            return "hybrid"
        return "edge-only" if has_edge else "cloud-only" if has_cloud else "none"

    # -- who and where -------------------------------------------------------------------------

    def authenticate(self, api_key: str | None) -> Tenant:
        """The tenant an API key belongs to; the tier comes from the config, never the request."""
        return self.keys.tenant(api_key)

    def authenticate_key_id(self, key_id: str | None, api_key: str | None) -> Tenant:
        """The tenant of an API Gateway key: by its id, else by the sha256 of the key it came with."""
        return self.keys.tenant_of_key_id(key_id, api_key)

    def backend(self, target: Target) -> ChatBackend:
        """The backend that serves `target`."""
        backend = self.backends.get(target)
        if backend is None:
            raise NoBackendAvailable(f"No {target} backend is configured.")
        return backend

    def health(self, target: Target) -> BackendHealth:
        """The state of `target`'s backend now."""
        backend = self.backends.get(target)
        return _NOT_CONFIGURED if backend is None else backend.health()

    def facts(
        self,
        prompt_tokens: int,
        max_tokens: int,
        budget_left_usd: float | None,
        edge_lacks: str | None = None,
    ) -> RequestFacts:
        """What the policy knows about the backends now, for a request of this size."""
        edge, cloud = self.edge, self.cloud
        return RequestFacts(
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            edge=self.health("edge"),
            cloud=self.health("cloud"),
            edge_context_window=edge.context_window if edge else 0,
            cloud_context_window=cloud.context_window if cloud else 0,
            budget_left_usd=budget_left_usd,
            edge_lacks=edge_lacks,
        )

    def plan(self, request: ChatCompletionRequest, tenant: Tenant) -> RoutePlan:
        """Score the request and decide where it goes, without generating."""
        if request.model != self.config.served_model_name:
            raise ModelNotFound(
                f"The model '{request.model}' does not exist; this router serves "
                f"'{self.config.served_model_name}'.",
                param="model",
            )
        tier = self.policy.tier(tenant.tier)
        estimator = self.estimators.select(request, tenant)
        estimator_id = f"{estimator.name}@{estimator.version}"
        started = time.perf_counter()
        features: Sequence[float] | None = None
        try:
            # getattr, not isinstance: a runtime protocol check costs microseconds on every request
            with_features = getattr(estimator, "score_with_features", None) if self.outcomes else None
            if with_features is not None:
                raw, features = cast(FeatureEstimator, estimator).score_with_features(request.messages)
            else:
                raw = estimator.score(request.messages)
            score = min(1.0, max(0.0, float(raw)))
        except Exception:  # an estimator bug must not fail the request: route it as undecided
            logger.exception("estimator %s failed; scoring 0.5", estimator_id)
            score, features = 0.5, None
        estimator_ms = (time.perf_counter() - started) * 1000.0
        counter = self.edge or self.cloud
        prompt_tokens = (
            counter.count_tokens(request.messages) if counter else approximate_tokens(request.messages)
        )
        requested = cap_max_tokens(request.requested_max_tokens, tier)
        edge_lacks = self.edge.cannot_honour(request) if self.edge else None
        facts = self.facts(
            prompt_tokens,
            requested or self.config.edge.max_tokens,
            self._budget_left(tenant, tier),
            edge_lacks,
        )
        given = PolicyInput(score, tenant.tier, tenant.name, estimator_id, facts, request)
        try:
            decision = self.policy.decide(given)
        except RouterError as exc:
            refused = RoutePlan(
                exc.decision, prompt_tokens, requested, estimator_ms, edge_lacks, features, request
            )
            self._record_refusal(exc, refused, request)
            raise
        return RoutePlan(decision, prompt_tokens, requested, estimator_ms, edge_lacks, features, request)

    async def _plan_off_loop(self, request: ChatCompletionRequest, tenant: Tenant) -> RoutePlan:
        """`plan` in a worker thread: counting a large prompt's tokens and scoring it is CPU work that
        would stall every other request on the event loop, `/healthz` included."""
        return await asyncio.to_thread(self.plan, request, tenant)

    async def aclose(self) -> None:
        """Write the outcome records still queued, then release every backend (models, connections),
        each even when another fails to close."""
        if self.outcomes is not None:
            try:
                await asyncio.to_thread(self.outcomes.close)
            except Exception:
                logger.exception("closing the outcome writer failed")
        for name, backend in self.backends.items():
            try:
                await backend.aclose()
            except Exception:
                logger.exception("closing backend %s failed", name)

    # -- running -------------------------------------------------------------------------------

    async def complete(
        self, request: ChatCompletionRequest, tenant: Tenant, *, plan: RoutePlan | None = None
    ) -> ChatCompletionResponse:
        """Answer `request` for `tenant` in one response carrying its `route` (decided now, or `plan`)."""
        plan = plan or await self._plan_off_loop(request, tenant)
        started = time.perf_counter()

        async def run(target: Target) -> ChatCompletionResponse:
            return await self.backend(target).complete(request, max_tokens=self._max_tokens(target, plan))

        decision, response = await self._run_with_fallback(plan, started, run, stream=False)
        # A backend that is itself a router (the device's cloud) reports its own route.
        route = self._record(
            plan,
            decision,
            started,
            status=200,
            stream=False,
            usage=response.usage,
            upstream=response.route,
            completion_id=response.id,
        )
        response.route = route
        response.model = route.model
        return response

    async def stream(
        self, request: ChatCompletionRequest, tenant: Tenant, *, plan: RoutePlan | None = None
    ) -> RoutedStream:
        """Start a streamed answer; it raises here, before any byte is sent, when it cannot start.

        The backend's chunks are held back until the first content (or the end): up to there a
        failure still falls back to the other backend, and the caller has seen nothing.
        """
        plan = plan or await self._plan_off_loop(request, tenant)
        started = time.perf_counter()

        async def start(target: Target) -> tuple[AsyncIterator[ChatCompletionChunk], _Head]:
            chunks = self.backend(target).stream(request, max_tokens=self._max_tokens(target, plan))
            head: list[ChatCompletionChunk] = []
            try:
                async for chunk in chunks:
                    head.append(chunk)
                    if chunk.starts_answer:
                        break
            except BaseException:
                await aclose_stream(chunks)
                raise
            return chunks, head

        decision, (chunks, head) = await self._run_with_fallback(plan, started, start, stream=True)
        route = self._route_info(decision, upstream=head[0].route if head else None)
        want_usage = bool(request.stream_options and request.stream_options.include_usage)
        relay = self._relay(plan, decision, started, route, chunks, head, want_usage, request)
        return RoutedStream(route, relay, source=chunks)

    async def _run_with_fallback(
        self, plan: RoutePlan, started: float, run: Callable[[Target], Awaitable[T]], *, stream: bool
    ) -> tuple[Decision, T]:
        """`run` on the decided target, then once where the policy falls back to; failures are recorded.

        A failure of the fallback goes to the policy too, which re-raises it or names a better error
        (the device: `EdgeOffline` when its escalation found the link down); it is never retried.
        All of it runs within the request's deadline (`DeadlineExceeded` after it, with no fallback).
        """
        decision = plan.decision
        seconds = self._deadline_s(plan)
        try:
            async with deadline_scope(deadline_at(seconds, time.perf_counter() - started), seconds):
                try:
                    return decision, await run(decision.target)
                except BackendError as exc:
                    decision = self.policy.fall_back(decision, exc, self._fallback_facts(plan))
                    logger.warning(
                        "%s failed (%s: %s); answering on %s",
                        plan.decision.target,
                        exc.code,
                        exc.message,
                        decision.target,
                    )
                try:
                    return decision, await run(decision.target)
                except BackendError as exc:
                    self.policy.fall_back(decision, exc, self._fallback_facts(plan))
                    raise  # a policy that names a third place is not followed: one fallback at most
        except RouterError as exc:
            self._record(plan, decision, started, status=exc.status_code, stream=stream, error=exc)
            raise

    def _fallback_facts(self, plan: RoutePlan) -> RequestFacts:
        """The backends' health now, for a request of this plan's size."""
        max_tokens = plan.requested_max_tokens or self.config.edge.max_tokens
        return self.facts(plan.prompt_tokens, max_tokens, None, plan.edge_lacks)

    def _deadline_s(self, plan: RoutePlan) -> float:
        """Seconds the request may take: its tier's `deadline_s`, else the server's."""
        return self.policy.tier(plan.decision.tier).deadline_s or self.config.server.deadline_s

    def _max_tokens(self, target: Target, plan: RoutePlan) -> int:
        backend = self.backend(target)
        default = self.config.edge.max_tokens if target == "edge" else self.config.cloud.max_tokens
        room = max(1, backend.context_window - plan.prompt_tokens)
        return min(plan.requested_max_tokens or default, room)

    async def _relay(
        self,
        plan: RoutePlan,
        decision: Decision,
        started: float,
        route: RouteInfo,
        chunks: AsyncIterator[ChatCompletionChunk],
        head: list[ChatCompletionChunk],
        want_usage: bool,
        request: ChatCompletionRequest,
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """The stream to the caller, within the deadline; a break after content fails over once."""
        usage: Usage | None = None
        sent: list[str] = []  # the content the caller has: one piece per chunk, about a token each
        finished = False
        status, error = 200, cast(RouterError | None, None)
        failover: tuple[str, int] | None = None  # (error code, pieces sent) when the stream failed over
        seconds = self._deadline_s(plan)
        at = deadline_at(seconds, time.perf_counter() - started)
        source: AsyncIterator[ChatCompletionChunk] = chain_chunks(head, chunks)
        more: AsyncIterator[ChatCompletionChunk] | None = None  # the continuation, once failed over
        last = head[0] if head else None
        try:
            if head:
                head[0].route = route
            while True:
                try:
                    async for chunk in until(at, seconds, source):
                        chunk.model = route.model
                        usage = chunk.usage or usage
                        for choice in chunk.choices:
                            if choice.delta.content:
                                sent.append(choice.delta.content)
                            finished = finished or bool(choice.finish_reason)
                        last = chunk
                        yield chunk
                    break
                except BackendError as exc:
                    if failover is not None or finished or not sent or last is None:
                        raise
                    decision, more = await self._fail_over(plan, decision, exc, request, sent, at, seconds)
                    failover, usage = (exc.code or exc.error_type, len(sent)), None
                    final = self._route_info(decision)
                    final.failover_at_tokens = len(sent)
                    source = continued(more, completion_id=last.id, model=route.model, route=final)
            if want_usage and usage is None and last is not None:
                # Some upstreams (llama.cpp's server) ignore stream_options: the client still gets usage.
                usage = Usage(
                    prompt_tokens=plan.prompt_tokens,
                    completion_tokens=len(sent),
                    total_tokens=plan.prompt_tokens + len(sent),
                )
                yield ChatCompletionChunk(id=last.id, model=route.model, choices=[], usage=usage)
        except DeadlineExceeded as exc:
            status, error = exc.status_code, exc
            if last is not None and not finished:
                yield deadline_chunk(last.id, route.model)
            raise
        except RouterError as exc:
            status, error = exc.status_code, exc
            raise
        finally:
            await aclose_stream(chunks)
            if more is not None:
                await aclose_stream(more)
            if usage is None:  # counted from the chunks: one token each for llama.cpp and vLLM
                usage = Usage(
                    prompt_tokens=plan.prompt_tokens,
                    completion_tokens=len(sent),
                    total_tokens=plan.prompt_tokens + len(sent),
                )
            recorded = self._record(
                plan,
                decision,
                started,
                status=status,
                stream=True,
                usage=usage,
                error=error,
                upstream=route.upstream,
                failover=failover,
                completion_id=last.id if last is not None else None,
            )
            route.cost_usd, route.cost_saved_usd = recorded.cost_usd, recorded.cost_saved_usd

    async def _fail_over(
        self,
        plan: RoutePlan,
        decision: Decision,
        failure: BackendError,
        request: ChatCompletionRequest,
        sent: list[str],
        at: float,
        seconds: float,
    ) -> tuple[Decision, AsyncIterator[ChatCompletionChunk]]:
        """Where the policy falls back to after `failure` cut a stream, and that backend's continuation
        of the `sent` content, started (its first chunk read); `failure` when either cannot be had."""
        if not continues_cut_streams(self.policy):
            raise failure
        other = self.policy.fall_back(decision, failure, self._fallback_facts(plan))
        room = self.backend(other.target).context_window - plan.prompt_tokens - len(sent)
        max_tokens = max(1, min(self._max_tokens(other.target, plan) - len(sent), room))
        backend = self.backend(other.target)
        chunks = await start_continuation(backend, request, sent, max_tokens, failure, at=at, seconds=seconds)
        logger.warning(
            "%s cut the stream after %d pieces (%s: %s); %s continues it",
            decision.target,
            len(sent),
            failure.code,
            failure.message,
            other.target,
        )
        return other, chunks

    # -- accounting ----------------------------------------------------------------------------
