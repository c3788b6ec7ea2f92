"""Outcome records in DynamoDB (moto): the Lambda's store, its selection by environment, its template."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from hyrouter.cloud.aws.outcomes import TTL_ATTRIBUTE, DynamoDbOutcomeStore
from hyrouter.cloud.aws.runtime import with_outcomes_table
from hyrouter.cloud.aws.settings import LambdaSettings
from hyrouter.cloud.engines import outcome_writer
from hyrouter.router import OutcomeRecord, parse_config
from hyrouter.router._outcome_sqlite import SqliteOutcomeStore
from hyrouter.router._outcomes import LABEL_FIELDS, OutcomeStore, unpack_features
from tests.unit.test_outcomes import _record
from tests.unit.test_template_alarms import _CloudFormationLoader

TABLE = "outcomes-test"
Reader = Callable[[str], tuple[object, ...] | None]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dynamodb(fake_aws: None) -> Iterator[Any]:
    import boto3

    client = boto3.client("dynamodb")
    client.create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield client


def item(client: Any, record_id: str) -> dict[str, Any]:
    found: dict[str, Any] = client.get_item(TableName=TABLE, Key={"id": {"S": record_id}}).get("Item", {})
    return found


def test_records_are_written_in_batches_with_a_ttl(dynamodb: Any) -> None:
    store = DynamoDbOutcomeStore(TABLE, ttl_days=7)
    records: list[OutcomeRecord] = [_record(f"chatcmpl-{i}", "acme") for i in range(60)]  # three batches
    store.write(records)
    assert dynamodb.scan(TableName=TABLE, Select="COUNT")["Count"] == 60
    stored = item(dynamodb, "chatcmpl-7")
    assert stored["tenant"] == {"S": "acme"} and stored["fallback"] == {"BOOL": False}
    assert (
        unpack_features(stored["features"]["B"]) == [0.5, 0.25] and "prompt" not in stored
    )  # None: left out
    assert float(stored["cost_saved_usd"]["N"]) == pytest.approx(0.00001)
    expires = int(stored[TTL_ATTRIBUTE]["N"])
    assert abs(expires - (time.time() + 7 * 86_400)) < 120


def test_only_the_tenant_whose_record_it_is_may_rate_it(dynamodb: Any) -> None:
    store = DynamoDbOutcomeStore(TABLE)
    store.write([_record("chatcmpl-1", "acme")])
    assert store.rate("chatcmpl-1", "acme", 0.75, "good enough")
    assert not store.rate("chatcmpl-1", "globex", -1.0, None)
    assert not store.rate("chatcmpl-unknown", "acme", 1.0, None)
    assert dynamodb.scan(TableName=TABLE, Select="COUNT")["Count"] == 1  # no record made by a rating
    stored = item(dynamodb, "chatcmpl-1")
    assert float(stored["rating"]["N"]) == 0.75 and stored["comment"] == {"S": "good enough"}


@pytest.fixture(params=["sqlite", "dynamodb"])
def either_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[OutcomeStore, Reader]]:
    """Each store, with a reader of one record's tenant, rating and comment (None: no such record)."""
    if request.param == "sqlite":
        sqlite = SqliteOutcomeStore(tmp_path / "outcomes.sqlite3")

        def read_sqlite(record_id: str) -> tuple[object, ...] | None:
            found = sqlite.get(record_id)
            return None if found is None else (found["tenant"], found["rating"], found["comment"])

        yield sqlite, read_sqlite
        sqlite.close()
        return
    client = request.getfixturevalue("dynamodb")

    def read_dynamodb(record_id: str) -> tuple[object, ...] | None:
        found = item(client, record_id)
        if not found:
            return None
        rating = float(found["rating"]["N"]) if "rating" in found else None
        return found["tenant"]["S"], rating, found.get("comment", {}).get("S")

    yield DynamoDbOutcomeStore(TABLE), read_dynamodb


def test_both_stores_keep_the_first_record_of_an_id_and_a_rating_replaces_the_last_whole(
    either_store: tuple[OutcomeStore, Reader],
) -> None:
    store, read = either_store
    # A repeat within one batch (DynamoDB refused a whole BatchWriteItem that repeats a key) ...
    store.write([_record("chatcmpl-1", "acme"), _record("chatcmpl-2", "acme"), _record("chatcmpl-1", "evil")])
    assert read("chatcmpl-1") == ("acme", None, None) and read("chatcmpl-2") == ("acme", None, None)
    assert store.rate("chatcmpl-1", "acme", 1.0, "spot on")
    # ... and in a later one (a cache hit's record carries its answer's id): the first stays, rated.
    store.write([_record("chatcmpl-1", "evil")])
    assert read("chatcmpl-1") == ("acme", 1.0, "spot on")
    assert store.rate("chatcmpl-1", "acme", -1.0, None)  # a new rating without a comment: none left
    assert read("chatcmpl-1") == ("acme", -1.0, None)
    assert not store.rate("chatcmpl-1", "evil", 1.0, None) and read("chatcmpl-3") is None


def test_both_stores_join_a_judges_verdict_and_read_back_the_same_records(
    either_store: tuple[OutcomeStore, Reader],
) -> None:
    store, _ = either_store
    first, second = _record("chatcmpl-1", "acme"), _record("chatcmpl-2", "acme")
    later = replace(_record("chatcmpl-3", "other"), created_at=second.created_at + 10, confidence=0.25)
    store.write([later, first, second])
    assert store.judge("chatcmpl-1", True, "stand-in@judge") and store.judge("chatcmpl-3", False, "j")
    assert not store.judge("chatcmpl-9", True, "j")  # no such record: nothing made
    assert store.rate("chatcmpl-2", "acme", -1.0, "wrong")
    read = list(store.records())
    assert [r["id"] for r in read] == ["chatcmpl-1", "chatcmpl-2", "chatcmpl-3"]  # oldest first
    assert [r["judged_good"] for r in read] == [True, None, False]
    assert (
        read[0]["judge"] == "stand-in@judge" and read[1]["rating"] == -1.0 and read[1]["comment"] == "wrong"
    )
    assert read[2]["confidence"] == 0.25 and read[2]["features"] == [0.5, 0.25] and read[2]["status"] == 200
    assert read[0]["fallback"] is False and read[0]["prompt"] is None
    assert [r["id"] for r in store.records(since=later.created_at)] == ["chatcmpl-3"]
    assert set(read[0]) == set(OutcomeRecord.__dataclass_fields__) | set(LABEL_FIELDS)
    # Every field typed int reads back as an int from either store (DynamoDB keeps numbers as N).
    ints = [
        name
        for name, value in first.fields().items()
        if isinstance(value, int) and not isinstance(value, bool)
    ]
    assert ints and all(type(read[0][name]) is int for name in ints)


def test_the_lambda_environment_selects_the_table(dynamodb: Any) -> None:
    settings = LambdaSettings.from_env(
        {"HYBRID_ROUTER_OUTCOMES_TABLE": TABLE, "HYBRID_ROUTER_OUTCOMES_TTL_DAYS": "3"}
    )
    config = with_outcomes_table(parse_config({}), settings.outcomes_table, settings.outcomes_ttl_days)
    assert (config.outcomes.store, config.outcomes.table, config.outcomes.ttl_days) == ("dynamodb", TABLE, 3)
    writer = outcome_writer(config)
    assert writer is not None and isinstance(writer.store, DynamoDbOutcomeStore)
    writer.close()
    assert with_outcomes_table(parse_config({}), None).outcomes.store == "off"


def _template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CloudFormationLoader)
    return loaded


def test_the_template_declares_the_table_with_ttl_and_least_privilege() -> None:
    resources = _template()["Resources"]
    table = resources["OutcomesTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    for function in ("RouterFunction", "StreamFunction"):
        properties = resources[function]["Properties"]
        assert "HYBRID_ROUTER_OUTCOMES_TABLE" in properties["Environment"]["Variables"]
        statements = [
            s
            for policy in properties["Policies"]
            if isinstance(policy, list) and policy[0] == "UseOutcomes"
            for s in policy[1]["Statement"]
        ]
        assert statements == [
            {
                "Effect": "Allow",
                "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem"],
                "Resource": "OutcomesTable.Arn",
            }
        ]
    events = resources["RouterFunction"]["Properties"]["Events"]
    assert events["Feedback"]["Properties"]["Path"] == "/v1/feedback"
