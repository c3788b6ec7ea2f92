"""The id of the request being served, for its response headers, its error bodies and its log lines.

A front door picks the id once per request (`sane_request_id`: the caller's `X-Request-Id` when it is
sane, else a new uuid4 hex) and serves the request inside `request_id_scope`; everything that runs for
that request (the engine, its observers, the decision log) reads it with `current_request_id`. A
`RequestIdFilter` on a log handler gives every record a `request_id` attribute ("-" outside a request).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: The response header (and the request header a caller may set) that carries the id.
REQUEST_ID_HEADER = "x-request-id"
#: The longest id a caller may choose; a longer one is replaced.
MAX_REQUEST_ID_CHARS = 128
# Printable ASCII without spaces: the id goes verbatim into headers and log lines.
_SANE = re.compile(rf"[!-~]{{1,{MAX_REQUEST_ID_CHARS}}}")

_REQUEST_ID: ContextVar[str | None] = ContextVar("hybrid_router_request_id", default=None)


def new_request_id() -> str:
    """A fresh id: a uuid4 as 32 hex digits."""
    return uuid.uuid4().hex


def sane_request_id(*candidates: str | None) -> str:
    """The first of `candidates` that is 1 to 128 printable ASCII characters without spaces, else a new id.

    A caller's id is taken as it is, so that its logs and ours meet; anything else (too long, control
    characters that would forge a log line) is replaced, never echoed.
    """
    for candidate in candidates:
        if candidate is not None and _SANE.fullmatch(candidate):
            return candidate
    return new_request_id()


def current_request_id() -> str | None:
    """The id of the request this code runs for, if any."""
    return _REQUEST_ID.get()


@contextmanager
def request_id_scope(request_id: str) -> Iterator[str]:
    """Run the block (and the tasks it starts) as the request `request_id`."""
    token = _REQUEST_ID.set(request_id)
    try:
        yield request_id
    finally:
        _REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    """Gives each record a `request_id` attribute: its own, the current request's, or "-"."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record, with `record.request_id` set."""
        if not getattr(record, "request_id", None):
            record.request_id = _REQUEST_ID.get() or "-"
        return True
