"""The TOKEN authorizer that hands API Gateway the caller's key for its usage plan."""

from __future__ import annotations

import pytest

from hyrouter.cloud.aws.authorizer import handler

ARN = "arn:aws:execute-api:eu-west-1:123456789012:abc123def4/prod/POST/v1/chat/completions"


def test_bearer_key_becomes_the_usage_identifier_for_the_whole_stage() -> None:
    answer = handler({"type": "TOKEN", "authorizationToken": "Bearer hr-free-123", "methodArn": ARN}, None)
    assert answer["usageIdentifierKey"] == "hr-free-123"
    statement = answer["policyDocument"]["Statement"][0]
    assert statement["Effect"] == "Allow"
    assert statement["Resource"] == "arn:aws:execute-api:eu-west-1:123456789012:abc123def4/prod/*"
    assert "hr-free-123" not in answer["principalId"]


def test_a_bare_key_is_accepted_too() -> None:
    answer = handler({"authorizationToken": "hr-free-123", "methodArn": ARN}, None)
    assert answer["usageIdentifierKey"] == "hr-free-123"


@pytest.mark.parametrize("token", ["", "Bearer ", "   ", "bearer"])
def test_no_key_is_unauthorized(token: str) -> None:
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        handler({"authorizationToken": token, "methodArn": ARN}, None)
