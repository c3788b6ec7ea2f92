"""What every SQLite file of ours needs when several processes open it at once."""

from __future__ import annotations

import sqlite3
import time


def use_wal(connection: sqlite3.Connection, timeout_s: float = 10.0) -> None:
    """Put the file of `connection` in WAL mode.

    When several processes open a new file at once, all of them ask for the change and SQLite
    answers "database is locked" at once to the losers (the busy timeout does not cover it): ask
    again until `timeout_s` has passed. A file already in WAL mode answers without a lock.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)
