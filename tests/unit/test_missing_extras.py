"""Each path that needs an extra says which, in one line, when it is not installed (`sys.modules[m] = None`
makes `import m` fail as if `m` were not installed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hyrouter.cloud import cli
from hyrouter.router import ConfigError, EdgeBackendError, EdgeConfig, load_estimator

CLOUD_ONLY = """
estimator: {{name: {estimator}}}
edge: {{enabled: false}}
cloud: {{url: "http://127.0.0.1:9/v1", model: x}}
tiers: {{free: {{cloud: allowed, threshold: 0.5}}}}
"""


def _not_installed(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hybrid-router: "), err
    return err


def test_the_learned_estimator_without_onnxruntime_names_the_onnx_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _not_installed(monkeypatch, "onnxruntime")
    with pytest.raises(ConfigError, match=r"^estimator static-minilm@1\.1\.0 needs the onnx extra: "):
        load_estimator("static-minilm")


EDGE_ENABLED = """
edge: {enabled: true}
tiers: {free: {cloud: never}}
"""


def test_serve_without_the_server_extra_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(EDGE_ENABLED)
    _not_installed(monkeypatch, "uvicorn")
    assert cli.main(["serve", "--config", str(config), "--no-edge-check"]) == 2
    assert "serve needs the server extra: pip install 'hyrouter[server]'" in _one_line_error(capsys)


def test_serve_with_edge_enabled_and_no_llama_cpp_names_the_edge_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(EDGE_ENABLED)
    _not_installed(monkeypatch, "llama_cpp")
    assert cli.main(["serve", "--config", str(config)]) == 2
    assert "the edge model needs the edge extra" in _one_line_error(capsys)


def test_serve_with_a_learned_estimator_and_no_onnxruntime_fails_at_load_before_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "learned.yaml"
    config.write_text(CLOUD_ONLY.format(estimator="static-minilm"))
    _not_installed(monkeypatch, "onnxruntime")
    # Before uvicorn starts: its start-up failure would be a traceback and SystemExit, not a return.
    assert cli.main(["serve", "--config", str(config), "--port", "1"]) == 2
    assert "estimator static-minilm@1.1.0 needs the onnx extra" in _one_line_error(capsys)


def test_the_edge_backend_names_the_edge_extra_before_looking_for_a_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hyrouter.edge.llama_cpp_backend import LlamaCppBackend

    _not_installed(monkeypatch, "llama_cpp")
    backend = LlamaCppBackend(EdgeConfig(model_path="/no/such/model.gguf"))
    with pytest.raises(EdgeBackendError, match=r"^the edge model needs the edge extra: .*\[edge\]'"):
        backend.load()


def test_a_command_whose_module_needs_an_extra_is_still_listed_and_says_which(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m == "hyrouter.models" or m.startswith("hyrouter.models.")]:
        monkeypatch.delitem(sys.modules, name)  # imported again (and failing) by the entry points
    _not_installed(monkeypatch, "numpy")
    assert cli.main(["eval", "--help"]) == 2
    assert "eval needs the eval extra: pip install 'hyrouter[eval]'" in _one_line_error(capsys)
    assert "(needs the models extra)" in cli.build_parser().format_help()


def test_eval_without_the_data_sets_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval", "--benchmark", "gsm8k", "--data-dir", str(tmp_path)]) == 2
    assert "benchmark gsm8k: no file" in _one_line_error(capsys)


def test_edge_check_without_llama_cpp_is_one_line_not_the_childs_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _not_installed(monkeypatch, "llama_cpp")
    assert cli.main(["edge", "check", "--model", "/no/such/model.gguf"]) == 2
    assert "the edge model needs the edge extra" in _one_line_error(capsys)


def test_a_missing_module_of_our_own_is_a_bug_not_an_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m == "hyrouter.models" or m.startswith("hyrouter.models.")]:
        monkeypatch.delitem(sys.modules, name)
    _not_installed(monkeypatch, "hyrouter.models.evaluate")
    with pytest.raises(ModuleNotFoundError, match=r"hyrouter\.models\.evaluate"):
        cli.build_parser()
