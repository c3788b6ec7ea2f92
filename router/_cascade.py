"""The confidence cascade's parts for the engine: the edge answers, its model's confidence decides.

Where a tier verifies edge answers (`TierConfig.verify`), an answer the policy sent to the edge (not a
fallback) is generated with its token signals (`ChatBackend.complete_with_signals` /
`stream_with_signals`), held back, and judged (`hyrouter.router._confidence`); below the tier's
`min_confidence` it is discarded and the cloud answers, reason `edge_unsure`. With `stream` "hold" a
non-streamed answer is generated as a stream too (`HeldAnswer`): judged on its first
`max_edge_tokens`, then read to its end and `assembled` into one response, or stopped there. The
engine owns the running (`RoutingEngine._verified_answer`, `_verified_stream`); the rules are pure,
here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hyrouter.router._confidence import Calibration, TokenSignal, answer_confidence
from hyrouter.router._config import TierVerifyConfig
from hyrouter.router._policy import Decision, RequestFacts, RouteReason
from hyrouter.router._wire import (
    AssistantMessage,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    RouteInfo,
    StreamOptions,
    Usage,
)


@dataclass
class EdgeCheck:
    """One request's verification: the edge's token signals as they arrive, and what they cost."""

    settings: TierVerifyConfig
    signals: list[TokenSignal] = field(default_factory=list)
    started: float = 0.0
    #: set once the edge's answer (or its held-back head) is in and can be judged
    answered: bool = False
    #: the edge's completion tokens generated for the answer judged
    tokens: int = 0
    elapsed_ms: float = 0.0

    def start(self) -> None:
        """The edge starts generating now."""
        self.started = time.perf_counter()

    def finish(self, tokens: int) -> None:
        """The edge has given `tokens` completion tokens, all of what is judged."""
        self.answered, self.tokens = True, tokens
        self.elapsed_ms = (time.perf_counter() - self.started) * 1000.0

    def confidence(self, calibration: Calibration) -> float | None:
        """The edge model's confidence in what it gave; None when its backend reports no signals."""
        return answer_confidence(self.signals, calibration)


@dataclass(frozen=True)
class Verdict:
    """What verification found, for the route: the confidence, and the edge's work thrown away."""

    confidence: float | None
    discarded_tokens: int | None = None
    discarded_ms: float | None = None

    @classmethod
    def of(cls, route: RouteInfo) -> Verdict | None:
        """The verdict `annotate` put on `route`; None where the route was not verified."""
        if route.confidence is None and route.edge_tokens_discarded is None:
            return None
        return cls(route.confidence, route.edge_tokens_discarded, route.edge_ms_discarded)

    def annotate(self, route: RouteInfo) -> None:
        """Put the verdict on `route` (the `route` facts of the response)."""
        route.confidence = None if self.confidence is None else round(self.confidence, 4)
        route.edge_tokens_discarded = self.discarded_tokens
        route.edge_ms_discarded = None if self.discarded_ms is None else round(self.discarded_ms, 3)


def escalation(
    decision: Decision, cloud: str, settings: TierVerifyConfig, confidence: float | None, facts: RequestFacts
) -> Decision | None:
    """The cloud decision replacing an edge answer of `confidence`, or None when the answer stands.

    It stands when it is confident enough (or could not be judged), when the tier's `cloud` is
    "never", or when the cloud cannot take the request now (down, or its window too small).
    """
    if confidence is None or confidence >= settings.min_confidence or cloud == "never":
        return None
    fits = facts.prompt_tokens + facts.max_tokens <= facts.cloud_context_window
    if not (facts.cloud.available and fits):
        return None
    return replace(decision, target="cloud", reason=RouteReason.EDGE_UNSURE, original_reason=decision.reason)


def content_pieces(chunks: list[ChatCompletionChunk]) -> int:
    """The content pieces in `chunks` (about a token each)."""
    return sum(1 for chunk in chunks for choice in chunk.choices if choice.delta.content)


async def hold_back(
    chunks: AsyncIterator[ChatCompletionChunk], head: list[ChatCompletionChunk], limit: int | None
) -> bool:
    """Read `chunks` into `head` until it holds `limit` content pieces (None: the whole answer) or the
    stream ends; whether it ended (`head` is all of it)."""
    held = content_pieces(head)
    while limit is None or held < limit:
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            return True
        head.append(chunk)
        held += sum(1 for choice in chunk.choices if choice.delta.content)
    return False


@dataclass
class HeldAnswer:
    """A non-streamed edge answer generated as a stream and held at its first tokens, to be judged:
    the chunks read so far (`head`) and the stream still open (`chunks`)."""

    chunks: AsyncIterator[ChatCompletionChunk]
    head: list[ChatCompletionChunk]
    #: whether the stream ended within the head: `head` is the whole answer
    ended: bool = False


def streamed(request: ChatCompletionRequest) -> ChatCompletionRequest:
    """`request` asked as a stream that ends with its usage: how a held non-streamed answer is made."""
    return request.model_copy(update={"stream": True, "stream_options": StreamOptions(include_usage=True)})


def assembled(
    chunks: Sequence[ChatCompletionChunk], *, prompt_tokens: int, logprobs: bool
) -> ChatCompletionResponse:
    """The one non-streamed response the (non-empty) `chunks` of a single-choice stream make: their
    content, finish reason, usage (counted from the chunks when the stream reported none: one content
    piece a token) and, where the request asked for `logprobs`, their log-probabilities."""
    content: list[str] = []
    tokens: list[Any] = []
    finish_reason: str | None = None
    usage: Usage | None = None
    for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            if choice.delta.content:
                content.append(choice.delta.content)
            if choice.logprobs:
                tokens.extend(choice.logprobs.get("content") or [])
            finish_reason = choice.finish_reason or finish_reason
    if usage is None:
        usage = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=len(content),
            total_tokens=prompt_tokens + len(content),
        )
    first = chunks[0]
    answer = Choice(
        message=AssistantMessage(content="".join(content)),
        finish_reason=finish_reason or "stop",
        logprobs={"content": tokens, "refusal": None} if logprobs else None,
    )
    return ChatCompletionResponse(
        id=first.id, created=first.created, model=first.model, choices=[answer], usage=usage
    )
