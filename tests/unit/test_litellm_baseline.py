"""LiteLLM's complexity router as an evaluation baseline: its scores, and no network on the way."""

from __future__ import annotations

import importlib
import math
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from hyrouter.models.litellm_baseline import (
    LITELLM_MODULE,
    LiteLLMScorer,
    _newest_user_ask,
    litellm_complexity_scorer,
)
from hyrouter.router import ChatMessage

EASY = [ChatMessage(role="user", content="hi, what's the capital of France?")]
PROOF = [
    ChatMessage(
        role="user",
        content="Prove that there are infinitely many primes. Think step by step and explain your reasoning "
        "for each step of the proof.",
    )
]
CODE = [
    ChatMessage(
        role="user",
        content="First write a Python function that implements a thread-safe LRU cache, then refactor it to "
        "async, add unit tests for the API, debug the race condition in the database query and optimize "
        "the algorithm; explain its time complexity step by step.",
    )
]


def _block_network(mp: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Make every outbound connection and name lookup fail; the attempts, even if caught, are listed."""
    attempts: list[tuple[Any, ...]] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise AssertionError(f"network I/O attempted: {args!r}")

    for name in ("connect", "connect_ex"):
        mp.setattr(socket.socket, name, refuse)
    for name in ("getaddrinfo", "create_connection"):
        mp.setattr(socket, name, refuse)
    return attempts


@pytest.fixture(scope="module")
def scorer() -> LiteLLMScorer:
    """The default-key scorer, built (and litellm first imported) with the network blocked."""
    with pytest.MonkeyPatch.context() as mp:
        attempts = _block_network(mp)
        made = litellm_complexity_scorer()
    assert made is not None
    # Without LITELLM_LOCAL_MODEL_COST_MAP, `import litellm` fetches the cost map from GitHub.
    assert attempts == []
    return made


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Block the network for one test, and fail it on any attempt."""
    attempts = _block_network(monkeypatch)
    yield
    assert attempts == []


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("hard", [PROOF, CODE], ids=["proof", "code"])
def test_a_complex_request_scores_above_a_trivial_one(scorer: LiteLLMScorer, hard: list[ChatMessage]) -> None:
    assert scorer(hard) > scorer(EASY)


@pytest.mark.usefixtures("no_network")
def test_scores_are_finite_floats_for_both_keys(scorer: LiteLLMScorer) -> None:
    raw = litellm_complexity_scorer(key="score")
    assert raw is not None
    for conversation in (EASY, PROOF, CODE, [ChatMessage(role="user", content="")]):
        for score in (scorer(conversation), raw(conversation)):
            assert isinstance(score, float) and math.isfinite(score)
    # The tier key places a conversation inside its tier's unit interval: SIMPLE is [0, 1).
    assert 0.0 <= scorer(EASY) < 1.0
    assert raw(CODE) > raw(EASY)


@pytest.mark.usefixtures("no_network")
def test_multi_message_conversations_are_scored_on_the_newest_user_ask(scorer: LiteLLMScorer) -> None:
    conversation = [
        ChatMessage(role="system", content="You are a helpful assistant."),
        *EASY,
        ChatMessage(role="assistant", content="Paris."),
        *PROOF,
    ]
    assert scorer(conversation) == scorer(PROOF)
    assert scorer([*PROOF, ChatMessage(role="assistant", content="Sure."), *EASY]) == scorer(EASY)
    # A conversation with no user ask still gets a finite score.
    assert math.isfinite(scorer([ChatMessage(role="system", content="Be brief.")]))


@pytest.mark.usefixtures("scorer")
def test_the_fallback_ask_extraction_agrees_with_litellms() -> None:
    module = importlib.import_module(LITELLM_MODULE)
    for conversation in (
        EASY,
        [*PROOF, ChatMessage(role="assistant", content="Sure."), *EASY],
        [
            ChatMessage(role="system", content="Be brief."),
            *CODE,
            ChatMessage(role="user", content="  "),
        ],
        [ChatMessage(role="system", content="Be brief.")],
    ):
        plain = [m.to_plain() for m in conversation]
        assert _newest_user_ask(plain) == module._extract_current_ask_and_system_prompt(plain)


def test_without_litellm_there_is_no_scorer(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, LITELLM_MODULE, None)
    assert litellm_complexity_scorer() is None
