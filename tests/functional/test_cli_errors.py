"""`hybrid-router serve` refusing to start: one `hybrid-router: ...` line and a non-zero exit, no trace."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.servers import free_port

pytestmark = pytest.mark.functional


def serve(tmp_path: Path, config: dict[str, object], *args: str) -> subprocess.CompletedProcess[str]:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "hyrouter.cloud.cli", "serve", "--config", str(config_file), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], says: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hybrid-router: "), result.stderr
    assert says in lines[0], lines[0]


@pytest.mark.parametrize("edge_check", ["--edge-check", "--no-edge-check"])
def test_a_missing_gguf(tmp_path: Path, edge_check: str) -> None:
    missing = tmp_path / "no-such-model.gguf"
    result = serve(tmp_path, {"edge": {"model_path": str(missing)}}, "--port", str(free_port()), edge_check)
    assert_one_line_error(result, f"edge model file not found: {missing}")


def test_a_port_already_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(tmp_path, {"edge": {"enabled": False}}, "--port", str(port))
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}: Address already in use")


def test_a_bad_log_level(tmp_path: Path) -> None:
    result = serve(tmp_path, {"edge": {"enabled": False}}, "--log-level", "loud")
    assert result.returncode == 2
    assert_one_line_error(result, "argument --log-level: invalid choice: 'loud'")
