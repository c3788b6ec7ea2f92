"""A `router.Ledger` in DynamoDB: one budget per tenant and period for every Lambda environment.

One item per tenant and period (partition key `tenant`, sort key `period`: "2026-11-30", "2026-11"
or "total"), counting whole nano-dollars (`spent_nusd`, `saved_nusd`). A reservation is one
`UpdateItem` that adds its cost under a `ConditionExpression` that the item's spend leaves room for
it: DynamoDB applies conditional writes to an item one at a time, so of N concurrent reservations
that fit k times exactly k succeed. Items of a day or month carry `expires_at` (the table's TTL
attribute): DynamoDB deletes them some time after their period (and a grace) has passed.

The template declares the table (`BudgetTable`) and passes its name in `HYBRID_ROUTER_BUDGET_TABLE`.
boto3 is imported on first use (cold start).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from hyrouter.router import Budget, Reservation
from hyrouter.router._accounting import TOTAL, minute_key, seconds_to_next_minute, to_nano_usd, utc_now

#: How long an ended day's or month's item is kept before its TTL lets DynamoDB delete it.
DEFAULT_GRACE = timedelta(days=35)


class DynamoDbLedger:
    """Spend per tenant and period in the DynamoDB table `table`; thread-safe (one boto3 client)."""

    def __init__(
        self,
        table: str,
        *,
        client: Any = None,
        clock: Callable[[], datetime] = utc_now,
        grace: timedelta = DEFAULT_GRACE,
    ) -> None:
        """The ledger in `table`; `client` (a boto3 DynamoDB client) is made on first use when None."""
        self.table = table
        self._client = client
        self._clock = clock
        self._grace = grace
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DynamoDbLedger({self.table!r})"

    def client(self) -> Any:
        """The boto3 DynamoDB client (thread-safe), made on first use."""
        with self._lock:
            if self._client is None:
                import boto3  # lazy: cold start

                self._client = boto3.client("dynamodb")
            return self._client

    def budget_left(self, tenant: str, budget: Budget | None) -> float | None:
        """What is left of `budget` for `tenant` in the current period (a strongly consistent read)."""
        if budget is None:
            return None
        return budget.usd - self.spent(tenant, budget.period_key(self._clock()))

    def spent(self, tenant: str, period: str = TOTAL) -> float:
        """Cloud spend (reservations included) of `tenant` in the period keyed `period`."""
        item = (
            self.client()
            .get_item(TableName=self.table, Key=_key(tenant, period), ConsistentRead=True)
            .get("Item", {})
        )
        return int(item.get("spent_nusd", {}).get("N", "0")) / 1e9

    def reserve(self, tenant: str, budget: Budget, cost_usd: float) -> Reservation | None:
        """Hold `cost_usd` of the current period's budget in one conditional `UpdateItem`; None when
        it would pass the budget."""
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        cost, limit = to_nano_usd(cost_usd), to_nano_usd(budget.usd)
        if cost > limit:
            return None
        now = self._clock()
        period = budget.period_key(now)
        update, values = self._adding("spent_nusd", cost, budget.period_end(now))
        values[":room"] = {"N": str(limit - cost)}
        try:
            self.client().update_item(
                TableName=self.table,
                Key=_key(tenant, period),
                UpdateExpression=update,
                ConditionExpression="attribute_not_exists(spent_nusd) OR spent_nusd <= :room",
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise
        return Reservation(tenant, period, cost)

    def admit(self, tenant: str, per_minute: int) -> float | None:
        """Count one request in the current minute's item ("rpm:2026-11-30T23:59", an hour's TTL)
        with a conditional `UpdateItem`, unless `per_minute` are counted; else the seconds until the
        next minute."""
        from botocore.exceptions import ClientError

        now = self._clock()
        expires = int(now.timestamp()) + 3600
        try:
            self.client().update_item(
                TableName=self.table,
                Key=_key(tenant, f"rpm:{minute_key(now)}"),
                UpdateExpression="ADD requests :one SET expires_at = :expires",
                ConditionExpression="attribute_not_exists(requests) OR requests < :limit",
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":limit": {"N": str(per_minute)},
                    ":expires": {"N": str(expires)},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return seconds_to_next_minute(now)
            raise
        return None

    def settle(self, reservation: Reservation, cost_usd: float) -> None:
        """Replace `reservation` by the actual cost (an unconditional `ADD` of the difference)."""
        self._add(
            reservation.tenant, reservation.period, "spent_nusd", to_nano_usd(cost_usd) - reservation.nano_usd
        )

    def charge(self, tenant: str, cost_usd: float) -> None:
        """Add a cost no reservation held to `tenant`'s all-time spend."""
        self._add(tenant, TOTAL, "spent_nusd", to_nano_usd(cost_usd))

    def credit_saving(self, tenant: str, saved_usd: float) -> None:
        """Record what an edge answer saved `tenant` against always-cloud."""
        self._add(tenant, TOTAL, "saved_nusd", to_nano_usd(saved_usd))

    def _add(self, tenant: str, period: str, attribute: str, amount: int) -> None:
        update, values = self._adding(attribute, amount, None)
        self.client().update_item(
            TableName=self.table,
            Key=_key(tenant, period),
            UpdateExpression=update,
            ExpressionAttributeValues=values,
        )

    def _adding(
        self, attribute: str, amount: int, period_end: datetime | None
    ) -> tuple[str, dict[str, dict[str, str]]]:
        """The update expression that adds `amount` to `attribute` (and sets the TTL of a period
        that ends), with its values."""
        values = {":amount": {"N": str(amount)}}
        if period_end is None:
            return f"ADD {attribute} :amount", values
        values[":expires"] = {"N": str(int((period_end + self._grace).timestamp()))}
        return f"ADD {attribute} :amount SET expires_at = :expires", values


def _key(tenant: str, period: str) -> dict[str, dict[str, str]]:
    return {"tenant": {"S": tenant}, "period": {"S": period}}
