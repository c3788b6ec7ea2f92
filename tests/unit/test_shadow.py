"""Shadow judging with the real engine, fake backends and a real SQLite outcome store."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hyrouter.router import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CloudUnavailable,
    CostLedger,
    HeuristicEstimator,
    RoutingEngine,
    Tenant,
    parse_config,
)
from hyrouter.router._accounting import Budget
from hyrouter.router._outcome_sqlite import SqliteOutcomeStore
from hyrouter.router._outcomes import OutcomeWriter
from hyrouter.router._policy import Decision, PolicyInput, TierPolicy
from hyrouter.router._shadow import (
    VERDICT_TOOL,
    ShadowJob,
    ShadowJudge,
    ShadowRunner,
    judge_messages,
    judge_request,
    parse_verdict,
    response_verdict,
    shadow_tenant,
)
from tests.fakes import FakeBackend

SHADOW = {"sample_rate": 1.0, "budget_usd": 1.0}
CONFIG = parse_config(
    {
        "tiers": {
            "sampled": {"threshold": 0.9, "shadow": SHADOW},
            "local": {"cloud": "never", "shadow": SHADOW},
            "broke": {"threshold": 0.9, "shadow": {"sample_rate": 1.0, "budget_usd": 0.0}},
            "off": {"threshold": 0.9},
        }
    }
)
EASY = "What is the capital of France?"


def request(text: str = EASY, **kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "hybrid-router", "messages": [{"role": "user", "content": text}], **kw}
    )


class GatedJudge(FakeBackend):
    """A judge whose answers wait until `gate` is set."""

    def __init__(self, reply: str) -> None:
        super().__init__("judge", model_id="judge-model", reply=reply)
        self.gate = asyncio.Event()
        self.asked: list[ChatCompletionRequest] = []

    async def complete(self, request: ChatCompletionRequest, *, max_tokens: int) -> ChatCompletionResponse:
        self.asked.append(request)
        await self.gate.wait()
        return await super().complete(request, max_tokens=max_tokens)


class PrivatePolicy(TierPolicy):
    """The tier policy, finding personal data in every request (as the device policy would)."""

    def decide(self, given: PolicyInput) -> Decision:
        return replace(super().decide(given), personal_data=("email",))


@pytest.fixture
def store(tmp_path: Path) -> SqliteOutcomeStore:
    return SqliteOutcomeStore(tmp_path / "outcomes.sqlite3")


def setup(
    store: SqliteOutcomeStore,
    *,
    judge_reply: str = "A is right and short. [[A]]",
    cloud: FakeBackend | None = None,
    **kw: Any,
) -> tuple[RoutingEngine, GatedJudge, FakeBackend, ShadowJudge]:
    cloud = cloud or FakeBackend("cloud", reply="Paris is the capital of France.")
    judge = GatedJudge(judge_reply)
    writer = OutcomeWriter(store, salt="s")
    ledger = kw.pop("ledger", CostLedger())
    policy = kw.pop("policy", None)
    runner = ShadowRunner(
        CONFIG, cloud, ledger=ledger, verdicts=writer, judges={t: judge for t in CONFIG.tiers}
    )
    shadow = ShadowJudge(CONFIG, runner, rng=random.Random(0), **kw)
    e = RoutingEngine(
        CONFIG,
        estimator=HeuristicEstimator(),
        edge=FakeBackend("edge", reply="Paris."),
        cloud=cloud,
        outcomes=writer,
        shadow=shadow,
        ledger=ledger,
        policy=policy,
    )
    return e, judge, cloud, shadow


def labels(store: SqliteOutcomeStore) -> dict[str, tuple[Any, Any]]:
    return {r["id"]: (r["judged_good"], r["judge"]) for r in store.records()}


@pytest.mark.parametrize(
    ("reply", "good"),
    [
        ("Both fine, A is shorter. [[A]]", True),
        ("[[C]]", True),
        ("B explains more; my final verdict: [[B]]", False),
        ("Final verdict: B", False),
        ("verdict is tie", True),
        ("[[A]] or maybe [[B]]", None),
        ("I cannot decide.", None),
        ("", None),
    ],
)
def test_parse_verdict(reply: str, good: bool | None) -> None:
    assert parse_verdict(reply) is good


def test_the_judge_prompt_puts_the_edge_answer_first_and_asks_for_a_bracketed_verdict() -> None:
    system, user = judge_messages("Q?", "edge says", "cloud says")
    assert "[[A]]" in system.text and "[[B]]" in system.text and "[[C]]" in system.text
    assert user.text.index("edge says") < user.text.index("cloud says")


def judged(message: dict[str, Any]) -> ChatCompletionResponse:
    return ChatCompletionResponse.model_validate(
        {
            "id": "j",
            "object": "chat.completion",
            "created": 1,
            "model": "judge",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}],
        }
    )


def verdict_call(arguments: str, name: str = "verdict") -> dict[str, Any]:
    call = {"id": "call-1", "type": "function", "function": {"name": name, "arguments": arguments}}
    return {"content": None, "tool_calls": [call]}


@pytest.mark.parametrize(
    ("message", "good"),
    [
        (verdict_call('{"explanation": "same facts", "verdict": "A"}'), True),
        (verdict_call('{"explanation": "a tie", "verdict": "C"}'), True),
        (verdict_call('{"explanation": "line one\nline two", "verdict": "A"}'), True),  # a raw newline
        (verdict_call('{"explanation": "B is right", "verdict": "B"}'), False),
        (verdict_call('{"explanation": "cut off'), None),  # no JSON: no verdict
        (verdict_call('{"verdict": "D"}'), None),
        (verdict_call('{"verdict": "A"}', name="other"), None),  # another function: the text decides
        ({"content": "Both fine. [[C]]"}, True),  # no call: the text form
    ],
)
def test_a_verdict_is_read_from_the_verdict_call_else_from_the_text(
    message: dict[str, Any], good: bool | None
) -> None:
    assert response_verdict(judged(message)) is good


def test_a_tool_call_verdict_is_asked_for_by_a_forced_call_of_the_verdict_function() -> None:
    text = judge_request("judge-model", "Q?", "edge says", "cloud says")
    assert text.tools is None and text.tool_choice is None and text.temperature == 0.0
    forced = judge_request("judge-model", "Q?", "edge says", "cloud says", verdict="tool_call")
    assert forced.model_dump(mode="json", exclude_none=True)["tools"] == [VERDICT_TOOL]
    choice = forced.model_dump(mode="json", exclude_none=True)["tool_choice"]
    assert choice == {"type": "function", "function": {"name": "verdict"}}
    parameters = VERDICT_TOOL["function"]["parameters"]
    assert list(parameters["properties"]) == [
        "explanation",
        "verdict",
    ]  # reasoning first, as in the text form
    assert parameters["properties"]["verdict"]["enum"] == ["A", "B", "C"]


def test_a_job_survives_json() -> None:
    job = ShadowJob("chatcmpl-1", "acme", "sampled", request(temperature=0.0), "Paris.")
    assert ShadowJob.from_json(job.to_json()) == job


@pytest.mark.anyio
async def test_sampled_edge_answers_get_a_verdict_joined_to_their_record(store: SqliteOutcomeStore) -> None:
    e, judge, cloud, shadow = setup(store)
    judge.gate.set()
    answer = await e.complete(request(), Tenant("acme", "sampled"))
    chunks = [c async for c in (await e.stream(request(stream=True), Tenant("acme", "sampled"))).chunks]
    assert await shadow.drain(5)
    await e.aclose()
    streamed_id = chunks[0].id
    assert labels(store) == {
        answer.id: (1, "pairwise:judge-model"),
        streamed_id: (1, "pairwise:judge-model"),
    }
    assert len(cloud.calls) == 2  # the cloud answered each once, in the background
    asked = judge.asked[0].messages[1].text
    assert "Paris." in asked and "Paris is the capital of France." in asked and EASY in asked
    counts = shadow.stats.snapshot()["sampled"]
    assert (counts["sampled"], counts["judged"], counts["edge_good"]) == (2, 2, 2)
    assert shadow.stats.edge_good_rate("sampled") == 1.0


@pytest.mark.anyio
async def test_the_user_is_not_delayed_by_a_judge_that_hangs(store: SqliteOutcomeStore) -> None:
    e, judge, _, shadow = setup(store, judge_reply="[[B]]")
    answer = await asyncio.wait_for(e.complete(request(), Tenant("acme", "sampled")), timeout=2)
    assert answer.choices[0].message.content == "Paris."
    await asyncio.sleep(0.05)
    assert shadow.pending == 1 and len(judge.asked) == 1  # the judge is waiting, the user is not
    judge.gate.set()
    assert await shadow.drain(5)
    await e.aclose()
    assert labels(store)[answer.id] == (0, "pairwise:judge-model")
    assert shadow.stats.edge_good_rate("sampled") == 0.0


@pytest.mark.anyio
async def test_a_full_queue_is_counted_not_hidden(store: SqliteOutcomeStore) -> None:
    e, judge, _, shadow = setup(store, max_pending=1)
    for _ in range(3):
        await e.complete(request(), Tenant("acme", "sampled"))
    counts = shadow.stats.snapshot()["sampled"]
    assert (counts["sampled"], counts["skipped_queue"]) == (1, 2)
    judge.gate.set()
    assert await shadow.drain(5)
    await e.aclose()
    assert sum(1 for good, _ in labels(store).values() if good is not None) == 1


@pytest.mark.anyio
async def test_cloud_never_tiers_and_unsampled_tiers_are_never_judged(store: SqliteOutcomeStore) -> None:
    e, judge, cloud, shadow = setup(store)
    judge.gate.set()
    await e.complete(request(), Tenant("acme", "local"))
    await e.complete(request(), Tenant("acme", "off"))
    assert await shadow.drain(5)
    await e.aclose()
    assert cloud.calls == [] and judge.asked == [] and shadow.stats.snapshot() == {}
    assert all(good is None for good, _ in labels(store).values())


@pytest.mark.anyio
async def test_requests_kept_local_for_privacy_are_never_judged_and_are_counted(
    store: SqliteOutcomeStore,
) -> None:
    e, judge, cloud, shadow = setup(store, policy=PrivatePolicy(CONFIG.tiers))
    judge.gate.set()
    answer = await e.complete(request(), Tenant("acme", "sampled"))
    assert answer.route is not None and answer.route.target == "edge"
    assert await shadow.drain(5)
    await e.aclose()
    assert cloud.calls == [] and judge.asked == []
    assert shadow.stats.snapshot()["sampled"]["skipped_privacy"] == 1


@pytest.mark.anyio
async def test_edge_fallbacks_are_never_judged(store: SqliteOutcomeStore) -> None:
    cloud = FakeBackend("cloud", fail=CloudUnavailable("down"))
    e, judge, _, shadow = setup(store, cloud=cloud)
    judge.gate.set()
    hard = "Prove step by step that sqrt 2 is irrational, and explain why each step holds, in detail."
    always_cloud = CONFIG.tiers["sampled"].model_copy(update={"threshold": 0.0})
    e.config = CONFIG.model_copy(update={"tiers": {**CONFIG.tiers, "sampled": always_cloud}})
    e.policy = TierPolicy(e.config.tiers)
    answer = await e.complete(request(hard), Tenant("acme", "sampled"))
    assert answer.route is not None and answer.route.target == "edge" and answer.route.fallback
    assert await shadow.drain(5)
    await e.aclose()
    assert judge.asked == [] and shadow.stats.snapshot() == {}


@pytest.mark.anyio
async def test_a_spent_shadow_budget_stops_judging_for_that_tenant(store: SqliteOutcomeStore) -> None:
    ledger = CostLedger()
    e, judge, cloud, shadow = setup(store, ledger=ledger)
    judge.gate.set()
    await e.complete(request(), Tenant("acme", "broke"))  # a budget of 0: nothing may be spent
    await e.complete(request(), Tenant("acme", "sampled"))
    assert await shadow.drain(5)
    await e.aclose()
    counts = shadow.stats.snapshot()
    assert counts["broke"]["skipped_budget"] == 1 and counts["broke"]["judged"] == 0
    assert counts["sampled"]["judged"] == 1 and len(cloud.calls) == 1
    # what the judged one cost was paid from acme's shadow budget, not from acme's own
    left = ledger.budget_left(shadow_tenant("acme"), Budget(1.0, "day"))
    assert left is not None and 0 < left < 1.0
    assert ledger.budget_left("acme", Budget(1.0, "day")) == 1.0


@pytest.mark.anyio
async def test_an_unparseable_verdict_gives_no_label_and_is_counted(store: SqliteOutcomeStore) -> None:
    e, judge, _, shadow = setup(store, judge_reply="They are both answers.")
    judge.gate.set()
    answer = await e.complete(request(), Tenant("acme", "sampled"))
    assert await shadow.drain(5)
    await e.aclose()
    assert labels(store)[answer.id] == (None, None)
    assert shadow.stats.snapshot()["sampled"]["unparseable"] == 1
