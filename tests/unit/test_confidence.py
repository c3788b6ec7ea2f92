"""router/_confidence.py: an answer's token signals summarised, and the uncalibrated confidence."""

from __future__ import annotations

import math

import pytest

from hyrouter.router import (
    UNCALIBRATED,
    AnswerFeatures,
    ChatBackend,
    ChatCompletionRequest,
    TierConfig,
    TokenSignal,
    answer_confidence,
)
from tests.fakes import FakeBackend, FakeSignal

pytestmark = pytest.mark.anyio


def test_features_summarise_the_tokens_signals() -> None:
    signals = [FakeSignal(-0.1 * i, entropy=float(i), margin=2.0 * i) for i in range(10)]
    features = AnswerFeatures.of(signals)
    assert features is not None
    assert features.tokens == 10
    assert features.mean_logprob == pytest.approx(-0.45)
    assert features.min_logprob == pytest.approx(-0.9)
    assert features.low_logprob == pytest.approx(-0.9)  # the 10% quantile of ten: the lowest
    assert features.mean_entropy == pytest.approx(4.5)
    assert features.mean_margin == pytest.approx(9.0)
    twenty = AnswerFeatures.of([FakeSignal(-0.1 * i) for i in range(20)])
    assert twenty is not None and twenty.low_logprob == pytest.approx(-1.8)  # the second lowest


def test_no_tokens_have_no_features_and_no_confidence() -> None:
    assert AnswerFeatures.of([]) is None
    assert answer_confidence([]) is None


def test_the_uncalibrated_confidence_is_the_geometric_mean_token_probability() -> None:
    assert answer_confidence([FakeSignal(-0.5), FakeSignal(-1.5)]) == pytest.approx(math.exp(-1.0))
    assert answer_confidence([FakeSignal(0.0)]) == 1.0
    assert UNCALIBRATED.name.startswith("uncalibrated")


def test_verification_is_off_by_default_with_documented_settings() -> None:
    verify = TierConfig().verify
    assert not verify.enabled
    assert (verify.min_confidence, verify.max_edge_tokens, verify.stream) == (0.5, 64, "hold")


async def test_a_backend_that_cannot_tell_answers_with_no_signals() -> None:
    backend = FakeBackend("edge", reply="Paris.", logprob=-0.1)
    asked = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    signals: list[TokenSignal] = []
    answer = await ChatBackend.complete_with_signals(backend, asked, max_tokens=4, signals=signals)
    assert answer.choices[0].message.content == "Paris." and signals == []
    chunks = [c async for c in ChatBackend.stream_with_signals(backend, asked, max_tokens=4, signals=signals)]
    assert chunks and signals == []
