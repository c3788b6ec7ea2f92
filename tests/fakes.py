"""Fake backends for unit tests of the engine and the app (no model, no network)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from hyrouter.router import (
    BackendError,
    BackendHealth,
    ChatBackend,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    Delta,
    OutcomeRecord,
    Target,
    TokenSignal,
    Usage,
)
from hyrouter.router._wire import AssistantMessage


@dataclass(frozen=True)
class FakeSignal:
    """A generated token's signals, as a backend that verifies reports them."""

    logprob: float
    entropy: float = 0.0
    margin: float = 0.0


class FakeBackend(ChatBackend):
    """Answers with a fixed text, or raises `fail` on every call.

    `delay` waits before each answer and each streamed word; `cut` (with `cut_after` words sent)
    breaks a stream mid-answer; `continue_stream` answers with `reply` and records the partial text.
    With `logprob`, the `*_with_signals` calls report one token of that log-probability per word.
    """

    def __init__(
        self,
        target: Target,
        *,
        model_id: str = "",
        context_window: int = 1024,
        reply: str = "ok",
        fail: BackendError | None = None,
        health: BackendHealth | None = None,
        delay: float = 0.0,
        cut: BackendError | None = None,
        cut_after: int = 1,
        lacks: str | None = None,
        logprob: float | None = None,
    ) -> None:
        self.target = target
        self.lacks = lacks  # what `cannot_honour` says of every request
        self.model_id = model_id or f"{target}-model"
        self.context_window = context_window
        self.reply = reply
        self.fail = fail
        self._health = health or BackendHealth(available=True)
        self.calls: list[int] = []
        self.delay, self.cut, self.cut_after = delay, cut, cut_after
        self.continued: list[tuple[str, int]] = []  # (partial text, max_tokens) per continuation
        self.logprob = logprob
        self.streamed = 0  # content chunks streamed so far, over all streams

    def health(self) -> BackendHealth:
        return self._health

    def cannot_honour(self, request: ChatCompletionRequest) -> str | None:
        return self.lacks

    async def complete(self, request: ChatCompletionRequest, *, max_tokens: int) -> ChatCompletionResponse:
        self.calls.append(max_tokens)
        if self.fail:
            raise self.fail
        await asyncio.sleep(self.delay)
        return ChatCompletionResponse(
            model=self.model_id,
            choices=[Choice(message=AssistantMessage(content=self.reply))],
            usage=Usage(prompt_tokens=10, completion_tokens=2, total_tokens=12),
        )

    async def stream(
        self, request: ChatCompletionRequest, *, max_tokens: int
    ) -> AsyncIterator[ChatCompletionChunk]:
        self.calls.append(max_tokens)
        if self.fail:
            raise self.fail
        yield ChatCompletionChunk(
            id="c1", model=self.model_id, choices=[ChunkChoice(delta=Delta(role="assistant", content=""))]
        )
        for sent, word in enumerate(self.reply.split()):
            if self.cut is not None and sent == self.cut_after:
                raise self.cut
            await asyncio.sleep(self.delay)
            self.streamed += 1
            yield ChatCompletionChunk(
                id="c1", model=self.model_id, choices=[ChunkChoice(delta=Delta(content=word))]
            )
        yield ChatCompletionChunk(id="c1", model=self.model_id, choices=[ChunkChoice(finish_reason="stop")])

    async def complete_with_signals(
        self, request: ChatCompletionRequest, *, max_tokens: int, signals: list[TokenSignal]
    ) -> ChatCompletionResponse:
        response = await self.complete(request, max_tokens=max_tokens)
        if self.logprob is not None:
            signals.extend(FakeSignal(self.logprob) for _ in self.reply.split())
        return response

    async def stream_with_signals(
        self, request: ChatCompletionRequest, *, max_tokens: int, signals: list[TokenSignal]
    ) -> AsyncIterator[ChatCompletionChunk]:
        async for chunk in self.stream(request, max_tokens=max_tokens):
            if self.logprob is not None and any(c.delta.content for c in chunk.choices):
                signals.append(FakeSignal(self.logprob))
            yield chunk

    async def continue_stream(
        self, request: ChatCompletionRequest, partial: str, *, max_tokens: int
    ) -> AsyncIterator[ChatCompletionChunk]:
        self.continued.append((partial, max_tokens))
        if self.fail:
            raise self.fail
        yield ChatCompletionChunk(
            id="c2", model=self.model_id, choices=[ChunkChoice(delta=Delta(role="assistant", content=""))]
        )
        for word in self.reply.split():
            yield ChatCompletionChunk(
                id="c2", model=self.model_id, choices=[ChunkChoice(delta=Delta(content=word))]
            )
        yield ChatCompletionChunk(id="c2", model=self.model_id, choices=[ChunkChoice(finish_reason="stop")])


def outcome_record(record_id: str = "chatcmpl-1", **fields: Any) -> OutcomeRecord:
    """An `OutcomeRecord` of an edge answer with plain values; `fields` replace them."""
    values: dict[str, Any] = {
        "id": record_id,
        "created_at": time.time(),
        "tenant": "acme",
        "tier": "free",
        "target": "edge",
        "reason": "score_below_threshold",
        "fallback": False,
        "score": 0.2,
        "threshold": 0.7,
        "estimator": "heuristic@1.0.0",
        "model": "edge-model",
        "status": 200,
        "stream": False,
        "latency_ms": 12.5,
        "estimator_ms": 0.1,
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "cost_usd": 0.0,
        "cost_saved_usd": 0.00001,
        "error_code": None,
        "request_id": "req-1",
        "prompt_sha256": "0" * 64,
        "features": [0.5, 0.25],
    }
    return OutcomeRecord(**{**values, **fields})
