"""Routing benchmarks: prompts with a weak and a strong model's outcome on each.

Reads the RouteLLM Mixtral-8x7B / GPT-4 pair from `shared/data/routellm-mixtral-gpt4/` (MMLU and
GSM8K as 0/1 correctness, MT-Bench as GPT-4 judge scores averaged over both turns), leaving out the
prompts RouteLLM found contaminated in its own training data.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from router import ChatMessage

ENV_DATA_DIR = "HYBRID_ROUTER_DATA_DIR"
WEAK_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_MODEL = "gpt-4-1106-preview"
BENCHMARKS = ("mmlu", "gsm8k", "mt-bench")


@dataclass
class RoutingBenchmark:
    """One benchmark for one (weak, strong) pair: a conversation and both outcomes per item."""

    name: str
    pair: str
    conversations: list[list[ChatMessage]]
    weak: npt.NDArray[np.float64]
    strong: npt.NDArray[np.float64]
    groups: list[str] = field(default_factory=list)  # subject / category per item, for split by source
    excluded: int = 0  # contaminated prompts left out

    def __len__(self) -> int:
        return len(self.conversations)


def default_data_dir() -> Path:
    """`$HYBRID_ROUTER_DATA_DIR`, else the `shared/data` folder beside the checkout."""
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR])
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def _user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def _contaminated(data_dir: Path, name: str) -> list[dict[str, object]]:
    path = data_dir / "routellm-mixtral-gpt4" / "contaminated_prompts" / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def load_mmlu(data_dir: Path) -> RoutingBenchmark:
    """MMLU test (14,042 prompts, 57 subjects): Mixtral vs GPT-4 correctness."""
    path = data_dir / "routellm-mixtral-gpt4" / "mmlu_correctness.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # RouteLLM's eval_idx follows its own file order, not this one: match on the prompt text.
    bad = {str(c["eval_prompt"]).strip() for c in _contaminated(data_dir, "mmlu")}
    kept = [r for r in rows if r["prompt"].strip() not in bad]
    return RoutingBenchmark(
        name="mmlu",
        pair="mixtral-8x7b/gpt-4",
        conversations=[_user(r["prompt"]) for r in kept],
        weak=np.array([r["mixtral_8x7b_correct"] == "True" for r in kept], dtype=np.float64),
        strong=np.array([r["gpt4_1106_correct"] == "True" for r in kept], dtype=np.float64),
        groups=[r["subject"] for r in kept],
        excluded=len(rows) - len(kept),
    )


def load_gsm8k(data_dir: Path) -> RoutingBenchmark:
    """GSM8K test (1,319 prompts): Mixtral vs GPT-4 correctness."""
    path = data_dir / "routellm-mixtral-gpt4" / "gsm8k_responses.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    bad = {int(str(c["eval_idx"])) for c in _contaminated(data_dir, "gsm8k")}
    kept = [r for i, r in enumerate(rows) if i not in bad]
    return RoutingBenchmark(
        name="gsm8k",
        pair="mixtral-8x7b/gpt-4",
        conversations=[_user(r["prompt"]) for r in kept],
        weak=np.array([r[WEAK_MODEL] == "True" for r in kept], dtype=np.float64),
        strong=np.array([r[STRONG_MODEL] == "True" for r in kept], dtype=np.float64),
        groups=["gsm8k"] * len(kept),
        excluded=len(rows) - len(kept),
    )


def load_mt_bench(data_dir: Path) -> RoutingBenchmark:
    """MT-Bench (80 two-turn questions): GPT-4 judge scores (1-10) averaged over turns, scaled to [0, 1]."""
    questions = [
        json.loads(line)
        for line in (data_dir / "mt-bench" / "question.jsonl").read_text(encoding="utf-8").split("\n")
        if line
    ]
    scores: defaultdict[tuple[int, str], list[float]] = defaultdict(list)
    path = data_dir / "routellm-mixtral-gpt4" / "mt_bench_judgements.jsonl"
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            j = json.loads(line)
            scores[(int(j["question_id"]), j["model"])].append(float(j["score"]))
    bad = {int(str(c["eval_idx"])) for c in _contaminated(data_dir, "mt_bench")}
    kept = [q for i, q in enumerate(questions) if i not in bad]

    def mean_score(qid: int, model: str) -> float:
        return float(np.mean(scores[(qid, model)])) / 10.0

    return RoutingBenchmark(
        name="mt-bench",
        pair="mixtral-8x7b/gpt-4",
        # The router sees the conversation: both user turns, as a multi-turn request would carry them.
        conversations=[[ChatMessage(role="user", content=t) for t in q["turns"]] for q in kept],
        weak=np.array([mean_score(q["question_id"], WEAK_MODEL) for q in kept]),
        strong=np.array([mean_score(q["question_id"], STRONG_MODEL) for q in kept]),
        groups=[q["category"] for q in kept],
        excluded=len(questions) - len(kept),
    )


LOADERS = {"mmlu": load_mmlu, "gsm8k": load_gsm8k, "mt-bench": load_mt_bench}


def load_benchmark(name: str, data_dir: Path | None = None) -> RoutingBenchmark:
    """Load benchmark `name` (one of `BENCHMARKS`) from `data_dir` (default: shared/data)."""
    if name not in LOADERS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return LOADERS[name](data_dir or default_data_dir())
