"""`import_extra`: the one place a missing optional dependency becomes a one-line error naming its extra."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hyrouter.router import ConfigError, MissingExtra, import_extra, require_extra


def test_an_installed_module_is_imported_and_returned() -> None:
    assert import_extra("json", feature="anything", extra="onnx") is json


def test_a_missing_module_is_one_line_that_names_the_extra_and_how_to_install_it() -> None:
    with pytest.raises(MissingExtra) as raised:
        import_extra("no_such_module_for_the_test", feature="serve", extra="server")
    assert raised.value.message == (
        "serve needs the server extra: pip install 'hyrouter[server]' "
        "(no module named 'no_such_module_for_the_test')"
    )
    assert "\n" not in raised.value.message
    assert (raised.value.feature, raised.value.extra) == ("serve", "server")


def test_a_module_whose_own_dependency_is_missing_reads_as_the_missing_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "half_installed_for_the_test.py").write_text("import not_installed_dependency_for_the_test\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    missing = r"\[onnx\]' \(no module named 'not_installed_dependency_for_the_test'\)"
    with pytest.raises(MissingExtra, match=missing):
        import_extra("half_installed_for_the_test", feature="estimator x@1", extra="onnx")
    assert "half_installed_for_the_test" not in sys.modules


def test_it_is_a_config_error_so_every_entry_point_reports_it_as_one_line() -> None:
    assert issubclass(MissingExtra, ConfigError)


def test_an_import_that_fails_otherwise_is_not_taken_for_a_missing_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_for_the_test.py").write_text("raise RuntimeError('native library did not load')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match="native library"):
        import_extra("broken_for_the_test", feature="the edge model", extra="edge")


def test_require_extra_checks_without_importing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dies_on_import_for_the_test.py").write_text("raise SystemExit('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    require_extra("dies_on_import_for_the_test", feature="the edge model", extra="edge")
    assert "dies_on_import_for_the_test" not in sys.modules
    with pytest.raises(MissingExtra, match=r"^the edge model needs the edge extra: .*'nope_not_installed'"):
        require_extra("nope_not_installed", feature="the edge model", extra="edge")
