"""edge/_token_signals.py: the log-probabilities read from the logits as llama.cpp samples (no model)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from hyrouter.edge import _token_signals
from hyrouter.edge._token_signals import TokenLogprob, TokenSignals, openai_logprobs


def token(piece: bytes, logprob: float = -0.5) -> TokenLogprob:
    return TokenLogprob(
        token=1, piece=piece, logprob=logprob, entropy=0.1, margin=1.0, top=((1, piece, logprob),)
    )


def test_the_processor_reads_the_logits_and_changes_nothing() -> None:
    signals = TokenSignals(top=2)
    scores = np.array([2.0, 1.0, 0.0, -1.0], dtype=np.float32)
    assert signals.processor(None, scores) is scores
    assert list(scores) == [2.0, 1.0, 0.0, -1.0]
    logp, top, entropy = signals._step  # type: ignore[misc]
    p = np.exp([2.0, 1.0, 0.0, -1.0]) / np.exp([2.0, 1.0, 0.0, -1.0]).sum()
    assert np.allclose(np.exp(logp), p) and list(top) == [0, 1]
    assert math.isclose(entropy, float(-(p * np.log(p)).sum()), rel_tol=1e-6)  # float32 logits


class FakeLlama:
    """What `TokenSignals.recording` asks of a `Llama`: `sample` and `detokenize`."""

    def __init__(self, draws: list[int]) -> None:
        self.draws = draws

    def sample(self, **kwargs: Any) -> int:
        return self.draws.pop(0)

    def detokenize(self, tokens: list[int]) -> bytes:
        return b"<%d>" % tokens[0]


def test_recording_keeps_each_drawn_token_with_its_step_and_restores_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_token_signals, "_end_of_generation", lambda llm, t: t == 9)
    llm = FakeLlama([1, 0, 9])
    signals = TokenSignals(top=2)
    with signals.recording(llm):  # type: ignore[arg-type]
        for _ in range(3):
            signals.processor(None, np.array([0.0, 1.0, -1.0], dtype=np.float32))
            llm.sample()
    assert [t.token for t in signals.tokens] == [1, 0]  # the end of sequence is not part of the answer
    first = signals.tokens[0]
    assert first.piece == b"<1>" and first.top[0][0] == 1 and math.isclose(first.margin, 1.0, rel_tol=1e-6)
    assert llm.sample.__func__ is FakeLlama.sample  # type: ignore[attr-defined]


def test_covering_leaves_out_the_tokens_of_a_stop_string() -> None:
    signals = TokenSignals()
    signals.tokens.extend([token(b"Par"), token(b"is"), token(b".")])
    assert [t.piece for t in signals.covering("Paris")] == [b"Par", b"is"]


def test_take_hands_out_tokens_in_step_with_the_streamed_text_across_a_split_character() -> None:
    signals = TokenSignals()
    euro = "€".encode()  # three bytes, drawn as two tokens
    signals.tokens.extend([token(b"5 "), token(euro[:1]), token(euro[1:]), token(b"!")])
    assert [t.piece for t in signals.take("5 ")] == [b"5 "]
    assert [t.piece for t in signals.take("€")] == [euro[:1], euro[1:]]
    assert [t.piece for t in signals.take("!")] == [b"!"]


def test_openai_shape() -> None:
    shaped = openai_logprobs([token(b"Hi", -0.25)], top_logprobs=1)
    assert shaped == {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.25,
                "bytes": [72, 105],
                "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}],
            }
        ],
        "refusal": None,
    }


@pytest.mark.parametrize("top", [2, 5])
def test_step_signals_match_a_float64_log_softmax(top: int) -> None:
    import math

    import numpy as np

    from hyrouter.edge._token_signals import step_signals

    rng = np.random.default_rng(3)
    scores = (rng.normal(size=4096) * 4).astype(np.float32)
    before = scores.copy()
    logp, ids, entropy = step_signals(scores, top)
    exact = scores.astype(np.float64) - scores.max()
    exact -= math.log(float(np.exp(exact).sum()))
    assert np.abs(logp - exact).max() < 1e-4
    assert list(ids) == list(np.argsort(-exact)[:top])
    assert entropy == pytest.approx(float(-(np.exp(exact) * exact).sum()), rel=1e-4)
    assert np.array_equal(scores, before)  # the sampler's logits are left as they were
