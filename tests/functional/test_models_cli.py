"""`hybrid-router models fit` and `models canary` through the real command line: requests routed by the
real engine (committed ONNX estimator) into a real SQLite store, judged, fitted into a registry
version, which then scores the next requests as the canary."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from hyrouter.cloud.cli import main
from hyrouter.router import (
    ChatCompletionRequest,
    ChatMessage,
    OutcomeWriter,
    RoutingEngine,
    Tenant,
    load_estimator,
    parse_config,
)
from hyrouter.router._estimator import conversation_text
from hyrouter.router._onnx_estimator import OnnxEstimator, read_manifest
from hyrouter.router._outcome_sqlite import SqliteOutcomeStore
from tests.fakes import FakeBackend

pytestmark = pytest.mark.functional

TOPICS = ("the weather", "a cat", "tea", "my garden", "the train", "a song", "the sea", "bread")


def prompts(n: int, start: int = 0) -> list[tuple[str, bool]]:
    """Short chat (the edge is good enough) and long requests (escalation needed), interleaved."""
    out = []
    for i in range(start, start + n):
        topic = TOPICS[i % len(TOPICS)]
        if i % 3 == 0:
            text = (
                f"Request {i}: read this report on {topic} and rewrite it. "
                + f"Point {i} about {topic}. " * (20 + i % 17)
            )
            out.append((text, True))
        else:
            out.append((f"Say something nice about {topic} ({i}).", False))
    return out


async def route(store_path: Path, rows: list[tuple[str, bool]], candidate: OnnxEstimator | None) -> list[str]:
    config = parse_config({"tiers": {"free": {"threshold": 0.5}}})
    engine = RoutingEngine(
        config,
        estimator=load_estimator("static-minilm", "1.1.0"),
        edge=FakeBackend("edge", context_window=1_000_000),
        cloud=FakeBackend("cloud", context_window=1_000_000),
        outcomes=OutcomeWriter(SqliteOutcomeStore(store_path), salt="cli", candidate=candidate),
        log_decisions=False,
    )
    ids = []
    for text, _ in rows:
        request = ChatCompletionRequest.model_validate(
            {"model": config.served_model_name, "messages": [{"role": "user", "content": text}]}
        )
        ids.append((await engine.complete(request, Tenant("cli", "free"))).id)
    await engine.aclose()
    return ids


def judge(store_path: Path, ids: list[str], rows: list[tuple[str, bool]]) -> None:
    store = SqliteOutcomeStore(store_path)
    for record_id, (_, needed) in zip(ids, rows, strict=True):
        assert store.judge(record_id, not needed, "cli-judge")
    store.close()


def test_models_fit_then_models_canary_on_a_real_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_path, registry = tmp_path / "outcomes.sqlite3", tmp_path / "estimators"
    rows = prompts(300)
    judge(store_path, asyncio.run(route(store_path, rows, None)), rows)

    code = main(["models", "fit", "--outcomes", f"sqlite:{store_path}", "--registry", str(registry)])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert code == 0, err
    assert report["labelled_records"] == 300 and report["extras"] == ["log_prompt_chars"]
    evaluation = report["evaluation"]
    assert evaluation["fitted"]["apgr"] >= evaluation["prompt_length"]["apgr"] - 0.02
    assert evaluation["fitted_minus_current"]["ci95"][0] > 0
    assert "wrote static-minilm@1.1.0.1" in err
    entry = read_manifest(registry)["estimators"][0]
    assert entry["version"] == "1.1.0.1" and entry["fit"]["command"].startswith("hybrid-router")

    # The new version scores the next requests in shadow; `models canary` compares it with the live one.
    later = prompts(90, start=300)
    candidate = OnnxEstimator(registry, entry)
    judge(store_path, asyncio.run(route(store_path, later, candidate)), later)
    code = main(["models", "canary", "--outcomes", f"sqlite:{store_path}"])
    out, _ = capsys.readouterr()
    assert code == 0
    canary = json.loads(out)["canary"]
    assert canary["records"] == 90 and canary["candidate"] == ["static-minilm@1.1.0.1"]
    assert canary["judged"]["records"] == 90
    assert canary["judged"]["candidate"]["apgr"] > canary["judged"]["live"]["apgr"]

    # Exact: the canary's score of each request is the numpy head of head.json applied to what the
    # record carries (the live encoder's features and prompt_chars), as `models fit` reads them.
    head = json.loads((registry / entry["files"]["head"]["path"]).read_text(encoding="utf-8"))
    store = SqliteOutcomeStore(store_path)
    shadowed = [r for r in store.records() if r["candidate_score"] is not None]
    store.close()
    for r, (text, _) in zip(shadowed, later, strict=True):
        assert r["prompt_chars"] == len(conversation_text([ChatMessage(role="user", content=text)]))
        x = np.append(np.asarray(r["features"], dtype=np.float64), np.log1p(r["prompt_chars"]))
        expected = 1.0 / (1.0 + np.exp(-(x @ np.asarray(head["weights"]) + head["bias"])))
        assert r["candidate_score"] == pytest.approx(expected, abs=1e-6)  # features are kept as float32


def test_models_fit_refuses_what_it_cannot_show_better(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_path, registry = tmp_path / "outcomes.sqlite3", tmp_path / "estimators"
    rows = prompts(60)
    judge(store_path, asyncio.run(route(store_path, rows, None)), rows)
    code = main(["models", "fit", "--outcomes", f"sqlite:{store_path}", "--registry", str(registry)])
    _, err = capsys.readouterr()
    assert code == 1 and "at least 20 of each" in err and "--force writes it" in err
    assert not registry.exists()
    assert main(["models", "fit", "--outcomes", f"sqlite:{tmp_path / 'none.sqlite3'}"]) == 2
    assert "no such file" in capsys.readouterr().err
