"""Training examples: targets in [0, 1], sources named, held-out sources never mixed in."""

from __future__ import annotations

import numpy as np
import pytest

from hyrouter.models.edge_labels import last_number
from hyrouter.models.training_data import TARGETS, all_examples, held_out_for


def test_every_source_gives_targets_in_range_and_gpqa_is_never_used() -> None:
    data = all_examples()
    assert len(data) > 20_000
    for name in TARGETS:
        assert np.all((data.target(name) >= 0) & (data.target(name) <= 1))
    # Escalation can only gain where the weak model falls short.
    assert np.all(data.gain <= data.weak_failure + 1e-12)
    with pytest.raises(ValueError, match="unknown target"):
        data.target("accuracy")
    sources = set(data.sources)
    assert {"routellm:mmlu", "routellm:gsm8k", "routellm:mt-bench", "llmrouter:math"} <= sources
    assert not any("gpqa" in s for s in sources)


def test_held_out_sources_leave_no_item_of_the_benchmark() -> None:
    data = all_examples()
    for benchmark in ("mmlu", "gsm8k", "mt-bench"):
        kept = data.without(held_out_for(benchmark))
        assert f"routellm:{benchmark}" not in set(kept.sources)
        assert len(kept) < len(data) and len(kept.gain) == len(kept.weak_failure) == len(kept)
    assert "llmrouter:agentverse-mgsm" not in set(data.without(held_out_for("gsm8k")).sources)


def test_last_number() -> None:
    assert last_number("so 3 + 4 = 7.\n#### 1,234") == "1234"
    assert last_number("The answer is 18.0 dollars") == "18"
    assert last_number("no digits") is None
