"""`DynamoDbOutcomeStore`: outcome records in a DynamoDB table, for the Lambda functions.

The table (template.yaml's `OutcomesTable`, named by `HYBRID_ROUTER_OUTCOMES_TABLE`) has the string
key `id` and TTL on `expires_at`. The store keeps what `SqliteOutcomeStore` keeps, the same way:

- each record goes in with a PutItem on the condition that its id is new, so the first record of an
  id is kept (SQLite's INSERT OR IGNORE): a later one with that id (a cache hit's record carries the
  answer's id) neither replaces it nor wipes its rating, and a repeat within one batch is no error
  (BatchWriteItem can do neither: it overwrites, and refuses a whole batch that repeats a key). In a
  Lambda the writer flushes at the end of each invocation, so a batch is a record or two anyway;
- a rating is an UpdateItem on the condition that the record is the tenant's, so another tenant's
  id reads exactly as an unknown one; it replaces an earlier rating whole (no comment: none kept).

- a judge's verdict (shadow judging) is an UpdateItem on the condition that the record exists.

The functions may only PutItem and UpdateItem on this table (least privilege): no reads, no scans.
`records` (a Scan) is for the operator's tools (`hybrid-router models fit --outcomes`, `drift`), run
with the operator's credentials, never by the functions.

boto3 is imported when a store is made, never at import.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from hyrouter.router._outcomes import LABEL_FIELDS, OutcomeRecord, pack_features, unpack_features

#: The attribute DynamoDB's TTL deletes a record after (epoch seconds).
TTL_ATTRIBUTE = "expires_at"


class DynamoDbOutcomeStore:
    """Outcome records in the DynamoDB table `table`, each kept `ttl_days`."""

    def __init__(self, table: str, *, ttl_days: int = 90, client: Any = None) -> None:
        """Use `client` (a boto3 DynamoDB client), else one made now for the Lambda's region."""
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self.table = table
        self.ttl_s = ttl_days * 86_400
        self._client = client

    def __repr__(self) -> str:
        return f"DynamoDbOutcomeStore({self.table!r})"

    def write(self, records: Sequence[OutcomeRecord]) -> None:
        """Put `records`, each only when its id is new (an id already kept is left as it is)."""
        kept = self._client.exceptions.ConditionalCheckFailedException  # the first record of the id stays
        for record in records:
            with contextlib.suppress(kept):
                self._client.put_item(
                    TableName=self.table,
                    Item=self._item(record),
                    ConditionExpression="attribute_not_exists(id)",
                )
            time.sleep(0)  # this runs on the writer thread: let the event loop have the GIL

    def rate(self, record_id: str, tenant: str, rating: float, comment: str | None) -> bool:
        """Join a rating to `tenant`'s record `record_id`; False when `tenant` has no such record."""
        values: dict[str, Any] = {
            ":tenant": {"S": tenant},
            ":rating": {"N": _number(rating)},
            ":rated_at": {"N": _number(time.time())},
        }
        update = "SET rating = :rating, rated_at = :rated_at"
        if comment is not None:
            update += ", #comment = :comment"
            values[":comment"] = {"S": comment}
        else:  # the rating replaces the last one whole, as in SQLite: its comment goes with it
            update += " REMOVE #comment"
        try:
            self._client.update_item(
                TableName=self.table,
                Key={"id": {"S": record_id}},
                UpdateExpression=update,
                ConditionExpression="attribute_exists(id) AND tenant = :tenant",
                ExpressionAttributeValues=values,
                ExpressionAttributeNames={"#comment": "comment"},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def judge(self, record_id: str, good: bool, judge: str) -> bool:
        """Join a judge's verdict to record `record_id`; False when there is no such record."""
        try:
            self._client.update_item(
                TableName=self.table,
                Key={"id": {"S": record_id}},
                UpdateExpression="SET judged_good = :good, judge = :judge, judged_at = :at",
                ConditionExpression="attribute_exists(id)",
                ExpressionAttributeValues={
                    ":good": {"BOOL": good},
                    ":judge": {"S": judge},
                    ":at": {"N": _number(time.time())},
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def records(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Every record created at or after `since` (all when None), oldest first, with its labels.

        A paginated Scan sorted here (DynamoDB keeps no order across partitions): an operator's tool.
        """
        kwargs: dict[str, Any] = {"TableName": self.table}
        if since is not None:
            kwargs["FilterExpression"] = "created_at >= :since"
            kwargs["ExpressionAttributeValues"] = {":since": {"N": _number(since)}}
        found: list[dict[str, Any]] = []
        for page in self._client.get_paginator("scan").paginate(**kwargs):
            found.extend(_plain(item) for item in page.get("Items", []))
        found.sort(key=lambda r: (r["created_at"], r["id"]))
        yield from found

    def close(self) -> None:
        """Nothing to release (boto3 clients close with the process)."""

    def _item(self, record: OutcomeRecord) -> dict[str, Any]:
        item: dict[str, Any] = {TTL_ATTRIBUTE: {"N": str(int(record.created_at) + self.ttl_s)}}
        for name, value in record.fields().items():
            if value is None:
                continue
            if isinstance(value, bool):
                item[name] = {"BOOL": value}
            elif isinstance(value, int | float):
                item[name] = {"N": _number(value)}
            elif isinstance(value, list):  # the features: float32 bytes, not a list of 257 numbers
                item[name] = {"B": pack_features(value)}
            else:
                item[name] = {"S": str(value)}
        return item


_RECORD_FIELDS = (*OutcomeRecord.__dataclass_fields__, *LABEL_FIELDS)


def _integer_fields() -> frozenset[str]:
    """The record fields typed `int` (or `int | None`): DynamoDB keeps every number as N."""
    found = set()
    for name, hint in get_type_hints(OutcomeRecord).items():
        if hint is int or (
            get_origin(hint) in (Union, UnionType) and set(get_args(hint)) - {type(None)} == {int}
        ):
            found.add(name)
    return frozenset(found)


_INTEGERS = _integer_fields()


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as the dict `records` gives: every record field and label, None where absent."""
    record: dict[str, Any] = dict.fromkeys(_RECORD_FIELDS)
    for name, value in item.items():
        if name not in record:
            continue
        ((kind, raw),) = value.items()
        if kind == "N":
            record[name] = int(raw) if name in _INTEGERS else float(raw)
        elif kind == "B":
            record[name] = unpack_features(bytes(raw))
        else:  # S or BOOL
            record[name] = raw
    return record


def _number(value: float) -> str:
    return str(Decimal(repr(float(value))).normalize()) if isinstance(value, float) else str(value)
