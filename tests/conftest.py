"""Fixtures shared by all tests: the stand-in GPU endpoint, started once per session when needed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import free_port


@pytest.fixture(scope="session")
def standin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OpenAI-compatible server (llama-cpp-python's, SmolLM2) on loopback: the stand-in GPU."""
    from hyrouter.cloud.standin import start_standin

    log = Path(tmp_path_factory.mktemp("standin")) / "standin.log"
    endpoint = start_standin(port=free_port(), n_ctx=2048, n_threads=2, log_file=log)
    try:
        yield endpoint.url
    finally:
        endpoint.stop()


@pytest.fixture
def anyio_backend() -> str:
    """Run `@pytest.mark.anyio` tests on asyncio only."""
    return "asyncio"
