"""Fixtures shared by all tests: the stand-in GPU endpoint, started once per session when needed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Moto in place of AWS: fake credentials in one region, every boto3 call served in this process.

    DynamoDB applies a conditional write to an item atomically; moto's in-memory backend checks and
    writes in two steps, so that threads interleave there (a rate limit of 7 once let 9 through). One
    lock around its item writes is the service's own atomicity.
    """
    from moto import mock_aws
    from moto.dynamodb.models import DynamoDBBackend

    for name, value in {
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    atomic = threading.Lock()
    for method in ("update_item", "put_item"):
        original = getattr(DynamoDBBackend, method)

        def one_at_a_time(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with atomic:
                return _original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, method, one_at_a_time)
    with mock_aws():
        yield
