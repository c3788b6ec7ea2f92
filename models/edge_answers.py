"""Graded edge answers: the edge model's own answers, their token signals, graded against references.

    hybrid-router labels --benchmark answers                       # every task, 200 items each
    hybrid-router labels --benchmark answers --tasks add-1digit,mmlu --limit 50

The data the confidence cascade is calibrated and evaluated on (`hybrid-router eval --cascade`). The
edge model answers each item greedily through the serving path itself (`LlamaCppBackend`
`complete_with_signals`: the chat template, the token signals and the stop rules the router uses),
so the signals calibrated here are the ones it reads when it serves. Each line of
`<out>/<model dir>/<task>.jsonl` holds the prompt, the reference, the answer, whether it is right,
the tokens, the time it took, and per answer token its log-probability, the entropy of its
distribution and the top-1/top-2 margin. Appended one item at a time: an interrupted run resumes.

The tasks are the ones where SmolLM2-135M is sometimes right and sometimes wrong (see
`models/data/edge-answers/PROVENANCE.md` for each task's source and licence):

- `add-1digit`, `sub-1digit`, `mul-1digit`, `addsub-20`: arithmetic generated here from a fixed
  seed (no source data), answered with "the number only"; right when the answer's last integer is;
- `mmlu`, `truthfulqa-2way`, `commonsense_qa`, `arc_challenge`: multiple choice asked for the letter
  (TruthfulQA with its best answer against its first incorrect one, in a seeded order); right when
  the first standalone option letter of the answer is the key. Near chance for a model this small:
  the confidence has little to find there, which is part of what is measured.
"""

from __future__ import annotations

import ast
import asyncio
import csv
import json
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyrouter.models.edge_labels import model_file, pending
from hyrouter.models.routing_data import SMOLLM2, EdgeModel, default_data_dir

ANSWERS_DIR = Path(__file__).with_name("data") / "edge-answers"
NUMBER_ONLY = "Answer with the number only."
LETTER_ONLY = "Answer with the letter of the correct option."
DEFAULT_LIMIT = 200
_INTEGER = re.compile(r"-?\d+")
_DIGITS = 4  # decimals kept of each token signal


@dataclass(frozen=True)
class AnswerTask:
    """One graded task: how its items are made and how an answer to one is graded."""

    name: str
    #: the family it belongs to ("arithmetic", "multiple-choice"): reports group by it
    family: str
    max_tokens: int
    items: Callable[[Path, int], list[dict[str, Any]]]
    grade: Callable[[str, dict[str, Any]], bool]


def _last_integer_is(answer: str, item: dict[str, Any]) -> bool:
    found = _INTEGER.findall(answer.replace(",", ""))
    return bool(found) and found[-1] == item["reference"]


def _letter_is(answer: str, item: dict[str, Any]) -> bool:
    letters = "".join(chr(ord("A") + i) for i in range(item["options"]))
    found = re.search(rf"\b([{letters}])\b", answer)
    return found is not None and found.group(1) == item["reference"]


def _arithmetic(name: str, make: Callable[[random.Random], tuple[str, int]]) -> AnswerTask:
    def items(_data_dir: Path, limit: int) -> list[dict[str, Any]]:
        rng = random.Random(name)  # a fixed sequence per task, the same on every machine
        out = []
        for idx in range(limit):
            question, value = make(rng)
            out.append({"idx": idx, "prompt": f"{question} {NUMBER_ONLY}", "reference": str(value)})
        return out

    return AnswerTask(name, "arithmetic", 64, items, _last_integer_is)


def _add(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return f"What is {a} + {b}?", a + b


def _sub(rng: random.Random) -> tuple[str, int]:
    a = rng.randint(0, 9)
    b = rng.randint(0, a)
    return f"What is {a} - {b}?", a - b


def _mul(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return f"What is {a} times {b}?", a * b


def _addsub(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    if rng.random() < 0.5:
        return f"What is {a} + {b}?", a + b
    return f"What is {a} - {b}?", a - b


def _choice_prompt(question: str, options: list[str]) -> str:
    lines = "\n".join(f"{chr(ord('A') + i)}. {text}" for i, text in enumerate(options))
    return f"{question}\n{lines}\n{LETTER_ONLY}"


def _mmlu(data_dir: Path, limit: int) -> list[dict[str, Any]]:
    """MMLU test items, taken round-robin over the 57 subjects (index order within each)."""
    with (data_dir / "mmlu" / "mmlu_test.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_subject: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for idx, row in enumerate(rows):
        by_subject.setdefault(row["subject"], []).append((idx, row))
    picked: list[tuple[int, dict[str, str]]] = []
    depth = 0
    while len(picked) < limit and any(depth < len(v) for v in by_subject.values()):
        picked.extend(v[depth] for v in by_subject.values() if depth < len(v))
        depth += 1
    return [
        {
            "idx": idx,
            "subject": row["subject"],
            "mmlu_idx": int(row["idx"]),
            "prompt": _choice_prompt(row["question"], [row[k] for k in "ABCD"]),
            "reference": row["answer"],
            "options": 4,
        }
        for idx, row in picked[:limit]
    ]


def _truthfulqa(data_dir: Path, limit: int) -> list[dict[str, Any]]:
    """TruthfulQA as two options: its best answer and its first incorrect one, in a seeded order."""
    with (data_dir / "truthfulqa" / "TruthfulQA.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = random.Random("truthfulqa-2way")
    items = []
    for idx, row in enumerate(rows[:limit]):
        right, wrong = row["Best Answer"].strip(), row["Incorrect Answers"].split(";")[0].strip()
        first = rng.random() < 0.5
        options = [right, wrong] if first else [wrong, right]
        items.append(
            {
                "idx": idx,
                "prompt": _choice_prompt(row["Question"], options),
                "reference": "A" if first else "B",
                "options": 2,
            }
        )
    return items


def _llmrouter(task: str) -> Callable[[Path, int], list[dict[str, Any]]]:
    def items(data_dir: Path, limit: int) -> list[dict[str, Any]]:
        rows = []
        with (data_dir / "llmrouter-9model" / "scores.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                if row["task_name"] == task:
                    rows.append(row)
        # The estimator was trained on the train split: its test split first, then train rows.
        rows.sort(key=lambda r: r["split"] != "test")
        out = []
        for idx, row in enumerate(rows[:limit]):
            choices = row["choices"]
            if isinstance(choices, str):
                choices = ast.literal_eval(choices)
            out.append(
                {
                    "idx": idx,
                    "split": row["split"],
                    "query": row["query"],
                    "prompt": _choice_prompt(row["query"], list(choices["text"])),
                    "reference": row["ground_truth"],
                    "options": len(choices["text"]),
                    "scores": row["scores"],
                }
            )
        return out

    return items


TASKS: dict[str, AnswerTask] = {
    task.name: task
    for task in (
        _arithmetic("add-1digit", _add),
        _arithmetic("sub-1digit", _sub),
        _arithmetic("mul-1digit", _mul),
        _arithmetic("addsub-20", _addsub),
        AnswerTask("mmlu", "multiple-choice", 8, _mmlu, _letter_is),
        AnswerTask("truthfulqa-2way", "multiple-choice", 8, _truthfulqa, _letter_is),
        AnswerTask("commonsense_qa", "multiple-choice", 8, _llmrouter("commonsense_qa"), _letter_is),
        AnswerTask("arc_challenge", "multiple-choice", 8, _llmrouter("arc_challenge"), _letter_is),
    )
}


def answers_file(task: str, model: EdgeModel = SMOLLM2, out_dir: Path = ANSWERS_DIR) -> Path:
    """Where the graded answers of `task` by `model` are kept."""
    return out_dir / model.label_dir / f"{task}.jsonl"


def read_answers(task: str, model: EdgeModel = SMOLLM2, out_dir: Path = ANSWERS_DIR) -> list[dict[str, Any]]:
    """The graded answers of `task`, in item order."""
    path = answers_file(task, model, out_dir)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["idx"])


class _Answerer:
    """The edge model behind the router's own backend, answering one item at a time."""

    def __init__(self, model_path: Path, n_threads: int | None) -> None:
        from hyrouter.edge.llama_cpp_backend import LlamaCppBackend
        from hyrouter.router import EdgeConfig

        config = EdgeConfig(model_path=str(model_path), n_ctx=2048, n_threads=n_threads, seed=0)
        self.backend = LlamaCppBackend(config)
        self.backend.load()
        self.loop = asyncio.new_event_loop()

    def answer(self, task: AnswerTask, item: dict[str, Any]) -> dict[str, Any]:
        from hyrouter.router import ChatCompletionRequest

        request = ChatCompletionRequest.model_validate(
            {
                "model": "edge",
                "messages": [{"role": "user", "content": item["prompt"]}],
                "temperature": 0.0,
                "max_tokens": task.max_tokens,
            }
        )
        signals: list[Any] = []
        started = time.perf_counter()
        response = self.loop.run_until_complete(
            self.backend.complete_with_signals(request, max_tokens=task.max_tokens, signals=signals)
        )
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        choice = response.choices[0]
        text = choice.message.content or ""
        usage = response.usage
        return {
            **{k: v for k, v in item.items() if k not in ("scores", "query")},
            "task": task.name,
            "answer": text,
            "correct": task.grade(text, item),
            "finish_reason": choice.finish_reason,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else len(signals),
            "elapsed_ms": round(elapsed_ms, 2),
            "logprob": [round(s.logprob, _DIGITS) for s in signals],
            "entropy": [round(s.entropy, _DIGITS) for s in signals],
            "margin": [round(s.margin, _DIGITS) for s in signals],
        }

    def close(self) -> None:
        self.loop.run_until_complete(self.backend.aclose())
        self.loop.close()


def run_answers(
    tasks: list[str] | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    out_dir: Path = ANSWERS_DIR,
    data_dir: Path | None = None,
    n_threads: int | None = None,
    model: EdgeModel = SMOLLM2,
    progress: bool = True,
) -> list[Path]:
    """Answer and grade the first `limit` items of each task, appending to its JSONL file (resumable)."""
    from tqdm import tqdm

    data_dir = data_dir or default_data_dir()
    answerer: _Answerer | None = None
    written = []
    try:
        for name in tasks or list(TASKS):
            task = TASKS[name]
            items = task.items(data_dir, limit)
            out_file = answers_file(name, model, out_dir)
            out_file.parent.mkdir(parents=True, exist_ok=True)
            todo = list(pending(items, out_file))
            if todo and answerer is None:
                answerer = _Answerer(model_file(model), n_threads)
            with out_file.open("a", encoding="utf-8") as fh:
                for item in _progress(tqdm, todo, f"{model.label_dir} {name}", len(items), progress):
                    assert answerer is not None
                    fh.write(json.dumps(answerer.answer(task, item)) + "\n")
                    fh.flush()  # one line per item: a killed run loses at most the item in flight
            written.append(out_file)
    finally:
        if answerer is not None:
            answerer.close()
    return written


def _progress(tqdm: Any, todo: list[dict[str, Any]], desc: str, total: int, enabled: bool) -> Iterator[Any]:
    return iter(tqdm(todo, desc=desc, initial=total - len(todo), total=total, disable=not enabled))
