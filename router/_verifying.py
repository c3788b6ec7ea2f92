"""The engine's confidence cascade: an edge answer judged by its own model before a byte is sent.

`EdgeVerification` is the part of `RoutingEngine` that runs the cascade (router/_cascade.py holds its
pure rules): where a tier verifies edge answers, the edge's answer (or a stream's held-back head) is
judged on its token signals, and replaced by the cloud's when the edge was unsure (reason
`edge_unsure`), its budget held first; when the cloud fails, the edge's answer stands. A non-streamed
answer of a tier whose `verify.stream` is "hold" is judged on its first `max_edge_tokens` tokens
(`HeldAnswer`): an unsure edge stops there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from hyrouter.router._backend import ChatBackend, Target
from hyrouter.router._cascade import (
    EdgeCheck,
    HeldAnswer,
    Verdict,
    assembled,
    content_pieces,
    escalation,
    hold_back,
    streamed,
)
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
        async def _fall_back(
            self, plan: RoutePlan, decision: Decision, failure: BackendError
        ) -> tuple[RoutePlan, Decision]: ...

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
            held, reservation = await self._hold_off_loop(plan, escalated, max_tokens)
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

    async def _held_answer(
        self, backend: ChatBackend, request: ChatCompletionRequest, max_tokens: int, check: EdgeCheck
    ) -> HeldAnswer:
        """The edge's non-streamed answer started as a stream with its signals, and held at its first
        `max_edge_tokens` content pieces (or its end) to be judged; a failure before then raises."""
        chunks = backend.stream_with_signals(streamed(request), max_tokens=max_tokens, signals=check.signals)
        head: list[ChatCompletionChunk] = []
        try:
            ended = await hold_back(chunks, head, check.settings.max_edge_tokens)
        except BaseException:
            await aclose_stream(chunks)
            raise
        check.finish(content_pieces(head))
        return HeldAnswer(chunks, head, ended)

    async def _finished(
        self,
        plan: RoutePlan,
        decision: Decision,
        started: float,
        answer: ChatCompletionResponse | HeldAnswer,
        request: ChatCompletionRequest,
    ) -> tuple[RoutePlan, Decision, ChatCompletionResponse]:
        """`answer` whole: a held one read to its end (within the deadline) and assembled into one
        response. Should the edge fail on the way, nothing was sent yet: the request falls back as
        for any edge failure (the plan and decision returned are then the fallback's). A failure
        that is not fallen back from is recorded and raised."""
        if isinstance(answer, ChatCompletionResponse):
            return plan, decision, answer
        held = answer

        async def rest() -> ChatCompletionResponse:
            chunks = list(held.head)
            try:
                async for chunk in held.chunks:
                    chunks.append(chunk)
            finally:
                await aclose_stream(held.chunks)
            return assembled(chunks, prompt_tokens=plan.prompt_tokens, logprobs=bool(request.logprobs))

        try:
            seconds = self._deadline_s(plan)
            async with deadline_scope(deadline_at(seconds, time.perf_counter() - started), seconds):
                try:
                    return plan, decision, await rest()
                except BackendError as exc:
                    plan, decision = await self._fall_back(plan, decision, exc)
                    backend = self.backend(decision.target)
                    try:
                        again = await backend.complete(
                            request, max_tokens=self._max_tokens(decision.target, plan)
                        )
                    except BackendError as second:
                        self.policy.fall_back(decision, second, self._fallback_facts(plan))
                        raise  # one fallback at most, as `_run_with_fallback`
                    return plan, decision, again
        except RouterError as exc:
            await self._record(plan, decision, started, status=exc.status_code, stream=False, error=exc)
            raise

    async def _recorded_run(
        self, plan: RoutePlan, decision: Decision, started: float, run: Callable[[], Awaitable[T]]
    ) -> T:
        """`run` within the request's deadline; a failure is recorded (as `decision`'s) and raised."""
        try:
            seconds = self._deadline_s(plan)
            async with deadline_scope(deadline_at(seconds, time.perf_counter() - started), seconds):
                return await run()
        except RouterError as exc:
            await self._record(plan, decision, started, status=exc.status_code, stream=False, error=exc)
            raise

    async def _verified_answer(
        self,
        plan: RoutePlan,
        check: EdgeCheck,
        answer: ChatCompletionResponse | HeldAnswer,
        request: ChatCompletionRequest,
        started: float,
    ) -> tuple[RoutePlan, Decision, ChatCompletionResponse, Verdict]:
        """The edge's `answer` judged: kept (a held one generated to its end), or replaced by the
        cloud's when the edge was unsure (a held one stopped where it was judged; should the cloud
        then fail, the edge's answer stands: the held one when it was whole, else the edge answers
        the request again)."""
        try:
            plan, escalated, verdict = await self._escalation(plan, check)
            if escalated is None:
                plan, decision, whole = await self._finished(plan, plan.decision, started, answer, request)
                return plan, decision, whole, verdict
            if isinstance(answer, HeldAnswer):
                await aclose_stream(answer.chunks)  # the edge stops at what was judged

            async def run() -> ChatCompletionResponse:
                max_tokens = self._max_tokens("cloud", plan)
                return await self.backend("cloud").complete(request, max_tokens=max_tokens)

            decision, cloud = await self._escalated(plan, escalated, started, run, stream=False)
            if cloud is not None:
                return plan, decision, cloud, verdict
            if isinstance(answer, HeldAnswer) and answer.ended:
                whole = assembled(
                    answer.head, prompt_tokens=plan.prompt_tokens, logprobs=bool(request.logprobs)
                )
                answer = whole
            elif isinstance(answer, HeldAnswer):

                async def again() -> ChatCompletionResponse:
                    max_tokens = self._max_tokens("edge", plan)
                    return await self.backend("edge").complete(request, max_tokens=max_tokens)

                answer = await self._recorded_run(plan, decision, started, again)
            return plan, decision, answer, Verdict(verdict.confidence)
        except BaseException:
            if isinstance(answer, HeldAnswer):
                await aclose_stream(answer.chunks)
            raise

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
