"""The response cache shared by a Lambda fleet: the DynamoDB store on moto, and its settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from hyrouter.cloud.aws.cache import ENV_CACHE_TABLE, MAX_ANSWER_BYTES, DynamoDBCacheStore, shared_cache_store
from hyrouter.cloud.aws.settings import LambdaSettings
from hyrouter.router import CachedAnswer

TABLE = "response-cache"
ANSWER = CachedAnswer("Paris.", "edge-model", "edge", 10, 2)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dynamodb(fake_aws: None) -> Iterator[Any]:
    """Moto's DynamoDB with the cache table as template.yaml declares it (hash key `id`, TTL `expiration`)."""
    client = boto3.client("dynamodb")
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.update_time_to_live(
        TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"}
    )
    yield client


def test_an_answer_is_kept_and_read_back_with_its_ttl_attribute(dynamodb: Any) -> None:
    clock = Clock()
    store = DynamoDBCacheStore(TABLE, clock=clock)
    assert store.get("k") is None
    store.put("k", ANSWER, ttl_s=60)
    assert store.get("k") == ANSWER
    item = dynamodb.get_item(TableName=TABLE, Key={"id": {"S": "k"}})["Item"]
    assert int(item["expiration"]["N"]) >= clock.now + 60


def test_an_expired_item_is_not_served_before_dynamodb_deletes_it(dynamodb: Any) -> None:
    clock = Clock()
    store = DynamoDBCacheStore(TABLE, clock=clock)
    store.put("k", ANSWER, ttl_s=60)
    clock.now += 62
    assert store.get("k") is None


def test_an_answer_too_large_for_an_item_is_not_shared(dynamodb: Any) -> None:
    store = DynamoDBCacheStore(TABLE)
    store.put("big", CachedAnswer("x" * MAX_ANSWER_BYTES, "m", "cloud", 1, 1), ttl_s=60)
    assert store.get("big") is None


def test_the_table_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, dynamodb: Any) -> None:
    assert ENV_CACHE_TABLE == "HYBRID_ROUTER_CACHE_TABLE"
    monkeypatch.delenv(ENV_CACHE_TABLE, raising=False)
    assert shared_cache_store(LambdaSettings.from_env()) is None
    monkeypatch.setenv(ENV_CACHE_TABLE, TABLE)
    store = shared_cache_store(LambdaSettings.from_env())
    assert isinstance(store, DynamoDBCacheStore) and store.table == TABLE
