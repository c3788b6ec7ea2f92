"""infra/Dockerfile.server, read statically (no Docker engine here): what the image runs and as whom."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "infra" / "Dockerfile.server"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(s for s in text.splitlines() if not s.lstrip().startswith("#")))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in (raw.strip() for raw in joined.splitlines())
        if line
    ]


STEPS = instructions(DOCKERFILE.read_text())
FINAL = STEPS[max(i for i, (op, _) in enumerate(STEPS) if op == "FROM") :]


def last(op: str) -> str:
    return [args for name, args in FINAL if name == op][-1]


def test_the_server_runs_as_a_user_that_is_not_root() -> None:
    user = last("USER").split(":")[0]
    assert user not in ("root", "0")
    assert any(op == "RUN" and f"--uid {user}" in args for op, args in FINAL)


def test_it_serves_on_every_interface_on_the_exposed_port_from_a_mounted_config() -> None:
    command = json.loads(last("CMD"))
    assert command[:2] == ["hybrid-router", "serve"]
    option = dict(zip(command[2::2], command[3::2], strict=True))
    assert option["--host"] == "0.0.0.0"
    assert last("EXPOSE") == option["--port"]
    assert option["--config"].startswith("/etc/hybrid-router/")


def test_the_healthcheck_asks_the_liveness_endpoint() -> None:
    check = last("HEALTHCHECK")
    assert f"127.0.0.1:{last('EXPOSE')}/health'" in check


def test_llama_cpp_is_built_by_the_one_build_script_and_checked() -> None:
    runs = " ".join(args for op, args in STEPS if op == "RUN")
    assert "python infra/llama_cpp_build.py install" in runs
    assert "--only-binary llama-cpp-python" in runs and "hybrid-router edge check" in runs
    assert "-march=native" not in runs and "GGML_NATIVE=ON" not in runs


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / "infra" / "Dockerfile.server.dockerignore").read_text().splitlines()
    for op, args in STEPS:
        if op == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert f"!{source}" in ignore or f"!{source}/**" in ignore, source
