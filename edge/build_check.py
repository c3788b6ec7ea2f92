"""Does the installed llama.cpp build run on this CPU? One short decode, in a child process.

A llama.cpp library compiled for instructions that this CPU (or its OS) does not support dies with
SIGILL at the first decode and takes the whole process with it: no fallback, no error object. Run
in a child process the crash becomes a result to report, with the CPU's flags and the way out.
`make install` and the container build run it (`hybrid-router edge check`), so a broken build
fails the install, never a user's first request.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hyrouter.edge._settings import EdgeSettings
from hyrouter.edge.model_files import default_model_path

#: The environment variable `infra/llama_cpp_build.py` reads to replace the portable CMake arguments.
CMAKE_ARGS_ENV = EdgeSettings.LLAMA_CMAKE_ARGS_ENV

#: The kernel's names of the instruction-set extensions a llama.cpp build may be compiled for.
SIMD_FLAGS = frozenset(
    {"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx_vnni", "avx512f", "avx512bw", "avx512vl"}
    | {"avx512_vnni", "avx512_bf16", "avx512vbmi", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16"}
    | {"asimd", "asimddp", "asimdhp", "fphp", "i8mm", "sve", "sve2", "sme"}
)

# The child: print the build's compiled-in features first (so they survive a crash), then decode.
_CHILD = """
import json, sys
import llama_cpp
print(json.dumps({"system_info": llama_cpp.llama_print_system_info().decode()}), flush=True)
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=128, n_threads=int(sys.argv[2]), verbose=False)
out = llm.create_completion("Hello", max_tokens=2, temperature=0)
print(json.dumps({"text": out["choices"][0]["text"]}), flush=True)
"""


@dataclass(frozen=True)
class BuildCheck:
    """What the check's child process did: its exit status, the build's features, its output."""

    returncode: int
    system_info: str
    output: str

    @property
    def ok(self) -> bool:
        """Whether the child decoded and exited cleanly."""
        return self.returncode == 0

    @property
    def signal_name(self) -> str | None:
        """The signal that killed the child (`SIGILL` for an unsupported instruction), if one did."""
        if self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"

    @property
    def features(self) -> list[str]:
        """The CPU features the build was compiled with (`AVX2`, `AVX512`, `AMX_INT8`, ...)."""
        return re.findall(r"(\w+) = 1", self.system_info)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """This CPU's instruction-set extensions that matter to llama.cpp, as the kernel reports them."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() in {"flags", "Features"}:
            return sorted(SIMD_FLAGS.intersection(value.split()))
    return []


def run_build_check(
    model_path: Path | None = None, *, n_threads: int = 1, timeout_s: float = 300.0
) -> BuildCheck:
    """Load the edge model in a child process and decode two tokens; report what happened.

    Raises:
        EdgeBackendError: no model path was given and the default model is not installed.
    """
    path = model_path or default_model_path()
    command = [sys.executable, "-c", _CHILD, str(path), str(n_threads)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        # The output a timeout carries is bytes even in text mode.
        partial = b"".join(x if isinstance(x, bytes) else x.encode() for x in (exc.stdout, exc.stderr) if x)
        output = f"{partial.decode(errors='replace')}\nno answer within {timeout_s:g}s"
        return BuildCheck(returncode=124, system_info="", output=output)
    system_info = ""
    for line in result.stdout.splitlines():
        if line.startswith("{") and "system_info" in line:
            system_info = json.loads(line)["system_info"]
    return BuildCheck(result.returncode, system_info, (result.stdout + result.stderr).strip())


def explain(check: BuildCheck, flags: list[str] | None = None) -> str:
    """A message for a person: what failed, what the build holds, what this CPU has, how to fix it."""
    flags = cpu_flags() if flags is None else flags
    built = " ".join(check.features) or "unknown (the library did not load)"
    if check.ok:
        return f"llama.cpp runs on this CPU. Built with: {built}. CPU: {' '.join(flags) or 'unknown'}."
    how = f"killed by {check.signal_name}" if check.signal_name else f"exit status {check.returncode}"
    tail = "\n".join(check.output.splitlines()[-15:])
    if check.signal_name is None:  # an error the child reported itself: a bad model file, a missing package
        return f"{tail}\n\nThe llama.cpp check in {sys.prefix} failed ({how}): the output above says why."
    reason = " (an instruction this CPU or its OS does not support)" if check.signal_name == "SIGILL" else ""
    return (
        f"{tail}\n\n"
        f"The llama.cpp build in {sys.prefix} cannot decode on this CPU: {how}{reason}.\n"
        f"  built with: {built}\n"
        f"  this CPU:   {' '.join(flags) or 'unknown'}\n"
        "Rebuild it with the portable baseline (unset any override):\n"
        f"  unset {CMAKE_ARGS_ENV}; make llama\n"
        "or with your own flags, for example a build for this machine only:\n"
        f'  {CMAKE_ARGS_ENV}="-DGGML_NATIVE=ON" make llama\n'
        "(a Raspberry Pi 4 or another armv8.0 CPU: "
        f'{CMAKE_ARGS_ENV}="-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8-a")'
    )
