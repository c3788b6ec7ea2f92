"""Outcome records: the engine's observer, its bounded queue and writer thread, the SQLite store, feedback."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hyrouter.router import (
    ChatCompletionRequest,
    ChatMessage,
    HeuristicEstimator,
    OutcomeRecord,
    OutcomeWriter,
    RoutingEngine,
    Tenant,
    parse_config,
)
from hyrouter.router._outcome_sqlite import SqliteOutcomeStore
from hyrouter.router._outcomes import prompt_digest
from tests.fakes import FakeBackend, outcome_record

CONFIG = parse_config(
    {
        "tiers": {
            "free": {"threshold": 0.7},
            "premium": {"cloud": "forced", "store_prompts": True},
        },
    }
)
ACME = Tenant("acme", "free")
GLOBEX = Tenant("globex", "premium")
EASY = "What is the capital of France?"


def request(text: str = EASY, **kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "hybrid-router", "messages": [{"role": "user", "content": text}], **kw}
    )


def engine(writer: OutcomeWriter | None, **kw: Any) -> RoutingEngine:
    return RoutingEngine(
        CONFIG,
        estimator=kw.pop("estimator", HeuristicEstimator()),
        edge=FakeBackend("edge"),
        cloud=FakeBackend("cloud"),
        outcomes=writer,
        log_decisions=False,
        **kw,
    )


@pytest.fixture
def store(tmp_path: Path) -> SqliteOutcomeStore:
    return SqliteOutcomeStore(tmp_path / "outcomes.sqlite3")


class FeaturesEstimator:
    """An estimator that hands over its features, counting how it was asked."""

    name = "featured"
    version = "0.1"

    def __init__(self) -> None:
        self.with_features = 0

    def score(self, messages: Sequence[ChatMessage]) -> float:
        return 0.1

    def score_with_features(self, messages: Sequence[ChatMessage]) -> tuple[float, Sequence[float] | None]:
        self.with_features += 1
        return 0.1, [0.25, -0.5, 1.0]


class BlockedStore:
    """A store whose writes wait until `release` is set (a slow store), or raise `fail`."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.release = threading.Event()
        self.fail = fail
        self.written: list[OutcomeRecord] = []

    def write(self, records: Sequence[OutcomeRecord]) -> None:
        if self.fail is not None:
            raise self.fail
        self.release.wait(10)
        self.written.extend(records)

    def rate(self, record_id: str, tenant: str, rating: float, comment: str | None) -> bool:
        return False

    def close(self) -> None:
        self.release.set()


@pytest.mark.anyio
async def test_every_answer_is_recorded_with_its_decision_and_no_prompt_text(
    store: SqliteOutcomeStore,
) -> None:
    e = engine(OutcomeWriter(store, salt="pepper"))
    answer = await e.complete(request(), ACME)
    await e.aclose()  # writes what is queued
    record = stored(store, answer.id)
    assert record is not None
    assert answer.route is not None
    assert record["tenant"] == "acme" and record["tier"] == "free"
    assert (record["target"], record["reason"]) == ("edge", "score_below_threshold")
    assert record["fallback"] == 0 and record["status"] == 200 and record["stream"] == 0
    assert record["score"] == pytest.approx(answer.route.score, abs=1e-4)
    assert record["estimator"] == "heuristic@1.0.0" and record["model"] == "edge-model"
    assert (record["prompt_tokens"], record["completion_tokens"]) == (10, 2)
    assert record["cost_saved_usd"] == pytest.approx(answer.route.cost_saved_usd) and record["cost_usd"] == 0
    assert record["latency_ms"] >= 0 and abs(record["created_at"] - time.time()) < 60
    assert record["prompt"] is None and record["features"] is None  # the heuristic has no features
    assert record["prompt_sha256"] == prompt_digest(b"pepper", EASY)


@pytest.mark.anyio
async def test_a_tier_that_opts_in_keeps_the_prompt_text(store: SqliteOutcomeStore) -> None:
    e = engine(OutcomeWriter(store, salt="pepper"))
    answer = await e.complete(request(), GLOBEX)
    await e.aclose()
    record = stored(store, answer.id)
    assert record is not None and record["prompt"] == EASY and record["target"] == "cloud"
    assert record["cost_usd"] > 0


@pytest.mark.anyio
async def test_streamed_answers_are_recorded_under_their_id(store: SqliteOutcomeStore) -> None:
    e = engine(OutcomeWriter(store))
    routed = await e.stream(request(stream=True), ACME)
    ids = {chunk.id async for chunk in routed.chunks}
    await e.aclose()
    (completion_id,) = ids
    record = stored(store, completion_id)
    assert record is not None and record["stream"] == 1 and record["status"] == 200


@pytest.mark.anyio
async def test_the_estimators_features_are_recorded_and_asked_for_only_when_recording(
    store: SqliteOutcomeStore,
) -> None:
    estimator = FeaturesEstimator()
    await engine(None, estimator=estimator).complete(request(), ACME)
    assert estimator.with_features == 0  # no records, no features
    e = engine(OutcomeWriter(store), estimator=estimator)
    answer = await e.complete(request(), ACME)
    await e.aclose()
    record = stored(store, answer.id)
    assert record is not None and record["features"] == [0.25, -0.5, 1.0]


def test_same_prompt_same_salt_same_hash_another_salt_another() -> None:
    assert prompt_digest(b"a", EASY) == prompt_digest(b"a", EASY) != prompt_digest(b"b", EASY)
    assert EASY not in prompt_digest(b"a", EASY)


@pytest.mark.anyio
async def test_a_slow_store_never_slows_a_request_and_a_full_queue_is_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow = BlockedStore()
    writer = OutcomeWriter(slow, max_queue=2, batch_size=1, linger_s=0)
    e = engine(writer)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="hybrid_router.outcomes"):
        for _ in range(10):
            await e.complete(request(), ACME)
    assert time.perf_counter() - started < 2.0  # the store waits 10 s per write
    # At most two records taken by the writer (the first blocks it) and two queued: the rest are
    # dropped, counted and logged once.
    assert writer.stats()["dropped"] >= 6
    drops = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert len(drops) == 1
    slow.release.set()
    writer.close()
    assert len(slow.written) == 10 - writer.stats()["dropped"]


@pytest.mark.anyio
async def test_a_failing_store_never_fails_a_request_and_is_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = OutcomeWriter(BlockedStore(fail=OSError("disk full")), linger_s=0)
    e = engine(writer)
    with caplog.at_level(logging.ERROR, logger="hybrid_router.outcomes"):
        for _ in range(3):
            answer = await e.complete(request(), ACME)
            assert answer.choices[0].message.content == "ok"
            assert writer.flush()  # one batch per request
    assert writer.stats()["failed"] == 3 and writer.stats()["written"] == 0
    assert len([r for r in caplog.records if "failed to write" in r.getMessage()]) == 1
    await e.aclose()


@pytest.mark.anyio
async def test_feedback_joins_the_callers_own_record_only(store: SqliteOutcomeStore) -> None:
    writer = OutcomeWriter(store)
    e = engine(writer)
    answer = await e.complete(request(), ACME)
    # Right after the answer: the record may still be queued; `rate` writes it first.
    assert writer.rate(answer.id, "acme", 1.0, "spot on")
    assert not writer.rate(answer.id, "globex", -1.0, None)  # another tenant's: as if unknown
    assert not writer.rate("chatcmpl-never", "acme", 1.0, None)
    record = stored(store, answer.id)
    assert record is not None and (record["rating"], record["comment"]) == (1.0, "spot on")
    await e.aclose()


@pytest.mark.anyio
async def test_feedback_waits_for_the_writer_only_for_an_id_it_has_queued(
    store: SqliteOutcomeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = OutcomeWriter(store, linger_s=30.0)  # what is queued stays queued until a flush
    flushes: list[float] = []
    flush = writer.flush

    def counted(timeout: float = 5.0) -> bool:
        flushes.append(timeout)
        return flush(timeout)

    monkeypatch.setattr(writer, "flush", counted)
    e = engine(writer)
    answer = await e.complete(request(), ACME)
    # Random ids cost one store call each, never a wait for the writer thread.
    assert not any(writer.rate(f"chatcmpl-random-{i}", "acme", 1.0, None) for i in range(20))
    assert flushes == []
    assert writer.rate(answer.id, "acme", 1.0, None)  # queued: written first, then rated
    assert len(flushes) == 1
    assert not writer.rate(answer.id, "globex", 1.0, None)  # written now: no wait for another tenant
    assert len(flushes) == 1
    await e.aclose()


@pytest.mark.anyio
async def test_a_rating_after_the_writer_is_closed_is_refused_not_an_error(
    store: SqliteOutcomeStore,
) -> None:
    writer = OutcomeWriter(store)
    e = engine(writer)
    answer = await e.complete(request(), ACME)
    await e.aclose()  # the server shuts down; a feedback call still comes in
    assert not writer.rate(answer.id, "acme", 1.0, "late")
    assert not store.rate(answer.id, "acme", 1.0, "late")  # the store's own answer, once closed
    record = stored(store, answer.id)
    assert record is not None and record["rating"] is None


@pytest.mark.anyio
async def test_aclose_writes_what_is_queued_before_it_returns(tmp_path: Path) -> None:
    slow = BlockedStore()
    e = engine(OutcomeWriter(slow))
    for _ in range(3):
        await e.complete(request(), ACME)
    threading.Timer(0.2, slow.release.set).start()
    await e.aclose()
    assert len(slow.written) == 3


def test_the_sqlite_store_takes_writes_and_ratings_from_several_threads(store: SqliteOutcomeStore) -> None:
    def records(worker: int) -> list[OutcomeRecord]:
        return [_record(f"chatcmpl-{worker}-{i}", f"t{worker}") for i in range(50)]

    def work(worker: int) -> None:
        for start in range(0, 50, 10):
            store.write(records(worker)[start : start + 10])
        assert store.rate(f"chatcmpl-{worker}-7", f"t{worker}", 0.5, None)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 400
    record = store.get("chatcmpl-3-7")
    assert record is not None and record["rating"] == 0.5


def test_the_sqlite_file_is_in_wal_mode_and_keeps_a_first_record(store: SqliteOutcomeStore) -> None:
    import sqlite3

    store.write([_record("chatcmpl-1", "acme")])
    store.write([_record("chatcmpl-1", "intruder")])  # the same id again does not replace it
    record = store.get("chatcmpl-1")
    assert record is not None and record["tenant"] == "acme"
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_file_written_by_an_older_version_gains_the_newer_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the first version's table: no confidence, no judge's verdict
        db.execute(
            "CREATE TABLE outcomes (id TEXT PRIMARY KEY, created_at REAL NOT NULL, tenant TEXT NOT NULL)"
        )
        db.execute("INSERT INTO outcomes VALUES ('chatcmpl-old', 1.0, 'acme')")
    store = SqliteOutcomeStore(path)
    try:
        store.write([_record("chatcmpl-new", "acme")])
        assert store.judge("chatcmpl-old", True, "judge")
        old, new = list(store.records())
        assert old["id"] == "chatcmpl-old" and old["judged_good"] is True and old["confidence"] is None
        assert new["features"] == [0.5, 0.25]
    finally:
        store.close()


def stored(store: SqliteOutcomeStore, record_id: str) -> dict[str, Any] | None:
    """The record in `store`'s file, read through a connection of its own (the writer closes its store)."""
    reader = SqliteOutcomeStore(store.path)
    try:
        return reader.get(record_id)
    finally:
        reader.close()


def _record(record_id: str, tenant: str) -> OutcomeRecord:
    return outcome_record(record_id, tenant=tenant)


def _open_at_once(path: str, barrier: Any, errors: Any) -> None:
    barrier.wait()
    try:
        SqliteOutcomeStore(path).close()
    except Exception as exc:  # reported to the parent, which asserts there were none
        errors.put(repr(exc))


@pytest.mark.parametrize("older", [True, False])
def test_several_processes_may_open_one_file_at_once(tmp_path: Path, older: bool) -> None:
    import multiprocessing
    import sqlite3

    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    for attempt in range(4):  # the race is narrow: several rounds
        path = tmp_path / f"outcomes-{attempt}.sqlite3"
        if older:  # workers restarting after an upgrade all add the new columns at once
            with sqlite3.connect(path) as db:
                db.execute(
                    "CREATE TABLE outcomes (id TEXT PRIMARY KEY, created_at REAL NOT NULL, tenant TEXT)"
                )
        barrier = context.Barrier(3)
        workers = [context.Process(target=_open_at_once, args=(str(path), barrier, errors)) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert all(worker.exitcode == 0 for worker in workers)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
