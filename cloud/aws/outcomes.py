"""`DynamoDbOutcomeStore`: outcome records in a DynamoDB table, for the Lambda functions.

The table (template.yaml's `OutcomesTable`, named by `HYBRID_ROUTER_OUTCOMES_TABLE`) has the string
key `id` and TTL on `expires_at`. Records go in with BatchWriteItem (25 at most per call; the writer's
batches are no larger); a rating is an UpdateItem on the condition that the record is the tenant's,
so another tenant's id reads exactly as an unknown one. The functions may only BatchWriteItem and
UpdateItem on this table (least privilege): no reads, no scans.

boto3 is imported when a store is made, never at import.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from hyrouter.router._outcomes import OutcomeRecord, pack_features

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
        """Put `records` (25 at most a call), retrying what DynamoDB hands back unprocessed a few times."""
        for start in range(0, len(records), 25):
            requests = []
            for record in records[start : start + 25]:
                requests.append({"PutRequest": {"Item": self._item(record)}})
                time.sleep(0)  # this runs on the writer thread: let the event loop have the GIL
            pending: dict[str, Any] = {self.table: requests}
            for attempt in range(4):
                answer = self._client.batch_write_item(RequestItems=pending)
                pending = answer.get("UnprocessedItems") or {}
                if not pending:
                    break
                time.sleep(0.05 * 2**attempt)
            if pending:
                raise RuntimeError(f"DynamoDB left {len(pending[self.table])} outcome records unwritten")

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
        try:
            self._client.update_item(
                TableName=self.table,
                Key={"id": {"S": record_id}},
                UpdateExpression=update,
                ConditionExpression="attribute_exists(id) AND tenant = :tenant",
                ExpressionAttributeValues=values,
                **({"ExpressionAttributeNames": {"#comment": "comment"}} if comment is not None else {}),
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

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


def _number(value: float) -> str:
    return str(Decimal(repr(float(value))).normalize()) if isinstance(value, float) else str(value)
