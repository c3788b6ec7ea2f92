"""`EdgeRouter`: the on-device SDK. It decides on the device, answers locally, escalates when it pays.

request → validate → estimate → signals, privacy, link → decide on the device → run locally
(llama.cpp) or escalate to the cloud router (HTTPS, the device's key) → answer with `route` facts.

It is a configuration of the router's one `RoutingEngine`, not a second engine: the local model is
its "edge" backend, the cloud router (`EscalationBackend`) its "cloud" backend, and the device
policy (`DevicePolicy`: privacy, signals, link) its policy. A failed target falls back to the other
one where the tier allows: a link failure answers locally with reason `offline` (and the route's
`offline` flag), an edge failure escalates. Nothing waits on a link known to be down: the device
stays offline for `cloud.offline_retry_s`, then probes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Mapping
from types import TracebackType
from typing import Any

import httpx

from hyrouter.edge._device_policy import DevicePolicy
from hyrouter.edge._errors import CloudUnreachable
from hyrouter.edge._escalation import EscalationClient
from hyrouter.edge._escalation_backend import EscalationBackend
from hyrouter.edge._link import LinkMonitor
from hyrouter.edge._resources import check_model_fits
from hyrouter.edge._sdk_config import DeviceTierPolicy, EdgeRouterConfig
from hyrouter.edge._signals import DeviceSignals, LinuxSignalReader, SignalSource
from hyrouter.edge._sync import PolicySync, SyncResult
from hyrouter.edge._types import EdgeChunk, EdgeCompletion, EdgeRoute, EdgeStream
from hyrouter.router._backend import ChatBackend
from hyrouter.router._config import CloudConfig, RouterConfig
from hyrouter.router._engine import RoutingEngine
from hyrouter.router._errors import ModelNotFound, OutcomeNotFound
from hyrouter.router._estimator import ComplexityEstimator, load_estimator
from hyrouter.router._outcomes import OutcomeWriter
from hyrouter.router._plan import RoutedStream, RoutePlan, Tenant
from hyrouter.router._requests import validate_chat_request
from hyrouter.router._wire import ChatCompletionRequest, RouteInfo

logger = logging.getLogger("hybrid_router.edge")

#: How many recent answers `EdgeRouter.feedback` knows the origin of.
_ANSWERS_KEPT = 10_000

#: A device's plan is the engine's: the decision (with the device's signals and personal data) and its facts.
DevicePlan = RoutePlan


def engine_config(config: EdgeRouterConfig) -> RouterConfig:
    """The engine settings of a device: the served model, the local model, the cloud router's window
    and price. Tiers are not here: the device policy reads the device's current tier itself."""
    cloud = CloudConfig(
        url=config.cloud.url,
        model=config.cloud.model,
        context_window=config.cloud.context_window,
        price=config.price,
    )
    return RouterConfig(
        served_model_name=config.cloud.model, estimator=config.estimator, edge=config.model, cloud=cloud
    )


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
            from hyrouter.edge.llama_cpp_backend import (
                LlamaCppBackend,
            )  # llama_cpp itself is imported by load()

            local = LlamaCppBackend(config.model)
        self.local = local
        self.estimator = estimator or load_estimator(config.estimator.name, config.estimator.version)
        self.signal_source: SignalSource = signals or LinuxSignalReader(config.signals_root)
        self._clock = clock
        self.escalation = EscalationClient(config.cloud, api_key=api_key, transport=transport, clock=clock)
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
        policy = DevicePolicy(
            lambda: (self._tier, self._policy),
            signals=self.device_signals,
            online=self.link.may_try,
            privacy=config.privacy,
        )
        self.outcomes: OutcomeWriter | None = None
        if config.outcomes.path is not None:
            from hyrouter.router._outcome_sqlite import SqliteOutcomeStore

            self.outcomes = OutcomeWriter(SqliteOutcomeStore(config.outcomes.path), salt=config.outcomes.salt)
        #: where each recent answer came from, by id, for `feedback` (the newest `_ANSWERS_KEPT`)
        self._answered: OrderedDict[str, str] = OrderedDict()
        self.engine = RoutingEngine(
            engine_config(config),
            estimator=self.estimator,
            backends={"edge": local, "cloud": EscalationBackend(self.escalation, self.link, config.cloud)},
            policy=policy,
            # The app gets every route in its answer; a log line per request on a device is noise.
            log_decisions=False,
            outcomes=self.outcomes,
        )

    @classmethod
    def open(cls, config: EdgeRouterConfig, **kwargs: Any) -> EdgeRouter:
        """An `EdgeRouter` with its model loaded (blocking; SmolLM2 loads in a fraction of a second)."""
        router = cls(config, **kwargs)
        router.load()
        return router

    def load(self) -> None:
        """Load the local model after checking it fits; raises `ModelTooLarge` or `EdgeBackendError`.

        Where a tier verifies the model's answers, its calibration is resolved first (`model.calibration`;
        a calibration fitted on another GGUF is a `ConfigError`)."""
        from hyrouter.edge.llama_cpp_backend import LlamaCppBackend, require_llama_cpp
        from hyrouter.edge.model_files import edge_calibration, resolve_model_path

        if isinstance(self.local, LlamaCppBackend):
            verifies = self._policy.routing.verify.enabled or any(
                tier.routing.verify.enabled for tier in self.config.tiers.values()
            )
            self.engine.calibration = edge_calibration(self.config.model, verifies=verifies)
            if not self.local.loaded:
                require_llama_cpp()  # before the model: the extra is what to install first
                check_model_fits(
                    resolve_model_path(self.config.model),
                    max_model_memory_mb=self.config.max_model_memory_mb,
                    free_memory_mb=self.device_signals().free_memory_mb,
                )
            self.local.load()

    async def aclose(self) -> None:
        """Release the model and the HTTP connections."""
        await self.engine.aclose()

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
        if not self.escalation.configured:
            return False
        try:
            rtt_ms = await self.escalation.probe()
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
            chat = validate_chat_request({"model": self.config.cloud.model, **request})
        if chat.model != self.config.cloud.model:
            raise ModelNotFound(
                f"The model '{chat.model}' does not exist; this SDK serves '{self.config.cloud.model}'.",
                param="model",
            )
        return chat

    def _tenant(self) -> Tenant:
        return Tenant(self.config.tenant, self._tier)

    def _decide(self, request: ChatCompletionRequest) -> RoutePlan:
        return self.engine.plan(request, self._tenant())

    async def plan(self, request: ChatCompletionRequest | Mapping[str, Any]) -> RoutePlan:
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
        response = await self.engine.complete(chat, self._tenant(), plan=plan)
        assert response.route is not None  # the engine always sets it
        answer = EdgeCompletion.model_validate(response.model_dump(exclude={"route"}))
        answer.route = self._edge_route(response.route, plan)
        self._remember(answer.id, answer.route.target)
        return answer

    async def stream(self, request: ChatCompletionRequest | Mapping[str, Any]) -> EdgeStream:
        """Start a streamed answer; raises here, before any chunk, when it cannot start.

        An escalated stream that breaks before its first content falls back to a local answer; one
        that breaks later raises `EscalationInterrupted` from the chunk iterator.
        """
        chat = self._validate(request)
        plan = await self.plan(chat)
        routed = await self.engine.stream(chat, self._tenant(), plan=plan)
        route = self._edge_route(routed.route, plan)
        return EdgeStream(route, self._edge_chunks(routed, route), routed)

    async def _edge_chunks(self, routed: RoutedStream, route: EdgeRoute) -> AsyncGenerator[EdgeChunk, None]:
        try:
            async for chunk in routed.chunks:
                self._remember(chunk.id, route.target)
                yield EdgeChunk(
                    id=chunk.id,
                    created=chunk.created,
                    model=chunk.model,
                    choices=chunk.choices,
                    usage=chunk.usage,
                    route=route if chunk.route is not None else None,
                )
        finally:
            await routed.chunks.aclose()
            # The engine prices the answer once it has ended.
            route.cost_saved_usd = routed.route.cost_saved_usd
            if route.upstream is None:
                route.cost_usd = routed.route.cost_usd

    # -- feedback --------------------------------------------------------------------------------

    async def feedback(self, completion_id: str, rating: float, comment: str | None = None) -> None:
        """Rate one of this device's answers: 1 (good), -1 (bad), or a score from 0 to 1.

        An answer that came from the cloud is rated at the cloud router, which holds its record; one
        answered here is rated in the device's own outcome records (`outcomes.path`). An id the device
        has no record of raises `OutcomeNotFound`, as does one the cloud router does not know as this
        key's; a malformed rating raises `RequestError` before anything is sent.
        """
        from hyrouter.router._feedback import validate_feedback

        checked = validate_feedback({"id": completion_id, "rating": rating, "comment": comment})
        if self._answered.get(checked.id) == "cloud":
            await self.escalation.feedback(checked.id, checked.rating, checked.comment)
            return
        local = self.outcomes
        tenant = self.config.tenant
        if local is None or not await asyncio.to_thread(
            local.rate, checked.id, tenant, checked.rating, checked.comment
        ):
            raise OutcomeNotFound(
                f"This device has no record of an answer with id '{checked.id}'.", param="id"
            )

    def _remember(self, completion_id: str, target: str) -> None:
        if completion_id in self._answered:
            return
        self._answered[completion_id] = target
        if len(self._answered) > _ANSWERS_KEPT:
            self._answered.popitem(last=False)

    def _edge_route(self, route: RouteInfo, plan: RoutePlan) -> EdgeRoute:
        """The engine's route, plus what only the device knows; an escalation costs what the cloud says."""
        upstream = route.upstream
        return EdgeRoute(
            **route.model_dump(exclude={"upstream", "cost_usd"}),
            cost_usd=upstream.cost_usd if upstream else route.cost_usd,
            offline=self.link.offline,
            signals=list(plan.decision.signals),
            personal_data=list(plan.decision.personal_data),
            upstream=upstream,
        )
