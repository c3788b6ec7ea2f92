"""The engine: authenticate → estimate → decide → run the decision with fallback → account.

The only place a request is routed. It owns no transport: the HTTP app, the Lambda handler and the
on-device SDK (`edge.EdgeRouter`) all call it, and differ only in what they plug into its seams:

- backends: a map from a target's name ("edge", "cloud") to a `ChatBackend`;
- the policy (`Policy`): `TierPolicy` for a config's tiers; the device policy wraps it;
- the estimator selector (`EstimatorSelector`): which estimator scores a request;
- the ledger (`Ledger`): budgets and spend per tenant;
- observers (`DecisionObserver`): every finished request with its decision and outcome (metrics,
  the decision log, and whatever else is plugged in);
- the response cache (`ResponseCache`): a repeated request answered before it is planned, as
  target "cache" (recorded and observed like any decision, its saving counted as the cloud's price).
- outcome capture (`OutcomeWriter`): an observer that writes outcome records off the request path,
  and joins feedback to them.
- the calibration (`Calibration`): the edge model's token signals to a confidence in its answer, for
  tiers that verify edge answers (`hyrouter.router._cascade`); uncalibrated by default.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar, cast

from hyrouter.router._ab import ABArms
from hyrouter.router._accounting import CostLedger, Ledger
from hyrouter.router._backend import (
    BackendHealth,
    ChatBackend,
    Target,
    approximate_tokens,
    token_upper_bound,
)
from hyrouter.router._cache import (
    CachedAnswer,
    CacheLookup,
    Embedder,
    ResponseCache,
    answer_of,
    cached_chunks,
    carries_more,
)
from hyrouter.router._caching import ResponseCaching
from hyrouter.router._cascade import HeldAnswer, Verdict, content_pieces, hold_back
from hyrouter.router._confidence import UNCALIBRATED, Calibration
from hyrouter.router._config import RouterConfig, TierConfig
from hyrouter.router._errors import (
    BackendError,
    DeadlineExceeded,
    ModelNotFound,
    NoBackendAvailable,
    RouterError,
)
from hyrouter.router._estimator import (
    ComplexityEstimator,
    EstimatorSelector,
    FeatureEstimator,
    SingleEstimator,
    load_estimator,
)
from hyrouter.router._failover import (
    continued,
    continues_cut_streams,
    deadline_at,
    deadline_chunk,
    deadline_scope,
    enforces_tenant_limits,
    start_continuation,
    until,
)
from hyrouter.router._metrics import DecisionLog, DecisionObserver, InMemoryMetrics, RouterMetrics
from hyrouter.router._outcomes import OutcomeWriter
from hyrouter.router._plan import (
    ApiKeys,
    RoutedStream,
    RoutePlan,
    StreamHead,
    Tenant,
    aclose_stream,
    cap_max_tokens,
    chain_chunks,
)
from hyrouter.router._policy import Decision, Policy, PolicyInput, RequestFacts, TierPolicy
from hyrouter.router._shadow import ShadowJudge
from hyrouter.router._verifying import EdgeVerification
from hyrouter.router._wire import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    RouteInfo,
    Usage,
)

logger = logging.getLogger("hybrid_router")
T = TypeVar("T")

_NOT_CONFIGURED = BackendHealth(available=False, detail="not configured", configured=False)
_NOT_NEEDED = BackendHealth(available=False, detail="not needed: no tier can use the edge", configured=False)


class RoutingEngine(ResponseCaching, EdgeVerification):
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
        cache: ResponseCache | None = None,
        outcomes: OutcomeWriter | None = None,
        calibration: Calibration = UNCALIBRATED,
        shadow: ShadowJudge | None = None,
        arms: ABArms | None = None,
    ) -> None:
        """An engine for `config`; every seam has a default.

        `estimator` is shorthand for `estimators=SingleEstimator(estimator)`, and `edge=`/`cloud=`
        for entries of `backends`. The policy defaults to `TierPolicy(config.tiers)`, the ledger to an
        in-process `CostLedger`; `metrics` (default `InMemoryMetrics`) and, unless `log_decisions` is
        false, the decision log observe before `observers`. The cache defaults to an in-process LRU of
        `config.cache.max_entries`, semantic when the primary estimator is an `Embedder`; tiers turn it on.
        `outcomes` observes last, and asks the estimator for its features; `aclose` writes what it
        still holds. `calibration` turns the edge's token signals into a confidence where a tier
        verifies edge answers (default `UNCALIBRATED`). `shadow` samples edge answers for shadow
        judging (`hyrouter.router._shadow`); it observes after outcome capture, and follows
        `reconfigured` configs. `arms` are the tiers' A/B tests (default: those of `config.tiers`, arm
        b's estimators loaded from the registry).
        """
        if estimators is None:
            if estimator is None:
                raise ValueError("RoutingEngine needs an estimator or an estimator selector")
            estimators = SingleEstimator(estimator)
        self.config = config
        self.estimators = estimators
        self.calibration = calibration
        self.backends: dict[Target, ChatBackend] = dict(backends or {})
        for name, backend in (("edge", edge), ("cloud", cloud)):
            if backend is not None:
                self.backends[name] = backend
        self.policy: Policy = policy if policy is not None else TierPolicy(config.tiers)
        self.arms = arms if arms is not None else ABArms(config.tiers, load_estimator)
        self.metrics: RouterMetrics = metrics if metrics is not None else InMemoryMetrics()
        self.ledger: Ledger = ledger if ledger is not None else CostLedger()
        self._log_decisions = log_decisions
        decision_log: list[DecisionObserver] = [DecisionLog()] if log_decisions else []
        self.outcomes = outcomes
        capture: list[DecisionObserver] = [outcomes] if outcomes is not None else []
        self.shadow = shadow
        if shadow is not None:
            capture.append(shadow)
        self.observers: list[DecisionObserver] = [self.metrics, *decision_log, *observers, *capture]
        self.keys = ApiKeys(config)
        if cache is None:
            primary = estimators.primary
            embedder = primary if isinstance(primary, Embedder) else None
            cache = ResponseCache(embedder=embedder, max_entries=config.cache.max_entries)
        self.cache = cache
        if not cache.semantic_available:
            for name, tier in config.tiers.items():
                if tier.cache.semantic_threshold is not None:
                    logger.warning(
                        "tier %s asks for a semantic cache, but estimator %s@%s has no embedding: "
                        "only exact repeats are answered from the cache",
                        name,
                        estimators.primary.name,
                        estimators.primary.version,
                    )

    def reconfigured(self, config: RouterConfig) -> RoutingEngine:
        """An engine for `config` on this one's backends, estimators, metrics, ledger and observers.

        For a change of tiers or keys that needs nothing rebuilt. A `TierPolicy` is made anew on the
        new tiers; any other policy is kept (it reads its own state).
        """
        policy = TierPolicy(config.tiers) if isinstance(self.policy, TierPolicy) else self.policy
        if self.shadow is not None:
            self.shadow.retarget(config)
        # The observers given or plugged in since (an app's Prometheus exporter), not the ones the
        # new engine makes itself again (metrics, the decision log, outcome capture).
        own = (self.metrics, self.outcomes, self.shadow)
        observers = [o for o in self.observers if o not in own and not isinstance(o, DecisionLog)]
        for observer in observers:  # those that judge by the config (drift thresholds) follow it
            retarget = getattr(observer, "retarget", None)
            if retarget is not None:
                retarget(config)
        return RoutingEngine(
            config,
            estimators=self.estimators,
            backends=self.backends,
            policy=policy,
            metrics=self.metrics,
            ledger=self.ledger,
            observers=observers,
            log_decisions=self._log_decisions,
            cache=self.cache,
            outcomes=self.outcomes,
            calibration=self.calibration,
            shadow=self.shadow,
            arms=ABArms(config.tiers, load_estimator, loaded=self.arms.estimators),
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
        """The state of `target`'s backend now; an edge that no tier can use (`RouterConfig.edge_needed`)
        and so was not built is "not needed", not configured."""
        backend = self.backends.get(target)
        if backend is not None:
            return backend.health()
        if target == "edge" and self.config.edge.enabled and not self.config.edge_needed:
            return _NOT_NEEDED
        return _NOT_CONFIGURED

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
        """Score the request and decide where it goes (the budget left read from the ledger), without
        generating; nothing is reserved until the plan is run."""
        return self._plan(request, tenant, read_budget=True)

    def _plan(self, request: ChatCompletionRequest, tenant: Tenant, *, read_budget: bool) -> RoutePlan:
        """The plan; without `read_budget` the ledger is not read (`_reserve` asks it for a cloud
        decision, in the one call that also holds the money)."""
        if request.model != self.config.served_model_name:
            raise ModelNotFound(
                f"The model '{request.model}' does not exist; this router serves "
                f"'{self.config.served_model_name}'.",
                param="model",
            )
        tier = self.policy.tier(tenant.tier)
        estimator = self.estimators.select(request, tenant)
        arm = self.arms.arm(request, tenant) if self.arms.tiers else None
        if arm is not None and arm.estimator is not None:
            estimator = arm.estimator
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
        requested = cap_max_tokens(request.requested_max_tokens, tier)
        edge_lacks = self.edge.cannot_honour(request) if self.edge else None
        max_tokens = requested or self.config.edge.max_tokens
        prompt_tokens = approximate_tokens(request.messages)
        exact = self._needs_exact_count(request, tier, prompt_tokens, max_tokens, edge_lacks)
        if exact:
            prompt_tokens = self._count_tokens(request)
        facts = self.facts(
            prompt_tokens,
            max_tokens,
            self._budget_left(tenant, tier) if read_budget else None,
            edge_lacks,
        )
        given = PolicyInput(score, tenant.tier, tenant.name, estimator_id, facts, request)
        if arm is not None:
            given = replace(given, variant=arm.variant, threshold=arm.threshold)
        try:
            decision = self.policy.decide(given)
            if decision.target == "edge" and not exact:
                # The edge answers after all (a budget spent, the cloud down, a device's own rule):
                # its window and its room for the completion need the exact count; decide on that.
                prompt_tokens, exact = self._count_tokens(request), True
                given = replace(given, facts=replace(facts, prompt_tokens=prompt_tokens))
                decision = self.policy.decide(given)
        except RouterError as exc:
            refused = RoutePlan(
                exc.decision,
                prompt_tokens,
                requested,
                estimator_ms,
                edge_lacks,
                features=features,
                request=request,
            )
            self._record_refusal(exc, refused, request)
            raise
        return RoutePlan(
            decision,
            prompt_tokens,
            requested,
            estimator_ms,
            edge_lacks,
            given=given,
            features=features,
            request=request,
            exact_tokens=exact,
        )

    def _needs_exact_count(
        self,
        request: ChatCompletionRequest,
        tier: TierConfig,
        estimate: int,
        max_tokens: int,
        edge_lacks: str | None,
    ) -> bool:
        """Whether deciding `request` needs its exact prompt tokens, not the upper-leaning `estimate`.

        Exact where the edge may answer it (the only place, or the tier does not force the cloud, the
        edge can give what it asks, and the estimate fits the edge's window: beyond it the request goes
        to the cloud for its length), and where a prompt that certainly fits (`token_upper_bound`)
        might not fit the cloud's window. Tokenizing costs up to milliseconds (the llama tokenizer:
        0.3 ms for a line, 12 ms for 8 kB); a request the cloud answers needs only a bound, for its
        budget reservation.
        """
        edge, cloud = self.edge, self.cloud
        if edge is not None:
            if cloud is None or tier.cloud == "never":
                return True  # the edge is the only place: its window decides, or refuses
            fits = estimate + max_tokens <= edge.context_window
            if tier.cloud != "forced" and edge_lacks is None and fits:
                return True
        return cloud is not None and token_upper_bound(request.messages) + max_tokens > cloud.context_window

    async def _counted(self, plan: RoutePlan) -> RoutePlan:
        """`plan` with its exact prompt tokens (in a worker thread), for the edge's room to answer in."""
        if plan.exact_tokens or plan.request is None:
            return plan
        counted = await asyncio.to_thread(self._count_tokens, plan.request)
        return replace(plan, prompt_tokens=counted, exact_tokens=True)

    async def _plan_off_loop(
        self, request: ChatCompletionRequest, tenant: Tenant, plan: RoutePlan | None = None
    ) -> RoutePlan:
        """The plan (`plan`, else made now) with its rate limit counted and its budget reserved, in a
        worker thread: counting a large prompt's tokens and scoring it is CPU work, and a shared
        ledger does I/O, that would stall every other request on the event loop, `/healthz` included."""
        enforced = enforces_tenant_limits(self.policy)
        limited = enforced and self.policy.tier(tenant.tier).requests_per_minute is not None
        if plan is not None and (plan.decision.target != "cloud" or not enforced) and not limited:
            return plan

        def planned() -> RoutePlan:
            if enforced:
                self._admit(tenant)  # first: a request past the rate limit costs no estimate
            made = plan or self._plan(request, tenant, read_budget=False)
            if made.decision.target != "cloud" or not enforced:
                return made
            return self._reserve(made, request, self._max_tokens("cloud", made))

        return await self._off_loop_holding(tenant.name, planned, lambda made: made.reservation)

    async def aclose(self) -> None:
        """Write the outcome records still queued, then release every backend (models, connections)
        and the ledger's connections (a ledger with a `close`: `SqliteLedger`, which reopens if used
        again), each even when another fails to close. Shadow jobs get a short grace first."""
        if self.shadow is not None:
            try:
                await self.shadow.aclose()
            except Exception:
                logger.exception("closing the shadow judge failed")
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
        close_ledger = getattr(self.ledger, "close", None)
        if close_ledger is not None:
            try:
                await asyncio.to_thread(close_ledger)
            except Exception:
                logger.exception("closing the ledger %r failed", self.ledger)

    # -- running -------------------------------------------------------------------------------

    async def complete(
        self, request: ChatCompletionRequest, tenant: Tenant, *, plan: RoutePlan | None = None
    ) -> ChatCompletionResponse:
        """Answer `request` for `tenant` in one response carrying its `route` (decided now, or `plan`).

        A repeat the tier's cache holds is answered from it, before any plan.
        """
        lookup = await self._cache_lookup(request, tenant)
        if lookup is not None and lookup.hit is not None:
            return (await self._answer_from_cache(lookup, request, tenant, stream=False))[0]
        ready = await self._plan_off_loop(request, tenant, plan)
        started = time.perf_counter()
        check = self._edge_check(ready)

        async def run(target: Target, plan: RoutePlan) -> ChatCompletionResponse | HeldAnswer:
            backend, max_tokens = self.backend(target), self._max_tokens(target, plan)
            if check is None or target != "edge" or plan.decision.target != "edge":
                return await backend.complete(request, max_tokens=max_tokens)
            check.start()
            if check.settings.stream == "hold":  # judged on its first tokens, as a stream would be
                return await self._held_answer(backend, request, max_tokens, check)
            answer = await backend.complete_with_signals(
                request, max_tokens=max_tokens, signals=check.signals
            )
            check.finish(answer.usage.completion_tokens if answer.usage else len(check.signals))
            return answer

        held, decision, first = await self._run_with_fallback(ready, started, run, stream=False)
        verdict: Verdict | None = None
        if check is not None and check.answered and decision == ready.decision:
            held, decision, response, verdict = await self._verified_answer(
                held, check, first, request, started
            )
        else:
            held, decision, response = await self._finished(held, decision, started, first, request)
        # A backend that is itself a router (the device's cloud) reports its own route.
        route = await self._record(
            held,
            decision,
            started,
            status=200,
            stream=False,
            usage=response.usage,
            upstream=response.route,
            completion_id=response.id,
            verdict=verdict,
            answer=_answer_text(response),
        )
        response.route = route
        response.model = route.model
        if lookup is not None and not _degraded(route):
            await self._remember(lookup, answer_of(response, decision.target))
        return response

    async def stream(
        self, request: ChatCompletionRequest, tenant: Tenant, *, plan: RoutePlan | None = None
    ) -> RoutedStream:
        """Start a streamed answer; it raises here, before any byte is sent, when it cannot start.

        The backend's chunks are held back until the first content (or the end): up to there a
        failure still falls back to the other backend, and the caller has seen nothing. A repeat
        the tier's cache holds streams from it.
        """
        want_usage = bool(request.stream_options and request.stream_options.include_usage)
        lookup = await self._cache_lookup(request, tenant)
        if lookup is not None and lookup.hit is not None:
            answered, hit_route = await self._answer_from_cache(lookup, request, tenant, stream=True)
            replay = cached_chunks(
                lookup.hit.answer, hit_route, include_usage=want_usage, completion_id=answered.id
            )
            return RoutedStream(hit_route, replay)
        ready = await self._plan_off_loop(request, tenant, plan)
        started = time.perf_counter()
        check = self._edge_check(ready)

        async def start(
            target: Target, plan: RoutePlan
        ) -> tuple[AsyncIterator[ChatCompletionChunk], StreamHead]:
            backend, max_tokens = self.backend(target), self._max_tokens(target, plan)
            verifying = check is not None and target == "edge" and plan.decision.target == "edge"
            if check is not None and verifying:
                check.start()
                chunks = backend.stream_with_signals(request, max_tokens=max_tokens, signals=check.signals)
            else:
                chunks = backend.stream(request, max_tokens=max_tokens)
            head: list[ChatCompletionChunk] = []
            try:
                async for chunk in chunks:
                    head.append(chunk)
                    if chunk.starts_answer:
                        break
                if check is not None and verifying:  # hold back what is judged
                    whole = check.settings.stream == "whole"
                    await hold_back(chunks, head, None if whole else check.settings.max_edge_tokens)
                    check.finish(content_pieces(head))
            except BaseException:
                await aclose_stream(chunks)
                raise
            return chunks, head

        held, decision, (chunks, head) = await self._run_with_fallback(ready, started, start, stream=True)
        verdict: Verdict | None = None
        if check is not None and check.answered and decision == ready.decision:
            held, decision, (chunks, head), verdict = await self._verified_stream(
                held, check, (chunks, head), start, started
            )
        route = self._route_info(decision, upstream=head[0].route if head else None)
        if verdict is not None:
            verdict.annotate(route)
        ran = [False]  # the relay records the outcome (and settles the reservation) once it runs
        relay = self._relay(held, decision, started, route, chunks, head, want_usage, request, ran, lookup)

        async def release() -> None:
            if not ran[0] and held.reservation is not None:  # closed unread: the money is not spent
                ran[0] = True
                await self._book_off_loop(decision.tenant, held.reservation, 0.0, 0.0)

        return RoutedStream(route, relay, source=chunks, release=release)

    async def _run_with_fallback(
        self,
        plan: RoutePlan,
        started: float,
        run: Callable[[Target, RoutePlan], Awaitable[T]],
        *,
        stream: bool,
    ) -> tuple[RoutePlan, Decision, T]:
        """`run` on the decided target, then once where the policy falls back to; failures are recorded.

        A failure of the fallback goes to the policy too, which re-raises it or names a better error
        (the device: `EdgeOffline` when its escalation found the link down); it is never retried.
        A fallback to the cloud reserves its budget first; when the budget cannot pay for it the
        first failure stands. All of it runs within the request's deadline (`DeadlineExceeded` after
        it, with no fallback). The plan returned holds the reservation made, if any.
        """
        decision = plan.decision
        seconds = self._deadline_s(plan)
        try:
            async with deadline_scope(deadline_at(seconds, time.perf_counter() - started), seconds):
                try:
                    return plan, decision, await run(decision.target, plan)
                except BackendError as exc:
                    plan, decision = await self._fall_back(plan, decision, exc)
                try:
                    return plan, decision, await run(decision.target, plan)
                except BackendError as exc:
                    self.policy.fall_back(decision, exc, self._fallback_facts(plan))
                    raise  # a policy that names a third place is not followed: one fallback at most
        except RouterError as exc:
            await self._record(plan, decision, started, status=exc.status_code, stream=stream, error=exc)
            raise

    async def _fall_back(
        self, plan: RoutePlan, decision: Decision, failure: BackendError
    ) -> tuple[RoutePlan, Decision]:
        """Where the policy falls back to after `failure` of `decision`, with the plan holding its
        budget (to the cloud) or its exact prompt count (to the edge); the policy raises when there
        is no fallback, and `failure` is re-raised when the budget cannot pay for it."""
        fallback = self.policy.fall_back(decision, failure, self._fallback_facts(plan))
        plan = await self._reserve_fallback(plan, fallback, failure)
        if fallback.target == "edge":
            plan = await self._counted(plan)
        logger.warning(
            "%s failed (%s: %s); answering on %s",
            decision.target,
            failure.code,
            failure.message,
            fallback.target,
        )
        return plan, fallback

    async def _reserve_fallback(
        self, plan: RoutePlan, fallback: Decision, failure: BackendError
    ) -> RoutePlan:
        """`plan` holding the budget for a `fallback` to the cloud (in a worker thread); `failure`
        re-raised when the budget cannot pay for it."""
        if fallback.target != "cloud" or plan.reservation is not None:
            return plan
        if not enforces_tenant_limits(self.policy):
            return plan
        max_tokens = self._max_tokens("cloud", plan)
        held, reservation = await self._hold_off_loop(plan, fallback, max_tokens)
        if not held:
            raise failure
        return replace(plan, reservation=reservation)

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
        ran: list[bool],
        lookup: CacheLookup | None = None,
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """The stream to the caller, within the deadline; a break after content fails over once.

        A whole text answer (finished with "stop", no failover, no fallback) is kept under `lookup`.
        """
        ran[0] = True
        usage: Usage | None = None
        sent: list[str] = []  # the content the caller has: one piece per chunk, about a token each
        finished = False
        finish_reason: str | None = None
        text_only = True  # no tool calls or other extras in any delta: the answer is its text
        status, error = 200, cast(RouterError | None, None)
        failover: tuple[str, int] | None = None  # (error code, pieces sent) when the stream failed over
        cloud_part: Usage | None = None  # the cloud's share of an answer the edge finished
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
                            finish_reason = choice.finish_reason or finish_reason
                            text_only = text_only and not (carries_more(choice.delta) or carries_more(choice))
                        last = chunk
                        yield chunk
                    break
                except BackendError as exc:
                    if failover is not None or finished or not sent or last is None:
                        raise
                    first = decision
                    decision, more = await self._fail_over(plan, decision, exc, request, sent, at, seconds)
                    failover, usage = (exc.code or exc.error_type, len(sent)), None
                    if first.target == "cloud":  # what the cloud streamed before the cut is paid for
                        cloud_part = Usage(prompt_tokens=plan.prompt_tokens, completion_tokens=len(sent))
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
            whole = failover is None and finish_reason == "stop" and text_only and not _degraded(route)
            if lookup is not None and whole:
                counted = usage or Usage(prompt_tokens=plan.prompt_tokens, completion_tokens=len(sent))
                answer = CachedAnswer(
                    "".join(sent),
                    route.model,
                    decision.target,
                    counted.prompt_tokens,
                    counted.completion_tokens,
                )
                await self._remember(lookup, answer)
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
            recorded = await self._record(
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
                cloud_part=cloud_part,
                verdict=Verdict.of(route),
                answer="".join(sent) if error is None and text_only else None,
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
        if other.target == "edge":
            plan = await self._counted(plan)
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


def _answer_text(response: ChatCompletionResponse) -> str | None:
    """The text of a response's first choice; None for tool calls or no text."""
    if not response.choices:
        return None
    message = response.choices[0].message
    if getattr(message, "tool_calls", None):
        return None
    content = message.content
    return content if isinstance(content, str) else None


def _degraded(route: RouteInfo) -> bool:
    """Whether an answer came from a fallback (here or at an upstream router): never cached."""
    return route.fallback or (route.upstream is not None and route.upstream.fallback)
