"""The decision log: one JSON object per line, no prefix (python-json-logger), with the request id."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from hyrouter.cloud.server import decision_log_formatter, log_config
from hyrouter.router import Decision, RequestOutcome, RouteReason, log_decision, request_id_scope


def outcome(
    target: str = "cloud", *, fallback: bool = False, error_code: str | None = None
) -> RequestOutcome:
    decision = Decision(
        target=target,  # type: ignore[arg-type]
        reason=RouteReason.SCORE_ABOVE_THRESHOLD,
        score=0.81234,
        threshold=0.5,
        tier="free",
        tenant="acme",
        estimator="heuristic@1",
        fallback=fallback,
    )
    return RequestOutcome(
        decision=decision,
        model="m",
        status=200,
        stream=False,
        prompt_tokens=12,
        completion_tokens=3,
        estimator_ms=0.7,
        upstream_ms=420.0,
        cost_usd=0.0001,
        error_code=error_code,
    )


@pytest.fixture
def decision_lines() -> Iterator[io.StringIO]:
    """The decision logger's output through the server's formatter, as `hybrid-router serve` sets it up."""
    logger = logging.getLogger("hybrid_router.decisions")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(decision_log_formatter())
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield out
    logger.removeHandler(handler)
    logger.setLevel(saved[0])
    logger.propagate = saved[1]


def test_the_decision_log_is_one_json_object_per_line_with_the_request_id(
    decision_lines: io.StringIO,
) -> None:
    with request_id_scope("req-json-1"):
        log_decision(outcome())
    log_decision(outcome("edge"))
    lines = decision_lines.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)  # the whole line: no prefix
    assert first["event"] == "route_decision" and first["request_id"] == "req-json-1"
    assert first["target"] == "cloud" and first["score"] == 0.8123 and first["tier"] == "free"
    assert first["level"] == "INFO" and first["time"]
    assert second["request_id"] is None and second["target"] == "edge"


def test_serve_sends_the_decision_log_alone_to_its_json_handler() -> None:
    config = log_config()
    decisions = config["loggers"]["hybrid_router.decisions"]
    assert decisions["propagate"] is False and decisions["handlers"] == ["decisions"]
    handler = config["handlers"]["decisions"]
    assert handler["stream"] == "ext://sys.stdout" and "filters" not in handler
    assert config["formatters"]["decisions"]["()"] is decision_log_formatter
    # every other line of the router names the request it was written for
    assert "%(request_id)s" in config["formatters"]["router"]["format"]
    assert config["handlers"]["router"]["filters"] == ["request_id"]
    assert "%(request_id)s" in config["formatters"]["access"]["fmt"]
