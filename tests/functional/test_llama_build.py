"""The installed llama.cpp build: portable and decodes here; and a broken one stops `serve` at start."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hyrouter.edge.build_check import explain, run_build_check
from tests.servers import free_port, make_router_config, spawn_router

pytestmark = pytest.mark.functional

#: What the portable x86-64 build must not hold: code for these crashes on CPUs without them.
WIDER_THAN_BASELINE = {
    "AVX512",
    "AVX512_VBMI",
    "AVX512_VNNI",
    "AVX512_BF16",
    "AVX_VNNI",
    "AMX_INT8",
    "AMX_BF16",
}


def test_the_installed_build_decodes_here_and_holds_only_what_it_was_built_for() -> None:
    check = run_build_check()
    assert check.ok, explain(check)
    # What `infra/llama_cpp_build.py install` put here (make install; make llama with an override).
    installed = json.loads((Path(sys.prefix) / "llama-cpp-build.json").read_text())
    assert installed["version"] == importlib.metadata.version("llama-cpp-python")
    if platform.machine() in {"x86_64", "AMD64"} and "-DGGML_AVX512=OFF" in installed["cmake_args"]:
        assert {"AVX", "AVX2", "FMA", "F16C"} <= set(check.features), check.system_info
        assert not WIDER_THAN_BASELINE & set(check.features), check.system_info


def test_serve_refuses_to_start_on_a_build_check_that_fails(tmp_path: Path) -> None:
    bad_model = tmp_path / "not-a-model.gguf"
    bad_model.write_bytes(b"GGUF but not really")
    config = make_router_config(None, edge={"model_path": str(bad_model)})
    config_file = tmp_path / "router.yaml"
    config_file.write_text(yaml.safe_dump(config))
    process = spawn_router(config_file, free_port(), stdout=subprocess.PIPE)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 1, out.decode()
    assert b"The llama.cpp check in" in out and b"failed (exit status 1)" in out


def test_edge_check_command_passes_on_the_installed_build() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hyrouter.cloud.cli", "edge", "check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "llama.cpp runs on this CPU" in result.stdout
