"""Training examples for the estimator: a conversation, its source, and two targets in [0, 1].

- `gain` (target "escalation-gain"): the probability that the strong model is right where the weak
  one is not (for 0/1 tasks), or the strong model's score margin (for judge scores): "escalation
  pays here" taken literally.
- `weak_failure` (target "weak-failure"): how far the weak model falls short: 1 - its score. The
  builds train on this one: on llmrouter's pairs (7-9B vs 49-51B) the gain is zero on most items
  and noisy where not, while where the small models fail is a dense signal, and it transfers better
  to every held-out benchmark (see the README's estimator section for the figures).

Sources:

- `routellm:<benchmark>`: Mixtral-8x7B (weak) vs GPT-4 (strong) on MMLU, GSM8K, MT-Bench;
- `llmrouter:<task>`: the mean over every (7-9B, 49-51B) model pair in llmrouter-9model, on 13 tasks
  (GPQA is never used; the ChatQA models are left out: their scores reflect format, not ability).

Evaluation always holds out the reported benchmark: `held_out_for(benchmark)` says which sources a
model reported on that benchmark may not see (the benchmark itself and tasks built from its items).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from hyrouter.models.routing_data import BENCHMARKS, default_data_dir, load_benchmark
from hyrouter.router import ChatMessage

SMALL_MODELS = ("qwen2.5-7b-instruct", "llama-3.1-8b-instruct", "mistral-7b-instruct-v0.3", "gemma-2-9b-it")
LARGE_MODELS = ("llama-3.1-nemotron-51b-instruct", "llama-3.3-nemotron-super-49b-v1")
NEVER_USED_TASKS = frozenset({"gpqa"})  # its authors ask that items not be published; not in any artefact

# Sources a model evaluated on a benchmark must not have trained on: the benchmark and its derivatives.
_HELD_OUT = {
    "mmlu": {"routellm:mmlu", "llmrouter:mmlu"},
    "gsm8k": {"routellm:gsm8k", "llmrouter:gsm8k", "llmrouter:agentverse-mgsm"},  # MGSM translates GSM8K
    "mt-bench": {"routellm:mt-bench"},
}


#: What the head can learn to predict, with the description the manifest records.
TARGETS = {
    "weak-failure": "1 - the weak models' score (where the small model falls short)",
    "escalation-gain": "P(strong right and weak wrong), or the judge-score margin",
}
DEFAULT_TARGET = "weak-failure"


@dataclass
class TrainingSet:
    """Conversations with both targets in [0, 1] and the source each came from."""

    conversations: list[list[ChatMessage]]
    gain: npt.NDArray[np.float64]
    weak_failure: npt.NDArray[np.float64]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.conversations)

    def target(self, name: str) -> npt.NDArray[np.float64]:
        """The target array called `name` (one of `TARGETS`)."""
        if name not in TARGETS:
            raise ValueError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
        return self.weak_failure if name == "weak-failure" else self.gain

    def without(self, sources: set[str]) -> TrainingSet:
        """The examples whose source is not in `sources`."""
        keep = [i for i, s in enumerate(self.sources) if s not in sources]
        return TrainingSet(
            [self.conversations[i] for i in keep],
            self.gain[keep],
            self.weak_failure[keep],
            [self.sources[i] for i in keep],
        )

    def __add__(self, other: TrainingSet) -> TrainingSet:
        return TrainingSet(
            self.conversations + other.conversations,
            np.concatenate([self.gain, other.gain]),
            np.concatenate([self.weak_failure, other.weak_failure]),
            self.sources + other.sources,
        )


def held_out_for(benchmark: str) -> set[str]:
    """The training sources a model reported on `benchmark` must not see."""
    return set(_HELD_OUT[benchmark])


def training_excludes() -> set[str]:
    """Sources the shipped estimator never trains on: every evaluation benchmark and its derivatives.

    One artefact is then honestly held out for every benchmark `hybrid-router eval` reports.
    """
    return set().union(*(held_out_for(name) for name in BENCHMARKS))


def routellm_examples(data_dir: Path) -> TrainingSet:
    """Every RouteLLM benchmark item as an example: gain = strong beats weak (or the score margin)."""
    total = TrainingSet([], np.zeros(0), np.zeros(0), [])
    for name in BENCHMARKS:
        bench = load_benchmark(name, data_dir)
        if name == "mt-bench":  # judge scores in [0, 1]: the margin, floored at zero
            gain = np.clip(bench.strong - bench.weak, 0.0, 1.0)
        else:
            gain = ((bench.strong == 1) & (bench.weak == 0)).astype(np.float64)
        total += TrainingSet(bench.conversations, gain, 1.0 - bench.weak, [f"routellm:{name}"] * len(bench))
    return total


def llmrouter_examples(data_dir: Path) -> TrainingSet:
    """llmrouter-9model queries: gain = the mean margin of large over small over every (small, large)
    pair; weak failure = 1 - the small models' mean score."""
    conversations, gains, failures, sources = [], [], [], []
    for line in (data_dir / "llmrouter-9model" / "scores.jsonl").read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        row = json.loads(line)
        if row["task_name"] in NEVER_USED_TASKS or (row["in_train_too"] and row["split"] == "test"):
            continue
        scores = row["scores"]
        wins = [
            max(0.0, float(scores[big]) - float(scores[small]))
            for big in LARGE_MODELS
            for small in SMALL_MODELS
        ]
        conversations.append([ChatMessage(role="user", content=row["query"])])
        gains.append(float(np.mean(wins)))
        failures.append(1.0 - float(np.mean([float(scores[small]) for small in SMALL_MODELS])))
        sources.append(f"llmrouter:{row['task_name']}")
    return TrainingSet(conversations, np.array(gains), np.array(failures), sources)


def all_examples(data_dir: Path | None = None) -> TrainingSet:
    """Every training example from every source."""
    data_dir = data_dir or default_data_dir()
    return routellm_examples(data_dir) + llmrouter_examples(data_dir)
