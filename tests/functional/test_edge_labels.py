"""The edge label job on a few real items with the real edge model: labels, and resuming."""

from __future__ import annotations

import json
from pathlib import Path

from hyrouter.edge.model_files import default_model_path
from hyrouter.models.edge_labels import (
    EDGE_MODEL_NAME,
    FEW_SHOT,
    gsm8k_few_shot_prefix,
    mmlu_items,
    run_labels,
)
from hyrouter.models.routing_data import EdgeModel, default_data_dir


def test_mmlu_labels_are_written_once_and_resume(tmp_path: Path) -> None:
    out = run_labels("mmlu", out_dir=tmp_path, per_subject=1, limit=3, n_threads=2, progress=False)
    assert out == tmp_path / EDGE_MODEL_NAME / "mmlu.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    first_three = [item["idx"] for item in mmlu_items(default_data_dir(), per_subject=1)[:3]]
    assert [r["idx"] for r in rows] == first_three == [0, 100, 235]  # abstract_algebra, anatomy, astronomy
    assert all(len(r["ll"]) == 4 and r["pred"] in "ABCD" and isinstance(r["correct"], bool) for r in rows)
    with out.open("a") as fh:
        fh.write('{"idx": 3')  # a line cut short by a killed run
    run_labels("mmlu", out_dir=tmp_path, per_subject=1, limit=4, n_threads=2, progress=False)
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)  # only the new item was labelled


def test_gsm8k_label_has_the_parsed_answer(tmp_path: Path) -> None:
    out = run_labels("gsm8k", out_dir=tmp_path, limit=1, n_threads=2, progress=False)
    row = json.loads(out.read_text())
    assert row["gold"] == "18" and row["correct"] == (row["pred"] == "18")
    assert row["completion_tokens"] > 0 and row["output"]


def test_a_base_model_answers_gsm8k_from_the_few_shot_prompt(tmp_path: Path) -> None:
    # Gemma-3-270M's path (chat_format None), run here on the edge model's GGUF that CI has.
    base = EdgeModel("base", "base-model", "base/gpt-4", chat_format=None)
    out = run_labels(
        "gsm8k",
        out_dir=tmp_path,
        limit=2,
        n_threads=2,
        model=base,
        model_path=default_model_path(),
        progress=False,
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["gold"] for r in rows] == ["18", "3"]
    for row in rows:
        assert 0 < row["completion_tokens"] <= 256 and row["correct"] == (row["pred"] == row["gold"])
        assert "Question:" not in row["output"] and "\n\n" not in row["output"]  # stopped before the next one


def test_the_few_shot_prefix_is_five_worked_train_problems() -> None:
    prefix = gsm8k_few_shot_prefix(default_data_dir())
    shots = prefix.split("\n\n")[:-1]
    assert len(shots) == FEW_SHOT and prefix.endswith("\n\n")
    assert all(s.startswith("Question: ") and "\nAnswer: " in s and "\n#### " in s for s in shots)
    assert (
        shots[0].startswith("Question: Natalia sold clips") and "<<" not in prefix
    )  # train row 0, no calculator
