"""LlamaCppBackend.load(): the model decodes once before it counts as loaded (a fake llama_cpp module)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hyrouter.edge.llama_cpp_backend import LlamaCppBackend
from hyrouter.router._config import EdgeConfig
from hyrouter.router._errors import EdgeBackendError


class FakeLlama:
    """Records what the backend does with the model; `fail` makes the first decode raise."""

    fail: Exception | None = None
    instances: list[FakeLlama] = []  # noqa: RUF012 - a record shared by the test

    def __init__(self, **kwargs: Any) -> None:
        self.calls: list[str] = []
        FakeLlama.instances.append(self)

    def create_completion(self, prompt: str, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(f"complete {prompt!r} max_tokens={kwargs['max_tokens']}")
        if FakeLlama.fail is not None:
            raise FakeLlama.fail
        return {"choices": [{"text": " there"}]}

    def reset(self) -> None:
        self.calls.append("reset")

    def close(self) -> None:
        self.calls.append("close")


@pytest.fixture
def fake_llama(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> EdgeConfig:
    module = ModuleType("llama_cpp")
    module.Llama = FakeLlama  # type: ignore[attr-defined]
    module.LLAMA_DEFAULT_SEED = 0xFFFFFFFF  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    FakeLlama.instances, FakeLlama.fail = [], None
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    return EdgeConfig(model_path=str(model), parallel=1)  # the fake has no batch API


def test_load_decodes_before_the_backend_is_available(fake_llama: EdgeConfig) -> None:
    backend = LlamaCppBackend(fake_llama)
    assert backend.warm_up_s is None
    backend.load()
    [llm] = FakeLlama.instances
    assert llm.calls == ["complete 'Hello' max_tokens=2", "reset"]
    assert backend.warm_up_s is not None and backend.warm_up_s >= 0
    assert backend.health().available


def test_a_model_that_cannot_decode_fails_load_and_stays_unavailable(fake_llama: EdgeConfig) -> None:
    FakeLlama.fail = RuntimeError("llama_decode returned -3")
    backend = LlamaCppBackend(fake_llama)
    with pytest.raises(EdgeBackendError, match="loaded but cannot decode: llama_decode returned -3"):
        backend.load()
    [llm] = FakeLlama.instances
    assert llm.calls[-1] == "close"
    assert not backend.loaded and not backend.health().available
