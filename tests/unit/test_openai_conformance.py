"""OpenAI conformance both ways, held to OpenAI's own OpenAPI schemas (vendored, tests/fixtures/openai/).

Requests: each case is first checked against the spec's `CreateChatCompletionRequest` (so the table
cannot drift from the spec), then sent to the app. What the spec allows is answered, or refused with
an `unsupported_value` 400 that names what this router cannot do; what it forbids is refused with a
400. Responses: non-streamed answers, stream chunks, the model list and error bodies validate against
the spec's response schemas.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from hyrouter.cloud.app import create_app
from hyrouter.router import (
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChunkChoice,
    Delta,
    HeuristicEstimator,
    RouterConfig,
    RoutingEngine,
    hash_api_key,
    parse_config,
)
from hyrouter.router._wire import AssistantMessage, Choice, dump
from tests.fakes import FakeBackend
from tests.openai_spec import violations

CONFIG = parse_config(
    {
        "tiers": {"free": {"cloud": "never"}},
        "api_keys": [{"sha256": hash_api_key("k-free"), "tenant": "a", "tier": "free"}],
    }
)
AUTH = {"authorization": "Bearer k-free"}
CHAT = "/v1/chat/completions"
USER = {"role": "user", "content": "What is the capital of France?"}
REQUEST = "CreateChatCompletionRequest"


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "hybrid-router", "messages": [USER], **fields}


def conversation(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"model": "hybrid-router", "messages": [*messages, USER]}


@pytest.fixture
def client() -> Iterator[TestClient]:
    async def factory(config: RouterConfig) -> RoutingEngine:
        return RoutingEngine(config, estimator=HeuristicEstimator(), edge=FakeBackend("edge", reply="Paris."))

    with TestClient(create_app(CONFIG, engine_factory=factory), raise_server_exceptions=False) as c:
        yield c


CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
ALLOWED_AND_ANSWERED = {
    "stream null": body(stream=None),
    "stream false": body(stream=False),
    "n null": body(n=None),
    "n 1": body(n=1),
    "max_tokens 8": body(max_tokens=8),
    "max_tokens null": body(max_tokens=None),
    "max_completion_tokens 8": body(max_completion_tokens=8),
    # JSON Schema's integer is any number without a fraction (found by tests/reliability/test_spec_fuzz.py)
    "integers written 8.0": body(
        max_tokens=8.0, max_completion_tokens=8.0, n=1.0, seed=7.0, top_logprobs=0.0
    ),
    "temperature 0 and 2": body(temperature=0, top_p=1),
    "temperature null": body(temperature=None, top_p=None),
    "stop string": body(stop="\n"),
    "stop four": body(stop=["a", "b", "c", "d"]),
    "stop null": body(stop=None),
    "seed and penalties": body(seed=7, presence_penalty=-2, frequency_penalty=2.0),
    "seed at the spec's bounds": body(seed=-9223372036854776000),
    "logprobs false": body(logprobs=False, top_logprobs=0),
    "user and metadata": body(user="u-1", metadata={"k": "v"}, store=False),
    "stream_options null": body(stream_options=None),
    "developer and named system": conversation(
        {"role": "developer", "content": "Be brief."}, {"role": "system", "content": "Hi", "name": "ops"}
    ),
    "text parts": conversation({"role": "user", "content": [{"type": "text", "text": "Hello"}]}),
    "assistant without content": conversation({"role": "assistant", "content": None}),
    "assistant refusal part": conversation(
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot."}]}
    ),
    "assistant tool call and tool answer": conversation(
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ),
    # The spec's tool message declares no `name`: any value is an undeclared member (the fuzzer's find).
    "tool message with any name": conversation(
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1", "name": []},
    ),
    "tools not to be called": body(tools=[TOOL], tool_choice="none", parallel_tool_calls=False),
    "response_format text": body(response_format={"type": "text"}),
    "store and include_obfuscation": body(store=True, stream_options={"include_obfuscation": False}),
}
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
FILE = {"type": "file", "file": {"file_id": "file-1"}}
ALLOWED_AND_UNSUPPORTED = {
    "n 2": (body(n=2), "n", "n > 1"),
    "image part": (
        conversation({"role": "user", "content": [{"type": "text", "text": "What is it?"}, IMAGE]}),
        "messages.0.content",
        "'image_url'",
    ),
    "audio part": (conversation({"role": "user", "content": [AUDIO]}), "messages.0.content", "'input_audio'"),
    "file part": (conversation({"role": "user", "content": [FILE]}), "messages.0.content", "'file'"),
    "function role": (
        conversation({"role": "function", "content": "42", "name": "f"}),
        "messages.0.role",
        "role 'function'",
    ),
}
FORBIDDEN = {
    "max_tokens string": body(max_tokens="8"),
    "max_tokens true": body(max_tokens=True),
    "max_tokens 8.5": body(max_tokens=8.5),
    "n 1.5": body(n=1.5),
    "max_completion_tokens string": body(max_completion_tokens="8"),
    "stream yes": body(stream="yes"),
    "stream 1": body(stream=1),
    "temperature string": body(temperature="0.5"),
    "temperature 3": body(temperature=3),
    "temperature true": body(temperature=True),
    "n 0": body(n=0),
    "n string": body(n="1"),
    "seed string": body(seed="7"),
    "seed below int64": body(seed=-9223372036854776001),
    "seed above int64": body(seed=9223372036854776001),
    "stop five": body(stop=["a", "b", "c", "d", "e"]),
    "stop empty": body(stop=[]),
    "logprobs yes": body(logprobs="yes"),
    "top_logprobs 21": body(top_logprobs=21),
    "include_usage yes": body(stream=True, stream_options={"include_usage": "yes"}),
    "user number": body(user=7),
    "tools null": body(tools=None),
    "tool without a function": body(tools=[{"type": "function"}]),
    "custom tool with a boolean format": body(
        tools=[{"type": "custom", "custom": {"name": "c", "format": True}}]
    ),
    "tool_choice not a choice": body(tool_choice=[]),
    "tool_choice unknown": body(tool_choice="sometimes"),
    "tool_choice null": body(tool_choice=None),
    "store not a boolean": body(store=0.0),
    "include_obfuscation not a boolean": body(stream_options={"include_obfuscation": []}),
    "parallel_tool_calls null": body(parallel_tool_calls=None),
    "response_format json_schema without a schema object": body(response_format={"type": "json_schema"}),
    "response_format unknown": body(response_format={"type": "yaml"}),
    "assistant tool call without a name": conversation(
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]}
    ),
    "user name not a string": conversation({"role": "user", "content": "hi", "name": 7}),
    "model number": {"model": 7, "messages": [USER]},
    "no messages": body(messages=[]),
    "unknown role": conversation({"role": "robot", "content": "hi"}),
    "user without content": conversation({"role": "user"}),
    "system null content": conversation({"role": "system", "content": None}),
    "empty parts": conversation({"role": "user", "content": []}),
    "tool without call id": conversation({"role": "tool", "content": "42"}),
    "refusal part from the user": conversation(
        {"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}
    ),
}


@pytest.mark.parametrize("request_body", ALLOWED_AND_ANSWERED.values(), ids=ALLOWED_AND_ANSWERED)
def test_what_the_spec_allows_is_answered(client: TestClient, request_body: dict[str, Any]) -> None:
    assert violations(REQUEST, request_body) == []
    r = client.post(CHAT, json=request_body, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Paris."


@pytest.mark.parametrize(
    ("request_body", "param", "named"), ALLOWED_AND_UNSUPPORTED.values(), ids=ALLOWED_AND_UNSUPPORTED
)
def test_what_the_spec_allows_and_the_router_cannot_do_is_named(
    client: TestClient, request_body: dict[str, Any], param: str, named: str
) -> None:
    assert violations(REQUEST, request_body) == []
    r = client.post(CHAT, json=request_body, headers=AUTH)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "unsupported_value" and error["param"] == param, error
    assert named in error["message"] and "not supported" in error["message"], error
    if param == "messages.0.content":
        assert "this router serves text only" in error["message"], error


@pytest.mark.parametrize("kind", ["image", "input_image", "video_url"])
def test_a_part_type_not_in_the_spec_is_a_clear_400_not_a_validation_dump(
    client: TestClient, kind: str
) -> None:
    request_body = conversation({"role": "user", "content": [{"type": kind, "image": "https://x/cat.png"}]})
    assert violations(REQUEST, request_body) != []
    r = client.post(CHAT, json=request_body, headers=AUTH)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "messages.0.content" and error["code"] == "invalid_request", error
    assert f"content part type '{kind}' is not one of OpenAI's" in error["message"], error
    assert "this router serves text only" in error["message"] and "more problems" not in error["message"]


@pytest.mark.parametrize("request_body", FORBIDDEN.values(), ids=FORBIDDEN)
def test_what_the_spec_forbids_is_refused(client: TestClient, request_body: dict[str, Any]) -> None:
    assert violations(REQUEST, request_body) != []
    r = client.post(CHAT, json=request_body, headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["code"] in REFUSAL_CODES
    assert violations("ErrorResponse", r.json()) == []


def test_an_assistant_message_echoed_back_with_null_tool_calls_is_answered(client: TestClient) -> None:
    """A leniency the spec does not have: OpenAI's own client sends a response's message back as it
    came (`messages.append(completion.choices[0].message)`), `"tool_calls": null` and all."""
    echoed = {"role": "assistant", "content": "Hi", "tool_calls": None, "refusal": None, "audio": None}
    request_body = conversation(echoed)
    assert violations(REQUEST, request_body) != []
    r = client.post(CHAT, json=request_body, headers=AUTH)
    assert r.status_code == 200, r.text


#: A request's fault in general, and a number out of bounds named as OpenAI's API names it.
REFUSAL_CODES = {"invalid_request"} | {
    f"{kind}_{bound}" for kind in ("integer", "decimal") for bound in ("below_min_value", "above_max_value")
}


@pytest.mark.parametrize("member", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", [0, -1])
def test_max_tokens_below_one_is_refused_as_openai_refuses_it(
    client: TestClient, member: str, value: int
) -> None:
    """The spec sets no minimum; OpenAI's API and vLLM refuse it, so the router does, with their code."""
    request_body = body(**{member: value})
    assert violations(REQUEST, request_body) == []
    r = client.post(CHAT, json=request_body, headers=AUTH)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("integer_below_min_value", member), error


def test_a_non_streamed_response_conforms(client: TestClient) -> None:
    answer = client.post(CHAT, json=body(), headers=AUTH).json()
    assert violations("CreateChatCompletionResponse", answer) == []
    choice = answer["choices"][0]
    assert choice["logprobs"] is None and choice["message"]["refusal"] is None
    assert answer["route"]["target"] == "edge" and None not in answer["route"].values()


def test_stream_chunks_conform(client: TestClient) -> None:
    r = client.post(CHAT, json=body(stream=True, stream_options={"include_usage": True}), headers=AUTH)
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks and all(violations("CreateChatCompletionStreamResponse", c) == [] for c in chunks)
    with_choices = [c for c in chunks if c["choices"]]
    assert all("finish_reason" in c["choices"][0] for c in with_choices)
    assert [c["choices"][0]["finish_reason"] for c in with_choices][-1] == "stop"
    assert with_choices[0]["choices"][0]["finish_reason"] is None
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_models_and_errors_conform(client: TestClient) -> None:
    assert violations("ListModelsResponse", client.get("/v1/models", headers=AUTH).json()) == []
    assert violations("ErrorResponse", client.post(CHAT, json=body()).json()) == []  # 401


def test_dump_keeps_the_required_nulls_and_leaves_out_the_rest() -> None:
    response = ChatCompletionResponse(model="m", choices=[Choice(message=AssistantMessage(content=None))])
    data = dump(response)
    assert data["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": None, "refusal": None},
        "finish_reason": "stop",
        "logprobs": None,
    }
    assert "route" not in data and violations("CreateChatCompletionResponse", data) == []
    chunk = ChatCompletionChunk(id="c", model="m", choices=[ChunkChoice(delta=Delta(content="a"))])
    assert dump(chunk)["choices"][0] == {"index": 0, "delta": {"content": "a"}, "finish_reason": None}
    assert "usage" not in dump(chunk) and "route" not in dump(chunk)
    # Without `dump` a model serializes as pydantic does.
    assert chunk.model_dump()["usage"] is None
