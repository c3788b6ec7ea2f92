"""A chat completion request from its JSON payload, for every door: the server, Lambda and the device SDK.

Pydantic's first problem becomes one `RequestError` (400) that names where it is; what OpenAI's API
allows and this router does not serve (`n > 1`, image parts, ...) becomes `UnsupportedFeature`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from router._errors import RequestError, UnsupportedFeature
from router._wire import ChatCompletionRequest


def validate_chat_request(payload: Any) -> ChatCompletionRequest:
    """`payload` (parsed JSON) as a `ChatCompletionRequest`; a `RequestError` when it is not one."""
    try:
        return ChatCompletionRequest.model_validate(payload)
    except ValidationError as exc:
        raise _request_error(exc) from None


def _request_error(exc: ValidationError) -> RequestError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    extra = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    message = f"Invalid request: {where}: {first['msg']}{extra}."
    if first["type"] == UnsupportedFeature.code:  # the wire types' name for "allowed, not served here"
        return UnsupportedFeature(message, param=where or None)
    return RequestError(message, param=where or None)
