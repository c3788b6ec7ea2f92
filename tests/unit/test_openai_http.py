"""Reading OpenAI-compatible answers: SSE lines, error bodies, error events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from httpx_sse import ServerSentEvent

from hyrouter.router import CloudBackendError
from hyrouter.router._openai_http import SSE_DONE, decode_chunk, error_body_message, next_sse_event


async def _events(*events: ServerSentEvent) -> AsyncIterator[ServerSentEvent]:
    for event in events:
        yield event


@pytest.mark.anyio
async def test_next_sse_event_reads_data_events_and_raises_error_events() -> None:
    async def first(*events: ServerSentEvent) -> object:
        return await next_sse_event(_events(*events), describe=lambda w: f"at X: {w}", default_model="m")

    no_data = ServerSentEvent(id="7")  # skipped
    assert await first(no_data, ServerSentEvent(data="[DONE]")) == SSE_DONE
    assert await first() is None
    with pytest.raises(CloudBackendError, match="at X: sent an error: busy"):
        await first(ServerSentEvent(event="error", data='{"error": {"message": "busy"}}'))
    with pytest.raises(CloudBackendError, match="at X: sent an error: plain words"):
        await first(ServerSentEvent(event="error", data="plain words"))


def test_error_bodies_of_openai_and_fastapi() -> None:
    assert error_body_message({"error": {"message": "bad", "code": "context_length_exceeded"}}) == (
        "bad",
        "context_length_exceeded",
    )
    assert error_body_message({"detail": "Not Found"}) == ("Not Found", None)
    assert error_body_message({"object": "error", "message": "bad", "code": 400}) == ("bad", "400")
    assert error_body_message([1]) == (None, None)


def test_decode_chunk_errors_name_the_server() -> None:
    chunk = decode_chunk('{"id": "c", "choices": []}', describe=lambda w: w, default_model="m")
    assert chunk.model == "m"
    with pytest.raises(CloudBackendError, match="at X: sent an error: boom"):
        decode_chunk('{"error": {"message": "boom"}}', describe=lambda w: f"at X: {w}")
    with pytest.raises(CloudBackendError, match="invalid chunk"):
        decode_chunk("{not json", describe=lambda w: w)
