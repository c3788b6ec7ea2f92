"""LlamaCppBackend.count_tokens renders the configured chat format, not always ChatML (a fake tokenizer)."""

from __future__ import annotations

from typing import Any

from llama_cpp import llama_chat_format

from hyrouter.edge.llama_cpp_backend import LlamaCppBackend, render_chatml
from hyrouter.router._backend import approximate_tokens
from hyrouter.router._config import EdgeConfig
from hyrouter.router._wire import ChatMessage

MESSAGES = [
    ChatMessage(role="user", content="What is the capital of France?"),
    ChatMessage(role="assistant", content="Paris."),
    ChatMessage(role="user", content="And of Spain?"),
]
PLAIN: list[Any] = [m.to_plain() for m in MESSAGES]


class ByteTokenizer:
    """A `Llama` whose tokens are the prompt's bytes, plus one BOS token when asked for it."""

    chat_handler = None

    def __init__(self, chat_format: str) -> None:
        self.chat_format = chat_format
        self._chat_handlers: dict[str, Any] = {}
        self.generated = False

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        return [1] * add_bos + list(text)

    def create_completion(self, *args: Any, **kwargs: Any) -> Any:
        self.generated = True
        raise AssertionError("counting tokens must not generate")


def loaded(chat_format: str) -> tuple[LlamaCppBackend, ByteTokenizer]:
    backend = LlamaCppBackend(EdgeConfig(chat_format=chat_format))
    llm = ByteTokenizer(chat_format)
    backend._llm = llm  # type: ignore[assignment]
    return backend, llm


def test_a_non_chatml_format_is_counted_in_that_format() -> None:
    backend, llm = loaded("gemma")
    gemma = llama_chat_format.format_gemma(messages=PLAIN).prompt.encode("utf-8")
    chatml = render_chatml(PLAIN).encode("utf-8")
    assert len(gemma) != len(chatml)
    # The gemma prompt's bytes plus BOS: what Llama.create_chat_completion tokenizes for this format.
    assert backend.count_tokens(MESSAGES) == len(gemma) + 1
    assert not llm.generated


def test_chatml_keeps_its_own_rendering_without_bos() -> None:
    backend, _ = loaded("chatml")
    assert backend.count_tokens(MESSAGES) == len(render_chatml(PLAIN).encode("utf-8"))


def test_a_format_that_cannot_count_falls_back_to_the_estimate() -> None:
    backend, _ = loaded("no-such-format")

    assert backend.count_tokens(MESSAGES) == approximate_tokens(MESSAGES)


class CountingTokenizer(ByteTokenizer):
    """A `ByteTokenizer` that records the length of every text it is handed."""

    def __init__(self, chat_format: str) -> None:
        super().__init__(chat_format)
        self.texts: list[int] = []

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        self.texts.append(len(text))
        return super().tokenize(text, add_bos, special)


def test_chatml_is_counted_turn_by_turn_in_linear_time() -> None:
    # llama.cpp's tokenizer splits a text at its special tokens in time that grows with the square of
    # their number: the count must never hand it a whole long conversation at once.
    backend = LlamaCppBackend(EdgeConfig(chat_format="chatml"))
    llm = CountingTokenizer("chatml")
    backend._llm = llm  # type: ignore[assignment]
    many = [ChatMessage(role="user" if i % 2 else "assistant", content=f"turn {i}") for i in range(1000)]
    plain: list[Any] = [m.to_plain() for m in many]

    assert backend.count_tokens(many) == len(render_chatml(plain).encode("utf-8"))
    assert max(llm.texts) < 64  # one turn at a time, never the whole prompt
