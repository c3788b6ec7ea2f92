"""`pip install hybrid-router` with no extras: a light core whose every command works or names its extra.

One fresh venv per module, the project installed into it from a copy of this tree (no extras, no
`-e`), commands run from outside the tree so that nothing of the checkout is imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.functional, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
# what a source distribution holds (hyrouter/ links the four folders: copied with their links)
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "hyrouter", "router", "edge", "cloud", "models")
CLOUD_ONLY = """
estimator: {{name: {estimator}}}
edge: {{enabled: false}}
cloud: {{url: "http://127.0.0.1:9/v1", model: x}}
tiers: {{free: {{cloud: allowed, threshold: 0.5}}}}
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv holding `pip install <this project>` and nothing else."""
    base = tmp_path_factory.mktemp("light")
    source = base / "src"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=120)
    subprocess.run(
        [str(base / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", str(source)],
        check=True,
        timeout=540,
        cwd=base,
        env=_clean_env(),
    )
    yield base / "venv"


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("HYBRID_ROUTER_")
    }


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "hybrid-router"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=_clean_env(),
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    return line


def test_the_learned_estimator_runtimes_are_not_installed(venv: Path) -> None:
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.util as u; "
         "print([m for m in ('numpy', 'onnxruntime', 'tokenizers') if u.find_spec(m)])"],
        capture_output=True, text=True, check=True, cwd=venv, env=_clean_env(),
    )  # fmt: skip
    assert found.stdout.strip() == "[]"


def test_help_lists_every_command_and_what_each_needs(venv: Path, tmp_path: Path) -> None:
    result = _run(venv, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout
    assert "(needs the eval extra)" in result.stdout


def test_serve_names_the_server_extra(venv: Path, tmp_path: Path) -> None:
    config = tmp_path / "cloud-only.yaml"
    config.write_text(CLOUD_ONLY.format(estimator="heuristic"))
    assert _one_line(_run(venv, "serve", "--config", str(config), cwd=tmp_path)) == (
        "hybrid-router: serve needs the server extra: pip install 'hyrouter[server]' "
        "(no module named 'uvicorn')"
    )


def test_route_with_the_edge_enabled_names_the_edge_extra(venv: Path, tmp_path: Path) -> None:
    line = _one_line(_run(venv, "route", "hi", "--tier", "free", cwd=tmp_path))
    assert line.startswith("hybrid-router: the edge model needs the edge extra: ")
    assert "pip install 'hyrouter[edge]'" in line


def test_route_on_a_cloud_only_config_works_with_the_heuristic_and_names_onnx_for_a_learned_one(
    venv: Path, tmp_path: Path
) -> None:
    heuristic, learned = tmp_path / "heuristic.yaml", tmp_path / "learned.yaml"
    heuristic.write_text(CLOUD_ONLY.format(estimator="heuristic"))
    learned.write_text(CLOUD_ONLY.format(estimator="static-minilm"))
    result = _run(venv, "route", "hi", "--tier", "free", "--config", str(heuristic), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert (decision["estimator"], decision["target"]) == ("heuristic@1.0.0", "cloud")
    line = _one_line(_run(venv, "route", "hi", "--tier", "free", "--config", str(learned), cwd=tmp_path))
    assert line.startswith("hybrid-router: estimator static-minilm@1.1.0 needs the onnx extra: ")


def test_eval_names_the_eval_extra(venv: Path, tmp_path: Path) -> None:
    line = _one_line(_run(venv, "eval", "--benchmark", "gsm8k", cwd=tmp_path))
    assert line.startswith("hybrid-router: eval needs the eval extra: pip install 'hyrouter[eval]'")


@pytest.mark.parametrize("command", [("edge", "check"), ("edge", "ask", "hi")])
def test_the_edge_sdk_names_the_edge_extra_before_the_model(
    venv: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    line = _one_line(_run(venv, *command, cwd=tmp_path))
    # `edge ask` reads the SDK config first, whose phone regions need the same extra
    assert line.startswith("hybrid-router: ") and " needs the edge extra: pip install " in line, line
