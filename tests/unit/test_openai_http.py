"""Reading OpenAI-compatible answers: SSE lines, error bodies, error events."""

from __future__ import annotations

import pytest

from router import CloudBackendError
from router._openai_http import SSE_DONE, decode_chunk, error_body_message, sse_data


def test_sse_data_keeps_only_data_lines() -> None:
    assert sse_data('data: {"a": 1}') == '{"a": 1}'
    assert sse_data("data: [DONE]") == SSE_DONE
    assert sse_data(": keep-alive") is None and sse_data("") is None and sse_data("event: x") is None


def test_error_bodies_of_openai_and_fastapi() -> None:
    assert error_body_message({"error": {"message": "bad", "code": "context_length_exceeded"}}) == (
        "bad",
        "context_length_exceeded",
    )
    assert error_body_message({"detail": "Not Found"}) == ("Not Found", None)
    assert error_body_message({"object": "error", "message": "bad", "code": 400}) == ("bad", "400")
    assert error_body_message([1]) == (None, None)


def test_decode_chunk_errors_name_the_server() -> None:
    chunk = decode_chunk('{"id": "c", "choices": []}', describe=lambda w: w, default_model="m")
    assert chunk.model == "m"
    with pytest.raises(CloudBackendError, match="at X: sent an error: boom"):
        decode_chunk('{"error": {"message": "boom"}}', describe=lambda w: f"at X: {w}")
    with pytest.raises(CloudBackendError, match="invalid chunk"):
        decode_chunk("{not json", describe=lambda w: w)
