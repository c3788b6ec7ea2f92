"""`SqliteOutcomeStore`: outcome records in one SQLite file (WAL), for a local server or a device.

One row per record, one column per `OutcomeRecord` field (`features` as a BLOB of little-endian
float32, `pack_features`), then `rating`, `comment` and `rated_at` once the caller rates the answer,
and `judged_good`, `judge` and `judged_at` once a judge (shadow judging) has compared the edge's
answer with the cloud's. A file written by an older version gains the newer columns when opened.

The embedded default (`outcomes: {store: sqlite, path: ...}`). WAL lets readers (an analysis, `models
fit` later) read while the writer thread writes, and several server processes share one file; within a
process, one connection serves every thread, one statement at a time.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from hyrouter.router._outcomes import LABEL_FIELDS, OutcomeRecord, pack_features, unpack_features
from hyrouter.router._sqlite import use_wal

_COLUMNS = [f.name for f in fields(OutcomeRecord)]
#: Each column's type: the record's fields (untyped but for the key), then the labels joined later.
_TYPES = {
    **dict.fromkeys(_COLUMNS, ""),
    "id": "TEXT PRIMARY KEY",
    "created_at": "REAL NOT NULL",
    "tenant": "TEXT NOT NULL",
    "rating": "REAL",
    "comment": "TEXT",
    "rated_at": "REAL",
    "judged_good": "INTEGER",
    "judge": "TEXT",
    "judged_at": "REAL",
}
assert set(_TYPES) == {*_COLUMNS, *LABEL_FIELDS}
_CREATE = f"CREATE TABLE IF NOT EXISTS outcomes ({', '.join(f'{n} {t}'.strip() for n, t in _TYPES.items())})"
_INDEX = "CREATE INDEX IF NOT EXISTS outcomes_created_at ON outcomes (created_at)"
_INSERT = (
    f"INSERT OR IGNORE INTO outcomes ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
)


class SqliteOutcomeStore:
    """Outcome records in the SQLite file `path` (made, with its folder, when missing)."""

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the file in WAL mode."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._closed = False
        self._db = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
        try:
            with self._lock:
                use_wal(self._db)
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        """Make the table, or give a file written by an older version the columns added since (NULL
        in its rows), in one write transaction: processes opening the file at once take turns."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(_CREATE)
            self._db.execute(_INDEX)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(outcomes)")}
            for name, kind in _TYPES.items():
                if name not in have:  # a new column cannot be NOT NULL: older rows have none
                    kind = kind.replace(" NOT NULL", "").replace(" PRIMARY KEY", "")
                    self._db.execute(f"ALTER TABLE outcomes ADD COLUMN {name} {kind}".strip())
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back already (a full disk, ...)
                self._db.execute("ROLLBACK")
            raise

    def __repr__(self) -> str:
        return f"SqliteOutcomeStore({str(self.path)!r})"

    def write(self, records: Sequence[OutcomeRecord]) -> None:
        """Insert `records` in one transaction (an id already kept is left as it is)."""
        rows = []
        for record in records:
            rows.append(_row(record.fields()))
            time.sleep(0)  # this runs on the writer thread: let the event loop have the GIL

        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(_INSERT, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def rate(self, record_id: str, tenant: str, rating: float, comment: str | None) -> bool:
        """Join a rating to `tenant`'s record `record_id`; False when `tenant` has no such record, or
        once the store is closed (a rating during shutdown is refused, not an error).

        The rating replaces any earlier one whole: a rating without a comment leaves none.
        """
        with self._lock:
            if self._closed:
                return False
            cursor = self._db.execute(
                "UPDATE outcomes SET rating = ?, comment = ?, rated_at = ? WHERE id = ? AND tenant = ?",
                (rating, comment, time.time(), record_id, tenant),
            )
        return cursor.rowcount > 0

    def judge(self, record_id: str, good: bool, judge: str) -> bool:
        """Join a judge's verdict to record `record_id`; False when there is none (or once closed)."""
        with self._lock:
            if self._closed:
                return False
            cursor = self._db.execute(
                "UPDATE outcomes SET judged_good = ?, judge = ?, judged_at = ? WHERE id = ?",
                (int(good), judge, time.time(), record_id),
            )
        return cursor.rowcount > 0

    def get(self, record_id: str) -> dict[str, Any] | None:
        """The record `record_id` with its labels, as a dict (`features` decoded); None when unknown."""
        with self._lock:
            cursor = self._db.execute("SELECT * FROM outcomes WHERE id = ?", (record_id,))
            row = cursor.fetchone()
            names = [d[0] for d in cursor.description]
        return None if row is None else _record(names, row)

    def records(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Every record created at or after `since` (all when None), oldest first, with its labels.

        Read on a connection of its own, a page at a time: the writer thread is never held up.
        """
        db = sqlite3.connect(self.path, timeout=10.0)
        try:
            cursor = db.execute(
                "SELECT * FROM outcomes WHERE created_at >= ? ORDER BY created_at, id",
                (float("-inf") if since is None else since,),
            )
            names = [d[0] for d in cursor.description]
            while rows := cursor.fetchmany(500):
                for row in rows:
                    yield _record(names, row)
        finally:
            db.close()

    def count(self) -> int:
        """How many records the file holds."""
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM outcomes").fetchone()
        return int(n)

    def close(self) -> None:
        """Close the connection (a later `rate` answers False)."""
        with self._lock:
            self._closed = True
            self._db.close()


def _record(names: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(names, row, strict=True))
    if record["features"] is not None:
        record["features"] = unpack_features(record["features"])
    for flag in ("fallback", "stream", "judged_good"):
        if record.get(flag) is not None:
            record[flag] = bool(record[flag])
    return record


def _row(record: dict[str, Any]) -> tuple[object, ...]:
    return tuple(_column(record[name]) for name in _COLUMNS)


def _column(value: object) -> object:
    return pack_features(value) if isinstance(value, list) else value
