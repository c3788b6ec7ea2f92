"""Reading an OpenAI-compatible server's answers, for every client of one: the GPU endpoint client
(`cloud/`) and the on-device SDK's escalation to the cloud router (`edge/`).

Transport-free (strings, parsed JSON and parsed SSE events in, wire types out): the one HTTP client
that uses them, with its retry loop, error mapping and SSE parsing (httpx-sse), is
`hyrouter.router._openai_client`.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import pydantic

from hyrouter.router._errors import CloudBackendError
from hyrouter.router._wire import ChatCompletionChunk

SSE_DONE = "[DONE]"
#: The SSE event type some servers (TGI, proxies) send a mid-stream failure as.
SSE_ERROR_EVENT = "error"


class SSEEvent(Protocol):
    """One parsed server-sent event (`httpx_sse.ServerSentEvent`): its type and its joined `data:` lines."""

    @property
    def event(self) -> str:
        """The `event:` field; "message" where the server sent none."""
        ...

    @property
    def data(self) -> str:
        """The event's `data:` lines, joined by newlines."""
        ...


def describe_error(error: Any) -> str:
    """The message of an OpenAI `error` member (an object with `message`, or a bare string)."""
    return str(error.get("message") or error) if isinstance(error, dict) else str(error)


def error_body_message(data: Any) -> tuple[str | None, str | None]:
    """`(message, code)` of an error body: OpenAI's `{"error": {...}}`, vLLM's flat
    `{"object": "error", "message": ..., "code": 400}`, or FastAPI's `detail`."""
    if not isinstance(data, dict):
        return None, None
    error = data.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        return describe_error(error), str(code) if code is not None else None
    for key in ("error", "detail", "message"):
        if data.get(key):
            code = data.get("code") if key == "message" else None
            return describe_error(data[key]), str(code) if code is not None else None
    return None, None


def decode_chunk(
    data: str, *, describe: Callable[[str], str], default_model: str | None = None
) -> ChatCompletionChunk:
    """One `data:` payload as a chunk; an `{"error": ...}` event or a malformed one → `CloudBackendError`.

    `describe` turns what happened into the caller's message (it names the server).
    """
    try:
        event = json.loads(data)
        if isinstance(event, dict):
            if "error" in event:
                raise CloudBackendError(describe(f"sent an error: {describe_error(event['error'])}"))
            if default_model is not None:
                event.setdefault("model", default_model)
        return ChatCompletionChunk.model_validate(event)
    except (ValueError, pydantic.ValidationError) as exc:
        raise CloudBackendError(describe(f"sent an invalid chunk: {exc}")) from None


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


async def next_sse_event(
    events: AsyncIterator[SSEEvent], *, describe: Callable[[str], str], default_model: str | None = None
) -> ChatCompletionChunk | str | None:
    """The next chunk of an SSE body; `SSE_DONE` at `data: [DONE]`; None when the body ends first.

    An `event: error` is the server's error, whatever its data; an event without data (a bare `id:`
    or `retry:`) carries nothing. Transport errors propagate: each client maps them its own way.
    """
    async for event in events:
        data = event.data.strip()
        if event.event == SSE_ERROR_EVENT:
            message = _error_event_message(data)
            raise CloudBackendError(describe(f"sent an error: {message}"))
        if not data:
            continue
        if data == SSE_DONE:
            return SSE_DONE
        return decode_chunk(data, describe=describe, default_model=default_model)
    return None


def _error_event_message(data: str) -> str:
    """What an `event: error`'s data says: an error body's message, or its text."""
    try:
        parsed = json.loads(data)
    except ValueError:
        return data or "an error event"
    message, _ = error_body_message(parsed)
    return message or data
