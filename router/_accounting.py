"""Cost accounting: what a cloud answer cost, what an edge answer saved, and per-tenant budgets.

A budget holds across concurrent requests by reservation: before a request goes to the cloud the
engine reserves its worst-case cost (`worst_case_cost_usd`) with `Ledger.reserve`, which refuses,
atomically, what would take the period's spend past the budget; after the answer `Ledger.settle`
turns the reservation into the actual cost (a failed call settles at 0 and releases it all).
Amounts are kept as whole nano-dollars (`to_nano_usd`) so that k reservations of c fill a budget
of k*c exactly, with no float drift, in every store.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from hyrouter.router._config import CloudPrice
from hyrouter.router._wire import Usage

#: How long a budget's spend accumulates before it starts again at 0 (UTC calendar periods).
BudgetPeriod = Literal["day", "month", "total"]

#: The period key that never rolls over; also where spend outside any reservation is added.
TOTAL = "total"

NANO = 1_000_000_000


def to_nano_usd(usd: float) -> int:
    """`usd` in whole nano-dollars, the unit every ledger counts in."""
    return round(usd * NANO)


def cloud_cost_usd(usage: Usage, price: CloudPrice) -> float:
    """What `usage` costs at the cloud endpoint's price."""
    return (
        usage.prompt_tokens * price.prompt_per_1k + usage.completion_tokens * price.completion_per_1k
    ) / 1000.0


def worst_case_cost_usd(prompt_tokens: int, max_tokens: int, price: CloudPrice) -> float:
    """The most a cloud answer can cost: the prompt and every completion token it may have."""
    return cloud_cost_usd(Usage(prompt_tokens=prompt_tokens, completion_tokens=max_tokens), price)


@dataclass(frozen=True)
class Budget:
    """What a tenant may spend in the cloud per `period` (see `TierConfig.budget_usd`)."""

    usd: float
    period: BudgetPeriod = "total"

    def period_key(self, now: datetime) -> str:
        """The period `now` (UTC) falls in: "2026-11-30" for a day, "2026-11" for a month, else "total"."""
        if self.period == "day":
            return now.strftime("%Y-%m-%d")
        if self.period == "month":
            return now.strftime("%Y-%m")
        return TOTAL

    def period_end(self, now: datetime) -> datetime | None:
        """When the period `now` falls in ends (UTC); None for "total"."""
        if self.period == "day":
            return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
        if self.period == "month":
            year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
            return datetime(year, month, 1, tzinfo=UTC)
        return None


@dataclass(frozen=True)
class Reservation:
    """Money held back for one cloud request until it is settled."""

    tenant: str
    #: the period key it was taken in: settled there even if the period has rolled over since
    period: str
    nano_usd: int

    @property
    def usd(self) -> float:
        """The amount held, in dollars."""
        return self.nano_usd / NANO


def utc_now() -> datetime:
    """The ledgers' default clock."""
    return datetime.now(UTC)


class Ledger(Protocol):
    """The engine's seam for money: what each tenant may still spend, and what it spent and saved.

    `CostLedger` keeps it in this process; a shared store (`SqliteLedger`, the DynamoDB ledger in
    `hyrouter.cloud.aws`) makes a budget hold across workers and Lambda environments. The engine calls it
    from a worker thread, never on the event loop.
    """

    def budget_left(self, tenant: str, budget: Budget | None) -> float | None:
        """What is left of `budget` for `tenant` in the current period; None when it is unlimited."""
        ...

    def reserve(self, tenant: str, budget: Budget, cost_usd: float) -> Reservation | None:
        """Hold `cost_usd` of `tenant`'s budget for the current period, atomically; None (nothing
        held) when the period's spend and reservations plus `cost_usd` would pass `budget`."""
        ...

    def settle(self, reservation: Reservation, cost_usd: float) -> None:
        """Replace `reservation` by what the request actually cost (0 for a failed call)."""
        ...

    def charge(self, tenant: str, cost_usd: float) -> None:
        """Add a cloud answer's cost that no reservation held (a tier without a budget) to `tenant`'s
        all-time spend."""
        ...

    def credit_saving(self, tenant: str, saved_usd: float) -> None:
        """Record what an edge answer saved `tenant` against always-cloud."""
        ...

    def admit(self, tenant: str, per_minute: int) -> float | None:
        """Count one request of `tenant` in the current UTC minute, atomically, unless `per_minute`
        have been counted there already: then nothing is counted and the seconds until the next
        minute are returned (for `Retry-After`); None when admitted."""
        ...


def minute_key(now: datetime) -> str:
    """The UTC minute `now` falls in, the window of a rate limit: "2026-11-30T23:59"."""
    return now.strftime("%Y-%m-%dT%H:%M")


def seconds_to_next_minute(now: datetime) -> float:
    """How long until the next minute's window opens."""
    return 60.0 - now.second - now.microsecond / 1e6


class CostLedger:
    """Cloud spend per tenant and period since the process started; thread-safe.

    In-process only: a Lambda fleet or several servers each keep their own, so a budget is a limit
    per instance; use a shared store (`SqliteLedger`, DynamoDB) for one budget across them.
    """

    def __init__(self, *, clock: Callable[[], datetime] = utc_now) -> None:
        """An empty ledger; `clock` (UTC) says which period a reservation falls in."""
        self._spent: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._saved: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._clock = clock
        self._requests: dict[str, tuple[str, int]] = {}  # tenant -> (minute, requests in it)

    def charge(self, tenant: str, cost_usd: float) -> None:
        """Add a cloud answer's cost that no reservation held to `tenant`'s all-time spend."""
        with self._lock:
            self._spent[tenant, TOTAL] += to_nano_usd(cost_usd)

    def credit_saving(self, tenant: str, saved_usd: float) -> None:
        """Record what an edge answer saved `tenant` against always-cloud."""
        with self._lock:
            self._saved[tenant] += to_nano_usd(saved_usd)

    def spent(self, tenant: str, period: str = TOTAL) -> float:
        """Cloud spend (reservations included) of `tenant` in the period keyed `period`."""
        with self._lock:
            return self._spent[tenant, period] / NANO

    def saved(self, tenant: str) -> float:
        """What edge answers saved `tenant` so far."""
        with self._lock:
            return self._saved[tenant] / NANO

    def budget_left(self, tenant: str, budget: Budget | None) -> float | None:
        """What is left of `budget` for `tenant` in the current period; None when it is unlimited."""
        if budget is None:
            return None
        return budget.usd - self.spent(tenant, budget.period_key(self._clock()))

    def reserve(self, tenant: str, budget: Budget, cost_usd: float) -> Reservation | None:
        """Hold `cost_usd` of the current period's budget; None when it would pass the budget."""
        cost, limit = to_nano_usd(cost_usd), to_nano_usd(budget.usd)
        key = (tenant, budget.period_key(self._clock()))
        with self._lock:
            if self._spent[key] + cost > limit:
                return None
            self._spent[key] += cost
        return Reservation(tenant, key[1], cost)

    def admit(self, tenant: str, per_minute: int) -> float | None:
        """Count one request in the current minute unless `per_minute` are counted; else the seconds
        until the next minute."""
        now = self._clock()
        minute = minute_key(now)
        with self._lock:
            seen, count = self._requests.get(tenant, (minute, 0))
            count = count if seen == minute else 0
            if count >= per_minute:
                return seconds_to_next_minute(now)
            self._requests[tenant] = (minute, count + 1)
        return None

    def settle(self, reservation: Reservation, cost_usd: float) -> None:
        """Replace `reservation` by the actual cost."""
        with self._lock:
            self._spent[reservation.tenant, reservation.period] += (
                to_nano_usd(cost_usd) - reservation.nano_usd
            )
