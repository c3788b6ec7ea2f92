"""What holding a budget costs a request: the engine's time per cloud answer for each ledger.

python -m bench.ledger_overhead [--requests 500]

The engine on fake backends (no model, no network), so that what is measured is the routing and the
books: an unbudgeted tier (one in-process charge), a budgeted tier in process (reserve + settle under
a lock), the same in a SQLite file (two statements, each in a worker thread, WAL, a commit each), and
with a per-minute rate limit besides (one more statement). Also the ledger calls per request. The
counting wrapper hides the in-process ledger's type, so its calls take the worker thread too here.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import percentiles, report
from hyrouter.router import (
    ChatCompletionRequest,
    CostLedger,
    HeuristicEstimator,
    Ledger,
    RoutingEngine,
    SqliteLedger,
    Tenant,
    parse_config,
)
from tests.fakes import FakeBackend

HARD = "Prove step by step that sqrt 2 is irrational and explain why."


class Counting:
    """Counts the calls of the ledger it wraps."""

    def __init__(self, inner: Ledger) -> None:
        self.inner, self.calls = inner, Counter[str]()

    def __getattr__(self, name: str) -> Any:
        self.calls[name] += 1
        return getattr(self.inner, name)


async def measure(ledger: Ledger, tier: dict[str, Any], requests: int) -> dict[str, Any]:
    counting = Counting(ledger)
    engine = RoutingEngine(
        parse_config({"tiers": {"free": tier}}),
        estimator=HeuristicEstimator(),
        edge=FakeBackend("edge"),
        cloud=FakeBackend("cloud"),
        ledger=counting,  # type: ignore[arg-type]
        log_decisions=False,
    )
    request = ChatCompletionRequest.model_validate(
        {"model": "hybrid-router", "max_tokens": 100, "messages": [{"role": "user", "content": HARD}]}
    )
    tenant = Tenant("acme", "free")
    for _ in range(50):  # warm
        await engine.complete(request, tenant)
    counting.calls.clear()
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = await engine.complete(request, tenant)
        samples.append((time.perf_counter() - started) * 1000.0)
        assert answer.route is not None and answer.route.target == "cloud"
    per_request = {name: round(n / requests, 3) for name, n in sorted(counting.calls.items())}
    return {**percentiles(samples), "ledger_calls_per_request": per_request}


async def main(requests: int) -> None:
    budget = {"threshold": 0.5, "budget_usd": 1e6}
    with tempfile.TemporaryDirectory() as folder:
        sqlite, limited = SqliteLedger(Path(folder) / "a.sqlite3"), SqliteLedger(Path(folder) / "b.sqlite3")
        result = {
            "memory_unbudgeted": await measure(CostLedger(), {"threshold": 0.5}, requests),
            "memory_budgeted": await measure(CostLedger(), budget, requests),
            "sqlite_budgeted": await measure(sqlite, budget, requests),
            "sqlite_budgeted_rate_limited": await measure(
                limited, {**budget, "requests_per_minute": 10**6}, requests
            ),
        }
        sqlite.close()
        limited.close()
    report("ledger_overhead", result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    asyncio.run(main(parser.parse_args().requests))
