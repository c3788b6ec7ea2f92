#!/usr/bin/env python3
"""Build and install llama-cpp-python portably: the one place every install path goes through.

`make install` (and so `make run`, `make test`, CI), `make models` and the container image all call
this script; nothing else builds llama.cpp.

Why: llama.cpp's default build (GGML_NATIVE=ON) compiles with `-march=native`, so the library holds
whatever the build machine's CPU advertises (AVX-512, AMX). Run on a CPU or a VM that lacks one of
them, or whose kernel has not enabled it (AMX tiles need the OS's permission), the first decode dies
with SIGILL and takes the whole process with it. And pip's wheel cache does not key on CMAKE_ARGS:
a native wheel built once is silently reused by every later install on that machine.

So the default build is a fixed baseline, not the build machine's CPU:

- x86_64: x86-64-v3 (SSE4.2, AVX, AVX2, FMA, F16C, BMI2): Intel since Haswell (2013), AMD since
  Zen 1 (2017), Lambda's x86 hosts, CI runners. No AVX-512, no AVX-VNNI, no AMX.
- aarch64: armv8.2-a with dotprod and fp16: Graviton 2/3/4 (Lambda arm64), Raspberry Pi 5, phones
  since about 2018. A Raspberry Pi 4 (Cortex-A72, armv8.0) needs `-DGGML_CPU_ARM_ARCH=armv8-a`.
- anything else: GGML_NATIVE=OFF with llama.cpp's own defaults for that architecture.

llama.cpp's runtime dispatch (GGML_CPU_ALL_VARIANTS with GGML_BACKEND_DL) is not used: it picks a
variant from CPUID bits alone (ggml-cpu/arch/x86/cpu-feats.cpp), so on a VM whose CPUID advertises
AMX but whose kernel does not enable it, it would pick the AMX variant and crash the same way.

Wheels are kept in a wheelhouse folder named by a hash of everything that changes the binary (the
package version, the CMake arguments, the Python ABI, the platform, and for a native build the CPU's
flags), and built with pip's cache off, so a wheel built with other flags is never picked up.

Usage (run with the interpreter of the environment to install into):
    python infra/llama_cpp_build.py install   # build or reuse the keyed wheel, then (re)install it
    python infra/llama_cpp_build.py wheel     # build or reuse it; print the folder holding it
    python infra/llama_cpp_build.py show      # the CMake arguments, key and folder, as JSON

Environment:
    HYBRID_ROUTER_LLAMA_CMAKE_ARGS   replaces the baseline, e.g. "-DGGML_NATIVE=ON" for a build
                                     for this machine only (faster on it, unsafe to copy elsewhere)
    HYBRID_ROUTER_WHEELHOUSE         where keyed wheels live (default ~/.cache/hybrid-router/wheelhouse)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from pathlib import Path

PACKAGE = "llama-cpp-python"
CMAKE_ARGS_ENV = "HYBRID_ROUTER_LLAMA_CMAKE_ARGS"
WHEELHOUSE_ENV = "HYBRID_ROUTER_WHEELHOUSE"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

#: x86-64-v3, spelled in llama.cpp's options; every wider extension off explicitly.
X86_64_BASELINE = (
    "-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
    "-DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF "
    "-DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
)
ARM64_BASELINE = "-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16"
GENERIC_BASELINE = "-DGGML_NATIVE=OFF"
_FALSE = {"OFF", "0", "FALSE", "NO", "N"}


def pinned_version(pyproject: Path = PYPROJECT) -> str:
    """The llama-cpp-python version the project pins (its `edge` extra): one source of truth."""
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    for requirement in extras["edge"]:
        if match := re.fullmatch(rf"{PACKAGE}==([\w.]+)", requirement.replace(" ", "")):
            return match.group(1)
    raise SystemExit(f"pyproject.toml's edge extra pins no {PACKAGE}==VERSION")


def baseline_cmake_args(machine: str | None = None) -> str:
    """The portable CMake arguments for a CPU architecture (`platform.machine()` by default)."""
    arch = (machine or platform.machine()).lower()
    if arch in {"x86_64", "amd64"}:
        return X86_64_BASELINE
    if arch in {"aarch64", "arm64"}:
        return ARM64_BASELINE
    return GENERIC_BASELINE


def cmake_args(environ: dict[str, str] | None = None) -> str:
    """The user's override when set (and not blank), else the portable baseline."""
    override = (environ if environ is not None else os.environ).get(CMAKE_ARGS_ENV, "").strip()
    return override or baseline_cmake_args()


def is_native(args: str) -> bool:
    """Whether a build with these arguments targets the build machine (GGML_NATIVE defaults to ON)."""
    value = "ON"
    for arg in shlex.split(args):
        if match := re.fullmatch(r"-DGGML_NATIVE(?::BOOL)?=(\S*)", arg, flags=re.IGNORECASE):
            value = match.group(1).upper()
    return value not in _FALSE


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The CPU's feature flags as the kernel reports them (x86 `flags`, arm `Features`); [] elsewhere."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in {"flags", "Features"}:
            return sorted(set(value.split()))
    return []


def build_key(version: str, args: str, *, flags: list[str] | None = None) -> dict[str, object]:
    """Everything that changes the built library; the wheelhouse folder is named by its hash."""
    return {
        "package": PACKAGE,
        "version": version,
        "cmake_args": shlex.split(args),
        "python": sys.implementation.cache_tag,
        "platform": sysconfig.get_platform(),
        "machine": platform.machine(),
        # A native build is only valid on a CPU with exactly these flags.
        "cpu_flags": (flags if flags is not None else cpu_flags()) if is_native(args) else None,
    }


def key_digest(key: dict[str, object]) -> str:
    """A short, stable hash of a build key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def wheelhouse_root(environ: dict[str, str] | None = None) -> Path:
    """Where keyed wheel folders live."""
    env = environ if environ is not None else os.environ
    if value := env.get(WHEELHOUSE_ENV, "").strip():
        return Path(value).expanduser()
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "hybrid-router" / "wheelhouse"


def wheel_folder(root: Path, key: dict[str, object]) -> Path:
    """The folder that holds the one wheel built for `key`."""
    return root / f"{PACKAGE}-{key['version']}-{key_digest(key)}"


def find_wheel(folder: Path) -> Path | None:
    """The wheel in a keyed folder, if a complete build left one there."""
    wheels = sorted(folder.glob("*.whl")) if (folder / "key.json").is_file() else []
    return wheels[0] if len(wheels) == 1 else None


def build_wheel(version: str, args: str, folder: Path) -> Path:
    """Compile llama-cpp-python from source with `args` into `folder` (pip's cache off).

    The build happens in a scratch folder that is renamed into place only when it succeeded, so a
    killed build never leaves a wheel behind to be reused.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
    log = folder.parent / f"{folder.name}.build.log"
    env = {
        **os.environ,
        "CMAKE_ARGS": args,
        "FORCE_CMAKE": "1",
        "CMAKE_BUILD_PARALLEL_LEVEL": os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1)),
    }
    command = [
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
        "--no-binary", PACKAGE, "--wheel-dir", str(scratch), f"{PACKAGE}=={version}",
    ]  # fmt: skip
    print(
        f"building {PACKAGE} {version} from source (about 7 minutes on 2 cores)\n"
        f"  CMAKE_ARGS={args}\n  log: {log}",
        file=sys.stderr,
        flush=True,
    )
    with log.open("w") as out:
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise SystemExit(f"{tail}\nbuilding {PACKAGE} failed (exit {result.returncode}); full log: {log}")
    (scratch / "key.json").write_text(json.dumps(build_key(version, args), indent=2, sort_keys=True) + "\n")
    try:
        scratch.rename(folder)
    except OSError:  # another install finished the same build first: keep that one
        shutil.rmtree(scratch, ignore_errors=True)
    wheel = find_wheel(folder)
    if wheel is None:
        raise SystemExit(f"no wheel in {folder} after the build; full log: {log}")
    return wheel


def ensure_wheel(args: str | None = None) -> Path:
    """The keyed wheel for `args` (default `cmake_args()`): reused if a complete build exists, else built."""
    version, args = pinned_version(), args or cmake_args()
    folder = wheel_folder(wheelhouse_root(), build_key(version, args))
    wheel = find_wheel(folder)
    if wheel is not None:
        print(f"{PACKAGE} {version}: reusing {wheel}", file=sys.stderr)
        return wheel
    return build_wheel(version, args, folder)


#: Written into the environment by `install`: the build key of the llama-cpp-python it holds.
INSTALLED_KEY = Path(sys.prefix) / "llama-cpp-build.json"


def install(wheel: Path) -> None:
    """(Re)install `wheel` into this interpreter's environment, whatever llama-cpp-python it holds."""
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall"]
    subprocess.run([*command, str(wheel)], check=True)
    shutil.copyfile(wheel.parent / "key.json", INSTALLED_KEY)


def main(argv: list[str] | None = None) -> int:
    """The command line: install, wheel or show."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["install", "wheel", "show"])
    args = parser.parse_args(argv)
    if args.command == "show":
        version, cmake = pinned_version(), cmake_args()
        key = build_key(version, cmake)
        folder = wheel_folder(wheelhouse_root(), key)
        print(json.dumps({"key": key, "digest": key_digest(key), "folder": str(folder)}, indent=2))
        return 0
    wheel = ensure_wheel()
    if args.command == "wheel":
        print(wheel.parent)
    else:
        install(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
