"""What uvicorn answers by itself, in the router's words: an OpenAI error object, not plain text.

A request whose head cannot be read (`Content-Length: abc`, a header that is not HTTP) never reaches
the app: uvicorn's HTTP protocol answers it with a plain-text 400. `OpenAIErrorH11Protocol` answers
it with the error object every other refusal carries (and still closes the connection: a body of
unknown length leaves nothing to read the next request from). `http_protocol()` is its httptools
twin where httptools is installed (a faster parser), else it; `hybrid-router serve` uses that, and
`uvicorn.run(..., http=http_protocol())` does wherever else the app is served.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from hyrouter.cloud.routes import error_object
from hyrouter.router import REQUEST_ID_HEADER, new_request_id, request_id_scope

UNREADABLE_REQUEST = (
    "Invalid HTTP request: its request line or headers cannot be read (for example a Content-Length "
    "that is not a number)."
)


def _unreadable_answer() -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of the 400 for a request uvicorn cannot parse (`{"error": {...}}`)."""
    with request_id_scope(new_request_id()) as request_id:  # a request the app never sees has no id yet
        answer = error_object(400, UNREADABLE_REQUEST, "invalid_request_error", "invalid_request")
    headers = [
        (REQUEST_ID_HEADER.encode(), request_id.encode()),
        *((name.encode(), value.encode()) for name, value in answer.headers.items()),
        (b"content-length", str(len(answer.body)).encode()),
        (b"connection", b"close"),
    ]
    return headers, answer.body


class OpenAIErrorH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering an unreadable request with an OpenAI error object."""

    def send_400_response(self, msg: str) -> None:
        """The 400 for a request uvicorn cannot parse, as `{"error": {...}}`, then close."""
        headers, body = _unreadable_answer()
        self.transport.write(
            self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request"))
        )
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()


def http_protocol() -> type[asyncio.Protocol]:
    """The fastest HTTP protocol importable, answering an unreadable request with an OpenAI error
    object: uvicorn's httptools protocol when `httptools` is installed (the `server` extra), else h11."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return OpenAIErrorH11Protocol

    class OpenAIErrorHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, answering an unreadable request with an OpenAI error object."""

        def send_400_response(self, msg: str) -> None:
            """The 400 for a request uvicorn cannot parse, as `{"error": {...}}`, then close."""
            headers, body = _unreadable_answer()
            lines = [b"HTTP/1.1 400 Bad Request\r\n"]
            for name, value in [*self.server_state.default_headers, *headers]:
                lines.append(name + b": " + value + b"\r\n")
            self.transport.write(b"".join([*lines, b"\r\n", body]))
            self.transport.close()

    return OpenAIErrorHttpToolsProtocol
