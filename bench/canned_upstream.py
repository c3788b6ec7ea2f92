"""An OpenAI-compatible upstream that answers instantly with a fixed completion (streamed when asked).

It isolates the router's own overhead: whatever time a request through the router takes beyond a
direct request to this server is the router's.
"""

from __future__ import annotations

import argparse
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ANSWER = {
    "id": "chatcmpl-canned",
    "object": "chat.completion",
    "created": 0,
    "model": "canned",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
}


def _chunk(delta: dict[str, str], finish_reason: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    chunk = {"id": ANSWER["id"], "object": "chat.completion.chunk", "created": 0, "model": "canned"}
    return f"data: {json.dumps({**chunk, 'choices': [choice]})}\n\n"


#: The same answer as server-sent events, as vLLM streams it.
STREAMED = (
    _chunk({"role": "assistant", "content": ""})
    + _chunk({"content": "Paris."})
    + _chunk({}, "stop")
    + "data: [DONE]\n\n"
)


async def completions(request: Request) -> Response:
    body = json.loads(await request.body())
    if body.get("stream"):
        return Response(STREAMED, media_type="text/event-stream")
    return JSONResponse(ANSWER)


async def models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": "canned", "object": "model"}]})


app = Starlette(
    routes=[Route("/v1/chat/completions", completions, methods=["POST"]), Route("/v1/models", models)]
)

if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvicorn.run(app, host="127.0.0.1", port=parser.parse_args().port, log_level="warning", access_log=False)
