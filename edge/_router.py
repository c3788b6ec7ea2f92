"""`EdgeRouter`: the on-device SDK. It decides on the device, answers locally, escalates when it pays.

request → validate → estimate → signals, privacy, link → decide on the device → run locally
(llama.cpp) or escalate to the cloud router (HTTPS, the device's key) → answer with `route` facts.

A failed target falls back to the other one where the tier allows: a link failure answers locally
with reason `offline` (and the route's `offline` flag), an edge failure escalates. Nothing waits on a
link known to be down: the device stays offline for `cloud.offline_retry_s`, then probes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import httpx
from pydantic import ValidationError

from edge._device_policy import DeviceDecision, DeviceReason, decide_on_device, local_answer_allowed
from edge._errors import CloudUnreachable, EdgeOffline, EscalationInterrupted
from edge._escalation import CloudRouterClient
from edge._link import LinkMonitor
from edge._privacy import personal_data_in
from edge._resources import check_model_fits
from edge._sdk_config import DeviceTierPolicy, EdgeRouterConfig
from edge._signals import DeviceSignals, LinuxSignalReader, SignalSource
from edge._sync import PolicySync, SyncResult
from edge._types import EdgeChunk, EdgeCompletion, EdgeRoute, EdgeStream
from router._accounting import cloud_cost_usd
from router._backend import BackendHealth, ChatBackend
from router._errors import BackendError, CloudBackendError, EdgeBusy, ModelNotFound, RequestError
from router._estimator import ComplexityEstimator, load_estimator
from router._policy import RequestFacts, RouteReason
from router._wire import ChatCompletionChunk, ChatCompletionRequest, RouteInfo, Usage

logger = logging.getLogger("hybrid_router.edge")


@dataclass(frozen=True)
class DevicePlan:
    """A device decision and the facts it was made from."""

    decision: DeviceDecision
    prompt_tokens: int
    max_tokens: int
    signals: DeviceSignals
    decision_ms: float


class EdgeRouter:
    """Chat completions on a phone or IoT box: answered by the local model, or escalated to the cloud.

    Create it once (`EdgeRouter.open(config)` loads the model), then call `complete()` or `stream()`
    with OpenAI chat requests; every answer carries an `EdgeRoute`. `probe_link()` re-checks the
    network (call it when the OS reports a network change), `sync_config()` fetches the tier policy.
    """

    def __init__(
        self,
        config: EdgeRouterConfig,
        *,
        local: ChatBackend | None = None,
        estimator: ComplexityEstimator | None = None,
        signals: SignalSource | None = None,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Set the SDK up without loading the model (see `load()`); every part can be injected."""
        self.config = config
        if local is None:
            from edge.llama_cpp_backend import LlamaCppBackend  # llama_cpp itself is imported by load()

            local = LlamaCppBackend(config.model)
        self.local = local
        self.estimator = estimator or load_estimator(config.estimator.name, config.estimator.version)
        self._estimator_id = f"{self.estimator.name}@{self.estimator.version}"
        self.signal_source: SignalSource = signals or LinuxSignalReader(config.signals_root)
        self._clock = clock
        self.cloud = CloudRouterClient(config.cloud, api_key=api_key, transport=transport, clock=clock)
        self.link = LinkMonitor(
            offline_retry_s=config.cloud.offline_retry_s,
            rtt_max_age_s=config.cloud.rtt_max_age_s,
            clock=clock,
        )
        self.sync = PolicySync(config.sync, api_key=api_key or config.cloud.api_key, transport=transport)
        self._tier, self._policy = config.tier, config.policy
        if self.sync.current is not None:  # the last good synced policy survives restarts
            self._tier, self._policy = self.sync.current.tier, self.sync.current.applied_to(config.tiers)
        self._signals: tuple[float, DeviceSignals] | None = None

    @classmethod
    def open(cls, config: EdgeRouterConfig, **kwargs: Any) -> EdgeRouter:
        """An `EdgeRouter` with its model loaded (blocking; SmolLM2 loads in a fraction of a second)."""
        router = cls(config, **kwargs)
        router.load()
        return router

    def load(self) -> None:
        """Load the local model after checking it fits; raises `ModelTooLarge` or `EdgeBackendError`."""
        from edge.llama_cpp_backend import LlamaCppBackend
        from edge.model_files import resolve_model_path

        if isinstance(self.local, LlamaCppBackend):
            if not self.local.loaded:
                check_model_fits(
                    resolve_model_path(self.config.model),
                    max_model_memory_mb=self.config.max_model_memory_mb,
                    free_memory_mb=self.device_signals().free_memory_mb,
                )
            self.local.load()

    async def aclose(self) -> None:
        """Release the model and the HTTP connections."""
        await self.cloud.aclose()
        await self.local.aclose()

    async def __aenter__(self) -> EdgeRouter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- state -----------------------------------------------------------------------------------

    @property
    def tier(self) -> str:
        """This device's tier (from the config, or from the last synced policy)."""
        return self._tier

    @property
    def policy(self) -> DeviceTierPolicy:
        """The policy in force for this device's tier."""
        return self._policy

    @property
    def offline(self) -> bool:
        """Whether the cloud router could not be reached on the last try (the app's offline badge)."""
        return self.link.offline

    def device_signals(self) -> DeviceSignals:
        """Battery, memory and temperature (re-read every `signals_refresh_s`), and the link's round trip."""
        now = self._clock()
        if self._signals is None or now - self._signals[0] >= self.config.signals_refresh_s:
            self._signals = (now, self.signal_source.read())
        return self._signals[1].with_link(self.link.rtt_ms)

    async def probe_link(self) -> bool:
        """Check the link now (`GET /v1/models`); updates online/offline and the round trip."""
        if not self.cloud.configured:
            return False
        try:
            rtt_ms = await self.cloud.probe()
        except CloudUnreachable as exc:
            self.link.record_failure(exc.message)
            return False
        self.link.record_success(rtt_ms)
        return True

    async def sync_config(self) -> SyncResult:
        """Fetch the tier policy from the cloud; a valid new one applies to the next request.

        The synced routing replaces the tier's; the tier's signals stay this device's unless the
        document sends some (see `SyncedPolicy.applied_to`).
        """
        result = await self.sync.refresh()
        if result.outcome == "updated" and self.sync.current is not None:
            current = self.sync.current
            self._tier, self._policy = current.tier, current.applied_to(self.config.tiers)
        return result

    # -- deciding --------------------------------------------------------------------------------

    def _validate(self, request: ChatCompletionRequest | Mapping[str, Any]) -> ChatCompletionRequest:
        if isinstance(request, ChatCompletionRequest):
            chat = request
        else:
            try:
                chat = ChatCompletionRequest.model_validate({"model": self.config.cloud.model, **request})
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise RequestError(
                    f"Invalid request: {where}: {first['msg']}.", param=where or None
                ) from None
        if chat.model != self.config.cloud.model:
            raise ModelNotFound(
                f"The model '{chat.model}' does not exist; this SDK serves '{self.config.cloud.model}'.",
                param="model",
            )
        return chat

    def _decide(self, request: ChatCompletionRequest) -> DevicePlan:
        started = time.perf_counter()
        tier = self._policy.routing
        try:
            score = min(1.0, max(0.0, float(self.estimator.score(request.messages))))
        except Exception:  # an estimator bug must not fail the request
            logger.exception("estimator %s failed; scoring 0.5", self._estimator_id)
            score = 0.5
        prompt_tokens = self.local.count_tokens(request.messages)
        requested = request.requested_max_tokens
        if tier.max_tokens is not None:
            requested = min(requested or tier.max_tokens, tier.max_tokens)
        max_tokens = requested or self.config.model.max_tokens
        privacy = self.config.privacy
        personal = (
            tuple(personal_data_in(request.messages, privacy.kinds))
            if privacy.keep_personal_data_local
            else ()
        )
        signals = self.device_signals()
        cloud_health = (
            BackendHealth(available=True)
            if self.cloud.configured
            else BackendHealth(False, detail="not configured")
        )
        facts = RequestFacts(
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            edge=self.local.health(),
            cloud=cloud_health,
            edge_context_window=self.local.context_window,
            cloud_context_window=self.config.cloud.context_window,
        )
        decision = decide_on_device(
            score=score,
            tier_name=self._tier,
            policy=self._policy,
            tenant=self.config.tenant,
            estimator=self._estimator_id,
            facts=facts,
            signals=signals,
            online=self.link.may_try(),
            personal_data=personal,
            keep_private_local=privacy.keep_personal_data_local,
        )
        return DevicePlan(
            decision, prompt_tokens, max_tokens, signals, (time.perf_counter() - started) * 1000
        )

    async def plan(self, request: ChatCompletionRequest | Mapping[str, Any]) -> DevicePlan:
        """Decide where `request` is answered, without generating (probing the link when due)."""
        chat = self._validate(request)
        plan = self._decide(chat)
        need_rtt = self._policy.signals.slow_link_rtt_ms is not None
        if plan.decision.target == "cloud" and self.link.due_for_probe(need_rtt=need_rtt):
            await self.probe_link()
            plan = self._decide(chat)
        return plan

    # -- answering -------------------------------------------------------------------------------

    async def complete(self, request: ChatCompletionRequest | Mapping[str, Any]) -> EdgeCompletion:
        """Answer in one response carrying its `EdgeRoute`; raises a `router.RouterError` when it cannot."""
        chat = self._validate(request)
        plan = await self.plan(chat)
        decision = plan.decision
        if decision.target == "edge":
            try:
                local = await self.local.complete(chat, max_tokens=self._local_max_tokens(plan))
            except BackendError as exc:
                decision = self._fall_back_to_cloud(decision, exc)
            else:
                answer = EdgeCompletion.model_validate(local.model_dump())
                answer.route = self._route(decision, model=self.local.model_id, usage=local.usage)
                return answer
        try:
            cloud = await self.cloud.complete(chat)
        except CloudBackendError as exc:
            decision = self._fall_back_to_local(plan, decision, exc)
            local = await self.local.complete(chat, max_tokens=self._local_max_tokens(plan))
            answer = EdgeCompletion.model_validate(local.model_dump())
            answer.route = self._route(decision, model=self.local.model_id, usage=local.usage)
            return answer
        self.link.record_success()
        answer = EdgeCompletion.model_validate(cloud.model_dump(exclude={"route"}))
        answer.route = self._route(decision, model=cloud.model, upstream=cloud.route)
        return answer

    async def stream(self, request: ChatCompletionRequest | Mapping[str, Any]) -> EdgeStream:
        """Start a streamed answer; raises here, before any chunk, when it cannot start.

        An escalated stream that breaks before its first content falls back to a local answer; one
        that breaks later raises `EscalationInterrupted` from the chunk iterator.
        """
        chat = self._validate(request)
        plan = await self.plan(chat)
        decision = plan.decision
        if decision.target == "edge":
            try:
                return await self._start_local(chat, plan, decision)
            except BackendError as exc:
                decision = self._fall_back_to_cloud(decision, exc)
        chunks = self.cloud.stream(chat)
        head: list[ChatCompletionChunk] = []
        try:
            # Held back until the first content: up to there a broken link can still fall back.
            async for chunk in chunks:
                head.append(chunk)
                if any(c.delta.content or c.finish_reason for c in chunk.choices):
                    break
        except CloudBackendError as exc:
            await chunks.aclose()
            return await self._start_local(chat, plan, self._fall_back_to_local(plan, decision, exc))
        self.link.record_success()
        upstream = head[0].route if head else None
        route = self._route(
            decision, model=upstream.model if upstream else self.config.cloud.model, upstream=upstream
        )
        return EdgeStream(route, self._relay_cloud(route, head, chunks))

    async def _start_local(
        self, chat: ChatCompletionRequest, plan: DevicePlan, decision: DeviceDecision
    ) -> EdgeStream:
        chunks = self.local.stream(chat, max_tokens=self._local_max_tokens(plan))
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await _aclose(chunks)
            raise
        route = self._route(decision, model=self.local.model_id)
        return EdgeStream(route, self._relay_local(route, plan, first, chunks))

    async def _relay_local(
        self,
        route: EdgeRoute,
        plan: DevicePlan,
        first: ChatCompletionChunk | None,
        chunks: AsyncIterator[ChatCompletionChunk],
    ) -> AsyncGenerator[EdgeChunk, None]:
        try:
            if first is not None:
                yield _edge_chunk(first, route.model, route)
            async for chunk in chunks:
                if chunk.usage is not None:
                    route.cost_saved_usd = round(cloud_cost_usd(chunk.usage, self.config.price), 8)
                yield _edge_chunk(chunk, route.model)
        finally:
            await _aclose(chunks)

    async def _relay_cloud(
        self,
        route: EdgeRoute,
        head: list[ChatCompletionChunk],
        chunks: AsyncGenerator[ChatCompletionChunk, None],
    ) -> AsyncGenerator[EdgeChunk, None]:
        try:
            for i, chunk in enumerate(head):
                yield _edge_chunk(chunk, route.model, route if i == 0 else None)
            try:
                async for chunk in chunks:
                    yield _edge_chunk(chunk, route.model)
            except CloudUnreachable as exc:
                self.link.record_failure(exc.message)
                raise EscalationInterrupted(
                    f"the link to the cloud router broke mid-answer ({exc.message}); the device is now "
                    "offline and answers locally until the link returns"
                ) from exc
        finally:
            await chunks.aclose()

    # -- fallback ----------------------------------------------------------------------------------

    def _fall_back_to_cloud(self, decision: DeviceDecision, exc: BackendError) -> DeviceDecision:
        tier = self._policy.routing
        allowed = (
            tier.fallback_to_cloud
            and tier.cloud != "never"
            and decision.reason is not DeviceReason.PRIVATE_DATA
            and not decision.fallback
            and self.cloud.configured
            and self.link.may_try()
        )
        if not allowed:
            raise exc
        logger.warning("local model failed (%s: %s); escalating", exc.code, exc.message)
        reason = RouteReason.EDGE_BUSY if isinstance(exc, EdgeBusy) else RouteReason.EDGE_UNAVAILABLE
        return decision.fall_back("cloud", reason)

    def _fall_back_to_local(
        self, plan: DevicePlan, decision: DeviceDecision, exc: CloudBackendError
    ) -> DeviceDecision:
        unreachable = isinstance(exc, CloudUnreachable)
        if unreachable:
            self.link.record_failure(exc.message)
        needed = plan.prompt_tokens + plan.max_tokens
        can_answer = (
            local_answer_allowed(self._policy)
            and not decision.fallback
            and self.local.health().available
            and needed <= self.local.context_window
        )
        if not can_answer:
            if unreachable:
                why = (
                    f"tier {decision.tier!r} does not allow answers on the device"
                    if not local_answer_allowed(self._policy)
                    else "the device model cannot take it"
                )
                raise EdgeOffline(
                    f"The device is offline ({exc.message}) and this request cannot be answered "
                    f"locally: {why}."
                ) from exc
            raise exc
        logger.warning("cloud router failed (%s: %s); answering on the device", exc.code, exc.message)
        if unreachable:
            return decision.fall_back("edge", DeviceReason.OFFLINE, offline=True)
        return decision.fall_back("edge", RouteReason.CLOUD_UNAVAILABLE)

    # -- facts -----------------------------------------------------------------------------------

    def _local_max_tokens(self, plan: DevicePlan) -> int:
        return max(1, min(plan.max_tokens, self.local.context_window - plan.prompt_tokens))

    def _route(
        self,
        decision: DeviceDecision,
        *,
        model: str,
        usage: Usage | None = None,
        upstream: RouteInfo | None = None,
    ) -> EdgeRoute:
        saved = (
            cloud_cost_usd(usage, self.config.price)
            if usage is not None and decision.target == "edge"
            else 0.0
        )
        decision = replace(decision, offline=self.link.offline)
        return EdgeRoute.from_decision(
            decision,
            model=model,
            cost_usd=upstream.cost_usd if upstream else 0.0,
            cost_saved_usd=saved,
            offline=decision.offline,
            signals=list(decision.signals),
            personal_data=list(decision.personal_data),
            upstream=upstream,
        )


def _edge_chunk(chunk: ChatCompletionChunk, model: str, route: EdgeRoute | None = None) -> EdgeChunk:
    return EdgeChunk(
        id=chunk.id, created=chunk.created, model=model, choices=chunk.choices, usage=chunk.usage, route=route
    )


async def _aclose(chunks: AsyncIterator[ChatCompletionChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
