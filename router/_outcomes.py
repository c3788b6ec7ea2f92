"""Outcome records: what happened to every routed request, written off the request path, and rated later.

The first slice of learning from our own traffic. `OutcomeWriter` is a `DecisionObserver`: `record`
only puts the finished request on a bounded queue (microseconds); a background thread turns what it
takes off the queue into `OutcomeRecord`s (the salted prompt hash, the features as floats, the prompt
text where the tier opts in) and writes them in batches to an `OutcomeStore`. A slow or failed store
never slows or fails a request: a full queue drops the record and counts it (`stats()`, a log line at
most every `LOG_EVERY_S`), a failed batch is counted and logged (as often). `close()` writes what is
queued; `flush(timeout)` waits until what is queued now is written (a Lambda, frozen once its handler
returns, flushes at the end of each invocation).

`POST /v1/feedback` joins a rating to its record with `OutcomeWriter.rate`: only the tenant whose
request it was may rate it; any other sees the same "not found" as for an id that never existed. A
record still queued is written first, and only then: an id the writer has not just recorded costs one
store call, never a wait for the writer thread. After `close()` every rating is refused as not found.

Stores: `SqliteOutcomeStore` (router/_outcome_sqlite.py: a local server or a device) and the
DynamoDB store in Lambda (cloud/aws/outcomes.py).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import queue
import secrets
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

from hyrouter.router._estimator import ComplexityEstimator, conversation_text
from hyrouter.router._metrics import RequestOutcome

logger = logging.getLogger("hybrid_router.outcomes")

#: The least seconds between two log lines about dropped records.
LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class OutcomeRecord:
    """One routed request as a store keeps it (no prompt text unless the tier opts in)."""

    id: str
    created_at: float
    tenant: str
    tier: str
    target: str
    reason: str
    fallback: bool
    score: float
    threshold: float | None
    estimator: str
    model: str
    status: int
    stream: bool
    latency_ms: float
    estimator_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cost_saved_usd: float
    error_code: str | None
    request_id: str | None
    #: hex HMAC-SHA256 of the conversation's text under the deployment's salt: joins repeats, hides text
    prompt_sha256: str
    #: the estimator's input features (`FeatureEstimator`), None where it exposes none
    features: list[float] | None = None
    #: the conversation's text, only where the tier sets `store_prompts`
    prompt: str | None = None
    #: the edge model's confidence in its answer, where the tier verifies edge answers
    confidence: float | None = None
    #: the edge's completion tokens thrown away when an unsure edge answer went to the cloud
    edge_tokens_discarded: int | None = None
    #: the A/B arm of the request ("a", "b"; `TierConfig.ab`), None where its tier runs no test
    variant: str | None = None
    #: the canary estimator (`estimator.candidate`) that also scored the request, never acted on
    candidate_estimator: str | None = None
    #: the canary's score (its decision: at or above `threshold`)
    candidate_score: float | None = None
    #: characters of the conversation's text (`conversation_text`): the length an estimator's head
    #: can read at scoring time (`prompt_tokens` is the answering model's count, known only after)
    prompt_chars: int | None = None

    def fields(self) -> dict[str, Any]:
        """The record as a dict of plain values (shallow: `features` is the record's own list)."""
        return {name: getattr(self, name) for name in _FIELD_NAMES}


_FIELD_NAMES = tuple(f.name for f in fields(OutcomeRecord))

#: What a store joins to a record after it is written: the caller's rating and a judge's verdict.
LABEL_FIELDS = ("rating", "comment", "rated_at", "judged_good", "judge", "judged_at")


class OutcomeStore(Protocol):
    """Where outcome records are kept: written in batches by one thread, rated by the feedback route."""

    def write(self, records: Sequence[OutcomeRecord]) -> None:
        """Keep `records` (an id already kept is left as it is)."""
        ...

    def rate(self, record_id: str, tenant: str, rating: float, comment: str | None) -> bool:
        """Join a rating to `tenant`'s record `record_id`; False when `tenant` has no such record."""
        ...

    def judge(self, record_id: str, good: bool, judge: str) -> bool:
        """Join a judge's verdict (was the edge's answer good enough?) to record `record_id`; False
        when there is no such record. A later verdict replaces an earlier one."""
        ...

    def records(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Every record created at or after `since` (all when None), oldest first, as dicts of the
        `OutcomeRecord` fields (`features` decoded) and the labels joined later: `rating`, `comment`,
        `rated_at`, `judged_good`, `judge`, `judged_at` (None where absent)."""
        ...

    def close(self) -> None:
        """Release the store's connections."""
        ...


def pack_features(values: Sequence[float]) -> bytes:
    """Features as stores keep them: little-endian float32, 4 bytes each (`numpy.frombuffer(b, "<f4")`)."""
    return struct.pack(f"<{len(values)}f", *values)


def unpack_features(data: bytes) -> list[float]:
    """The features `pack_features` packed."""
    return list(struct.unpack(f"<{len(data) // 4}f", data))


def prompt_digest(salt: bytes, text: str) -> str:
    """The salted hash of a prompt's text that records keep instead of the text."""
    return hmac.new(salt, text.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class _Queued:
    outcome: RequestOutcome
    at: float
    request_id: str | None


@dataclass(frozen=True)
class _Judged:
    record_id: str
    good: bool
    judge: str


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()
_MOST_PER_WAKE = 1000  # records taken off the queue per wake-up, written `batch_size` at a time


class OutcomeWriter:
    """A `DecisionObserver` that queues every finished request and writes it to `store` in batches.

    `salt` keys the prompt hash (None: a random salt for this process, and a warning: hashes then
    join only within the process). `max_queue` records may wait; more are dropped and counted.
    `candidate` (a canary estimator) scores each request's conversation on the writer thread, off the
    request path, into `candidate_score`; its failure leaves the score None.
    """

    def __init__(
        self,
        store: OutcomeStore,
        *,
        salt: str | None = None,
        max_queue: int = 10_000,
        batch_size: int = 25,
        linger_s: float = 0.05,
        clock: Callable[[], float] = time.time,
        candidate: ComplexityEstimator | None = None,
    ) -> None:
        """Start the background writer thread; it waits `linger_s` after a first record for more."""
        if not salt:
            logger.warning("no outcomes salt configured: prompt hashes join only within this process")
        self.store = store
        self.candidate = candidate
        self._candidate_id = f"{candidate.name}@{candidate.version}" if candidate is not None else None
        self._salt = (salt or secrets.token_hex(16)).encode("utf-8")
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._clock = clock
        self._lock = threading.Lock()
        self.dropped = 0  #: records dropped because the queue was full
        self.written = 0  #: records the store accepted
        self.failed = 0  #: records in batches the store refused
        self._last_drop_log = -math.inf
        self._last_failure_log = -math.inf
        self._closed = False
        #: ids recorded and not yet written (or failed), with how many times each: what `rate` flushes for
        self._pending: dict[str, int] = {}
        #: set by `flush`: the writer thread stops lingering for more records
        self._hurry = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outcome-writer", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"OutcomeWriter({self.store!r})"

    # -- the request path -------------------------------------------------------------------------

    def record(self, outcome: RequestOutcome) -> None:
        """Queue `outcome` for writing; never blocks (a full queue drops it and counts it)."""
        from hyrouter.router._request_id import current_request_id

        record_id = outcome.completion_id
        if record_id is not None:
            with self._lock:
                self._pending[record_id] = self._pending.get(record_id, 0) + 1
        try:
            self._queue.put_nowait(_Queued(outcome, self._clock(), current_request_id()))
        except queue.Full:
            if record_id is not None:
                self._written_or_failed([record_id])
            self._count_drop()

    def _written_or_failed(self, record_ids: Sequence[str]) -> None:
        with self._lock:
            for record_id in record_ids:
                left = self._pending.get(record_id, 0) - 1
                if left > 0:
                    self._pending[record_id] = left
                else:
                    self._pending.pop(record_id, None)

    def _queued(self, record_id: str) -> bool:
        with self._lock:
            return record_id in self._pending

    def _count_drop(self) -> None:
        with self._lock:
            self.dropped += 1
            now = time.monotonic()
            log = now - self._last_drop_log >= LOG_EVERY_S
            if log:
                self._last_drop_log = now
            dropped = self.dropped
        if log:
            logger.warning(
                "outcome queue full: %d records dropped so far (the store is slow or down)", dropped
            )

    def stats(self) -> dict[str, int]:
        """Records queued now, written, dropped (queue full) and failed (the store refused them)."""
        with self._lock:
            return {
                "queued": self._queue.qsize(),
                "written": self.written,
                "dropped": self.dropped,
                "failed": self.failed,
            }

    # -- feedback ---------------------------------------------------------------------------------

    def rate(self, record_id: str, tenant: str, rating: float, comment: str | None = None) -> bool:
        """Join a rating to `tenant`'s record `record_id` (blocking: call it off the event loop).

        A record still queued is written first: feedback may come right after its answer. An id this
        writer has not recorded since its last write is not waited for (one store call: an unknown id
        is cheap). False once the writer is closed (its store is).
        """
        if self._closed:
            return False
        queued = self._queued(record_id)  # before the store call: a write may finish in between
        if self.store.rate(record_id, tenant, rating, comment):
            return True
        if not (queued or self._queued(record_id)):
            return False
        return self.flush() and self.store.rate(record_id, tenant, rating, comment)

    # -- judges ------------------------------------------------------------------------------------

    def judge(self, record_id: str, good: bool, judge: str) -> bool:
        """Queue a judge's verdict on record `record_id` behind everything queued before it (its
        record among them), so that the store joins it to a record already written. Never blocks;
        False when it is not queued (a full queue, counted as dropped; a closed writer)."""
        if self._closed:
            return False
        try:
            self._queue.put_nowait(_Judged(record_id, good, judge))
        except queue.Full:
            self._count_drop()
            return False
        return True

    # -- the writer thread ------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued before now is written (or failed); False after `timeout`."""
        if self._closed or not self._thread.is_alive():
            return False
        marker = _Flush()
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        self._hurry.set()  # no lingering for more records: someone waits
        return marker.done.wait(max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer thread and close the store."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            logger.error("outcome writer: the queue stayed full; %d records lost", self._queue.qsize())
        self._thread.join(timeout)
        try:
            self.store.close()
        except Exception:
            logger.exception("closing the outcome store %r failed", self.store)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            # Linger for more, then take them all: one wake-up per batch, not one per request, so that
            # this thread rarely holds the GIL while the event loop wants it.
            if isinstance(item, _Queued) and self._linger_s and self._queue.qsize() < self._batch_size:
                self._hurry.wait(self._linger_s)
            self._hurry.clear()  # a flush from now on sets it again
            batch: list[_Queued] = []
            markers: list[_Flush] = []
            stop = False
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, _Flush):
                    markers.append(item)
                elif isinstance(item, _Queued):
                    batch.append(item)
                elif isinstance(item, _Judged):  # its record may be in the batch: write that first
                    self._write_all(batch)
                    batch = []
                    self._join_verdict(item)
                if stop or len(batch) >= _MOST_PER_WAKE:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._write_all(batch)
            for marker in markers:
                marker.done.set()
            if stop:
                return

    def _write_all(self, batch: list[_Queued]) -> None:
        for start in range(0, len(batch), self._batch_size):
            self._write(batch[start : start + self._batch_size])

    def _join_verdict(self, verdict: _Judged) -> None:
        try:
            if not self.store.judge(verdict.record_id, verdict.good, verdict.judge):
                logger.info("judged record %s is not in the store (dropped or failed)", verdict.record_id)
        except Exception:
            with self._lock:
                self.failed += 1
            logger.exception("outcome store %r failed to join a verdict", self.store)

    def _write(self, batch: list[_Queued]) -> None:
        try:
            self._store(batch)
        finally:
            self._written_or_failed([q.outcome.completion_id for q in batch if q.outcome.completion_id])

    def _store(self, batch: list[_Queued]) -> None:
        try:
            records = []
            for queued in batch:
                records.append(self._to_record(queued))
                time.sleep(0)  # let the event loop have the GIL between records
            self.store.write(records)
        except Exception:
            with self._lock:
                self.failed += len(batch)
                now = time.monotonic()
                log = now - self._last_failure_log >= LOG_EVERY_S
                if log:
                    self._last_failure_log = now
            if log:  # a store that is down fails every batch: one line a minute says so
                logger.exception(
                    "outcome store %r failed to write %d records (%d failed so far)",
                    self.store,
                    len(batch),
                    self.failed,
                )
        else:
            with self._lock:
                self.written += len(batch)

    def _to_record(self, queued: _Queued) -> OutcomeRecord:
        o = queued.outcome
        d = o.decision
        text = conversation_text(o.request.messages) if o.request is not None else ""
        features = _floats(o.features) if o.features is not None else None
        return OutcomeRecord(
            id=o.completion_id or f"failed-{uuid.uuid4().hex}",
            created_at=queued.at,
            tenant=d.tenant,
            tier=d.tier,
            target=d.target,
            reason=str(d.reason),
            fallback=d.fallback,
            score=d.score,
            threshold=d.threshold,
            estimator=d.estimator,
            model=o.model,
            status=o.status,
            stream=o.stream,
            latency_ms=o.upstream_ms,
            estimator_ms=o.estimator_ms,
            prompt_tokens=o.prompt_tokens,
            completion_tokens=o.completion_tokens,
            cost_usd=o.cost_usd,
            cost_saved_usd=o.cost_saved_usd,
            error_code=o.error_code,
            request_id=queued.request_id,
            prompt_sha256=prompt_digest(self._salt, text),
            features=features,
            prompt=text if o.keep_prompt else None,
            confidence=o.confidence,
            edge_tokens_discarded=o.edge_tokens_discarded,
            variant=d.variant,
            candidate_estimator=self._candidate_id,
            candidate_score=self._candidate_score(o),
            prompt_chars=len(text) if o.request is not None else None,
        )

    def _candidate_score(self, outcome: RequestOutcome) -> float | None:
        if self.candidate is None or outcome.request is None:
            return None
        try:
            return min(1.0, max(0.0, float(self.candidate.score(outcome.request.messages))))
        except Exception:  # a canary's bug must not lose the record
            logger.exception("candidate estimator %s failed", self._candidate_id)
            return None


def _floats(values: Sequence[float]) -> list[float]:
    """`values` as a list of Python floats: a numpy array's `tolist` is one C call, not one per value."""
    tolist = getattr(values, "tolist", None)
    return list(tolist()) if tolist is not None else [float(x) for x in values]
