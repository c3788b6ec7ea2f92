"""Outcome records and feedback end to end: the real server, an outcomes SQLite file, the openai client."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.servers import KEYS, make_router_config, router_process

pytestmark = pytest.mark.functional


def record(path: Path, completion_id: str) -> dict[str, Any] | None:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM outcomes WHERE id = ?", (completion_id,)).fetchone()
    return dict(row) if row is not None else None


def test_a_rating_joins_the_callers_record_and_every_answer_is_in_the_file_after_shutdown(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outcomes.sqlite3"
    config = make_router_config(None, outcomes={"store": "sqlite", "path": str(path), "salt": "functional"})
    with router_process(config, tmp_path) as (_, base):
        with openai.OpenAI(base_url=f"{base}/v1", api_key=KEYS["free"], max_retries=0, timeout=60) as client:
            ask = {"model": "hybrid-router", "max_tokens": 4, "temperature": 0}
            rated = client.chat.completions.create(
                messages=[{"role": "user", "content": "What is the capital of France?"}], **ask
            )
        feedback = {"id": rated.id, "rating": 1, "comment": "right"}
        free = {"authorization": f"Bearer {KEYS['free']}"}
        mine = httpx.post(f"{base}/v1/feedback", json=feedback, headers=free)
        theirs = httpx.post(
            f"{base}/v1/feedback", json=feedback, headers={"authorization": f"Bearer {KEYS['standard']}"}
        )
        bad = httpx.post(
            f"{base}/v1/feedback",
            json={"id": rated.id, "rating": 3},
            headers=free,
        )
        assert mine.status_code == 200, mine.text
        assert mine.json() == {"id": rated.id, "object": "feedback", "rating": 1.0}
        assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "outcome_not_found"
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "rating"
        row = record(path, rated.id)
        assert row is not None and (row["rating"], row["comment"], row["tenant"]) == (1.0, "right", "t-free")
        assert (row["target"], row["tier"], row["status"], row["prompt"]) == ("edge", "free", 200, None)
        with openai.OpenAI(base_url=f"{base}/v1", api_key=KEYS["free"], max_retries=0, timeout=60) as client:
            # The last answer, then SIGTERM at once (that `aclose` writes what is still queued is
            # test_outcomes.py's: here the writer's 50 ms linger and uvicorn's shutdown race).
            unrated = client.chat.completions.create(messages=[{"role": "user", "content": "Say hi"}], **ask)
    # The server has stopped: what it had queued is in the file.
    row = record(path, unrated.id)
    assert row is not None and row["rating"] is None and row["completion_tokens"] > 0
