"""The ONNX estimator hands over its features when its artefact exports them (the `features` output)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hyrouter.models.artefacts import ARTEFACTS_DIR
from hyrouter.router import (
    ChatCompletionRequest,
    ChatMessage,
    OutcomeWriter,
    RoutingEngine,
    Tenant,
    load_estimator,
    parse_config,
)
from hyrouter.router._onnx_estimator import OnnxEstimator, file_sha256
from hyrouter.router._outcome_sqlite import SqliteOutcomeStore
from tests.fakes import FakeBackend

TOKENIZER = ARTEFACTS_DIR / "static-minilm-1.1.0" / "tokenizer.json"
DIMS = 4


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def featured_model(path: Path, table: np.ndarray) -> None:
    """input_ids → mean of their table rows (`features`) → sigmoid of its mean (`score`)."""
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["vectors"]),
        helper.make_node("ReduceMean", ["vectors"], ["features"], axes=[1], keepdims=0),
        helper.make_node("ReduceMean", ["features"], ["mean"], axes=[1], keepdims=0),
        helper.make_node("Sigmoid", ["mean"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "featured",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "tokens"])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, DIMS]),
        ],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.fixture(scope="module")
def featured(tmp_path_factory: pytest.TempPathFactory) -> tuple[OnnxEstimator, np.ndarray]:
    root = tmp_path_factory.mktemp("registry")
    (root / "featured").mkdir()
    shutil.copy(TOKENIZER, root / "featured" / "tokenizer.json")
    table = np.random.default_rng(0).normal(size=(30522, DIMS)).astype(np.float32)
    featured_model(root / "featured" / "model.onnx", table)
    entry: dict[str, Any] = {
        "name": "featured",
        "version": "0.1.0",
        "max_tokens": 64,
        "files": {
            role: {"path": f"featured/{file}", "sha256": file_sha256(root / "featured" / file)}
            for role, file in (("model", "model.onnx"), ("tokenizer", "tokenizer.json"))
        },
    }
    return OnnxEstimator(root, entry), table


def test_an_artefact_with_a_features_output_hands_them_over_with_its_score(
    featured: tuple[OnnxEstimator, np.ndarray],
) -> None:
    estimator, table = featured
    messages = user("What is the capital of France?")
    assert estimator.has_features
    score, features = estimator.score_with_features(messages)
    assert features is not None and len(features) == DIMS
    expected = table[estimator.token_ids(messages)].mean(axis=0)
    assert np.allclose(features, expected, atol=1e-6)
    assert score == pytest.approx(estimator.score(messages))


def test_the_committed_artefact_gives_its_pooled_vector_as_features() -> None:
    """Built before `features` was exported, it names its pooled vector (the semantic cache's key)."""
    estimator = load_estimator("static-minilm", "1.1.0")
    assert isinstance(estimator, OnnxEstimator) and estimator.has_features
    score, features = estimator.score_with_features(user("Hi"))
    assert features is not None and np.allclose(features, estimator.embed(user("Hi")) or [])
    assert score == pytest.approx(estimator.score(user("Hi")))


@pytest.mark.anyio
async def test_the_onnx_features_reach_the_outcome_record(
    featured: tuple[OnnxEstimator, np.ndarray], tmp_path: Path
) -> None:
    estimator, table = featured
    store = SqliteOutcomeStore(tmp_path / "o.sqlite3")
    engine = RoutingEngine(
        parse_config({"tiers": {"free": {}}}),
        estimator=estimator,
        edge=FakeBackend("edge"),
        cloud=FakeBackend("cloud"),
        outcomes=OutcomeWriter(store),
    )
    text = "Name three rivers."
    request = ChatCompletionRequest.model_validate(
        {"model": "hybrid-router", "messages": [{"role": "user", "content": text}]}
    )
    answer = await engine.complete(request, Tenant("acme", "free"))
    await engine.aclose()
    reader = SqliteOutcomeStore(tmp_path / "o.sqlite3")
    record = reader.get(answer.id)
    reader.close()
    assert record is not None
    expected = table[estimator.token_ids(user(text))].mean(axis=0)
    assert np.allclose(record["features"], expected, atol=1e-6)


def test_a_fitted_head_reads_the_tensor_the_records_features_came_from(tmp_path: Path) -> None:
    """An artefact that exports `features` and names another pooled vector for the cache: the records
    hold `features`, so the head written by `models fit` must read it (and the estimator loads it)."""
    from hyrouter.models.fit import Head, write_version

    root = tmp_path / "base"
    (root / "featured").mkdir(parents=True)
    shutil.copy(TOKENIZER, root / "featured" / "tokenizer.json")
    featured_model(root / "featured" / "model.onnx", np.ones((30522, DIMS), dtype=np.float32))
    base: dict[str, Any] = {
        "name": "featured",
        "version": "0.1.0",
        "max_tokens": 64,
        "embedding": {"output": "vectors", "dims": DIMS},
        "files": {
            role: {"path": f"featured/{file}", "sha256": file_sha256(root / "featured" / file)}
            for role, file in (("model", "model.onnx"), ("tokenizer", "tokenizer.json"))
        },
    }
    assert OnnxEstimator(root, base).features_output == "features"
    head = Head(np.full(DIMS, 0.5), 0.1, 1.0)
    entry = write_version(tmp_path / "reg", root, base, head, {}, version="0.1.0.1", command="test")
    estimator = OnnxEstimator(tmp_path / "reg", entry)  # raised: "its head reads 'vectors'"
    score, features = estimator.score_with_features(user("Hi"))
    assert features is not None
    assert score == pytest.approx(float(head.scores(np.asarray([features], dtype=np.float64))[0]), abs=1e-6)
