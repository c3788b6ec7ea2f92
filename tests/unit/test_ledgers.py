"""Every ledger keeps the same books: reservations that never overspend a budget, under concurrency,
settled to the actual cost, per period. In-process (`CostLedger`), SQLite (threads and processes on
one file) and DynamoDB (moto)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from hyrouter.cloud.aws.config import ConfigSource
from hyrouter.cloud.aws.ledger import DynamoDbLedger
from hyrouter.cloud.aws.runtime import LambdaEnvironment
from hyrouter.cloud.aws.settings import LambdaSettings
from hyrouter.cloud.engines import build_engine
from hyrouter.router import Budget, CostLedger, Ledger, SqliteLedger, parse_config
from tests.unit.test_template_alarms import _CloudFormationLoader

ROOT = Path(__file__).resolve().parents[2]
COST = 0.003  # one reservation
K = 7  # what the budget allows
BUDGET = Budget(COST * K + COST / 2)
N = 24  # reservations tried at once


class Clock:
    """A settable UTC clock."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def aws(fake_aws: None) -> Iterator[Any]:
    """Moto's DynamoDB with the budget table made as template.yaml declares it."""
    client = boto3.client("dynamodb")
    table = budget_table()
    client.create_table(
        TableName="budgets",
        KeySchema=table["KeySchema"],
        AttributeDefinitions=table["AttributeDefinitions"],
        BillingMode=table["BillingMode"],
    )
    client.update_time_to_live(TableName="budgets", TimeToLiveSpecification=table["TimeToLiveSpecification"])
    yield client


def template() -> dict[str, Any]:
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=_CloudFormationLoader)  # type: ignore[no-any-return]


def budget_table() -> dict[str, Any]:
    """The properties of the template's budget table."""
    resource = template()["Resources"]["BudgetTable"]
    assert resource["Type"] == "AWS::DynamoDB::Table"
    return resource["Properties"]  # type: ignore[no-any-return]


def test_both_router_functions_get_the_budget_table_and_only_what_the_ledger_calls() -> None:
    resources = template()["Resources"]
    for name in ("RouterFunction", "StreamFunction"):
        properties = resources[name]["Properties"]
        assert properties["Environment"]["Variables"]["HYBRID_ROUTER_BUDGET_TABLE"] == "BudgetTable"
        grants = [
            statement
            for policy in properties["Policies"]
            if isinstance(policy, dict) and "Statement" in policy
            for statement in policy["Statement"]
            if statement["Resource"] == "BudgetTable.Arn"
        ]
        actions = ["dynamodb:GetItem", "dynamodb:UpdateItem"]
        assert grants == [{"Effect": "Allow", "Action": actions, "Resource": "BudgetTable.Arn"}]
    assert "HYBRID_ROUTER_BUDGET_TABLE" not in str(resources["ApiKeyAuthorizerFunction"])
    assert budget_table()["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


LedgerMaker = Callable[[Clock], Any]


@pytest.fixture(params=["memory", "sqlite", "dynamodb"])
def make_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerMaker]:
    """A maker of each kind of ledger (two made by one maker share their store)."""
    made: list[Any] = []
    if request.param == "memory":
        shared = CostLedger(clock=Clock())

        def memory(clock: Clock) -> Any:
            shared._clock = clock  # one process: one ledger is the shared store
            return shared

        yield memory
    elif request.param == "sqlite":

        def sqlite(clock: Clock) -> Any:
            made.append(SqliteLedger(tmp_path / "ledger.sqlite3", clock=clock))
            return made[-1]

        yield sqlite
    else:
        request.getfixturevalue("aws")
        yield lambda clock: DynamoDbLedger("budgets", clock=clock)
    for ledger in made:
        ledger.close()


def test_a_reservation_fits_the_budget_and_settles_to_the_actual_cost(make_ledger: LedgerMaker) -> None:
    ledger: Ledger = make_ledger(Clock())
    held = [ledger.reserve("acme", BUDGET, COST) for _ in range(K)]
    assert all(held) and ledger.reserve("acme", BUDGET, COST) is None
    assert ledger.budget_left("acme", BUDGET) == pytest.approx(COST / 2)
    first = held[0]
    assert first is not None and first.usd == pytest.approx(COST)
    ledger.settle(first, COST / 3)  # cheaper than the worst case: the difference is released
    assert ledger.budget_left("acme", BUDGET) == pytest.approx(COST / 2 + COST * 2 / 3)
    second = held[1]
    assert second is not None
    ledger.settle(second, 0.0)  # a failed call releases it all
    assert ledger.reserve("acme", BUDGET, COST) is not None
    assert ledger.reserve("other", BUDGET, COST) is not None  # another tenant, another budget
    assert ledger.budget_left("acme", None) is None
    assert ledger.reserve("acme", Budget(COST / 2), COST) is None  # bigger than the whole budget


def test_a_day_budget_starts_again_each_utc_day_and_a_reservation_settles_in_its_own(
    make_ledger: LedgerMaker,
) -> None:
    clock = Clock()
    ledger: Ledger = make_ledger(clock)
    day = Budget(COST, "day")
    late = ledger.reserve("acme", day, COST)
    assert late is not None and late.period == "2026-11-30"
    assert ledger.reserve("acme", day, COST) is None
    clock.now = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)
    assert ledger.budget_left("acme", day) == pytest.approx(COST)
    ledger.settle(late, COST)  # settled after midnight: counted in the day it was taken
    assert ledger.budget_left("acme", day) == pytest.approx(COST)
    month = Budget(COST, "month")
    taken = ledger.reserve("acme", month, COST)
    assert taken is not None and taken.period == "2026-12"
    assert ledger.reserve("acme", Budget(COST), COST) is not None  # "total" is another budget again


def test_charges_and_savings_outside_any_reservation_count_in_the_total(make_ledger: LedgerMaker) -> None:
    ledger: Ledger = make_ledger(Clock())
    ledger.charge("acme", COST * K)
    ledger.credit_saving("acme", 1.0)
    assert ledger.budget_left("acme", BUDGET) == pytest.approx(COST / 2)
    assert ledger.reserve("acme", BUDGET, COST) is None


def test_parallel_reservations_against_a_budget_for_k_let_exactly_k_through(
    make_ledger: LedgerMaker,
) -> None:
    clock = Clock()
    start = threading.Barrier(N)

    def one(ledger: Ledger) -> bool:
        start.wait()
        return ledger.reserve("acme", BUDGET, COST) is not None

    # A ledger per thread where the store is shared (SQLite: a connection each; DynamoDB: a client each).
    ledgers = [make_ledger(clock) for _ in range(N)]
    with ThreadPoolExecutor(N) as pool:
        through = sum(pool.map(one, ledgers))
    assert through == K


_PROCESS = """
import sys
import time

from hyrouter.router import Budget, SqliteLedger
ledger = SqliteLedger(sys.argv[1])
budget = Budget(float(sys.argv[2]))
print("ready", flush=True)
sys.stdin.readline()  # both processes start reserving at once
through = 0
for _ in range(int(sys.argv[4])):
    through += ledger.reserve("acme", budget, float(sys.argv[3])) is not None
    time.sleep(0.001)  # requests, not a tight loop: SQLite's busy wait would let one writer starve the other
print(through)
ledger.close()
"""


def test_two_processes_on_one_sqlite_file_share_one_budget(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    SqliteLedger(path).close()  # the file and its table exist before the race
    fits, tries = 150, 200  # each process alone would take 150: both together still 150
    args = [str(path), str(COST * fits + COST / 2), str(COST), str(tries)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in processes:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    for p in processes:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    counts = [int(p.communicate(timeout=120)[0]) for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    assert sum(counts) == fits and all(counts)
    ledger = SqliteLedger(path)
    assert ledger.budget_left("acme", Budget(COST * fits + COST / 2)) == pytest.approx(COST / 2)
    ledger.close()


def test_the_dynamodb_items_of_a_period_carry_a_ttl_after_it_ends(aws: Any) -> None:
    clock = Clock()
    ledger = DynamoDbLedger("budgets", clock=clock)
    assert ledger.reserve("acme", Budget(1.0, "day"), COST) is not None
    assert ledger.reserve("acme", Budget(1.0), COST) is not None
    day = aws.get_item(TableName="budgets", Key={"tenant": {"S": "acme"}, "period": {"S": "2026-11-30"}})
    ends = datetime(2026, 12, 1, tzinfo=UTC) + ledger._grace
    assert int(day["Item"]["expires_at"]["N"]) == int(ends.timestamp())
    assert int(day["Item"]["spent_nusd"]["N"]) == 3_000_000
    total = aws.get_item(TableName="budgets", Key={"tenant": {"S": "acme"}, "period": {"S": "total"}})
    assert "expires_at" not in total["Item"]  # an all-time budget never expires


def test_the_config_selects_the_sqlite_ledger_that_every_worker_shares(tmp_path: Path) -> None:
    path = tmp_path / "budgets.sqlite3"
    config = parse_config({"edge": {"enabled": False}, "ledger": {"kind": "sqlite", "path": str(path)}})
    one, two = build_engine(config), build_engine(config)  # two workers, one file
    assert isinstance(one.ledger, SqliteLedger) and isinstance(two.ledger, SqliteLedger)
    assert one.ledger.reserve("acme", Budget(COST), COST) is not None
    assert two.ledger.reserve("acme", Budget(COST), COST) is None
    assert isinstance(build_engine(parse_config({"edge": {"enabled": False}})).ledger, CostLedger)
    one.ledger.close()
    two.ledger.close()


def test_lambda_environments_share_the_dynamodb_table_the_template_names(
    aws: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "tiers.yaml"
    path.write_text('{"edge": {"enabled": false}, "tiers": {"free": {}}}')
    monkeypatch.setenv(LambdaSettings.env_name("budget_table"), "budgets")
    first, second = (LambdaEnvironment(ConfigSource("file", str(path))) for _ in range(2))
    assert isinstance(first.ledger, DynamoDbLedger) and first.ledger.table == "budgets"
    assert first.current().engine.ledger is first.ledger  # what every engine of the environment charges
    assert first.ledger.reserve("acme", Budget(COST), COST) is not None
    assert second.ledger.reserve("acme", Budget(COST), COST) is None  # another environment, one budget
    monkeypatch.delenv(LambdaSettings.env_name("budget_table"))
    assert isinstance(LambdaEnvironment(ConfigSource("file", str(path))).ledger, CostLedger)
    first.close()


def test_a_lambda_environment_charges_the_budget_table_of_the_settings_it_is_given(
    aws: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "tiers.yaml"
    path.write_text('{"edge": {"enabled": false}, "tiers": {"free": {}}}')
    monkeypatch.setenv(LambdaSettings.env_name("budget_table"), "read-again-from-the-environment")
    settings = LambdaSettings.from_env({LambdaSettings.env_name("budget_table"): "budgets"})
    environment = LambdaEnvironment(ConfigSource("file", str(path)), settings=settings)
    assert isinstance(environment.ledger, DynamoDbLedger) and environment.ledger.table == "budgets"


@pytest.mark.anyio
async def test_closing_an_engine_closes_its_sqlite_ledgers_connections(tmp_path: Path) -> None:
    import sqlite3

    config = parse_config(
        {"edge": {"enabled": False}, "ledger": {"kind": "sqlite", "path": str(tmp_path / "b")}}
    )
    engine = build_engine(config)
    ledger = engine.ledger
    assert isinstance(ledger, SqliteLedger)
    assert ledger.reserve("acme", Budget(COST), COST) is not None
    opened = list(ledger._opened)
    await engine.aclose()
    for connection in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            connection.execute("SELECT 1")
    assert ledger.spent("acme") == pytest.approx(COST)  # a later use opens the file again


def test_parallel_requests_against_a_rate_limit_of_k_per_minute_let_exactly_k_through(
    make_ledger: LedgerMaker,
) -> None:
    clock = Clock()
    clock.now = datetime(2026, 11, 30, 23, 58, 45, 500_000, tzinfo=UTC)
    start = threading.Barrier(N)

    def one(ledger: Ledger) -> float | None:
        start.wait()
        return ledger.admit("acme", K)

    ledgers = [make_ledger(clock) for _ in range(N)]
    with ThreadPoolExecutor(N) as pool:
        waits = list(pool.map(one, ledgers))
    assert waits.count(None) == K
    assert [w for w in waits if w is not None] == [pytest.approx(14.5)] * (N - K)  # until 23:59:00
    assert ledgers[0].admit("other", K) is None  # another tenant, another count
    clock.now = datetime(2026, 11, 30, 23, 59, 0, tzinfo=UTC)  # the next minute starts again
    assert [ledgers[0].admit("acme", K) for _ in range(K + 1)] == [None] * K + [pytest.approx(60.0)]
