"""The routing benchmarks read from shared/data, with RouteLLM's contaminated prompts left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyrouter.models import routing_data
from hyrouter.models.routing_data import load_benchmark
from hyrouter.router import ConfigError


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


def test_an_installed_package_has_no_default_data_dir_and_says_how_to_set_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Installed, the module lies in site-packages, where no `shared/data` lies two folders up.
    installed = tmp_path / "site-packages" / "models" / "routing_data.py"
    monkeypatch.setattr(routing_data, "__file__", str(installed))
    monkeypatch.delenv("HYBRID_ROUTER_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match="set HYBRID_ROUTER_DATA_DIR"):
        routing_data.default_data_dir()
    monkeypatch.setenv("HYBRID_ROUTER_DATA_DIR", str(tmp_path))
    assert routing_data.default_data_dir() == tmp_path


@pytest.mark.parametrize("name", ["mmlu", "gsm8k-edge"])
def test_a_data_folder_without_the_files_is_a_config_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=f"^benchmark {name}: no file .*HYBRID_ROUTER_DATA_DIR"):
        load_benchmark(name, tmp_path)
