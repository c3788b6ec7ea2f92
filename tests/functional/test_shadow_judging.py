"""Shadow judging end to end: the real server, the stand-in endpoint (llama.cpp) as both cloud and judge,
outcome records in a SQLite file, the official openai client; the verdicts come after the answers."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import ADMIN, KEYS, make_router_config, router_process

pytestmark = pytest.mark.functional

QUESTIONS = ("What is the capital of France?", "Say hi")


def labels(path: Path, ids: list[str]) -> dict[str, tuple[Any, Any, Any]]:
    """Each known record's (target, judged_good, judge); a record not written yet is left out."""
    with sqlite3.connect(path) as db:
        rows = db.execute(
            f"SELECT id, target, judged_good, judge FROM outcomes WHERE id IN ({','.join('?' * len(ids))})",
            ids,
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


def scrape(base: str) -> dict[tuple[str, str | None, str | None], float]:
    """The server's /metrics samples by (name, tier, event)."""
    text = httpx.get(f"{base}/metrics", headers=ADMIN).text
    return {
        (s.name, s.labels.get("tier"), s.labels.get("event")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def shadow_counts(base: str) -> dict[str, float]:
    """The free tier's shadow counts by event."""
    return {
        event: value
        for (name, tier, event), value in scrape(base).items()
        if name == "hybrid_router_shadow_total" and tier == "free" and event is not None
    }


def test_sampled_edge_answers_are_judged_after_their_responses_and_the_verdicts_join_their_records(
    tmp_path: Path, standin_url: str
) -> None:
    path = tmp_path / "outcomes.sqlite3"
    config = make_router_config(
        standin_url, outcomes={"store": "sqlite", "path": str(path), "salt": "functional"}
    )
    # Every free edge answer is judged; the stand-in (SmolLM2) judges by a forced `verdict` call, the
    # form a judge that small keeps to.
    config["tiers"]["free"]["shadow"] = {
        "sample_rate": 1.0,
        "budget_usd": 1.0,
        "verdict": "tool_call",
    }
    with router_process(config, tmp_path, log_level="info") as (_, base):
        ids: list[str] = []
        with openai.OpenAI(base_url=f"{base}/v1", api_key=KEYS["free"], max_retries=0, timeout=60) as client:
            for question in QUESTIONS:
                answer = client.chat.completions.create(
                    model="hybrid-router", messages=[{"role": "user", "content": question}], max_tokens=8
                )
                # The response is out; its judging (a cloud answer and a judge's call, seconds on the
                # stand-in) has at most begun: no verdict yet.
                assert labels(path, [answer.id]).get(answer.id, (None, None, None))[1] is None
                ids.append(answer.id)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:  # every job done: judged, or not (which fails below)
            counts = shadow_counts(base)
            if sum(counts.get(e, 0) for e in ("judged", "unparseable", "failed")) >= len(QUESTIONS):
                break
            time.sleep(0.5)
        time.sleep(0.3)  # the writer's linger: the last verdict is queued behind its record
        found = labels(path, ids)
        log = "".join(p.read_text() for p in tmp_path.glob("router-*.log"))
        assert counts.get("judged") == len(QUESTIONS), log[-3000:]
        assert set(found) == set(ids)
        for target, judged, judge in found.values():
            assert target == "edge"
            assert judged in (0, 1), log[-3000:]  # a verdict, whichever way
            assert judge == "pairwise:cloud-standin"
        samples = scrape(base)
        log = "".join(p.read_text() for p in tmp_path.glob("router-*.log"))
    # The learning gauges, scraped: the counts and the edge-good rate agree with the records.
    assert samples[("hybrid_router_shadow_total", "free", "sampled")] == len(QUESTIONS)
    good = sum(judged for _, judged, _ in found.values())
    assert samples[("hybrid_router_shadow_total", "free", "edge_good")] == good
    assert samples[("hybrid_router_shadow_edge_good_rate", "free", None)] == good / len(QUESTIONS)
    assert "Traceback" not in log and "ERROR" not in log
