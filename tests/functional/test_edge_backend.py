"""The edge backend on the real model: SmolLM2-135M-Instruct (Q4_1 GGUF) run by llama.cpp.

Completions are kept to a few tokens so the module runs in seconds on two cores.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hyrouter.edge.llama_cpp_backend import LlamaCppBackend, render_chatml
from hyrouter.router._backend import approximate_tokens
from hyrouter.router._config import EdgeConfig
from hyrouter.router._errors import EdgeBackendError, EdgeBusy
from hyrouter.router._wire import ChatCompletionChunk, ChatCompletionRequest, ChatMessage

pytestmark = [pytest.mark.functional, pytest.mark.anyio]

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
STORY = [{"role": "user", "content": "Write a long story about a dragon."}]
QUEUE_TIMEOUT_S = 1.0


def request(messages: list[dict[str, str]], **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "edge", "messages": messages, "temperature": 0, **fields}
    )


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    """The model, loaded once for the module; one waiting request allowed, one second of wait.

    One request at a time (`parallel=1`): the batched path has its own module, test_edge_batching.py.
    """
    config = EdgeConfig(
        n_threads=2, n_ctx=512, max_queue=1, queue_timeout_s=QUEUE_TIMEOUT_S, seed=0, parallel=1
    )
    edge = LlamaCppBackend(config)
    edge.load()
    yield edge
    asyncio.run(edge.aclose())


async def first_content(stream: AsyncIterator[ChatCompletionChunk]) -> None:
    """Read `stream` until its first content chunk: from then on it holds the model."""
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            return
    raise AssertionError("the stream ended without content")


async def wait_for_depth(edge: LlamaCppBackend, depth: int) -> None:
    for _ in range(500):
        if edge.queue_depth == depth:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"queue depth stayed {edge.queue_depth}, expected {depth}")


def test_load_is_idempotent(backend: LlamaCppBackend) -> None:
    llm = backend._llm
    backend.load()
    assert backend._llm is llm
    assert backend.health().available
    assert not backend.health().busy
    assert (backend.target, backend.model_id, backend.context_window) == (
        "edge",
        "smollm2-135m-instruct",
        512,
    )


async def test_complete_returns_text_and_usage(backend: LlamaCppBackend) -> None:
    req = request(CAPITAL)
    response = await backend.complete(req, max_tokens=16)
    assert response.model == backend.model_id
    answer = response.choices[0].message.content
    assert answer
    assert "Paris" in answer  # SmolLM2-135M gets this one right at temperature 0
    assert response.choices[0].finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.prompt_tokens == backend.count_tokens(req.messages)
    assert 1 <= usage.completion_tokens <= 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_max_tokens_caps_the_answer(backend: LlamaCppBackend) -> None:
    response = await backend.complete(request(STORY), max_tokens=4)
    assert response.usage.completion_tokens == 4
    assert response.choices[0].finish_reason == "length"


async def test_stream_role_content_finish_and_usage(backend: LlamaCppBackend) -> None:
    req = request(CAPITAL, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in backend.stream(req, max_tokens=16)]
    assert len({c.id for c in chunks}) == 1
    assert {c.model for c in chunks} == {backend.model_id}
    assert chunks[0].choices[0].delta.role == "assistant"
    *answer, last, usage_chunk = chunks
    assert last.choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in answer)
    text = "".join(c.choices[0].delta.content or "" for c in answer)
    assert "Paris" in text
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    # The same greedy answer as complete(): the counts agree with llama's own.
    expected = (await backend.complete(req, max_tokens=16)).usage
    assert usage_chunk.usage == expected
    assert expected.completion_tokens >= 1


async def test_stream_without_usage_ends_with_finish_reason(backend: LlamaCppBackend) -> None:
    chunks = [chunk async for chunk in backend.stream(request(STORY, stream=True), max_tokens=8)]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None and c.choices for c in chunks)
    assert sum(1 for c in chunks if c.choices[0].delta.content) >= 4


async def test_prompt_is_plain_chatml_without_the_gguf_system_prompt(
    backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = backend._llm
    assert llm is not None
    prompts: list[str] = []
    tokenize = llm.tokenize

    def spy(text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        prompts.append(text.decode("utf-8", "replace"))
        return tokenize(text, add_bos, special)

    monkeypatch.setattr(llm, "tokenize", spy)
    messages = [{"role": "developer", "content": "Answer briefly."}, *CAPITAL]
    await backend.complete(request(messages), max_tokens=1)
    rendered = [p for p in prompts if p.endswith("<|im_start|>assistant\n")]
    assert rendered
    assert all("SmolLM" not in p for p in rendered)
    assert rendered[-1] == (
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    # What chat_format="chatml" avoids: the GGUF's own template injects a system prompt.
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"], eos_token="", bos_token=""
    )
    assert "SmolLM" in template(messages=CAPITAL).prompt  # type: ignore[arg-type]


async def test_count_tokens_exact_matches_llama_and_approximation_is_close(backend: LlamaCppBackend) -> None:
    messages = [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Name three primary colors."},
        {"role": "assistant", "content": "Red, yellow and blue."},
        {"role": "user", "content": "And the secondary colors, please?"},
    ]
    req = request(messages)
    exact = backend.count_tokens(req.messages)
    assert exact == (await backend.complete(req, max_tokens=1)).usage.prompt_tokens
    assert exact == len(backend._llm.tokenize(render_chatml(messages).encode(), add_bos=False, special=True))  # type: ignore[union-attr]
    approx = approximate_tokens(req.messages)
    assert abs(approx - exact) <= max(8, exact // 4), (approx, exact)
    # Without a system message llama-cpp-python's chatml still writes an empty system turn.
    assert backend.count_tokens(request(CAPITAL).messages) == len(
        backend._llm.tokenize(render_chatml(CAPITAL).encode(), add_bos=False, special=True)  # type: ignore[union-attr]
    )


async def test_a_long_conversation_is_counted_exactly_turn_by_turn(backend: LlamaCppBackend) -> None:
    # Counted turn by turn (linear time), the count is still the whole prompt's, special tokens
    # written inside a message's content included.
    messages = [
        {"role": "user" if i % 2 else "assistant", "content": f"turn {i}: <|im_end|> héllo\n<|im_start|>"}
        for i in range(300)
    ]
    whole = backend._llm.tokenize(render_chatml(messages).encode(), add_bos=False, special=True)  # type: ignore[union-attr]
    assert backend.count_tokens(request(messages).messages) == len(whole)


async def test_full_queue_refuses_at_once(backend: LlamaCppBackend) -> None:
    running = backend.stream(request(STORY, stream=True), max_tokens=64)
    await first_content(running)  # holds the model
    waiter = asyncio.create_task(backend.complete(request(CAPITAL), max_tokens=8))
    await wait_for_depth(backend, 2)
    assert backend.health().busy  # max_queue=1 request already waits
    started = time.monotonic()
    with pytest.raises(EdgeBusy, match="already waiting"):
        await backend.complete(request(CAPITAL), max_tokens=8)
    with pytest.raises(EdgeBusy):  # a stream is refused before its first chunk
        await anext(backend.stream(request(CAPITAL, stream=True), max_tokens=8))
    assert time.monotonic() - started < 0.5 * QUEUE_TIMEOUT_S
    await running.aclose()
    answer = await waiter  # the waiting request gets its turn
    assert "Paris" in (answer.choices[0].message.content or "")
    assert backend.queue_depth == 0
    assert not backend.health().busy


async def test_wait_deadline_raises_busy(backend: LlamaCppBackend) -> None:
    running = backend.stream(request(STORY, stream=True), max_tokens=64)
    await first_content(running)  # holds the model until closed
    started = time.monotonic()
    with pytest.raises(EdgeBusy, match="no turn within"):
        await backend.complete(request(CAPITAL), max_tokens=8)
    assert time.monotonic() - started >= 0.9 * QUEUE_TIMEOUT_S
    assert backend.queue_depth == 1  # the timed-out request left the queue
    await running.aclose()
    assert backend.queue_depth == 0


async def test_closing_a_stream_stops_generation_and_frees_the_model(backend: LlamaCppBackend) -> None:
    req = request(STORY, stream=True)
    prompt_tokens = backend.count_tokens(req.messages)
    stream = backend.stream(req, max_tokens=400)
    await first_content(stream)
    await stream.aclose()  # the client went away
    assert backend.queue_depth == 0
    # The KV cache holds the prompt and the tokens made before the stop, not 400 of them.
    assert backend._llm is not None
    assert backend._llm.n_tokens < prompt_tokens + 100
    answer = await asyncio.wait_for(backend.complete(request(CAPITAL), max_tokens=8), timeout=30)
    assert "Paris" in (answer.choices[0].message.content or "")


async def test_cancelled_request_keeps_the_model_until_llama_returns(backend: LlamaCppBackend) -> None:
    task = asyncio.create_task(backend.complete(request(STORY), max_tokens=96))
    await wait_for_depth(backend, 1)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.queue_depth == 0  # released only after the thread returned
    answer = await backend.complete(request(CAPITAL), max_tokens=8)
    assert "Paris" in (answer.choices[0].message.content or "")


async def test_a_deadline_stops_a_non_streamed_generation_between_tokens(backend: LlamaCppBackend) -> None:
    # The engine's deadline cancels the call: llama ends at its next token, not after 400 of them.
    prompt_tokens = backend.count_tokens(request(STORY).messages)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(backend.complete(request(STORY), max_tokens=400), timeout=0.5)
    assert time.monotonic() - started < 3.0
    assert backend.queue_depth == 0
    assert backend._llm is not None and backend._llm.n_tokens < prompt_tokens + 100
    answer = await backend.complete(request(CAPITAL), max_tokens=8)
    assert "Paris" in (answer.choices[0].message.content or "")


async def test_continue_stream_goes_on_from_a_partial_answer(backend: LlamaCppBackend) -> None:
    chunks = [
        c
        async for c in backend.continue_stream(
            request(CAPITAL, temperature=0), "The capital of France", max_tokens=8
        )
    ]
    assert all(c.choices[0].delta.role is None for c in chunks)  # no role: the caller has one
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "Paris" in text and not text.lstrip().startswith("The capital"), text
    assert backend.queue_depth == 0


async def test_concurrent_requests_are_served_one_at_a_time(backend: LlamaCppBackend) -> None:
    answers = await asyncio.gather(*(backend.complete(request(CAPITAL), max_tokens=8) for _ in range(2)))
    assert all("Paris" in (a.choices[0].message.content or "") for a in answers)
    assert backend.queue_depth == 0


async def test_llama_errors_become_edge_backend_errors(backend: LlamaCppBackend) -> None:
    too_long = [{"role": "user", "content": "word " * 600}]  # more tokens than n_ctx=512
    with pytest.raises(EdgeBackendError, match="exceed context window"):
        await backend.complete(request(too_long), max_tokens=8)
    with pytest.raises(EdgeBackendError, match="exceed context window"):
        await anext(backend.stream(request(too_long, stream=True), max_tokens=8))
    assert backend.queue_depth == 0


async def test_missing_model_file_is_an_edge_error(tmp_path: Path) -> None:
    edge = LlamaCppBackend(EdgeConfig(model_path=str(tmp_path / "absent.gguf")))
    with pytest.raises(EdgeBackendError, match="not found"):
        edge.load()
    assert edge.health().available is False
    assert edge.health().detail == "not loaded"
    messages = [ChatMessage(role="user", content="hello there")]
    assert edge.count_tokens(messages) == approximate_tokens(messages)
    with pytest.raises(EdgeBackendError, match="not loaded"):
        await edge.complete(request(CAPITAL), max_tokens=4)
    with pytest.raises(EdgeBackendError, match="not loaded"):
        await anext(edge.stream(request(CAPITAL, stream=True), max_tokens=4))


def test_unreadable_model_file_is_an_edge_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file" * 100)
    edge = LlamaCppBackend(EdgeConfig(model_path=str(bogus)))
    with pytest.raises(EdgeBackendError, match="cannot load edge model"):
        edge.load()
    assert not edge.health().available


async def test_aclose_frees_the_model() -> None:
    edge = LlamaCppBackend(EdgeConfig(n_threads=2, n_ctx=256))
    edge.load()
    assert (await edge.complete(request(CAPITAL), max_tokens=2)).choices
    await edge.aclose()
    assert edge.health() == edge.health().__class__(available=False, detail="not loaded")
    with pytest.raises(EdgeBackendError, match="not loaded"):
        await edge.complete(request(CAPITAL), max_tokens=2)
    await edge.aclose()  # idempotent


def test_import_does_not_load_llama_cpp() -> None:
    code = (
        "import sys, hyrouter.edge.llama_cpp_backend; "
        "assert 'llama_cpp' not in sys.modules, 'llama_cpp imported'"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


async def test_count_tokens_follows_a_non_chatml_chat_format() -> None:
    # The count must be the prompt the completion runs on, whatever format the config names.
    edge = LlamaCppBackend(EdgeConfig(n_threads=2, n_ctx=512, chat_format="gemma", seed=0))
    edge.load()
    try:
        req = request(CAPITAL)
        counted = edge.count_tokens(req.messages)
        assert counted == (await edge.complete(req, max_tokens=1)).usage.prompt_tokens
        chatml = render_chatml(CAPITAL).encode()
        assert counted != len(edge._llm.tokenize(chatml, add_bos=False, special=True))  # type: ignore[union-attr]
    finally:
        await edge.aclose()


async def test_logprobs_are_the_models_own_and_make_up_the_answer(backend: LlamaCppBackend) -> None:
    asked = request(CAPITAL, logprobs=True, top_logprobs=3, stop=["."])
    answer = await backend.complete(asked, max_tokens=12)
    content = answer.choices[0].message.content or ""
    logprobs = answer.choices[0].logprobs
    assert content and logprobs is not None
    tokens = logprobs["content"]
    assert "".join(t["token"] for t in tokens) == content  # the stop string's tokens left out
    assert all(t["logprob"] <= 0 and len(t["top_logprobs"]) == 3 for t in tokens)
    # greedy: each token is its step's most likely one
    assert all(t["top_logprobs"][0]["token"] == t["token"] for t in tokens)
    assert all(bytes(t["bytes"]).decode("utf-8", "replace") == t["token"] for t in tokens)
    plain = await backend.complete(request(CAPITAL, stop=["."]), max_tokens=12)
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == content


async def test_streamed_logprobs_arrive_with_the_text_they_belong_to(backend: LlamaCppBackend) -> None:
    asked = request(CAPITAL, logprobs=True, top_logprobs=0)
    pieces = [
        choice
        async for chunk in backend.stream(asked, max_tokens=12)
        for choice in chunk.choices
        if choice.delta.content
    ]
    assert pieces
    for choice in pieces:
        assert choice.logprobs is not None
        tokens = choice.logprobs["content"]
        assert "".join(t["token"] for t in tokens) == choice.delta.content
        assert all(t["top_logprobs"] == [] for t in tokens)
