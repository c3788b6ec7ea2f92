"""The operations surface end to end: request ids, the JSON decision log, Prometheus text, readiness
and the cloud probe; the real router (`hybrid-router serve`, real uvicorn), the real SmolLM2 model,
the stand-in GPU endpoint, the official `openai` client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from hyrouter.cloud.app import create_app
from hyrouter.cloud.engines import build_engine
from hyrouter.router import RouterConfig, RoutingEngine, parse_config
from tests.servers import ADMIN, KEYS, free_port, make_router_config, router_process

pytestmark = pytest.mark.functional

EASY = "What is the capital of France?"


@pytest.fixture(scope="module")
def router(standin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The router on loopback, probing the stand-in every half second; yields its URL and its log file."""
    config = make_router_config(standin_url)
    config["cloud"]["probe_interval_s"] = 0.5
    tmp = tmp_path_factory.mktemp("ops")
    with router_process(config, tmp, log_level="info") as (_, base):  # info: the decision log too
        yield base, tmp / f"router-{base.rsplit(':', 1)[1]}.log"


def openai_client(base: str, tier: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=KEYS[tier], max_retries=0, timeout=60)


def decision_lines(log_file: Path, request_id: str, wait_s: float = 10.0) -> list[dict[str, Any]]:
    """The decision log's lines for `request_id`: each a whole line of JSON, with no prefix."""
    deadline = time.monotonic() + wait_s
    while True:
        found = [
            json.loads(line)
            for line in log_file.read_text().splitlines()
            if line.startswith("{") and f'"request_id": "{request_id}"' in line
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_a_streamed_answer_carries_the_callers_request_id_into_the_decision_log(
    router: tuple[str, Path],
) -> None:
    base, log_file = router
    with openai_client(base, "free") as c:
        raw = c.chat.completions.with_raw_response.create(
            model="hybrid-router",
            messages=[{"role": "user", "content": EASY}],
            max_tokens=8,
            temperature=0,
            stream=True,
            extra_headers={"X-Request-Id": "ops-stream-1"},
        )
        assert raw.headers["x-request-id"] == "ops-stream-1"
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
    (line,) = decision_lines(log_file, "ops-stream-1")
    assert line["event"] == "route_decision" and line["target"] == "edge" and line["stream"] is True
    assert line["level"] == "INFO" and "capital" not in json.dumps(line)  # no prompt text


def test_an_error_carries_a_request_id_in_its_header_and_body(router: tuple[str, Path]) -> None:
    base, _ = router
    with openai_client(base, "free") as c, pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(
            model="hybrid-router", messages=[], extra_headers={"x-request-id": "x" * 200}
        )
    made = info.value.request_id  # what the official client reads from `x-request-id`
    assert made is not None and len(made) == 32 and made != "x" * 200
    body = info.value.body
    assert isinstance(body, dict) and body.get("error", body)["request_id"] == made
    denied = httpx.get(f"{base}/v1/models", headers={"x-request-id": "ops-401"})
    assert denied.status_code == 401 and denied.headers["x-request-id"] == "ops-401"
    assert denied.json()["error"]["request_id"] == "ops-401"


def test_metrics_are_prometheus_text_that_prometheus_client_parses(router: tuple[str, Path]) -> None:
    base, _ = router
    with openai_client(base, "premium") as c:
        c.chat.completions.create(
            model="hybrid-router", messages=[{"role": "user", "content": EASY}], max_tokens=4
        )
    scraped = httpx.get(f"{base}/metrics", headers=ADMIN)
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    requests = families["hybrid_router_requests"]
    assert requests.type == "counter"
    wanted = {"tier": "premium", "target": "cloud", "reason": "tier_forces_cloud"}
    assert any(s.labels == wanted for s in requests.samples), requests.samples
    assert families["hybrid_router_upstream_latency_seconds"].type == "histogram"
    assert 0 < families["hybrid_router_cloud_share"].samples[0].value <= 1
    assert families["hybrid_router_cloud_breaker_state"].samples[0].value == 0
    assert httpx.get(f"{base}/metrics").status_code == 401


def test_the_cloud_probe_shows_in_healthz_and_the_router_is_live_and_ready(router: tuple[str, Path]) -> None:
    base, _ = router
    assert httpx.get(f"{base}/livez").json() == {"status": "ok"}
    assert httpx.get(f"{base}/readyz").json() == {"status": "ready"}
    deadline = time.monotonic() + 10
    while (probe := httpx.get(f"{base}/healthz", headers=ADMIN).json()["cloud"]["probe"]) is None:
        assert time.monotonic() < deadline, "no probe result within 10 s"
        time.sleep(0.2)
    assert probe["ok"] and probe["status"] == 200 and probe["interval_s"] == 0.5, probe
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}  # no detail without a key


@pytest.fixture
def cold_router() -> Iterator[tuple[str, RoutingEngine]]:
    """The app under real uvicorn on loopback, with the real SmolLM2 backend not loaded yet."""
    config = parse_config(make_router_config(None))
    built: list[RoutingEngine] = []

    async def unloaded(config: RouterConfig) -> RoutingEngine:
        built.append(build_engine(config, load_edge=False))
        return built[0]

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(config, engine_factory=unloaded), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", built[0]
    finally:
        server.should_exit = True
        thread.join(30)


def test_readyz_is_503_until_the_edge_model_has_decoded_its_first_token(
    cold_router: tuple[str, RoutingEngine],
) -> None:
    base, engine = cold_router
    assert httpx.get(f"{base}/livez").status_code == 200
    cold = httpx.get(f"{base}/readyz")
    assert cold.status_code == 503 and cold.json() == {"status": "not_ready", "reason": "edge model not warm"}
    assert cold.headers["x-request-id"]
    assert engine.edge is not None
    engine.edge.load()  # type: ignore[attr-defined]  # loads SmolLM2 and decodes its warm-up tokens
    assert httpx.get(f"{base}/readyz").status_code == 200
