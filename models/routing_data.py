"""Routing benchmarks: prompts with a weak and a strong model's outcome on each.

Two (weak, strong) pairs, both leaving out the prompts RouteLLM found contaminated in its own
training data:

- `BENCHMARKS` (`mmlu`, `gsm8k`, `mt-bench`): the RouteLLM Mixtral-8x7B / GPT-4 pair from
  `shared/data/routellm-mixtral-gpt4/` (MMLU and GSM8K as 0/1 correctness, MT-Bench as GPT-4 judge
  scores averaged over both turns);
- `EDGE_BENCHMARKS`: our own small models vs GPT-4's recorded correctness on the same items, with
  the small model's outcomes from `hybrid-router labels` (in `models/data/edge-labels/`):
  SmolLM2-135M, the edge model (`mmlu-edge`, `gsm8k-edge`), and Gemma-3-270M, the second small model
  (`mmlu-gemma`, `gsm8k-gemma`). Only the labelled items are in them; with no labels yet they raise
  `MissingLabelsError`.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hyrouter.models.settings import DataSettings
from hyrouter.router import ChatMessage, ConfigError

WEAK_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_MODEL = "gpt-4-1106-preview"
BENCHMARKS = ("mmlu", "gsm8k", "mt-bench")  # the Mixtral-8x7B / GPT-4 pair (training data uses these)
MIXTRAL_PAIR = "mixtral-8x7b/gpt-4"
EDGE_LABELS_DIR = Path(__file__).with_name("data") / "edge-labels"


@dataclass(frozen=True)
class EdgeModel:
    """A small model we label ourselves: where its labels live and the pair it makes with GPT-4."""

    key: str  # `hybrid-router labels --model KEY`
    label_dir: str  # folder under `EDGE_LABELS_DIR`
    pair: str
    chat_format: str | None  # llama-cpp-python's chat format for generated answers; None: a base model


SMOLLM2 = EdgeModel("smollm2-135m", "smollm2-135m-instruct-q4_1", "smollm2-135m/gpt-4", "chatml")
# A base model: GSM8K answers come from a few-shot prompt, not a chat turn it was never tuned for.
GEMMA3 = EdgeModel("gemma-3-270m", "gemma-3-270m-q4_k_m", "gemma-3-270m/gpt-4", None)
EDGE_MODELS = {m.key: m for m in (SMOLLM2, GEMMA3)}
EDGE_PAIR = SMOLLM2.pair
EDGE_MODEL_NAME = SMOLLM2.label_dir
# benchmark name -> (task, small model), on the items labelled so far
EDGE_BENCHMARK_MODELS = {
    "mmlu-edge": ("mmlu", SMOLLM2),
    "gsm8k-edge": ("gsm8k", SMOLLM2),
    "mmlu-gemma": ("mmlu", GEMMA3),
    "gsm8k-gemma": ("gsm8k", GEMMA3),
}
EDGE_BENCHMARKS = tuple(EDGE_BENCHMARK_MODELS)
ALL_BENCHMARKS = BENCHMARKS + EDGE_BENCHMARKS
# Edge labels whose item cannot be found in RouteLLM's files, beyond this share, mean the files disagree.
MIN_MATCH_RATE = 0.99


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
    unmatched: int = 0  # edge labels with no item in the strong model's file (edge pair only)

    def __len__(self) -> int:
        return len(self.conversations)


DATA_HINT = "set HYBRID_ROUTER_DATA_DIR (or pass --data-dir) to the routing data folder"


def default_data_dir(settings: DataSettings | None = None) -> Path:
    """`$HYBRID_ROUTER_DATA_DIR`, else the `shared/data` folder beside the checkout.

    Raises:
        ConfigError: neither: the package is installed (not a checkout), and the data sets (hundreds
        of MB, under their own licences) are not part of it.
    """
    data_dir = (settings or DataSettings.from_env()).data_dir
    if data_dir:
        return Path(data_dir)
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "pyproject.toml").is_file():  # site-packages has no pyproject.toml
        raise ConfigError(f"the routing data sets are not installed with the package: {DATA_HINT}")
    return checkout.parent / "shared" / "data"


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
        pair=MIXTRAL_PAIR,
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
        pair=MIXTRAL_PAIR,
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
        pair=MIXTRAL_PAIR,
        # The router sees the conversation: both user turns, as a multi-turn request would carry them.
        conversations=[[ChatMessage(role="user", content=t) for t in q["turns"]] for q in kept],
        weak=np.array([mean_score(q["question_id"], WEAK_MODEL) for q in kept]),
        strong=np.array([mean_score(q["question_id"], STRONG_MODEL) for q in kept]),
        groups=[q["category"] for q in kept],
        excluded=len(questions) - len(kept),
    )


class MissingLabelsError(ConfigError):
    """An edge benchmark with no labels yet: run `hybrid-router labels` first.

    A `ConfigError`, so the CLI reports it as one line and exit status 2.
    """


def _normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def read_edge_labels(path: Path) -> list[dict[str, Any]]:
    """The label lines of `path`, first per `idx`; a last line cut short (no newline, bad JSON) is skipped."""
    if not path.exists():
        raise MissingLabelsError(f"no edge labels at {path}: run `hybrid-router labels` first")
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    labels: dict[int, dict[str, Any]] = {}
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines) - 1:  # a labelling run still writing, or killed mid-line
                continue
            raise ValueError(f"{path}:{n + 1}: not a JSON line") from None
        labels.setdefault(int(row["idx"]), row)
    if not labels:
        raise MissingLabelsError(f"no edge labels in {path}: run `hybrid-router labels` first")
    return list(labels.values())


def _match(
    labels: list[dict[str, Any]],
    source: list[tuple[str, str]],
    target: list[tuple[str, str]],
    *,
    what: str,
) -> list[tuple[dict[str, Any], int]]:
    """Each label with the row of the strong model's file that holds the same item.

    `source[idx]` is the labelled item as (group, question text) from the file the labeller read, and
    `target[i]` the strong model's row `i` as (group, prompt). A row matches an item when the groups
    agree and the prompt starts with the question (whitespace normalised). The row at the same
    position is taken when it matches (the files share an order); otherwise the matching rows in file
    order, the k-th for the k-th item with that question (a question can appear twice in MMLU).
    Raises `ValueError` if fewer than `MIN_MATCH_RATE` of the labels find their row.
    """
    norm_source = [(key, _normalized(text)) for key, text in source]
    norm_target = [(key, _normalized(text)) for key, text in target]

    def matches(i: int, key: str, text: str) -> bool:
        return norm_target[i][0] == key and norm_target[i][1].startswith(text)

    matched: list[tuple[dict[str, Any], int]] = []
    for label in labels:
        idx = int(label["idx"])
        if not 0 <= idx < len(source):
            continue
        key, text = norm_source[idx]
        if label.get("subject", key) != key:  # the labels were made from another data file
            continue
        if idx < len(target) and matches(idx, key, text):
            matched.append((label, idx))
            continue
        found = [i for i in range(len(target)) if matches(i, key, text)]
        twins = [j for j, item in enumerate(norm_source) if item == (key, text)]
        if len(found) == len(twins):
            matched.append((label, found[twins.index(idx)]))
        elif len(found) == 1:
            matched.append((label, found[0]))
    rate = len(matched) / len(labels)
    if rate < MIN_MATCH_RATE:
        raise ValueError(
            f"{what}: only {len(matched)} of {len(labels)} edge labels ({rate:.1%}) match an item of the "
            f"strong model's file; the label and data files disagree"
        )
    return matched


def load_mmlu_edge(
    data_dir: Path, labels_dir: Path = EDGE_LABELS_DIR, model: EdgeModel = SMOLLM2, name: str = "mmlu-edge"
) -> RoutingBenchmark:
    """MMLU items labelled for a small model (acc_norm) vs GPT-4 correctness."""
    labels = read_edge_labels(labels_dir / model.label_dir / "mmlu.jsonl")
    with (data_dir / "mmlu" / "mmlu_test.csv").open(encoding="utf-8", newline="") as fh:
        items = list(csv.DictReader(fh))
    path = data_dir / "routellm-mixtral-gpt4" / "mmlu_correctness.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    matched = _match(
        labels,
        [(r["subject"], r["question"]) for r in items],
        [(r["subject"], r["prompt"]) for r in rows],
        what=name,
    )
    bad = {str(c["eval_prompt"]).strip() for c in _contaminated(data_dir, "mmlu")}
    kept = [(label, rows[i]) for label, i in matched if rows[i]["prompt"].strip() not in bad]
    return RoutingBenchmark(
        name=name,
        pair=model.pair,
        conversations=[_user(r["prompt"]) for _, r in kept],
        weak=np.array([bool(label["correct"]) for label, _ in kept], dtype=np.float64),
        strong=np.array([r["gpt4_1106_correct"] == "True" for _, r in kept], dtype=np.float64),
        groups=[r["subject"] for _, r in kept],
        excluded=len(matched) - len(kept),
        unmatched=len(labels) - len(matched),
    )


def load_gsm8k_edge(
    data_dir: Path, labels_dir: Path = EDGE_LABELS_DIR, model: EdgeModel = SMOLLM2, name: str = "gsm8k-edge"
) -> RoutingBenchmark:
    """GSM8K items labelled for a small model vs GPT-4 correctness."""
    labels = read_edge_labels(labels_dir / model.label_dir / "gsm8k.jsonl")
    lines = (data_dir / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").split("\n")
    questions = [str(json.loads(line)["question"]) for line in lines if line.strip()]
    path = data_dir / "routellm-mixtral-gpt4" / "gsm8k_responses.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    matched = _match(
        labels,
        [("gsm8k", q) for q in questions],
        [("gsm8k", r["prompt"]) for r in rows],
        what=name,
    )
    bad = {int(str(c["eval_idx"])) for c in _contaminated(data_dir, "gsm8k")}
    kept = [(label, rows[i]) for label, i in matched if i not in bad]
    return RoutingBenchmark(
        name=name,
        pair=model.pair,
        conversations=[_user(r["prompt"]) for _, r in kept],
        weak=np.array([bool(label["correct"]) for label, _ in kept], dtype=np.float64),
        strong=np.array([r[STRONG_MODEL] == "True" for _, r in kept], dtype=np.float64),
        groups=["gsm8k"] * len(kept),
        excluded=len(matched) - len(kept),
        unmatched=len(labels) - len(matched),
    )


LOADERS = {"mmlu": load_mmlu, "gsm8k": load_gsm8k, "mt-bench": load_mt_bench}
EDGE_LOADERS = {"mmlu": load_mmlu_edge, "gsm8k": load_gsm8k_edge}


def load_benchmark(
    name: str, data_dir: Path | None = None, *, labels_dir: Path | None = None
) -> RoutingBenchmark:
    """Load benchmark `name` (one of `ALL_BENCHMARKS`) from `data_dir` (default: `default_data_dir()`).

    The edge benchmarks also read the edge labels in `labels_dir` (default: models/data/edge-labels)
    and raise `MissingLabelsError` when there are none. A data file that is not there raises
    `ConfigError`.
    """
    data_dir = data_dir or default_data_dir()
    try:
        if name in LOADERS:
            return LOADERS[name](data_dir)
        if name in EDGE_BENCHMARK_MODELS:
            task, model = EDGE_BENCHMARK_MODELS[name]
            return EDGE_LOADERS[task](data_dir, labels_dir or EDGE_LABELS_DIR, model, name)
    except FileNotFoundError as exc:
        raise ConfigError(f"benchmark {name}: no file {exc.filename}: {DATA_HINT}") from exc
    raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(ALL_BENCHMARKS)}")
