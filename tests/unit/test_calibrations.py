"""Fitted calibrations: the document checked strictly, its maths, and which one an edge model gets."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import pytest

from hyrouter.edge import model_files
from hyrouter.edge.model_files import edge_calibration, gguf_sha256
from hyrouter.router import UNCALIBRATED, AnswerFeatures, ConfigError, EdgeConfig
from hyrouter.router import _calibrations as calibrations
from hyrouter.router._calibrations import RegisteredCalibration, register_calibration, resolve_calibration
from hyrouter.router._confidence import FittedCalibration
from tests.fakes import FakeSignal

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "calibrations" / "smollm2-test.json"
#: four tokens: mean log-probability -0.5, the first -0.5, ln(4) = 1.386
SIGNALS = [FakeSignal(-0.5), FakeSignal(-1.0), FakeSignal(-0.25), FakeSignal(-0.25)]
# z = 0.2 + 1.5 * (-0.5 + 1) / 0.5 + 0.5 * (-0.5 + 1) / 2 - 0.25 * (ln 4 - 2) / 1, by hand
Z = 0.2 + 1.5 + 0.125 + 0.25 * (2 - 1.3862943611198906)


@pytest.fixture(autouse=True)
def empty_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibrations, "_REGISTRY", {})
    monkeypatch.setattr(calibrations, "discover_plugins", lambda: None)


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(FIXTURE.read_text())
    doc.update(changes)
    return doc


def written(tmp_path: Path, doc: dict[str, Any], name: str = "calibration.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def features() -> AnswerFeatures:
    found = AnswerFeatures.of(SIGNALS)
    assert found is not None
    return found


def test_answer_features_carry_the_first_token_and_the_log_of_the_length() -> None:
    found = features()
    assert found.first_logprob == -0.5 and found.mean_logprob == -0.5 and found.min_logprob == -1.0
    assert found.log_tokens == pytest.approx(math.log(4))


def test_a_sigmoid_calibration_is_platt_scaling_of_the_standardised_features() -> None:
    calibration = FittedCalibration.load(FIXTURE)
    assert calibration.name == "smollm2-135m-instruct-q4_1-test@0.0.1"
    assert calibration.score(features()) == pytest.approx(Z) == pytest.approx(1.9784264097)
    assert calibration.confidence(features()) == pytest.approx(0.8785133165)


def test_an_isotonic_calibration_interpolates_z_between_its_knots_and_clips_at_the_ends(
    tmp_path: Path,
) -> None:
    knots = {"x": [-1.0, 0.0, 2.0], "y": [0.1, 0.3, 0.9]}
    calibration = FittedCalibration.load(written(tmp_path, document(link="isotonic", isotonic=knots)))
    assert calibration.confidence(features()) == pytest.approx(0.3 + 0.6 * Z / 2) == pytest.approx(0.89352792)
    high = FittedCalibration.load(written(tmp_path, document(link="isotonic", isotonic=knots, intercept=9.0)))
    low = FittedCalibration.load(written(tmp_path, document(link="isotonic", isotonic=knots, intercept=-9.0)))
    assert high.confidence(features()) == 0.9 and low.confidence(features()) == 0.1


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"features": ["mean_logprob", "first_logprob", "vibes"]}, "features.2"),
        ({"coef": [1.0, 2.0]}, "coef has 2 values for 3 features"),
        ({"scale": [0.5, 0.0, 1.0]}, "scale.1"),
        (
            {"link": "isotonic", "isotonic": {"x": [0.0, 1.0, 0.5], "y": [0.1, 0.2, 0.3]}},
            "strictly increasing",
        ),
        ({"link": "isotonic", "isotonic": {"x": [0.0, 1.0], "y": [0.5, 0.2]}}, "non-decreasing"),
        ({"link": "isotonic"}, "needs the isotonic points"),
        ({"format": 2}, "format"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_malformed_document_is_one_clear_line_naming_the_file(
    tmp_path: Path, changes: dict[str, Any], problem: str
) -> None:
    path = written(tmp_path, document(**changes))
    with pytest.raises(ConfigError) as raised:
        FittedCalibration.load(path)
    message = raised.value.message
    assert "\n" not in message and str(path) in message and problem in message


def test_a_calibration_file_fitted_on_another_gguf_is_refused_at_load(tmp_path: Path) -> None:
    gguf = tmp_path / "other.gguf"
    gguf.write_bytes(b"another model")
    digest = hashlib.sha256(b"another model").hexdigest()
    with pytest.raises(ConfigError) as raised:
        edge_calibration(EdgeConfig(model_path=str(gguf), calibration=str(FIXTURE)), verifies=True)
    assert raised.value.message == (
        f"calibration {FIXTURE} was fitted for GGUF sha256 "
        f"b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53, "
        f"the edge model smollm2-135m-instruct ({gguf}) has {digest}"
    )


def test_a_calibration_file_fitted_on_this_gguf_is_used() -> None:
    got = resolve_calibration(
        str(FIXTURE), "smollm2", lambda: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    )
    assert got.name == "smollm2-135m-instruct-q4_1-test@0.0.1"


def test_auto_picks_the_registered_calibration_fitted_on_the_gguf(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    for version in ("1.0.0", "1.2.0"):
        doc = document(version=version, gguf={"file": "model.gguf", "sha256": digest})
        path = written(tmp_path, doc, f"{version}.json")
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        register_calibration(RegisteredCalibration("fitted", version, path, sha, digest))
    register_calibration(RegisteredCalibration("other", "9.0.0", FIXTURE, "0" * 64, "1" * 64))
    got = edge_calibration(EdgeConfig(model_path=str(gguf)), verifies=True)
    assert got.name == "smollm2-135m-instruct-q4_1-test@1.2.0"  # the newest fitted on this GGUF


def test_auto_without_a_registered_calibration_is_uncalibrated_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"weights")
    with caplog.at_level(logging.WARNING, logger="hybrid_router"):
        got = edge_calibration(EdgeConfig(model_path=str(gguf), model_id="tiny"), verifies=True)
    assert got is UNCALIBRATED
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "no calibration is registered for edge model tiny" in warning.getMessage()


def test_a_registered_file_that_changed_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path, document())
    digest = document()["gguf"]["sha256"]
    register_calibration(RegisteredCalibration("c", "1", path, "0" * 64, digest))
    with pytest.raises(ConfigError, match="the registry says"):
        resolve_calibration("auto", "smollm2", lambda: digest)


def test_none_and_tiers_that_do_not_verify_hash_nothing(tmp_path: Path) -> None:
    missing = EdgeConfig(model_path=str(tmp_path / "absent.gguf"))
    assert edge_calibration(missing, verifies=False) is UNCALIBRATED
    none = EdgeConfig(model_path=str(tmp_path / "absent.gguf"), calibration="none")
    assert edge_calibration(none, verifies=True) is UNCALIBRATED


def test_the_gguf_digest_is_remembered_until_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"weights")
    hashed: list[Path] = []
    real = model_files.file_sha256

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(model_files, "file_sha256", counting)
    first = gguf_sha256(gguf)
    assert gguf_sha256(gguf) == first and len(hashed) == 1
    gguf.write_bytes(b"new weights!")
    os.utime(gguf, ns=(1, 1))
    assert gguf_sha256(gguf) == hashlib.sha256(b"new weights!").hexdigest() and len(hashed) == 2


def test_the_shipped_artefacts_register_their_calibrations(tmp_path: Path) -> None:
    doc_path = tmp_path / "calibrations" / "c.json"
    doc_path.parent.mkdir()
    doc_path.write_text(FIXTURE.read_text())
    sha = hashlib.sha256(doc_path.read_bytes()).hexdigest()
    digest = document()["gguf"]["sha256"]
    entry = {
        "name": "c",
        "version": "1.0.0",
        "path": "calibrations/c.json",
        "sha256": sha,
        "gguf_sha256": digest,
    }
    (tmp_path / "registry.json").write_text(
        json.dumps({"format": 1, "estimators": [], "calibrations": [entry]})
    )
    assert calibrations.register_calibration_artefacts(tmp_path) == ["c@1.0.0"]
    assert (
        resolve_calibration("auto", "smollm2", lambda: digest).name == "smollm2-135m-instruct-q4_1-test@0.0.1"
    )
