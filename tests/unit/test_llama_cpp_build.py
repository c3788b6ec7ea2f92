"""infra/llama_cpp_build.py: the one portable build of llama-cpp-python, keyed by its flags."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from infra import llama_cpp_build as build

ROOT = Path(__file__).resolve().parents[2]


def test_x86_baseline_is_x86_64_v3_without_avx512_or_amx() -> None:
    args = build.baseline_cmake_args("x86_64")
    assert "-DGGML_NATIVE=OFF" in args
    for on in ("AVX", "AVX2", "FMA", "F16C", "BMI2"):
        assert f"-DGGML_{on}=ON" in args
    for off in ("AVX512", "AVX512_VNNI", "AVX_VNNI", "AMX_TILE", "AMX_INT8", "AMX_BF16"):
        assert f"-DGGML_{off}=OFF" in args
    assert not build.is_native(args)


def test_arm64_and_other_baselines_are_not_native() -> None:
    assert "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16" in build.baseline_cmake_args("aarch64")
    assert build.baseline_cmake_args("arm64") == build.baseline_cmake_args("aarch64")
    for machine in ("aarch64", "riscv64", "ppc64le"):
        assert not build.is_native(build.baseline_cmake_args(machine))


@pytest.mark.parametrize(
    ("args", "native"),
    [
        ("", True),  # llama.cpp's default is GGML_NATIVE=ON
        ("-DGGML_AVX2=ON", True),
        ("-DGGML_NATIVE=OFF", False),
        ("-DGGML_NATIVE:BOOL=off", False),
        ("-DGGML_NATIVE=0 -DGGML_NATIVE=ON", True),  # the last one wins, as in CMake
    ],
)
def test_is_native(args: str, native: bool) -> None:
    assert build.is_native(args) is native


def test_override_replaces_the_baseline_and_blank_is_no_override() -> None:
    assert build.cmake_args({build.CMAKE_ARGS_ENV: "-DGGML_NATIVE=ON"}) == "-DGGML_NATIVE=ON"
    assert build.cmake_args({build.CMAKE_ARGS_ENV: "  "}) == build.baseline_cmake_args()
    assert build.cmake_args({}) == build.baseline_cmake_args()


def test_the_key_changes_with_the_flags_and_a_native_key_with_the_cpu() -> None:
    portable = build.baseline_cmake_args()
    a = build.build_key("0.3.36", portable, flags=["avx2"])
    b = build.build_key("0.3.36", portable, flags=["avx2", "amx_tile"])
    assert build.key_digest(a) == build.key_digest(b)  # a portable wheel runs on both CPUs
    native_a = build.build_key("0.3.36", "-DGGML_NATIVE=ON", flags=["avx2"])
    native_b = build.build_key("0.3.36", "-DGGML_NATIVE=ON", flags=["avx2", "amx_tile"])
    assert len({build.key_digest(k) for k in (a, native_a, native_b)}) == 3
    assert build.key_digest(build.build_key("0.3.37", portable)) != build.key_digest(a)


def test_the_pinned_version_is_the_one_every_extra_asks_for() -> None:
    version = build.pinned_version()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = {
        match.group(1)
        for requirements in extras.values()
        for requirement in requirements
        if (match := re.fullmatch(r"llama-cpp-python(?:\[\w+\])?==([\w.]+)", requirement.replace(" ", "")))
    }
    assert pins == {version}


def _fake_pip(returncode: int, calls: list[dict[str, Any]]) -> Any:
    """Stands in for `pip wheel`: records the call and leaves a wheel in --wheel-dir when it succeeds."""

    def run(command: list[str], *, env: dict[str, str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        calls.append({"command": command, "cmake_args": env["CMAKE_ARGS"]})
        if returncode == 0:
            wheel_dir = Path(command[command.index("--wheel-dir") + 1])
            (wheel_dir / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl").write_bytes(b"wheel")
        return subprocess.CompletedProcess(command, returncode)

    return run


def test_a_wheel_built_with_other_flags_is_never_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(build.WHEELHOUSE_ENV, str(tmp_path))
    monkeypatch.delenv(build.CMAKE_ARGS_ENV, raising=False)
    # A native wheel, built and kept earlier on this machine.
    native = build.wheel_folder(tmp_path, build.build_key(build.pinned_version(), "-DGGML_NATIVE=ON"))
    native.mkdir()
    (native / "key.json").write_text("{}")
    (native / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl").write_bytes(b"native")
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(build.subprocess, "run", _fake_pip(0, calls))

    wheel = build.ensure_wheel()

    assert wheel.read_bytes() == b"wheel" and wheel.parent != native
    [call] = calls
    assert call["cmake_args"] == build.baseline_cmake_args()
    assert "--no-cache-dir" in call["command"] and "--no-binary" in call["command"]
    key = json.loads((wheel.parent / "key.json").read_text())
    assert key["cmake_args"] == build.baseline_cmake_args().split()
    # Asked again, the portable wheel is reused: no second build.
    assert build.ensure_wheel() == wheel and len(calls) == 1


def test_a_failed_or_killed_build_leaves_nothing_to_reuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(build.WHEELHOUSE_ENV, str(tmp_path))
    monkeypatch.delenv(build.CMAKE_ARGS_ENV, raising=False)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(build.subprocess, "run", _fake_pip(1, calls))
    with pytest.raises(SystemExit, match="building llama-cpp-python failed"):
        build.ensure_wheel()
    assert not list(tmp_path.glob("llama-cpp-python-*/*.whl"))
    # A folder a killed build left without its key.json is not a finished build.
    folder = build.wheel_folder(tmp_path, build.build_key(build.pinned_version(), build.cmake_args()))
    folder.mkdir()
    (folder / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl").write_bytes(b"half")
    assert build.find_wheel(folder) is None


def test_show_prints_the_key_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(build.WHEELHOUSE_ENV, str(tmp_path))
    monkeypatch.setenv(build.CMAKE_ARGS_ENV, "-DGGML_NATIVE=OFF")
    result = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "llama_cpp_build.py"), "show"],
        capture_output=True,
        text=True,
        check=True,
    )
    shown = json.loads(result.stdout)
    assert shown["key"]["cmake_args"] == ["-DGGML_NATIVE=OFF"]
    assert shown["folder"].startswith(str(tmp_path)) and shown["digest"] in shown["folder"]
