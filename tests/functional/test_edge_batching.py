"""Continuous batching on the real model: SmolLM2-135M-Instruct, several requests in one llama.cpp
context (`hyrouter.edge._batching`), beside the one-at-a-time path they are checked against."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from hyrouter.edge.llama_cpp_backend import LlamaCppBackend
from hyrouter.router._config import EdgeConfig
from hyrouter.router._errors import EdgeBackendError, EdgeBusy
from hyrouter.router._wire import ChatCompletionChunk, ChatCompletionRequest

pytestmark = [pytest.mark.functional, pytest.mark.anyio]

PARALLEL = 3
QUEUE_TIMEOUT_S = 1.0
QUESTIONS = ["What is the capital of France?", "Name three colors.", "What is 2 plus 2?"]
STORY = "Write a long story about a dragon."


def request(content: str, **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "edge", "messages": [{"role": "user", "content": content}], "temperature": 0, **fields}
    )


@pytest.fixture(scope="module")
def batched() -> Iterator[LlamaCppBackend]:
    """Three sequences at once, one waiting request allowed, one second of wait, no latency floor."""
    config = EdgeConfig(
        n_threads=2,
        n_ctx=512,
        parallel=PARALLEL,
        min_tokens_per_s=0,
        max_queue=1,
        queue_timeout_s=QUEUE_TIMEOUT_S,
        seed=0,
    )
    edge = LlamaCppBackend(config)
    edge.load()
    yield edge
    asyncio.run(edge.aclose())


@pytest.fixture(scope="module")
def single() -> Iterator[LlamaCppBackend]:
    """The one-at-a-time path on the same model, for the answers to compare with."""
    edge = LlamaCppBackend(EdgeConfig(n_threads=2, n_ctx=512, parallel=1, seed=0))
    edge.load()
    yield edge
    asyncio.run(edge.aclose())


async def first_content(stream: AsyncIterator[ChatCompletionChunk]) -> str:
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            return chunk.choices[0].delta.content
    raise AssertionError("the stream ended without content")


async def text_of(stream: AsyncIterator[ChatCompletionChunk]) -> tuple[str, str | None]:
    text, finish = [], None
    async for chunk in stream:
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return "".join(text), finish


async def wait_for(condition: Any, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


def answer(response: Any) -> str:
    return str(response.choices[0].message.content or "")


async def test_concurrent_greedy_answers_are_the_one_at_a_time_answers(
    batched: LlamaCppBackend, single: LlamaCppBackend
) -> None:
    assert all(batched._batchable(request(q)) for q in QUESTIONS)
    alone = [await single.complete(request(q), max_tokens=16) for q in QUESTIONS]
    together = await asyncio.gather(*(batched.complete(request(q), max_tokens=16) for q in QUESTIONS))
    assert [answer(r) for r in together] == [answer(r) for r in alone]
    assert [r.usage for r in together] == [r.usage for r in alone]
    assert [r.choices[0].finish_reason for r in together] == [r.choices[0].finish_reason for r in alone]
    assert "Paris" in answer(together[0])
    assert batched.queue_depth == 0
    # Alone in the batch, a long greedy answer is the one-at-a-time one token for token.
    long_alone = await single.complete(request(STORY), max_tokens=48)
    long_batched = await batched.complete(request(STORY), max_tokens=48)
    assert answer(long_batched) == answer(long_alone)
    assert long_batched.usage == long_alone.usage and long_batched.choices[0].finish_reason == "length"


async def test_stop_strings_and_max_tokens_end_a_batched_answer(
    batched: LlamaCppBackend, single: LlamaCppBackend
) -> None:
    asked = request(STORY, stop=[" upon", "dragon"])
    cut, expected = await asyncio.gather(
        batched.complete(asked, max_tokens=32), single.complete(asked, max_tokens=32)
    )
    assert answer(cut) == answer(expected) == "Once"
    assert cut.choices[0].finish_reason == "stop"
    capped = await batched.complete(request(STORY), max_tokens=4)
    assert capped.usage.completion_tokens == 4 and capped.choices[0].finish_reason == "length"


async def test_concurrent_streams_each_get_their_own_answer(
    batched: LlamaCppBackend, single: LlamaCppBackend
) -> None:
    expected = [answer(await single.complete(request(q), max_tokens=16)) for q in QUESTIONS]
    streams = [batched.stream(request(q, stream=True), max_tokens=16) for q in QUESTIONS]
    results = await asyncio.gather(*(text_of(s) for s in streams))
    assert [text for text, _ in results] == expected
    assert all(finish in ("stop", "length") for _, finish in results)
    assert batched.queue_depth == 0


async def test_closing_one_stream_frees_its_sequence_and_spares_the_others(
    batched: LlamaCppBackend, single: LlamaCppBackend
) -> None:
    decoder = batched._batch
    assert decoder is not None
    expected = answer(await single.complete(request(QUESTIONS[0]), max_tokens=16))
    stories = [batched.stream(request(STORY, stream=True), max_tokens=300) for _ in range(2)]
    for story in stories:
        await first_content(story)
    question = asyncio.create_task(text_of(batched.stream(request(QUESTIONS[0], stream=True), max_tokens=16)))
    await wait_for(lambda: decoder.running == 3, "three sequences never ran together")
    await stories[0].aclose()  # the client went away: its sequence leaves at the next step
    assert decoder.running <= 2 and batched.queue_depth <= 2
    text, _ = await asyncio.wait_for(question, timeout=60)
    assert text == expected  # undisturbed
    assert await first_content(stories[1])  # the other story goes on
    await stories[1].aclose()
    assert batched.queue_depth == 0


async def test_logprobs_of_batched_answers(batched: LlamaCppBackend, single: LlamaCppBackend) -> None:
    asked = request(QUESTIONS[0], logprobs=True, top_logprobs=3)
    expected = await single.complete(asked, max_tokens=12)
    response, _ = await asyncio.gather(
        batched.complete(asked, max_tokens=12), batched.complete(request(STORY), max_tokens=12)
    )
    tokens = response.choices[0].logprobs["content"]  # type: ignore[index]
    assert "".join(t["token"] for t in tokens) == answer(response) == answer(expected)
    assert all(t["logprob"] <= 0 and len(t["top_logprobs"]) == 3 for t in tokens)
    assert all(t["top_logprobs"][0]["token"] == t["token"] for t in tokens)  # greedy
    alone = expected.choices[0].logprobs["content"]  # type: ignore[index]
    assert [t["logprob"] for t in tokens] == pytest.approx([t["logprob"] for t in alone], abs=1e-3)
    # streamed, each chunk carries the tokens of its text
    pieces = [
        c.choices[0]
        async for c in batched.stream(request(QUESTIONS[0], stream=True, logprobs=True), max_tokens=12)
        if c.choices and c.choices[0].delta.content
    ]
    assert pieces and all(
        "".join(t["token"] for t in p.logprobs["content"]) == p.delta.content  # type: ignore[index]
        for p in pieces
    )


async def test_seeded_sampling_is_per_sequence(batched: LlamaCppBackend) -> None:
    sampled = request(STORY, temperature=1.0, seed=7)
    first, second = await asyncio.gather(*(batched.complete(sampled, max_tokens=24) for _ in range(2)))
    assert answer(first) == answer(second)  # each sequence draws from its own seeded sampler
    other = await batched.complete(request(STORY, temperature=1.0, seed=8), max_tokens=24)
    greedy = await batched.complete(request(STORY), max_tokens=24)
    assert len({answer(first), answer(other), answer(greedy)}) >= 2


async def test_a_request_for_the_single_path_runs_while_the_batch_runs(batched: LlamaCppBackend) -> None:
    structured = request("Give a JSON object with a key name.", response_format={"type": "json_object"})
    assert not batched._batchable(structured)
    story = batched.stream(request(STORY, stream=True), max_tokens=200)
    await first_content(story)
    result = await asyncio.wait_for(batched.complete(structured, max_tokens=24), timeout=60)
    assert result.choices[0].message.content is not None
    if result.choices[0].finish_reason == "stop":
        json.loads(result.choices[0].message.content)  # the grammar held it
    assert await first_content(story)  # the batch went on after its pause
    await story.aclose()
    assert batched.queue_depth == 0


async def test_a_full_queue_refuses_at_once_and_the_waiting_request_gets_its_turn(
    batched: LlamaCppBackend,
) -> None:
    stories = [batched.stream(request(STORY, stream=True), max_tokens=300) for _ in range(PARALLEL)]
    for story in stories:
        await first_content(story)
    waiter = asyncio.create_task(batched.complete(request(QUESTIONS[0]), max_tokens=8))
    await wait_for(lambda: batched.queue_depth == PARALLEL + 1, "the request did not wait")
    assert batched.health().busy  # max_queue=1 request already waits
    started = time.monotonic()
    with pytest.raises(EdgeBusy, match="already waiting"):
        await batched.complete(request(QUESTIONS[0]), max_tokens=8)
    with pytest.raises(EdgeBusy):  # a stream is refused before its first chunk
        await anext(batched.stream(request(QUESTIONS[0], stream=True), max_tokens=8))
    with pytest.raises(EdgeBusy):  # and so is one for the single path
        await batched.complete(request("{}", response_format={"type": "json_object"}), max_tokens=8)
    assert time.monotonic() - started < 0.5 * QUEUE_TIMEOUT_S
    await stories[0].aclose()
    assert "Paris" in answer(await waiter)  # it took the freed sequence
    for story in stories[1:]:
        await story.aclose()
    assert batched.queue_depth == 0 and not batched.health().busy


async def test_a_request_that_waits_too_long_is_refused(batched: LlamaCppBackend) -> None:
    stories = [batched.stream(request(STORY, stream=True), max_tokens=400) for _ in range(PARALLEL)]
    for story in stories:
        await first_content(story)
    started = time.monotonic()
    with pytest.raises(EdgeBusy, match="no turn within"):
        await batched.complete(request(QUESTIONS[0]), max_tokens=8)
    assert time.monotonic() - started >= 0.9 * QUEUE_TIMEOUT_S
    assert batched.queue_depth == PARALLEL  # the refused request left the queue
    for story in stories:
        await story.aclose()
    assert batched.queue_depth == 0


async def test_a_deadline_stops_a_batched_request_between_tokens(batched: LlamaCppBackend) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(batched.complete(request(STORY), max_tokens=400), timeout=0.5)
    assert time.monotonic() - started < 3.0
    assert batched.queue_depth == 0
    assert "Paris" in answer(await batched.complete(request(QUESTIONS[0]), max_tokens=8))


async def test_a_prompt_longer_than_the_context_is_an_edge_error(batched: LlamaCppBackend) -> None:
    too_long = request("word " * 600)  # more tokens than n_ctx=512
    with pytest.raises(EdgeBackendError, match="exceed context window"):
        await batched.complete(too_long, max_tokens=8)
    with pytest.raises(EdgeBackendError, match="exceed context window"):
        await anext(batched.stream(request("word " * 600, stream=True), max_tokens=8))
    assert batched.queue_depth == 0


async def test_aclose_lets_the_batch_finish_then_frees_it() -> None:
    edge = LlamaCppBackend(EdgeConfig(n_threads=2, n_ctx=256, parallel=2))
    edge.load()
    running = asyncio.create_task(edge.complete(request(QUESTIONS[0]), max_tokens=8))
    await wait_for(lambda: edge.queue_depth == 1, "the request never ran")
    await edge.aclose()
    assert "Paris" in answer(await running)
    assert edge._batch is None and not edge.health().available
    with pytest.raises(EdgeBackendError, match="not loaded"):
        await edge.complete(request(QUESTIONS[0]), max_tokens=2)


@pytest.mark.parametrize("chat_format", ["zephyr", "llama-3"])
async def test_another_chat_format_is_batched_as_its_handler_would_run_it(chat_format: str) -> None:
    # The prompt tokens and stop strings are taken from llama-cpp-python's handler for the format.
    common: dict[str, Any] = {"n_threads": 2, "n_ctx": 512, "chat_format": chat_format, "seed": 0}
    single = LlamaCppBackend(EdgeConfig(parallel=1, **common))
    batched = LlamaCppBackend(EdgeConfig(parallel=2, min_tokens_per_s=0, **common))
    single.load()
    batched.load()
    try:
        asked = request(QUESTIONS[0])
        taken = batched._batch_prompt(asked)
        assert taken is not None and batched._batch is not None
        assert len(taken.tokens) == batched.count_tokens(asked.messages)  # the handler's own prompt
        for question in (QUESTIONS[0], STORY):
            alone = await single.complete(request(question), max_tokens=24)
            lone_batched = await batched.complete(request(question), max_tokens=24)
            assert answer(lone_batched) == answer(alone) and answer(alone)
            assert lone_batched.usage == alone.usage
            assert lone_batched.choices[0].finish_reason == alone.choices[0].finish_reason
        streamed, _ = await text_of(batched.stream(request(STORY, stream=True), max_tokens=24))
        assert streamed == answer(alone)
        cut = request(STORY, stop=[answer(alone).split()[1]])
        expected, got = await single.complete(cut, max_tokens=24), await batched.complete(cut, max_tokens=24)
        assert answer(got) == answer(expected) and got.choices[0].finish_reason == "stop"
    finally:
        await single.aclose()
        await batched.aclose()


async def test_a_format_whose_handler_cannot_be_taken_runs_one_at_a_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # "chatml-function-calling" hands llama text, not tokens: its prompt is not taken for the batch.
    config = EdgeConfig(n_threads=2, n_ctx=512, parallel=2, chat_format="chatml-function-calling", seed=0)
    edge = LlamaCppBackend(config)
    with caplog.at_level("WARNING", logger="hybrid_router"):
        edge.load()
    try:
        assert edge._batch is None  # no batch context is made
        assert "cannot be batched" in caplog.text and "passes text" in caplog.text
        assert edge._batch_prompt(request(QUESTIONS[0])) is None
        answers = await asyncio.gather(*(edge.complete(request(q), max_tokens=8) for q in QUESTIONS[:2]))
        assert "Paris" in answer(answers[0]) and all(r.usage.completion_tokens > 0 for r in answers)
    finally:
        await edge.aclose()


async def test_a_request_ended_while_the_batch_is_paused_leaves_at_once(batched: LlamaCppBackend) -> None:
    decoder = batched._batch
    assert decoder is not None
    story = batched.stream(request(STORY, stream=True), max_tokens=300)
    await first_content(story)
    pending = asyncio.create_task(batched.complete(request(STORY), max_tokens=300))
    await wait_for(lambda: decoder.running == 2, "the second request never joined")
    hold = decoder.exclusive()  # as a one-at-a-time request holds the model for many seconds
    await asyncio.to_thread(hold.__enter__)
    try:
        await asyncio.wait_for(story.aclose(), timeout=2)  # the client went away: no hang
        pending.cancel()  # the engine's deadline
        await asyncio.wait({pending}, timeout=2)
        assert pending.done()
        assert decoder.running == 0 and batched.queue_depth == 0  # their sequences are free
    finally:
        hold.__exit__(None, None, None)
    assert "Paris" in answer(await batched.complete(request(QUESTIONS[0]), max_tokens=8))


async def test_top_p_zero_is_kept_not_replaced_by_the_default(batched: LlamaCppBackend) -> None:
    # The wire refuses top_p=0 (`gt=0`), so this reaches the batch only from within: the defaults
    # fill in what is unset (None), never what is set falsy.
    greedy = answer(await batched.complete(request(STORY), max_tokens=24))
    for seed in (1, 2, 3):  # only the likeliest token is left to draw, whatever the seed
        nucleus = request(STORY, temperature=1.5, seed=seed).model_copy(update={"top_p": 0.0})
        assert answer(await batched.complete(nucleus, max_tokens=24)) == greedy


async def test_with_no_queue_a_request_still_takes_a_free_sequence() -> None:
    config = EdgeConfig(
        n_threads=2, n_ctx=256, parallel=2, min_tokens_per_s=0, max_queue=0, queue_timeout_s=1
    )
    edge = LlamaCppBackend(config)
    edge.load()
    try:
        story = edge.stream(request(STORY, stream=True), max_tokens=300)
        await first_content(story)
        assert not edge.health().busy  # a sequence is free: a request would not wait
        assert "Paris" in answer(await edge.complete(request(QUESTIONS[0]), max_tokens=8))
        structured = request("Give a JSON object.", response_format={"type": "json_object"})
        assert not edge._batchable(structured)  # the one-at-a-time path pauses the batch, not waits
        assert (await edge.complete(structured, max_tokens=8)).choices[0].message.content is not None
        other = edge.stream(request(STORY, stream=True), max_tokens=300)
        await first_content(other)
        assert edge.health().busy  # both taken: the next would wait, and none may
        with pytest.raises(EdgeBusy):
            await edge.complete(request(QUESTIONS[0]), max_tokens=8)
        await story.aclose()
        await other.aclose()
        assert not edge.health().busy
    finally:
        await edge.aclose()


async def test_a_dead_batch_worker_fails_its_requests_and_the_next_ones_go_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = EdgeConfig(
        n_threads=2, n_ctx=256, parallel=2, min_tokens_per_s=0, max_queue=2, queue_timeout_s=30
    )
    edge = LlamaCppBackend(config)
    edge.load()
    decoder = edge._batch
    assert decoder is not None
    try:
        stories = [edge.stream(request(STORY, stream=True), max_tokens=300) for _ in range(2)]
        for story in stories:
            await first_content(story)
        waiter = asyncio.create_task(edge.complete(request(QUESTIONS[0]), max_tokens=8))
        await wait_for(lambda: decoder.waiting == 1, "the third request did not wait")

        def fail(*args: Any) -> None:
            raise RuntimeError("injected fault")

        # A step fails, and so does ending its sequences: the worker thread itself ends.
        monkeypatch.setattr(decoder, "_end", fail)
        monkeypatch.setattr(decoder, "_step", fail)
        for story in stories:
            with pytest.raises(EdgeBackendError, match="injected fault"):
                await asyncio.wait_for(text_of(story), timeout=5)
        with pytest.raises(EdgeBackendError, match="injected fault"):
            await asyncio.wait_for(waiter, timeout=5)
        # The batch context cannot be trusted after an unknown failure: later requests take the
        # one-at-a-time path on the model's own context, and the edge stays available.
        later = await asyncio.wait_for(edge.complete(request(QUESTIONS[0]), max_tokens=8), timeout=30)
        assert "Paris" in answer(later)
        assert edge.queue_depth == 0
        health = edge.health()
        assert health.available and "injected fault" in health.detail
    finally:
        await asyncio.wait_for(edge.aclose(), timeout=10)


async def test_a_request_that_finds_the_batch_paused_waits_no_longer_than_the_queue_timeout() -> None:
    # A free sequence, but a one-at-a-time request holds the model (a long JSON answer, say): the new
    # request waits for its turn as a queued one does, and is refused past `queue_timeout_s` (the
    # engine then falls back), rather than waiting out the other answer.
    edge = LlamaCppBackend(
        EdgeConfig(n_threads=2, n_ctx=256, parallel=2, min_tokens_per_s=0, queue_timeout_s=0.5)
    )
    edge.load()
    decoder = edge._batch
    assert decoder is not None
    try:
        hold = decoder.exclusive()
        await asyncio.to_thread(hold.__enter__)
        try:
            with pytest.raises(EdgeBusy, match=r"no turn within 0\.5s"):
                await asyncio.wait_for(edge.complete(request(QUESTIONS[0]), max_tokens=8), timeout=5)
            assert decoder.running == 0 and edge.queue_depth == 0  # its sequence was given back
        finally:
            hold.__exit__(None, None, None)
        assert "Paris" in answer(await edge.complete(request(QUESTIONS[0]), max_tokens=8))
    finally:
        await asyncio.wait_for(edge.aclose(), timeout=10)
