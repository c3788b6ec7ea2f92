"""hyrouter.edge.build_check: a llama.cpp build that crashes on this CPU is a report, not a dead process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hyrouter.edge import build_check
from hyrouter.edge.build_check import BuildCheck, cpu_flags, explain, run_build_check

SYSTEM_INFO = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | "

# A child that reports its build's features, then dies as an AMX build does on a VM that lacks it.
SIGILL_CHILD = f"""
import json, os, signal
print(json.dumps({{"system_info": {SYSTEM_INFO!r}}}), flush=True)
os.kill(os.getpid(), signal.SIGILL)
"""


def test_features_and_signal() -> None:
    check = BuildCheck(returncode=-4, system_info=SYSTEM_INFO, output="")
    assert check.features == ["SSE3", "AVX", "AVX2", "AVX512", "AMX_INT8", "LLAMAFILE"]
    assert not check.ok and check.signal_name == "SIGILL"
    assert BuildCheck(returncode=1, system_info="", output="").signal_name is None


def test_cpu_flags_x86_and_arm(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma amx_tile avx512f hypervisor\n")
    assert cpu_flags(x86) == ["amx_tile", "avx", "avx2", "avx512f", "fma", "sse4_2"]
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 asimddp\n")
    assert cpu_flags(arm) == ["asimd", "asimddp"]
    assert cpu_flags(tmp_path / "missing") == []


def test_a_crashing_build_is_reported_with_the_cpu_flags_and_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_check, "_CHILD", SIGILL_CHILD)
    check = run_build_check(tmp_path / "model.gguf")
    assert check.signal_name == "SIGILL"
    assert "AMX_INT8" in check.features
    message = explain(check, ["avx2", "amx_tile"])
    assert "killed by SIGILL" in message and "does not support" in message
    assert "built with: SSE3 AVX AVX2 AVX512 AMX_INT8 LLAMAFILE" in message
    assert "this CPU:   avx2 amx_tile" in message
    assert f'{build_check.CMAKE_ARGS_ENV}="-DGGML_NATIVE=ON" make llama' in message


def test_a_child_that_hangs_is_a_failure_within_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_check, "_CHILD", "import time; time.sleep(30)")
    check = run_build_check(Path("model.gguf"), timeout_s=0.5)
    assert not check.ok and "no answer within 0.5s" in check.output


def test_edge_check_command_exits_1_on_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hyrouter.cloud.cli import main

    monkeypatch.setattr(build_check, "_CHILD", SIGILL_CHILD)
    assert main(["edge", "check", "--model", str(tmp_path / "m.gguf"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["signal"] == "SIGILL" and "AMX_INT8" in report["features"]
    assert main(["edge", "check", "--model", str(tmp_path / "m.gguf")]) == 1
    assert "cannot decode on this CPU: killed by SIGILL" in capsys.readouterr().err
