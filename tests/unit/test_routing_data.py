"""The routing benchmarks read from shared/data, with RouteLLM's contaminated prompts left out."""

from __future__ import annotations

import pytest

from models.routing_data import load_benchmark


@pytest.mark.parametrize(
    ("name", "items", "excluded", "weak", "strong"),
    [
        ("mmlu", 14037, 5, 0.681, 0.806),
        ("gsm8k", 1307, 12, 0.637, 0.858),
        ("mt-bench", 72, 8, 0.828, 0.921),
    ],
)
def test_benchmarks_match_their_provenance(
    name: str, items: int, excluded: int, weak: float, strong: float
) -> None:
    bench = load_benchmark(name)
    assert (len(bench), bench.excluded) == (items, excluded)
    assert bench.weak.mean() == pytest.approx(weak, abs=0.002)
    assert bench.strong.mean() == pytest.approx(strong, abs=0.002)
    assert len(bench.groups) == items


def test_mt_bench_keeps_both_turns_of_the_conversation() -> None:
    bench = load_benchmark("mt-bench")
    assert all(len(c) == 2 and all(m.role == "user" for m in c) for c in bench.conversations)


def test_unknown_benchmark() -> None:
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("hellaswag")
