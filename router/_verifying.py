"""The engine's confidence cascade: an edge answer judged by its own model before a byte is sent.

`EdgeVerification` is the part of `RoutingEngine` that runs the cascade (router/_cascade.py holds its
pure rules): where a tier verifies edge answers, the edge's answer (or a stream's held-back head) is
judged on its token signals, and replaced by the cloud's when the edge was unsure (reason
`edge_unsure`), its budget held first; when the cloud fails, the edge's answer stands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from hyrouter.router._backend import ChatBackend, Target
from hyrouter.router._cascade import EdgeCheck, Verdict, escalation
from hyrouter.router._confidence import Calibration
from hyrouter.router._errors import BackendError, RouterError
from hyrouter.router._failover import deadline_at, deadline_scope, enforces_tenant_limits
from hyrouter.router._plan import RoutePlan, StreamHead, aclose_stream
from hyrouter.router._policy import Decision, RequestFacts
from hyrouter.router._recording import OutcomeRecording
from hyrouter.router._wire import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse

logger = logging.getLogger("hybrid_router")
T = TypeVar("T")


class EdgeVerification(OutcomeRecording):
    """The cascade's running, for `RoutingEngine`, which sets `calibration` and has the routing
    methods declared here."""

    calibration: Calibration

    if TYPE_CHECKING:  # the engine's own, which this part calls

        def backend(self, target: Target) -> ChatBackend: ...
        def _fallback_facts(self, plan: RoutePlan) -> RequestFacts: ...
        def _max_tokens(self, target: Target, plan: RoutePlan) -> int: ...
        def _deadline_s(self, plan: RoutePlan) -> float: ...

    def _edge_check(self, plan: RoutePlan) -> EdgeCheck | None:
        """A verification of the edge's answer, where the plan sends it to the edge (not as a
        fallback) and its tier verifies edge answers."""
        if plan.decision.target != "edge" or plan.decision.fallback:
            return None
        settings = self.policy.tier(plan.decision.tier).verify
        return EdgeCheck(settings) if settings.enabled else None

    async def _escalation(
        self, plan: RoutePlan, check: EdgeCheck
    ) -> tuple[RoutePlan, Decision | None, Verdict]:
        """The verdict on the edge's answer, and the cloud decision (its budget held in the plan)
        replacing it when the edge was unsure; None where the answer stands (confident, no cloud to
        take it, or a budget that cannot pay for it)."""
        confidence = check.confidence(self.calibration)
        tier = self.policy.tier(plan.decision.tier)
        escalated = escalation(
            plan.decision, tier.cloud, check.settings, confidence, self._fallback_facts(plan)
        )
        if escalated is None:
            return plan, None, Verdict(confidence)
        if enforces_tenant_limits(self.policy) and plan.reservation is None:
            max_tokens = self._max_tokens("cloud", plan)
            held, reservation = await asyncio.to_thread(self._hold, plan, escalated, max_tokens)
            if not held:
                return plan, None, Verdict(confidence)  # past the budget: the edge's answer stands
            plan = replace(plan, reservation=reservation)
        logger.info(
            "edge unsure (confidence %.3f < %g): escalating to the cloud",
            confidence,
            check.settings.min_confidence,
        )
        return plan, escalated, Verdict(confidence, check.tokens, check.elapsed_ms)

    async def _escalated(
        self,
        plan: RoutePlan,
        escalated: Decision,
        started: float,
        run: Callable[[], Awaitable[T]],
        *,
        stream: bool,
    ) -> tuple[Decision, T | None]:
        """`run` in the cloud within the request's deadline: (the escalated decision, its result), or
        (the policy's fallback, None) when the cloud failed and the edge's answer is to be kept;
        a failure the policy does not fall back from is recorded and raised."""
        decision = escalated
        try:
            seconds = self._deadline_s(plan)
            async with deadline_scope(deadline_at(seconds, time.perf_counter() - started), seconds):
                try:
                    return escalated, await run()
                except BackendError as exc:
                    decision = self.policy.fall_back(escalated, exc, self._fallback_facts(plan))
                    logger.warning(
                        "escalation failed (%s: %s); the edge's answer stands", exc.code, exc.message
                    )
                    return decision, None
        except RouterError as exc:
            await self._record(plan, decision, started, status=exc.status_code, stream=stream, error=exc)
            raise

    async def _verified_answer(
        self,
        plan: RoutePlan,
        check: EdgeCheck,
        answer: ChatCompletionResponse,
        request: ChatCompletionRequest,
        started: float,
    ) -> tuple[RoutePlan, Decision, ChatCompletionResponse, Verdict]:
        """The edge's `answer` judged: kept, or replaced by the cloud's when the edge was unsure."""
        plan, escalated, verdict = await self._escalation(plan, check)
        if escalated is None:
            return plan, plan.decision, answer, verdict

        async def run() -> ChatCompletionResponse:
            return await self.backend("cloud").complete(request, max_tokens=self._max_tokens("cloud", plan))

        decision, cloud = await self._escalated(plan, escalated, started, run, stream=False)
        if cloud is None:
            return plan, decision, answer, Verdict(verdict.confidence)
        return plan, decision, cloud, verdict

    async def _verified_stream(
        self,
        plan: RoutePlan,
        check: EdgeCheck,
        edge: tuple[AsyncIterator[ChatCompletionChunk], StreamHead],
        start: Callable[
            [Target, RoutePlan], Awaitable[tuple[AsyncIterator[ChatCompletionChunk], StreamHead]]
        ],
        started: float,
    ) -> tuple[RoutePlan, Decision, tuple[AsyncIterator[ChatCompletionChunk], StreamHead], Verdict]:
        """The edge's held-back stream judged: released, or closed unsent and the cloud's started in
        its place when the edge was unsure (the edge's is kept open until the cloud's has started, to
        be released if the cloud fails)."""
        plan, escalated, verdict = await self._escalation(plan, check)
        if escalated is None:
            return plan, plan.decision, edge, verdict
        try:
            decision, cloud = await self._escalated(
                plan, escalated, started, lambda: start("cloud", plan), stream=True
            )
        except BaseException:
            await aclose_stream(edge[0])
            raise
        if cloud is None:
            return plan, decision, edge, Verdict(verdict.confidence)
        await aclose_stream(edge[0])
        return plan, decision, cloud, verdict
