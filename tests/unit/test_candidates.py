"""The estimator comparison's pure helpers: pooling, the numpy head, latency and quality-per-ms arithmetic.

Runs without torch or optimum (the module imports them only inside the functions that build).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from hyrouter.models.candidates import (
    DEFAULT_JSON,
    LATENCY_TOKENS,
    add_compare_command,
    choose_stride,
    latency_summary,
    machine_info,
    pick_winner,
    quality_per_ms,
    stratified_every,
    text_of_tokens,
)
from hyrouter.models.minilm_candidate import linear_head_scores, mean_pooled_features
from hyrouter.models.student_estimator import LENGTH_SCALE, MAX_TOKENS, pooled_features


def test_the_module_imports_without_torch() -> None:
    assert "torch" not in sys.modules and "optimum" not in sys.modules


def test_mean_pooling_is_normalised_and_matches_the_students_features() -> None:
    hidden = np.array([[[3.0, 0.0], [1.0, 2.0]]], dtype=np.float32)  # [1, n=2, d=2]
    row = mean_pooled_features(hidden)
    assert row.shape == (3,)
    np.testing.assert_allclose(row[:2], np.array([2.0, 1.0]) / math.sqrt(5), rtol=1e-6)
    assert row[2] == pytest.approx(math.log1p(2) / LENGTH_SCALE)
    # The same as the static student's features when each token's "output" is its table row.
    table = np.array([[3.0, 0.0], [1.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(row, pooled_features(table, [[0, 1]])[0], rtol=1e-6)
    assert not mean_pooled_features(np.zeros((0, 4), dtype=np.float32)).any()


def test_the_numpy_head_is_a_logistic_regression() -> None:
    features = np.array([[0.0, 0.0], [1.0, -1.0]], dtype=np.float32)
    scores = linear_head_scores(features, np.array([2.0, 1.0], dtype=np.float32), 0.5)
    np.testing.assert_allclose(scores, [1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(-1.5))])
    assert float(
        linear_head_scores(features[1], np.array([2.0, 1.0], dtype=np.float32), 0.5)
    ) == pytest.approx(scores[1])


def test_quality_per_ms_is_the_gain_over_random_per_millisecond() -> None:
    assert quality_per_ms([0.55, 0.60, 0.65], 2.0) == pytest.approx(0.05)
    assert quality_per_ms([0.5, 0.5], 0.1) == 0.0
    assert quality_per_ms([0.4], 1.0) < 0  # worse than random costs quality
    with pytest.raises(ValueError):
        quality_per_ms([0.6], 0.0)
    candidates = {"slow": {"quality_per_ms": 0.01}, "fast": {"quality_per_ms": 0.2}}
    assert pick_winner(candidates) == "fast"


def test_latency_summary() -> None:
    summary = latency_summary([float(i) for i in range(1, 102)])
    assert summary["p50_ms"] == 51.0 and summary["p99_ms"] == 100.0 and summary["calls"] == 101
    with pytest.raises(ValueError):
        latency_summary([])


def test_stratified_subsample_keeps_each_groups_share() -> None:
    groups = ["a"] * 8 + ["b"] * 4 + ["a"] * 4
    keep = stratified_every(groups, 4)
    assert keep == [0, 4, 8, 12]  # a: ranks 0, 4, 8 (item 12); b: rank 0 (item 8)
    assert [groups[i] for i in keep].count("a") == 3
    assert stratified_every(groups, 1) == list(range(len(groups)))
    with pytest.raises(ValueError):
        stratified_every(groups, 0)


def test_stride_is_the_smallest_that_fits_the_budget() -> None:
    assert choose_stride(100.0, 400.0) == 1
    assert choose_stride(1000.0, 300.0) == 4
    assert choose_stride(1e9, 1.0) == 16


def test_latency_texts_have_the_asked_token_counts() -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from tokenizers.processors import TemplateProcessing

    vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, **{f"w{i}": i + 3 for i in range(10)}}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]
    )
    tokenizer.enable_truncation(max_length=12)
    source = " ".join(f"w{i % 10}" for i in range(40))
    for n in (4, 7):
        assert len(tokenizer.encode(text_of_tokens(tokenizer, source, n)).ids) == n
    assert len(tokenizer.encode(text_of_tokens(tokenizer, source, 12)).ids) == 12
    with pytest.raises(ValueError):
        text_of_tokens(tokenizer, "w1 w2", 8)


def test_the_command_and_the_result_file() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_compare_command(parser.add_subparsers(dest="models_command"))
    args = parser.parse_args(["compare", "--json", "out.json", "--mmlu-stride", "4"])
    assert args.json == Path("out.json") and args.mmlu_stride == 4 and callable(args.func)
    assert DEFAULT_JSON.parts[-3:] == ("bench", "results", "estimator_candidates.json")
    assert max(LATENCY_TOKENS) == MAX_TOKENS
    machine = machine_info()
    assert {"processor", "nproc", "versions"} <= set(machine)
    assert "onnxruntime" in machine["versions"] and "torch" in machine["versions"]
    json.dumps(machine)


def test_the_written_result_has_both_candidates() -> None:
    assert DEFAULT_JSON.exists(), "bench/results/estimator_candidates.json is committed"
    result = json.loads(DEFAULT_JSON.read_text(encoding="utf-8"))
    assert result["winner"] in result["candidates"]
    for candidate in result["candidates"].values():
        assert set(candidate["metrics"]) == {"mmlu", "gsm8k", "mt-bench"}
        assert {str(n) for n in LATENCY_TOKENS} <= set(candidate["latency"])
        assert candidate["size_bytes"]["model_int8"] > 0 and candidate["load_ms"] > 0
        apgrs = [m["apgr"] for m in candidate["metrics"].values()]
        expected = quality_per_ms(apgrs, candidate["latency"]["128"]["p50_ms"])
        assert candidate["quality_per_ms"] == pytest.approx(expected, abs=1e-5)


def test_candidates_does_not_import_the_build() -> None:
    # build registers `models compare` from candidates; the reverse import made a cycle.
    import ast
    from pathlib import Path

    tree = ast.parse(Path(__file__).parents[2].joinpath("models", "candidates.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "hyrouter.models.build" not in imported
