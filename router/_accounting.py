"""Cost accounting: what a cloud answer cost, what an edge answer saved, and per-tenant budgets."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Protocol

from router._config import CloudPrice
from router._wire import Usage


def cloud_cost_usd(usage: Usage, price: CloudPrice) -> float:
    """What `usage` costs at the cloud endpoint's price."""
    return (
        usage.prompt_tokens * price.prompt_per_1k + usage.completion_tokens * price.completion_per_1k
    ) / 1000.0


class Ledger(Protocol):
    """The engine's seam for money: what each tenant may still spend, and what it spent and saved.

    `CostLedger` keeps it in this process; a shared store (SQLite, DynamoDB) makes a budget hold
    across workers and Lambda environments.
    """

    def budget_left(self, tenant: str, budget_usd: float | None) -> float | None:
        """What is left of `budget_usd` for `tenant`; None when the budget is unlimited."""
        ...

    def charge(self, tenant: str, cost_usd: float) -> None:
        """Add a cloud answer's cost to `tenant`'s spend."""
        ...

    def credit_saving(self, tenant: str, saved_usd: float) -> None:
        """Record what an edge answer saved `tenant` against always-cloud."""
        ...


class CostLedger:
    """Cloud spend per tenant since the process started; thread-safe.

    In-process only: a Lambda fleet or several servers each keep their own, so a budget is a soft
    limit per instance, the same way API Gateway usage plans are best-effort.
    """

    def __init__(self) -> None:
        self._spent: defaultdict[str, float] = defaultdict(float)
        self._saved: defaultdict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def charge(self, tenant: str, cost_usd: float) -> None:
        """Add a cloud answer's cost to `tenant`'s spend."""
        with self._lock:
            self._spent[tenant] += cost_usd

    def credit_saving(self, tenant: str, saved_usd: float) -> None:
        """Record what an edge answer saved `tenant` against always-cloud."""
        with self._lock:
            self._saved[tenant] += saved_usd

    def spent(self, tenant: str) -> float:
        """Cloud spend of `tenant` so far."""
        with self._lock:
            return self._spent[tenant]

    def budget_left(self, tenant: str, budget_usd: float | None) -> float | None:
        """What is left of `budget_usd` for `tenant`; None when the budget is unlimited."""
        return None if budget_usd is None else budget_usd - self.spent(tenant)
