"""Reading an OpenAI-compatible server's answers, for every client of one: the GPU endpoint client
(`cloud/`) and the on-device SDK's escalation to the cloud router (`edge/`).

Transport-free (strings and parsed JSON in, wire types out): the one HTTP client that uses them,
with its retry loop and error mapping, is `router._openai_client`.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pydantic

from router._errors import CloudBackendError
from router._wire import ChatCompletionChunk

SSE_DONE = "[DONE]"


def sse_data(line: str) -> str | None:
    """The payload of an SSE `data:` line; None for blank lines, `:` comments, `event:`/`id:` fields."""
    return line[5:].strip() if line.startswith("data:") else None


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
    lines: AsyncIterator[str], *, describe: Callable[[str], str], default_model: str | None = None
) -> ChatCompletionChunk | str | None:
    """The next chunk of an SSE body; `SSE_DONE` at `data: [DONE]`; None when the body ends first.

    Transport errors propagate: each client maps them its own way.
    """
    async for line in lines:
        data = sse_data(line)
        if data is None:
            continue
        if data == SSE_DONE:
            return SSE_DONE
        return decode_chunk(data, describe=describe, default_model=default_model)
    return None
