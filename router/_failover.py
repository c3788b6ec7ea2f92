"""Two rules the engine holds every answer to: one deadline per request, and mid-stream failover.

A deadline: every request, streamed or not, on any backend, ends by its tier's `deadline_s` (else
the server's). The engine runs each step under `deadline_scope`; a stream's chunks are each awaited
only until then (`until`). Past it, a response is a 504 `DeadlineExceeded`; a stream that has begun
gets a last chunk with `finish_reason: "length"` (what OpenAI sends when a limit cut the answer)
and then the error event.

Mid-stream failover: when a stream breaks after the caller has content (the cloud's SSE cut, an
error event), the answer goes on where the policy falls back to, from the text already sent: the
other backend's `continue_stream` reads it as an open assistant turn. Its chunks join the same
stream (`continued`: the same id and model, no second role chunk), and the last one carries the
route of the switch (`fallback`, the fallback's `reason`, `failover_at_tokens`). A policy opts in
with `continues_cut_streams = True` (`TierPolicy` does; the device policy does not, so a broken
escalation still raises `EscalationInterrupted` there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator

from hyrouter.router._backend import ChatBackend
from hyrouter.router._errors import BackendError, DeadlineExceeded
from hyrouter.router._plan import aclose_stream, chain_chunks
from hyrouter.router._wire import ChatCompletionChunk, ChatCompletionRequest, ChunkChoice, Delta, RouteInfo

logger = logging.getLogger("hybrid_router")

#: The finish reason of a stream cut by its deadline: OpenAI's for an answer cut by a limit.
DEADLINE_FINISH_REASON = "length"


def continues_cut_streams(policy: object) -> bool:
    """Whether `policy` lets a stream that broke after its first content continue elsewhere."""
    return bool(getattr(policy, "continues_cut_streams", False))


def enforces_tenant_limits(policy: object) -> bool:
    """Whether the engine holds `policy`'s tiers to their `budget_usd` and `requests_per_minute`
    (default yes; the device's policy says no: those are the cloud router's, for the real tenant)."""
    return bool(getattr(policy, "enforces_tenant_limits", True))


def deadline_at(seconds: float, elapsed: float) -> float:
    """The event loop's time at which a request that started `elapsed` seconds ago must be done."""
    return asyncio.get_running_loop().time() + seconds - elapsed


@contextlib.asynccontextmanager
async def deadline_scope(at: float, seconds: float) -> AsyncIterator[None]:
    """Run the block until the loop time `at`; past it, `DeadlineExceeded` (a 504)."""
    scope = asyncio.timeout_at(at)
    try:
        async with scope:
            yield
    except TimeoutError:
        if not scope.expired():
            raise  # a timeout of the block's own
        raise DeadlineExceeded(f"The request did not finish within its deadline of {seconds:g}s.") from None


async def until(
    at: float, seconds: float, chunks: AsyncIterator[ChatCompletionChunk]
) -> AsyncGenerator[ChatCompletionChunk, None]:
    """`chunks`, each awaited until the loop time `at` (never across a yield to the caller)."""
    while True:
        try:
            async with deadline_scope(at, seconds):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        yield chunk


def deadline_chunk(completion_id: str, model: str) -> ChatCompletionChunk:
    """The last chunk of a stream its deadline cut: `finish_reason: "length"`."""
    choice = ChunkChoice(delta=Delta(), finish_reason=DEADLINE_FINISH_REASON)
    return ChatCompletionChunk(id=completion_id, model=model, choices=[choice])


async def continued(
    chunks: AsyncIterator[ChatCompletionChunk], *, completion_id: str, model: str, route: RouteInfo
) -> AsyncGenerator[ChatCompletionChunk, None]:
    """Another backend's continuation as more of the same stream: its id and model, no role (the
    caller has had one), no usage of its own (the engine counts the whole answer), and `route` on
    the chunk that finishes it."""
    async for chunk in chunks:
        if not chunk.choices:
            continue  # a usage chunk: it counts only the continuation
        for choice in chunk.choices:
            choice.delta.role = None
        chunk.id, chunk.model, chunk.usage = completion_id, model, None
        if any(c.finish_reason for c in chunk.choices):
            chunk.route = route
        yield chunk


async def start_continuation(
    backend: ChatBackend,
    request: ChatCompletionRequest,
    sent: list[str],
    max_tokens: int,
    failure: BackendError,
    *,
    at: float,
    seconds: float,
) -> AsyncIterator[ChatCompletionChunk]:
    """`backend`'s continuation of the `sent` content, its first chunk already read (within the
    deadline); `failure` re-raised, the stream's own error, when the backend cannot continue."""
    chunks: AsyncIterator[ChatCompletionChunk] | None = None
    try:
        async with deadline_scope(at, seconds):
            chunks = backend.continue_stream(request, "".join(sent), max_tokens=max_tokens)
            first = await anext(chunks)
    except (BackendError, StopAsyncIteration) as exc:
        if chunks is not None:
            await aclose_stream(chunks)
        logger.warning("%s cannot continue the cut stream (%r): it ends in error", backend.target, exc)
        raise failure from None
    except BaseException:
        if chunks is not None:
            await aclose_stream(chunks)
        raise
    return chain_chunks([first], chunks)
