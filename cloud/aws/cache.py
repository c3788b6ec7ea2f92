"""The response cache shared by a Lambda fleet: exact answers in DynamoDB, expiring by its TTL.

Every execution environment keeps its own in-process LRU (`router.MemoryCacheStore`) in front of this
store (`router.TieredCacheStore`), so a repeat that another environment answered is served here too.
One item per cache key (a sha256 that includes the tenant: nothing is shared across tenants)::

    id (S, hash key)   the cache key
    answer (S)         the answer as JSON (`CachedAnswer.to_json`)
    expiration (N)     epoch seconds: DynamoDB's TTL attribute; a read checks it too, since DynamoDB
                       deletes expired items lazily (within days)

The table is named by `HYBRID_ROUTER_CACHE_TABLE` (template.yaml declares it with GetItem and PutItem
only). boto3 is imported when the store is made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from hyrouter.cloud.aws.settings import LambdaSettings
from hyrouter.router import CachedAnswer, CacheStore

logger = logging.getLogger("hybrid_router")

ENV_CACHE_TABLE = LambdaSettings.env_name("cache_table")
#: Answers larger than this are not shared: a DynamoDB item holds at most 400 KB.
MAX_ANSWER_BYTES = 350_000


class DynamoDBCacheStore:
    """Answers in a DynamoDB table, by key, each until its `expiration`."""

    def __init__(self, table: str, *, client: Any = None, clock: Callable[[], float] = time.time) -> None:
        """A store on `table`; `client` defaults to a boto3 DynamoDB client of the Lambda's region."""
        if client is None:
            import boto3  # lazy: cold start

            client = boto3.client("dynamodb")
        self.table = table
        self._client = client
        self._clock = clock

    def __repr__(self) -> str:
        return f"DynamoDBCacheStore({self.table!r})"

    def get(self, key: str) -> CachedAnswer | None:
        """The answer under `key`, unless it has expired."""
        item = self._client.get_item(TableName=self.table, Key={"id": {"S": key}}).get("Item")
        if not item or float(item["expiration"]["N"]) <= self._clock():
            return None
        return CachedAnswer.from_json(item["answer"]["S"])

    def put(self, key: str, answer: CachedAnswer, ttl_s: float) -> None:
        """Keep `answer` under `key` for `ttl_s` seconds (a too large answer is not shared)."""
        text = answer.to_json()
        if len(text.encode("utf-8")) > MAX_ANSWER_BYTES:
            logger.info("an answer of %d characters is too large to share in %s", len(text), self.table)
            return
        expiration = int(self._clock() + ttl_s) + 1
        self._client.put_item(
            TableName=self.table,
            Item={"id": {"S": key}, "answer": {"S": text}, "expiration": {"N": str(expiration)}},
        )


def shared_cache_store(settings: LambdaSettings) -> CacheStore | None:
    """The fleet's shared cache store when `settings` name a table, else None."""
    return DynamoDBCacheStore(settings.cache_table) if settings.cache_table else None
