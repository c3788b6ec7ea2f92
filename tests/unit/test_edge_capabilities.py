"""What the llama.cpp edge backend says it cannot honour (`LlamaCppBackend.cannot_honour`), unloaded."""

from __future__ import annotations

from typing import Any

import pytest

from hyrouter.edge.llama_cpp_backend import LlamaCppBackend, grammar_error
from hyrouter.router import ChatCompletionRequest, EdgeConfig

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
CITY = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def request(**kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}
    )


@pytest.mark.parametrize(
    ("kw", "lacks"),
    [
        ({}, None),
        ({"tools": [TOOL]}, "tools"),
        ({"tools": [TOOL], "tool_choice": "required"}, "tools"),
        ({"tools": [TOOL], "tool_choice": "none"}, None),  # offered, not to be called: plain text
        ({"logprobs": True, "top_logprobs": 5}, None),  # read while generating
        ({"logprobs": False, "top_logprobs": 0}, None),
        ({"response_format": {"type": "text"}}, None),
        ({"response_format": {"type": "json_object"}}, None),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "C", "schema": CITY}}}, None),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "R", "schema": {"$ref": "https://example.com/x.json"}},
                }
            },
            "structured_output",
        ),
    ],
)
def test_the_edge_names_what_it_cannot_honour(kw: dict[str, Any], lacks: str | None) -> None:
    assert LlamaCppBackend(EdgeConfig()).cannot_honour(request(**kw)) == lacks


def test_a_schema_the_grammar_cannot_hold_is_explained() -> None:
    assert grammar_error('{"type": "object"}') is None
    assert "remote schemas" in (grammar_error('{"$ref": "https://example.com/x.json"}') or "")


def test_json_modes_become_a_grammar_for_llama_cpp() -> None:
    backend = LlamaCppBackend(EdgeConfig())
    fmt = {"type": "json_schema", "json_schema": {"name": "C", "schema": CITY}}
    assert backend._params(request(response_format=fmt), 8)["response_format"] == {
        "type": "json_object",
        "schema": CITY,
    }
    json_mode = backend._params(request(response_format={"type": "json_object"}), 8)
    assert json_mode["response_format"] == {"type": "json_object", "schema": {"type": "object"}}
    assert "response_format" not in backend._params(request(response_format={"type": "text"}), 8)
