"""The SAM template's response cache table: both functions name it, and may only read and keep answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.unit.test_template_alarms import _CloudFormationLoader

ROOT = Path(__file__).resolve().parents[2]


def _template() -> dict[str, Any]:
    template: dict[str, Any] = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CloudFormationLoader)
    return template


def test_the_cache_table_keys_on_id_and_expires_by_the_ttl_attribute_the_store_writes() -> None:
    table = _template()["Resources"]["ResponseCacheTable"]
    assert table["Condition"] == "UseResponseCache"
    props = table["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}


def test_both_functions_name_the_table_and_may_only_get_and_put_items_in_it() -> None:
    resources = _template()["Resources"]
    for name in ("RouterFunction", "StreamFunction"):
        props = resources[name]["Properties"]
        assert props["Environment"]["Variables"]["HYBRID_ROUTER_CACHE_TABLE"] == [
            "UseResponseCache",
            "ResponseCacheTable",
            "",
        ]
        grants = [
            statement
            for policy in props["Policies"]
            if isinstance(policy, list) and policy[0] == "UseResponseCache"
            for statement in policy[1]["Statement"]
        ]
        assert grants == [
            {
                "Effect": "Allow",
                "Action": ["dynamodb:GetItem", "dynamodb:PutItem"],
                "Resource": "ResponseCacheTable.Arn",
            }
        ], name
