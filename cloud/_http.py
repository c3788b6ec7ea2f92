"""What the local app (`cloud/app.py`) and the Lambda handler (`cloud/aws/handler.py`) say alike over HTTP.

Request bodies in, route headers and error bodies out. No web framework is imported here: the
Lambda handler uses this module at cold start, where starlette would only cost time.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hyrouter.router import (
    ChatCompletionRequest,
    PayloadTooLarge,
    RequestError,
    RouteInfo,
    RouterError,
    ServerConfig,
    TooManyMessages,
    current_request_id,
)
from hyrouter.router._feedback import FeedbackRequest, validate_feedback
from hyrouter.router._requests import validate_chat_request

#: How deep a request's JSON may nest: the deepest the chat completion schema needs is far less, and a
#: deeper document would overflow the recursion of whatever reads it next.
MAX_JSON_DEPTH = 64
# A JSON escape of a UTF-16 surrogate: paired ones make one character, a lone one is not text at all.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


#: The headers `route_headers` sets (a browser's script reads them only when CORS exposes them).
ROUTE_HEADERS = (
    "x-route-target",
    "x-route-reason",
    "x-route-score",
    "x-route-tier",
    "x-route-model",
    "x-route-fallback",
    "x-route-confidence",
)


def route_headers(route: RouteInfo) -> dict[str, str]:
    """The `x-route-*` headers that say where and why a request was answered; `x-route-confidence`
    (the edge model's confidence in its answer, 4 decimals) only where the tier verified it."""
    headers = {
        "x-route-target": route.target,
        "x-route-reason": route.reason,
        "x-route-score": f"{route.score:.4f}",
        "x-route-tier": route.tier,
        "x-route-model": route.model,
        "x-route-fallback": "true" if route.fallback else "false",
    }
    if route.confidence is not None:
        headers["x-route-confidence"] = f"{route.confidence:.4f}"
    return headers


def parse_chat_request(body: str | bytes, limits: ServerConfig | None = None) -> ChatCompletionRequest:
    """A chat completion request from a JSON body; anything malformed is a `RequestError` (400).

    With `limits`, more messages than `max_messages` are refused (400) before they are validated, and
    more message text than `max_prompt_chars` (413) before any token is counted.
    """
    payload = _parse_json(body)
    messages = payload.get("messages")
    if limits is not None and isinstance(messages, list) and len(messages) > limits.max_messages:
        raise TooManyMessages(
            f"Invalid 'messages': {len(messages)} messages, more than the {limits.max_messages} allowed.",
            param="messages",
        )
    request = validate_chat_request(payload)
    if limits is not None:
        chars = sum(len(message.text) for message in request.messages)
        if chars > limits.max_prompt_chars:
            raise PayloadTooLarge(
                f"The messages hold {chars} characters of text, more than the {limits.max_prompt_chars} "
                "allowed.",
                param="messages",
            )
    return request


def error_body(exc: RouterError) -> dict[str, Any]:
    """The OpenAI error object of `exc`, every member present (`"param": null` too, as OpenAI sends it)."""
    return with_request_id(exc.to_response().model_dump(mode="json"))  # not `dump`: it drops null members


def with_request_id(body: dict[str, Any]) -> dict[str, Any]:
    """`body` (an OpenAI error object) with the current request's id as `error.request_id`, if any.

    An extra member beside `message`, `type`, `param` and `code`: OpenAI's clients keep members they do
    not know, and a caller can quote the id when it reports the error.
    """
    request_id = current_request_id()
    if request_id is not None:
        body["error"]["request_id"] = request_id
    return body


def parse_feedback(body: str | bytes) -> FeedbackRequest:
    """A `POST /v1/feedback` body; anything malformed is a `RequestError` (400)."""
    return validate_feedback(_parse_json(body, what="a JSON feedback object"))


def _parse_json(body: str | bytes, *, what: str = "a JSON chat completion request") -> dict[str, Any]:
    if not body:
        raise RequestError(f"The request body is empty; send {what}.")
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:  # json.loads would let raw surrogate bytes through
        raise RequestError(f"The request body is not valid UTF-8: {exc}.") from None
    try:
        payload = json.loads(text)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:
        raise RequestError(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(payload, dict):
        raise RequestError("The request body must be a JSON object.")
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth_over(payload, MAX_JSON_DEPTH):
        raise _too_deep()
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(
                "The request body holds a lone UTF-16 surrogate escape (such as \\ud800), which is not "
                "Unicode text; pair it or leave it out."
            ) from None
    return payload


def _too_deep() -> RequestError:
    return RequestError(f"The request body nests JSON more than {MAX_JSON_DEPTH} levels deep.")


def _depth_over(value: Any, limit: int) -> bool:
    """Whether `value` nests arrays and objects more than `limit` deep (iteratively: no recursion)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                pending.append((child, depth + 1))
    return False
