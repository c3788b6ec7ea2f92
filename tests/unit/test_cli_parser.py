"""The `hybrid-router` command line: every option explained with its default, `--version`, choices."""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Iterator

import pytest

from hyrouter.cloud.cli import LOG_LEVELS, build_parser, main

_NOT_OPTIONS = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """`parser` and every sub-parser under it, entry-point commands included (each once)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from all_parsers(sub)


PARSERS = {p.prog: p for p in all_parsers(build_parser())}


def test_the_walk_reaches_every_command() -> None:
    expected = {"serve", "demo", "route", "schema", "hash-key", "eval", "calibrate", "labels", "models"}
    assert {f"hybrid-router {name}" for name in expected} <= set(PARSERS)
    assert {"hybrid-router edge ask", "hybrid-router edge check", "hybrid-router edge schema"} <= set(PARSERS)


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_option_has_help_that_shows_its_default(prog: str) -> None:
    parser = PARSERS[prog]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, _NOT_OPTIONS):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help, f"{prog} {name} has no help"
        if action.option_strings and action.default not in (None, argparse.SUPPRESS):
            shown = formatter._expand_help(action)  # the line `--help` prints, before wrapping
            assert f"(default: {action.default})" in shown, f"{prog} {name} does not show its default"


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"hybrid-router {importlib.metadata.version('hyrouter')}"


def test_version_falls_back_when_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from hyrouter.cloud import _version

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    _version.installed_version.cache_clear()
    try:
        assert _version.installed_version() == _version.UNKNOWN_VERSION
    finally:
        _version.installed_version.cache_clear()


def test_log_level_is_a_choice_and_a_bad_one_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert PARSERS["hybrid-router serve"].parse_args(["--log-level", "debug"]).log_level == "debug"
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--log-level", "loud"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hybrid-router: serve: argument --log-level")
    assert all(level in err for level in LOG_LEVELS)
