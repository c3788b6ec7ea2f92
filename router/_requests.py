"""A chat completion request from its JSON payload, for every door: the server, Lambda and the device SDK.

Pydantic's first problem becomes one `RequestError` (400) that names where it is; what OpenAI's API
allows and this router does not serve (`n > 1`, image parts, ...) becomes `UnsupportedFeature`; a
number out of its bounds becomes `OutOfRange` with OpenAI's code for it (`max_tokens: 0` is
`integer_below_min_value`, as OpenAI's API and vLLM refuse it: the spec's schema sets no minimum).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from hyrouter.router._errors import OutOfRange, RequestError, UnsupportedFeature
from hyrouter.router._wire import ChatCompletionRequest


def validate_chat_request(payload: Any) -> ChatCompletionRequest:
    """`payload` (parsed JSON) as a `ChatCompletionRequest`; a `RequestError` when it is not one."""
    try:
        return ChatCompletionRequest.model_validate(payload)
    except ValidationError as exc:
        raise request_error(exc) from None


#: pydantic's error types of a bound, as the end of OpenAI's error codes
_BOUNDS = {
    "greater_than": "below_min_value",
    "greater_than_equal": "below_min_value",
    "less_than": "above_max_value",
    "less_than_equal": "above_max_value",
}


def request_error(exc: ValidationError) -> RequestError:
    """Pydantic's first problem as the `RequestError` that names where it is (OpenAI's code for a bound)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    extra = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    message = f"Invalid request: {where}: {first['msg']}{extra}."
    if first["type"] == UnsupportedFeature.code:  # the wire types' name for "allowed, not served here"
        return UnsupportedFeature(message, param=where or None)
    if (bound := _BOUNDS.get(first["type"])) is not None:
        kind = "integer" if isinstance(first["input"], int) else "decimal"
        return OutOfRange(message, code=f"{kind}_{bound}", param=where or None)
    return RequestError(message, param=where or None)
