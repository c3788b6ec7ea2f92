"""Calls to a SageMaker real-time endpoint (LMI or vLLM container) through the ordinary cloud client.

The endpoint speaks the OpenAI chat schema on `/invocations`, but behind SigV4 and, for streams,
inside AWS event-stream framing. `SageMakerTransport` is an httpx transport, so `CloudEndpointClient`
keeps its retries, timeouts and breaker unchanged: set `cloud.url` to
`https://runtime.sagemaker.<region>.amazonaws.com/endpoints/<name>` and `HYBRID_ROUTER_CLOUD_AUTH=sagemaker`.

    POST <url>/chat/completions {stream: false}  ->  POST <url>/invocations                (signed)
    POST <url>/chat/completions {stream: true}   ->  POST <url>/invocations-response-stream (signed),
                                                     PayloadPart bytes relayed as the SSE body
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx

from hyrouter.router import CloudBackendError

if TYPE_CHECKING:
    from hyrouter.cloud.aws.settings import LambdaSettings

CHAT_SUFFIX = "/chat/completions"
#: botocore's frozen credentials (access key, secret, token); a callable so that they can rotate.
CredentialsProvider = Callable[[], Any]


class SageMakerTransport(httpx.AsyncBaseTransport):
    """Rewrites OpenAI chat calls to SageMaker `InvokeEndpoint[WithResponseStream]`, signed with SigV4."""

    def __init__(
        self,
        *,
        region: str,
        credentials: CredentialsProvider,
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.region = region
        self._credentials = credentials
        self._inner = inner if inner is not None else httpx.AsyncHTTPTransport()

    @classmethod
    def from_env(cls, settings: LambdaSettings | None = None) -> SageMakerTransport:
        """Region and credentials of the Lambda execution role (botocore's default chain)."""
        import botocore.session  # type: ignore[import-untyped]

        from hyrouter.cloud.aws.settings import LambdaSettings

        session = botocore.session.get_session()
        region = (
            (settings or LambdaSettings.from_env()).aws_region
            or session.get_config_variable("region")
            or "us-east-1"
        )

        def credentials() -> Any:
            found = session.get_credentials()
            if found is None:
                raise CloudBackendError("no AWS credentials to sign SageMaker calls with")
            return found.get_frozen_credentials()

        return cls(region=str(region), credentials=credentials)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Sign and send; a stream's event-stream body is decoded back to plain bytes."""
        from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
        from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]

        body = await request.aread()
        streamed = _is_stream(body)
        base = str(request.url)
        if base.endswith(CHAT_SUFFIX):
            base = base[: -len(CHAT_SUFFIX)]
        url = f"{base}/invocations-response-stream" if streamed else f"{base}/invocations"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        aws_request = AWSRequest(method="POST", url=url, data=body, headers=headers)
        SigV4Auth(self._credentials(), "sagemaker", self.region).add_auth(aws_request)
        signed = httpx.Request(
            "POST",
            url,
            content=body,
            headers=dict(aws_request.headers.items()),
            extensions=request.extensions,  # the client's timeouts
        )
        response = await self._inner.handle_async_request(signed)
        if not streamed or response.status_code != 200:
            return response
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=_PayloadParts(response),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()


def _is_stream(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("stream") is True


class _PayloadParts(httpx.AsyncByteStream):
    """The bytes of each `PayloadPart` event of a SageMaker response stream, in order."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        from botocore.eventstream import EventStreamBuffer  # type: ignore[import-untyped]

        buffer = EventStreamBuffer()
        stream = self._response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        async for data in stream:
            buffer.add_data(data)
            for message in buffer:
                message_type = message.headers.get(":message-type")
                if message_type in ("exception", "error"):
                    detail = message.payload.decode("utf-8", "replace")[:500]
                    raise httpx.RemoteProtocolError(f"SageMaker stream failed: {detail}")
                if message.headers.get(":event-type") == "PayloadPart":
                    yield message.payload

    async def aclose(self) -> None:
        await self._response.aclose()
