"""The request id at the local app's door (ASGI middleware): taken or made, then on every answer.

`RequestIdMiddleware` wraps the whole Starlette app: it takes the caller's `X-Request-Id` when it is
sane (`router.sane_request_id`), else makes one, serves the request inside `router.request_id_scope`
(so the error bodies and the log lines of that request carry it), keeps it in `scope["state"]` for an
error handler that runs outside the scope, and adds `x-request-id` to the response's headers, whatever
the route, status or body (streams included).
"""

from __future__ import annotations

from typing import Any

from hyrouter.router import REQUEST_ID_HEADER, request_id_scope, sane_request_id

_HEADER = REQUEST_ID_HEADER.encode("latin-1")
#: Where the request's id is kept in the ASGI scope's state (`request.state.request_id`).
STATE_KEY = "request_id"

Scope = dict[str, Any]
Message = dict[str, Any]


class RequestIdMiddleware:
    """Pure ASGI middleware: one request id per HTTP request, in its scope, its context and its answer."""

    def __init__(self, app: Any) -> None:
        """Wrap `app` (an ASGI app)."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Serve `scope` as its request id."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next((value for name, value in scope["headers"] if name.lower() == _HEADER), None)
        request_id = sane_request_id(sent.decode("latin-1") if sent is not None else None)
        scope.setdefault("state", {})[STATE_KEY] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _HEADER]
                message = {**message, "headers": [*headers, (_HEADER, request_id.encode("latin-1"))]}
            await send(message)

        with request_id_scope(request_id):
            await self.app(scope, receive, send_with_id)
