"""Stop strings over text that arrives a token at a time (`hyrouter.edge._stop_strings`)."""

from __future__ import annotations

from hyrouter.edge._stop_strings import StopText


def feed(stop: StopText, *pieces: bytes) -> list[str]:
    return [stop.push(piece) for piece in pieces]


def test_text_without_stop_strings_passes_through() -> None:
    stop = StopText([])
    assert feed(stop, b"Hello", b" world") == ["Hello", " world"]
    assert stop.flush() == "" and not stop.stopped


def test_the_answer_ends_before_a_stop_string_split_over_tokens() -> None:
    stop = StopText(["END"])
    assert feed(stop, b"one E", b"N", b"D two") == ["one ", "", ""]
    assert stop.stopped
    assert stop.push(b"more") == "" and stop.flush() == ""


def test_text_held_back_is_sent_once_it_is_not_a_stop_string() -> None:
    stop = StopText(["END"])
    assert feed(stop, b"E", b"N", b"x") == ["", "", "ENx"]
    assert stop.push(b"the E") == "the "
    assert stop.flush() == "E"  # the answer ended: what was held back is part of it


def test_the_earliest_of_several_stop_strings_wins() -> None:
    stop = StopText(["world", "lo w", ""])
    assert stop.push(b"hello world") == "hel"


def test_a_character_split_over_tokens_is_sent_whole() -> None:
    stop = StopText([])
    euro = "€".encode()
    assert feed(stop, euro[:1], euro[1:], b"!") == ["", "€", "!"]
    assert StopText([]).push(b"\xff ok") == " ok"  # invalid bytes dropped, as llama-cpp-python does
