"""The SageMaker transport: OpenAI chat calls rewritten, SigV4-signed, and event streams unwrapped."""

from __future__ import annotations

import binascii
import json
import struct

import httpx
import pytest
from botocore.credentials import ReadOnlyCredentials

from hyrouter.cloud.aws.sagemaker import SageMakerTransport
from hyrouter.cloud.endpoint import CloudEndpointClient
from hyrouter.router import ChatCompletionRequest, CloudBackendError, CloudConfig

URL = "https://runtime.sagemaker.eu-west-1.amazonaws.com/endpoints/gpu-ep"
REQUEST = ChatCompletionRequest.model_validate(
    {"model": "hybrid-router", "messages": [{"role": "user", "content": "Hi"}]}
)


def event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message (string headers only), as SageMaker sends them."""
    encoded = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for k, v in headers.items()
    )
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message) & 0xFFFFFFFF)


def payload_part(data: bytes) -> bytes:
    return event_message(
        {":event-type": "PayloadPart", ":message-type": "event", ":content-type": "application/octet-stream"},
        data,
    )


def chunk(content: str | None, finish: str | None = None) -> str:
    delta = {"content": content} if content is not None else {}
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return f"data: {json.dumps(body)}\n\n"


def client(seen: list[httpx.Request], stream_body: bytes = b"") -> CloudEndpointClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/invocations"):
            return httpx.Response(
                200,
                json={
                    "id": "x",
                    "object": "chat.completion",
                    "created": 1,
                    "model": "lmi",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                },
            )
        return httpx.Response(
            200, content=stream_body, headers={"content-type": "application/vnd.amazon.eventstream"}
        )

    transport = SageMakerTransport(
        region="eu-west-1",
        credentials=lambda: ReadOnlyCredentials("AKIDEXAMPLE", "secret", None),
        inner=httpx.MockTransport(answer),
    )
    return CloudEndpointClient(CloudConfig(url=URL, model="lmi"), transport=transport)


@pytest.mark.anyio
async def test_complete_is_signed_and_sent_to_invocations() -> None:
    seen: list[httpx.Request] = []
    backend = client(seen)
    response = await backend.complete(REQUEST, max_tokens=8)
    await backend.aclose()
    assert response.choices[0].message.content == "hello"
    (sent,) = seen
    assert str(sent.url) == f"{URL}/invocations"
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/sagemaker/aws4_request" in sent.headers["authorization"]
    assert json.loads(sent.content)["max_tokens"] == 8


@pytest.mark.anyio
async def test_stream_unwraps_payload_parts_split_mid_event() -> None:
    sse = (chunk("", None) + chunk("Hel") + chunk("lo") + chunk(None, "stop") + "data: [DONE]\n\n").encode()
    # SageMaker cuts PayloadParts anywhere, even inside an SSE line
    parts = [sse[:17], sse[17:90], sse[90:]]
    seen: list[httpx.Request] = []
    backend = client(seen, b"".join(payload_part(p) for p in parts))
    text = "".join(
        [c.choices[0].delta.content or "" async for c in backend.stream(REQUEST, max_tokens=8) if c.choices]
    )
    await backend.aclose()
    assert text == "Hello"
    assert str(seen[0].url) == f"{URL}/invocations-response-stream"


@pytest.mark.anyio
async def test_stream_error_event_fails_the_call() -> None:
    error = event_message(
        {":message-type": "exception", ":exception-type": "ModelStreamError"}, b'{"Message":"boom"}'
    )
    backend = client([], payload_part(chunk("a").encode()) + error)
    with pytest.raises(CloudBackendError, match=r"boom"):
        _ = [c async for c in backend.stream(REQUEST, max_tokens=8)]
    await backend.aclose()
