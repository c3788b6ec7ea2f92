"""A fault-injecting OpenAI-compatible upstream on loopback, for the reliability campaign.

`FaultUpstream(mode)` answers every chat completion with one fault, streamed or not as the request
asks (a stream-only fault has its non-streamed counterpart, so that both ways fail alike):

| mode | streamed | not streamed |
|---|---|---|
| `refuse` | nothing listens on the port | the same |
| `error_500` | a 500 with a server error | the same |
| `blames_request` | vLLM's 500 whose body blames the request (`BadRequestError`, code 400) | the same |
| `rate_limited` | a 429 with `Retry-After: 9` | the same |
| `hang` | reads the request, never answers | the same |
| `slow` | a whole answer, its first token `SLOW_FIRST_TOKEN_S` late | the answer, as late |
| `reset_before` | a TCP reset before any byte of the answer | the same |
| `reset_after` | the role and first token, then a TCP reset | the headers and half the body, then a reset |
| `truncated` | the first tokens, a clean close: no finish_reason, no `[DONE]` | half its Content-Length |
| `malformed_sse` | the first token, then a line that is not JSON | a 200 whose body is not JSON |
| `error_event` | the first token, then vLLM's in-band error event | a 200 whose body is an error object |
| `unavailable_503` | a 503 | the same |
| `bad_gateway_502` | a 502 | the same |
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct

from tests.servers import MisbehavingUpstream, free_port

#: What the cloud streams before a mid-stream fault (`reset_after`, `truncated`, ...).
PARTIAL = ["The", " answer"]
#: The whole answer of the `slow` mode.
ANSWER = ["from", " the", " cloud"]
SLOW_FIRST_TOKEN_S = 0.6  # under the campaign's read timeout: late, not dead

_STATUS = {
    "error_500": (
        b"500 Internal Server Error",
        b'{"error": {"message": "upstream exploded", "type": "server_error"}}',
    ),
    "blames_request": (
        b"500 Internal Server Error",
        b'{"object": "error", "message": "Assistant message must have content or tool_calls",'
        b' "type": "BadRequestError", "param": null, "code": 400}',
    ),
    "rate_limited": (
        b"429 Too Many Requests",
        b'{"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}',
    ),
    "unavailable_503": (
        b"503 Service Unavailable",
        b'{"error": {"message": "overloaded", "type": "server_error"}}',
    ),
    "bad_gateway_502": (b"502 Bad Gateway", b"<html>bad gateway</html>"),
}


def _chunk(delta: dict[str, str], finish_reason: str | None = None) -> bytes:
    event = {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "fault-upstream",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(event)}\n\n".encode()


def _completion(text: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-fault",
            "object": "chat.completion",
            "created": 1,
            "model": "fault-upstream",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        }
    ).encode()


def _head(status: bytes, content_type: bytes, length: int | None = None, extra: bytes = b"") -> bytes:
    size = b"" if length is None else b"content-length: " + str(length).encode() + b"\r\n"
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: "
        + content_type
        + b"\r\n"
        + extra
        + size
        + (b"connection: close\r\n\r\n")
    )


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST rather than a FIN: linger on, zero seconds, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultUpstream(MisbehavingUpstream):
    """`MisbehavingUpstream`'s loopback server with the campaign's faults (see the module's table)."""

    MODES = (
        "refuse",
        "error_500",
        "blames_request",
        "rate_limited",
        "hang",
        "slow",
        "reset_before",
        "reset_after",
        "truncated",
        "malformed_sse",
        "error_event",
        "unavailable_503",
        "bad_gateway_502",
    )

    def __enter__(self) -> FaultUpstream:
        if self.mode == "refuse":  # the port stays free: a connect error on every call
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}/v1"
            return self
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.mode == "refuse":
            self._loop.close()  # made by the constructor, never run
        else:
            super().__exit__(*exc)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        reset = False
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                ),
                0,
            )
            body = json.loads(await reader.readexactly(length)) if length else {}
            self.requests += 1
            reset = await self._fault(writer, stream=bool(body.get("stream")))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            if not reset:
                writer.close()

    async def _fault(self, writer: asyncio.StreamWriter, *, stream: bool) -> bool:
        """Misbehave on one request; True when the connection was reset (nothing left to close)."""
        mode = self.mode
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "reset_before":
            _reset(writer)
            return True
        if mode in _STATUS:
            status, payload = _STATUS[mode]
            extra = b"retry-after: 9\r\n" if mode == "rate_limited" else b""
            writer.write(_head(status, b"application/json", len(payload), extra) + payload)
            await writer.drain()
            return False
        if mode == "slow":
            await asyncio.sleep(SLOW_FIRST_TOKEN_S)
        if not stream:
            text = "".join(ANSWER if mode == "slow" else PARTIAL)
            payload = _completion(text)
            if mode == "slow":
                writer.write(_head(b"200 OK", b"application/json", len(payload)) + payload)
            elif mode == "reset_after":
                writer.write(
                    _head(b"200 OK", b"application/json", len(payload)) + payload[: len(payload) // 2]
                )
                await writer.drain()
                _reset(writer)
                return True
            elif mode == "truncated":
                writer.write(
                    _head(b"200 OK", b"application/json", len(payload)) + payload[: len(payload) // 2]
                )
            elif mode == "malformed_sse":
                writer.write(_head(b"200 OK", b"application/json", 14) + b"<html>oops</ht")
            elif mode == "error_event":
                payload = b'{"error": {"message": "CUDA out of memory", "type": "InternalServerError"}}'
                writer.write(_head(b"200 OK", b"application/json", len(payload)) + payload)
            await writer.drain()
            return False
        writer.write(_head(b"200 OK", b"text/event-stream"))
        writer.write(_chunk({"role": "assistant", "content": ""}))
        words = ANSWER if mode == "slow" else PARTIAL
        for word in words if mode in ("slow", "truncated") else words[:1]:
            writer.write(_chunk({"content": word}))
            await writer.drain()
            await asyncio.sleep(0.01)
        if mode == "slow":
            writer.write(_chunk({}, "stop") + b"data: [DONE]\n\n")
        elif mode == "reset_after":
            _reset(writer)
            return True
        elif mode == "malformed_sse":
            writer.write(b"data: {not json at all\n\n")
        elif mode == "error_event":
            error = {
                "object": "error",
                "message": "CUDA out of memory",
                "type": "InternalServerError",
                "code": 500,
            }
            writer.write(f"data: {json.dumps(error)}\n\n".encode() + b"data: [DONE]\n\n")
        await writer.drain()
        return False
