"""What the local app (`cloud.app`) and the Lambda handler (`cloud.aws.handler`) say alike over HTTP.

Request bodies in, route headers and error bodies out. No web framework is imported here: the
Lambda handler uses this module at cold start, where starlette would only cost time.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from router import ChatCompletionRequest, RequestError, RouteInfo, RouterError


def route_headers(route: RouteInfo) -> dict[str, str]:
    """The `x-route-*` headers that say where and why a request was answered."""
    return {
        "x-route-target": route.target,
        "x-route-reason": route.reason,
        "x-route-score": f"{route.score:.4f}",
        "x-route-tier": route.tier,
        "x-route-model": route.model,
        "x-route-fallback": "true" if route.fallback else "false",
    }


def parse_chat_request(body: str | bytes) -> ChatCompletionRequest:
    """A chat completion request from a JSON body; anything malformed is a `RequestError` (400)."""
    payload = _parse_json(body)
    try:
        return ChatCompletionRequest.model_validate(payload)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def error_body(exc: RouterError) -> dict[str, Any]:
    """The OpenAI error object of `exc`, every member present (`"param": null` too, as OpenAI sends it)."""
    return exc.to_response().model_dump(mode="json")  # not `dump`: it drops null members


def _parse_json(body: str | bytes) -> dict[str, Any]:
    if not body:
        raise RequestError("The request body is empty; send a JSON chat completion request.")
    try:
        payload = json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError included
        raise RequestError(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(payload, dict):
        raise RequestError("The request body must be a JSON object.")
    return payload


def _validation_error(exc: ValidationError) -> RequestError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    extra = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return RequestError(f"Invalid request: {where}: {first['msg']}{extra}.", param=where or None)
