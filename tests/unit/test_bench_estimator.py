"""The estimator-latency bench builds prompts of exactly the requested token count (no timings here)."""

from __future__ import annotations

import pytest

from bench.estimator_latency import build_prompt, count_tokens, manifest_entry, untruncated_tokenizer, user
from hyrouter.models.artefacts import ARTEFACTS_DIR
from hyrouter.router._onnx_estimator import OnnxEstimator

PASSAGES = [
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
    "for her friends every day with four. How much in dollars does she make every day at the market?",
    "Compose an engaging travel blog post about a recent trip to Hawaii, highlighting cultural "
    "experiences and must-see attractions.",
    "Implement a function to find the median of two sorted arrays of different sizes with O(1) space "
    "complexity and O(n) time complexity.",
]


@pytest.fixture(scope="module")
def tokenizer() -> object:
    return untruncated_tokenizer(manifest_entry())


@pytest.mark.parametrize("n_tokens", [3, 8, 32, 33, 128, 512])
def test_prompt_has_exactly_the_requested_tokens(tokenizer: object, n_tokens: int) -> None:
    for start in range(len(PASSAGES)):
        text = build_prompt(tokenizer, PASSAGES, n_tokens, start)
        assert count_tokens(tokenizer, text) == n_tokens
        assert PASSAGES[start].startswith(text[:10])


def test_too_short_a_prompt_is_refused(tokenizer: object) -> None:
    with pytest.raises(ValueError):
        build_prompt(tokenizer, PASSAGES, 2)
    with pytest.raises(ValueError):
        build_prompt(tokenizer, [], 32)


def test_the_shipped_estimator_scores_at_most_its_max_tokens(tokenizer: object) -> None:
    entry = manifest_entry()
    estimator = OnnxEstimator(ARTEFACTS_DIR, entry)
    longer = OnnxEstimator(ARTEFACTS_DIR, {**entry, "max_tokens": 1024})
    messages = user(build_prompt(tokenizer, PASSAGES, 512))
    assert len(estimator.token_ids(messages)) == estimator.max_tokens == entry["max_tokens"]
    assert len(longer.token_ids(messages)) == 512
