"""The SAM template's judge function: its handler, its least-privilege role, and the router functions'
right to invoke it (and nothing else)."""

from __future__ import annotations

from typing import Any

import yaml

from hyrouter.cloud.aws.shadow import ENV_JUDGE_FUNCTION
from tests.unit.test_template_alarms import ROOT, _CloudFormationLoader


def _resources() -> dict[str, Any]:
    template: dict[str, Any] = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CloudFormationLoader)
    resources: dict[str, Any] = template["Resources"]
    return resources


def _statements(props: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """Every inline statement of a function's policies, with the condition it is under (if any)."""
    found: list[tuple[str | None, dict[str, Any]]] = []
    for policy in props.get("Policies", []):
        condition, body = (policy[0], policy[1]) if isinstance(policy, list) else (None, policy)
        if isinstance(body, dict):
            found.extend((condition, s) for s in body.get("Statement", []))
    return found


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def test_the_judge_function_runs_the_judge_handler_without_retries() -> None:
    judge = _resources()["JudgeFunction"]
    assert judge["Type"] == "AWS::Serverless::Function"
    props = judge["Properties"]
    assert props["ImageConfig"]["Command"] == ["hyrouter.cloud.aws.judge.handler"]
    assert props["EventInvokeConfig"]["MaximumRetryAttempts"] == 0  # a retry would pay twice
    assert "Events" not in props  # invoked by the router functions only
    env = props["Environment"]["Variables"]
    assert env["HYBRID_ROUTER_CONFIG_PARAMETER"] == "TierConfigParameter"
    assert env["HYBRID_ROUTER_BUDGET_TABLE"] == "BudgetTable"
    assert env["HYBRID_ROUTER_OUTCOMES_TABLE"] == ["UseOutcomes", "OutcomesTable", ""]
    assert env["HYBRID_ROUTER_CLOUD_API_KEY_SECRET"] == ["HasGpuSecret", "GpuEndpointApiKeySecretArn", ""]
    assert _resources()["JudgeLogGroup"]["Properties"]["LogGroupName"] == "/aws/lambda/${JudgeFunction}"


def test_the_judge_function_may_only_join_verdicts_charge_shadow_budgets_and_call_the_endpoint() -> None:
    props = _resources()["JudgeFunction"]["Properties"]
    grants = {
        (condition, statement["Resource"]): _actions(statement) for condition, statement in _statements(props)
    }
    assert grants == {
        ("UseOutcomes", "OutcomesTable.Arn"): ["dynamodb:UpdateItem"],  # no puts, reads or scans
        (None, "BudgetTable.Arn"): ["dynamodb:UpdateItem"],  # reserve and settle
        ("UseSageMaker", "GpuEndpoint"): ["sagemaker:InvokeEndpoint"],
    }
    managed = [p for p in props["Policies"] if isinstance(p, dict) and "Statement" not in p]
    assert managed == [{"SSMParameterReadPolicy": {"ParameterName": "hybrid-router/${StageName}/config"}}]
    secret = [p for p in props["Policies"] if isinstance(p, list) and p[0] == "HasGpuSecret"]
    assert secret == [
        [
            "HasGpuSecret",
            {"AWSSecretsManagerGetSecretValuePolicy": {"SecretArn": "GpuEndpointApiKeySecretArn"}},
            "AWS::NoValue",
        ]
    ]


def test_the_router_functions_name_the_judge_and_may_invoke_it_alone() -> None:
    resources = _resources()
    for name in ("RouterFunction", "StreamFunction"):
        props = resources[name]["Properties"]
        assert props["Environment"]["Variables"][ENV_JUDGE_FUNCTION] == "JudgeFunction", name
        invokes = [s for _, s in _statements(props) if any(a.startswith("lambda:") for a in _actions(s))]
        assert invokes == [
            {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "JudgeFunction.Arn"}
        ]
    # Nothing else in the stack may invoke it.
    for name, resource in resources.items():
        if resource["Type"] == "AWS::Serverless::Function" and name not in (
            "RouterFunction",
            "StreamFunction",
        ):
            props = resource["Properties"]
            assert all(not a.startswith("lambda:") for _, s in _statements(props) for a in _actions(s)), name


def test_the_judge_functions_concurrency_can_be_reserved_and_capped_and_is_not_by_default() -> None:
    """Shadow load can be bounded (at most this many judge at once); by default nothing is reserved,
    as AWS refuses a reservation that leaves an account under 100 unreserved executions (a new
    account's limit may be 10), which would fail the whole deploy."""
    template: dict[str, Any] = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CloudFormationLoader)
    parameter = template["Parameters"]["JudgeReservedConcurrency"]
    assert parameter["Type"] == "Number" and parameter["MinValue"] == 0 and parameter["Default"] == 0
    assert "unreserved" in parameter["Description"]
    # !Not [!Equals [!Ref JudgeReservedConcurrency, 0]], as the loader reads it
    assert template["Conditions"]["HasJudgeConcurrency"] == [["JudgeReservedConcurrency", 0]]
    reserved = template["Resources"]["JudgeFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert reserved == ["HasJudgeConcurrency", "JudgeReservedConcurrency", "AWS::NoValue"]
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    assert any("JudgeReservedConcurrency" in g["Parameters"] for g in groups)
