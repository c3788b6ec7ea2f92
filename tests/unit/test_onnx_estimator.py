"""The learned estimator at run time: the committed artefact, its manifest check, discovery, multi-turn."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from hyrouter.models.artefacts import ARTEFACTS_DIR
from hyrouter.models.build import SOURCE_FILES, training_excludes, verify
from hyrouter.models.routing_data import default_data_dir
from hyrouter.models.training_data import TARGETS
from hyrouter.router import ChatMessage, EstimatorError, available_estimators, load_estimator
from hyrouter.router._onnx_estimator import (
    MANIFEST_NAME,
    OnnxEstimator,
    file_sha256,
    read_manifest,
    register_artefacts,
)
from hyrouter.router._policy import RouteReason
from hyrouter.router._wire import ChatCompletionRequest
from tests.fakes import FakeBackend

NAME = "static-minilm"


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


@pytest.fixture(scope="module")
def estimator() -> OnnxEstimator:
    loaded = load_estimator(NAME)
    assert isinstance(loaded, OnnxEstimator)
    return loaded


@pytest.fixture
def registry_copy(tmp_path: Path) -> Path:
    root = tmp_path / "artefacts"
    shutil.copytree(ARTEFACTS_DIR, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return root


def only_entry(root: Path) -> dict[str, object]:
    entries = [e for e in read_manifest(root)["estimators"] if e["name"] == NAME]
    assert len(entries) == 1
    entry: dict[str, object] = entries[0]
    return entry


def test_the_committed_artefact_is_registered_through_the_entry_point() -> None:
    assert f"{NAME}@1.1.0" in available_estimators()
    assert verify(ARTEFACTS_DIR) == [f"{NAME}@1.1.0", "calibration smollm2-135m-instruct-q4_1@1.0.0"]


def test_it_loads_without_torch_and_scores_in_the_unit_interval(estimator: OnnxEstimator) -> None:
    assert "torch" not in sys.modules
    scores = [estimator.score(user(t)) for t in ("hi", "Prove that there are infinitely many primes.", "")]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert len({round(s, 6) for s in scores}) == 3


def test_it_sees_the_whole_conversation_not_only_the_last_turn(estimator: OnnxEstimator) -> None:
    last = "And what about the second case?"
    alone = estimator.score(user(last))
    earlier = [
        ChatMessage(
            role="user", content="Derive the closed form of the integral of x^n e^{-x} from 0 to infinity."
        ),
        ChatMessage(role="assistant", content="It is n factorial, by repeated integration by parts."),
        ChatMessage(role="user", content=last),
    ]
    assert estimator.score(earlier) != pytest.approx(alone, abs=1e-4)
    ids = estimator.token_ids(earlier)
    assert ids[: len(estimator.token_ids(user(last))) - 1] == estimator.token_ids(user(last))[:-1]


def test_long_input_is_truncated_to_the_manifest_length(estimator: OnnxEstimator) -> None:
    long = user("word " * 5000)
    assert len(estimator.token_ids(long)) == estimator.max_tokens == 256
    assert 0.0 <= estimator.score(long) <= 1.0


def test_text_past_the_token_limit_is_not_tokenized_and_changes_nothing(estimator: OnnxEstimator) -> None:
    from hyrouter.models.routing_data import load_benchmark

    # Real long prompts: the character cut before tokenizing keeps every token the model reads.
    long = sorted(load_benchmark("mmlu").conversations, key=lambda c: -len(c[0].text))[:20]
    for conversation in long:
        full = estimator._tokenizer.encode(conversation[0].text).ids
        assert estimator.token_ids(conversation) == full
    huge = user("word " * 200_000)  # a megabyte: tokenizing it all would take tens of milliseconds
    assert len(estimator.token_ids(huge)) == estimator.max_tokens


def test_a_tampered_model_is_refused_with_a_clear_error(registry_copy: Path) -> None:
    entry = only_entry(registry_copy)
    model = registry_copy / f"{NAME}-1.1.0" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    with pytest.raises(EstimatorError, match=r"model file .* has sha256 [0-9a-f]{64}, the manifest says"):
        OnnxEstimator(registry_copy, entry)
    with pytest.raises(EstimatorError, match="sha256"):
        verify(registry_copy)


def test_a_missing_file_or_manifest_is_a_clear_error(registry_copy: Path) -> None:
    entry = only_entry(registry_copy)
    (registry_copy / f"{NAME}-1.1.0" / "tokenizer.json").unlink()
    with pytest.raises(EstimatorError, match=r"tokenizer file .* is missing"):
        OnnxEstimator(registry_copy, entry)
    (registry_copy / MANIFEST_NAME).unlink()
    with pytest.raises(EstimatorError, match=r"manifest .* is missing"):
        register_artefacts(registry_copy)


def test_a_manifest_of_another_format_is_refused(registry_copy: Path) -> None:
    (registry_copy / MANIFEST_NAME).write_text(json.dumps({"format": 99, "estimators": []}))
    with pytest.raises(EstimatorError, match="not format 1"):
        read_manifest(registry_copy)


def test_the_manifest_records_how_it_was_built() -> None:
    entry = only_entry(ARTEFACTS_DIR)
    training = entry["training"]
    assert isinstance(training, dict)
    assert str(training["command"]).startswith("hybrid-router models build")
    # Held out from every benchmark `hybrid-router eval` reports, so its metrics are honest.
    assert not set(training["sources"]) & training_excludes()
    head = entry["head"]
    assert isinstance(head, dict) and head["target"] in TARGETS
    assert str(training["target"]).startswith("1 - the weak models' score")
    metrics = entry["metrics"]
    assert isinstance(metrics, dict) and {"mmlu", "gsm8k", "mt-bench"} <= set(metrics)
    source_data = entry["source_data"]
    assert isinstance(source_data, dict) and set(source_data) == set(SOURCE_FILES)


def test_the_source_data_is_the_data_it_was_built_from() -> None:
    source_data = only_entry(ARTEFACTS_DIR)["source_data"]
    assert isinstance(source_data, dict)
    for name, digest in source_data.items():
        assert file_sha256(default_data_dir() / name) == digest, name


def test_the_engine_records_the_learned_estimator_in_its_decision(estimator: OnnxEstimator) -> None:
    from hyrouter.router import RoutingEngine, hash_api_key, parse_config

    config = parse_config(
        {
            "estimator": {"name": NAME},
            "tiers": {"t": {"threshold": 0.0}},
            "api_keys": [{"sha256": hash_api_key("k"), "tenant": "acme", "tier": "t"}],
        }
    )
    engine = RoutingEngine(config, estimator=estimator, edge=FakeBackend("edge"), cloud=FakeBackend("cloud"))
    request = ChatCompletionRequest.model_validate(
        {"model": config.served_model_name, "messages": [{"role": "user", "content": "hi"}]}
    )
    plan = engine.plan(request, engine.authenticate("k"))
    assert plan.decision.estimator == f"{NAME}@1.1.0"
    assert plan.decision.reason == RouteReason.SCORE_ABOVE_THRESHOLD


def test_it_embeds_a_conversation_as_the_unit_vector_its_score_is_computed_from(
    estimator: OnnxEstimator,
) -> None:
    import numpy as np

    from hyrouter.router import Embedder

    assert isinstance(estimator, Embedder) and estimator.can_embed
    paris = estimator.embed(user("What is the capital of France?"))
    again = estimator.embed(user("What is the capital city of France?"))
    other = estimator.embed(user("Write a Python function that merges two sorted lists."))
    assert paris is not None and again is not None and other is not None
    assert len(paris) == 256 and np.linalg.norm(paris) == pytest.approx(1.0, abs=1e-3)
    cosine = float(np.dot(paris, again)), float(np.dot(paris, other))
    assert cosine[0] > 0.9 > cosine[1]
    # the graph's own score is unchanged by asking for the extra output
    assert estimator.score(user("hi")) == pytest.approx(load_estimator(NAME).score(user("hi")))


def test_a_conversation_longer_than_the_model_reads_has_no_embedding(estimator: OnnxEstimator) -> None:
    assert estimator.embed(user("word " * 300)) is None
    assert estimator.embed(user("word " * 200_000)) is None


def test_an_artefact_that_names_no_embedding_cannot_embed(registry_copy: Path) -> None:
    entry = dict(only_entry(registry_copy))
    del entry["embedding"]
    plain = OnnxEstimator(registry_copy, entry)
    assert not plain.can_embed and plain.embed(user("hi")) is None
