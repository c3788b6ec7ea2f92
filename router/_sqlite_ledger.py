"""A `Ledger` in one SQLite file: one budget for every worker and process of a server on one machine.

Each reservation is one conditional UPSERT (`... DO UPDATE ... WHERE spent + cost <= budget`):
SQLite runs a statement under the database's write lock, so of N concurrent reservations that fit
k times exactly k succeed, across threads, connections and processes alike. The file is in WAL mode
(readers never wait for the writer); a writer waits up to `busy_timeout_ms` for the lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from hyrouter.router._accounting import (
    TOTAL,
    Budget,
    Reservation,
    minute_key,
    seconds_to_next_minute,
    to_nano_usd,
    utc_now,
)
from hyrouter.router._sqlite import use_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    tenant TEXT NOT NULL,
    period TEXT NOT NULL,
    spent_nusd INTEGER NOT NULL DEFAULT 0,
    saved_nusd INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, period)
) WITHOUT ROWID
"""

_RATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    tenant TEXT PRIMARY KEY,
    minute TEXT NOT NULL,
    count INTEGER NOT NULL
) WITHOUT ROWID
"""

# One row per tenant: a new minute starts it again at 1; within the minute it counts up to the limit.
_ADMIT = """
INSERT INTO requests (tenant, minute, count) VALUES (:tenant, :minute, 1)
ON CONFLICT (tenant) DO UPDATE SET
    count = CASE WHEN minute = excluded.minute THEN count + 1 ELSE 1 END, minute = excluded.minute
WHERE minute != excluded.minute OR count < :limit
"""

_RESERVE = """
INSERT INTO spend (tenant, period, spent_nusd) VALUES (:tenant, :period, :cost)
ON CONFLICT (tenant, period) DO UPDATE SET spent_nusd = spent_nusd + excluded.spent_nusd
WHERE spent_nusd + excluded.spent_nusd <= :limit
"""

_ADD = """
INSERT INTO spend (tenant, period, spent_nusd, saved_nusd) VALUES (:tenant, :period, :spent, :saved)
ON CONFLICT (tenant, period) DO UPDATE SET
    spent_nusd = spent_nusd + excluded.spent_nusd, saved_nusd = saved_nusd + excluded.saved_nusd
"""


class SqliteLedger:
    """Spend per tenant and period in the SQLite file `path` (created when missing); thread-safe.

    Every thread uses a connection of its own, in autocommit mode: each call is one statement,
    atomic by itself.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], datetime] = utc_now,
        busy_timeout_ms: int = 5000,
    ) -> None:
        """Open (and create) the ledger in `path`; `clock` (UTC) says which period a request falls in."""
        self.path = Path(path)
        self._clock = clock
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        connection = self._connection()
        use_wal(connection)
        connection.execute(_SCHEMA)
        connection.execute(_RATE_SCHEMA)

    def __repr__(self) -> str:
        return f"SqliteLedger({str(self.path)!r})"

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path,
                isolation_level=None,
                timeout=self._busy_timeout_ms / 1000.0,
                check_same_thread=False,  # used by its own thread only; `close` may come from another
            )
            self._local.connection = connection
            with self._lock:
                self._opened.append(connection)
        return connection

    def close(self) -> None:
        """Close every thread's connection (a later call opens new ones)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()
        self._local = threading.local()

    def budget_left(self, tenant: str, budget: Budget | None) -> float | None:
        """What is left of `budget` for `tenant` in the current period; None when it is unlimited."""
        if budget is None:
            return None
        return budget.usd - self._spent_nano(tenant, budget.period_key(self._clock())) / 1e9

    def spent(self, tenant: str, period: str = TOTAL) -> float:
        """Cloud spend (reservations included) of `tenant` in the period keyed `period`."""
        return self._spent_nano(tenant, period) / 1e9

    def _spent_nano(self, tenant: str, period: str) -> int:
        row = (
            self._connection()
            .execute("SELECT spent_nusd FROM spend WHERE tenant = ? AND period = ?", (tenant, period))
            .fetchone()
        )
        return int(row[0]) if row else 0

    def reserve(self, tenant: str, budget: Budget, cost_usd: float) -> Reservation | None:
        """Hold `cost_usd` of the current period's budget in one conditional UPSERT; None when it
        would pass the budget."""
        cost, limit = to_nano_usd(cost_usd), to_nano_usd(budget.usd)
        if cost > limit:  # the INSERT of a first reservation is not conditional
            return None
        period = budget.period_key(self._clock())
        cursor = self._connection().execute(
            _RESERVE, {"tenant": tenant, "period": period, "cost": cost, "limit": limit}
        )
        return Reservation(tenant, period, cost) if cursor.rowcount == 1 else None

    def admit(self, tenant: str, per_minute: int) -> float | None:
        """Count one request in the current minute in one conditional UPSERT, unless `per_minute`
        are counted; else the seconds until the next minute."""
        now = self._clock()
        cursor = self._connection().execute(
            _ADMIT, {"tenant": tenant, "minute": minute_key(now), "limit": per_minute}
        )
        return None if cursor.rowcount == 1 else seconds_to_next_minute(now)

    def settle(self, reservation: Reservation, cost_usd: float) -> None:
        """Replace `reservation` by the actual cost."""
        delta = to_nano_usd(cost_usd) - reservation.nano_usd
        self._add(reservation.tenant, reservation.period, spent=delta)

    def charge(self, tenant: str, cost_usd: float) -> None:
        """Add a cost no reservation held to `tenant`'s all-time spend."""
        self._add(tenant, TOTAL, spent=to_nano_usd(cost_usd))

    def credit_saving(self, tenant: str, saved_usd: float) -> None:
        """Record what an edge answer saved `tenant` against always-cloud."""
        self._add(tenant, TOTAL, saved=to_nano_usd(saved_usd))

    def saved(self, tenant: str) -> float:
        """What edge answers saved `tenant` so far."""
        row = (
            self._connection()
            .execute("SELECT saved_nusd FROM spend WHERE tenant = ? AND period = ?", (tenant, TOTAL))
            .fetchone()
        )
        return int(row[0]) / 1e9 if row else 0.0

    def _add(self, tenant: str, period: str, *, spent: int = 0, saved: int = 0) -> None:
        self._connection().execute(_ADD, {"tenant": tenant, "period": period, "spent": spent, "saved": saved})
