"""Fake backends for unit tests of the engine and the app (no model, no network)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

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
    Target,
    Usage,
)
from hyrouter.router._wire import AssistantMessage


class FakeBackend(ChatBackend):
    """Answers with a fixed text, or raises `fail` on every call.

    `delay` waits before each answer and each streamed word; `cut` (with `cut_after` words sent)
    breaks a stream mid-answer; `continue_stream` answers with `reply` and records the partial text.
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
            yield ChatCompletionChunk(
                id="c1", model=self.model_id, choices=[ChunkChoice(delta=Delta(content=word))]
            )
        yield ChatCompletionChunk(id="c1", model=self.model_id, choices=[ChunkChoice(finish_reason="stop")])

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
