"""Shadow judging: was the edge's answer good enough? Asked of a judge model, off the request path.

A sample of each tier's edge answers (`TierShadowConfig.sample_rate`; answers the edge was decided for,
not fallbacks, not errors) is answered again by the cloud in the background, and a judge model compares
the two with a pairwise prompt in the manner of MT-Bench and Chatbot Arena (Zheng et al., 2023):
assistant A (the edge) against assistant B (the cloud), a short explanation, then a verdict `[[A]]`,
`[[B]]` or `[[C]]` (a tie); or, with `shadow.verdict: tool_call`, a forced call of the function
`verdict` (`VERDICT_TOOL`) whose arguments hold the explanation and A, B or C, which a server
constrains (a grammar on llama.cpp, guided decoding on vLLM) so that even a small judge answers in
form. A or a tie: the edge was good enough. The verdict is joined to the answer's
outcome record (`OutcomeWriter.judge`, queued behind the record) with the judge's name; a reply with no
verdict gives no label and is counted.

Never for a tier whose cloud is 'never', never for a request kept local for privacy (personal data
found, or a device's rule such as offline or a metered link: `KEPT_LOCAL`). The cloud answer and the
judge are paid from a shadow budget per tenant (ledger key `shadow_tenant(tenant)`); a spent budget
skips the tenant until the period ends, counted.

`ShadowJudge` is the observer: `record` decides and hands the job on in microseconds. Locally the jobs
run as asyncio tasks on the server's loop: at most `max_pending` wait or run (more are skipped and
counted) and `concurrency` run at once; the user's response never waits for them. In Lambda, whose
environment is frozen once the handler returns, the judge is `hand_off`'d to a `ShadowDispatcher`
(`hyrouter.cloud.aws.shadow`): the handler sends the jobs to the judge function
(`hyrouter.cloud.aws.judge`), which runs `ShadowRunner`; with no dispatcher it samples nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from hyrouter.router._accounting import (
    Budget,
    CostLedger,
    Ledger,
    Reservation,
    cloud_cost_usd,
    worst_case_cost_usd,
)
from hyrouter.router._backend import ChatBackend, approximate_tokens
from hyrouter.router._config import CloudPrice, RouterConfig, TierConfig
from hyrouter.router._estimator import conversation_text
from hyrouter.router._metrics import RequestOutcome
from hyrouter.router._policy import RouteReason
from hyrouter.router._wire import ChatCompletionRequest, ChatCompletionResponse, ChatMessage, Usage

logger = logging.getLogger("hybrid_router.shadow")

#: Reasons that keep a request on the edge on purpose (privacy, a device's link or state): never shadowed.
KEPT_LOCAL = frozenset(
    {
        RouteReason.PRIVATE_DATA,
        RouteReason.OFFLINE,
        RouteReason.METERED_LINK,
        RouteReason.SLOW_LINK,
        RouteReason.LOW_BATTERY,
        RouteReason.LOW_MEMORY,
        RouteReason.THERMAL,
        RouteReason.TIER_FORBIDS_CLOUD,
    }
)

JUDGE_SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. Choose the assistant that follows the user's "
    "instructions and answers the user's question better, considering helpfulness, relevance, accuracy "
    "and correctness. Do not let the length of the responses or the order in which they are presented "
    "influence your decision. If both answers are equally good, or equally correct, it is a tie. Give a "
    'very short explanation, then your final verdict strictly in this format: "[[A]]" if assistant A '
    'is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)

_JUDGE_USER = (
    "[User Question]\n{question}\n\n"
    "[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)

#: The function a judge asked for a tool call verdict must call: the explanation first (reasoning
#: before the verdict, as in the text form), kept short, then the verdict.
VERDICT_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "verdict",
        "description": "Give your very short explanation, then your final verdict: A, B or C (a tie).",
        "parameters": {
            "type": "object",
            "properties": {
                "explanation": {"type": "string", "maxLength": 100},
                "verdict": {"type": "string", "enum": ["A", "B", "C"]},
            },
            "required": ["explanation", "verdict"],
        },
    },
}

#: Room for the judge prompt's own words, in tokens, when its worst-case cost is reserved.
_PROMPT_OVERHEAD_TOKENS = 220


def shadow_tenant(tenant: str) -> str:
    """The ledger key of `tenant`'s shadow budget: kept apart from what its requests spend."""
    return f"{tenant}#shadow"


def judge_messages(question: str, edge_answer: str, cloud_answer: str) -> list[ChatMessage]:
    """The pairwise judge prompt: the edge's answer as assistant A, the cloud's as assistant B."""
    user = _JUDGE_USER.format(question=question, answer_a=edge_answer, answer_b=cloud_answer)
    return [ChatMessage(role="system", content=JUDGE_SYSTEM_PROMPT), ChatMessage(role="user", content=user)]


_BRACKETED = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_STATED = re.compile(
    r"(?:final\s+)?verdict\s*(?:is)?\s*[:=]?\s*\**\s*\[?\s*(?:assistant\s+)?([ABC]|tie)\b", re.IGNORECASE
)


def parse_verdict(text: str) -> bool | None:
    """Whether the judge found the edge's answer (A) good enough: True for A or a tie, False for B,
    None when the reply gives no verdict or contradicts itself (`[[A]]` and `[[B]]` both)."""
    found = {m.upper() for m in _BRACKETED.findall(text)}
    if not found:
        stated = _STATED.findall(text)
        found = {"C" if s.lower() == "tie" else s.upper() for s in stated[-1:]}
    if len(found) != 1:
        return None
    return found.pop() in ("A", "C")


def judge_request(
    model: str, question: str, edge_answer: str, cloud_answer: str, *, verdict: str = "text"
) -> ChatCompletionRequest:
    """The judge's request: the pairwise prompt at temperature 0; with `verdict` "tool_call", the
    `VERDICT_TOOL` it must call."""
    fields: dict[str, Any] = {
        "model": model,
        "messages": [
            m.model_dump(exclude_none=True) for m in judge_messages(question, edge_answer, cloud_answer)
        ],
        "temperature": 0.0,
    }
    if verdict == "tool_call":
        fields["tools"] = [VERDICT_TOOL]
        fields["tool_choice"] = {"type": "function", "function": {"name": "verdict"}}
    return ChatCompletionRequest.model_validate(fields)


def response_verdict(response: ChatCompletionResponse) -> bool | None:
    """The verdict in a judge's response: its `verdict` call's argument where it made one, else the
    text of its reply (`parse_verdict`)."""
    if not response.choices:
        return None
    message = response.choices[0].message
    calls = (message.model_extra or {}).get("tool_calls") or []  # a response's calls are kept as sent
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or function.get("name") != "verdict":
            continue
        try:
            arguments = json.loads(
                str(function.get("arguments")), strict=False
            )  # raw newlines: a grammar lets them be
        except ValueError:
            return None
        said = arguments.get("verdict") if isinstance(arguments, dict) else None
        return said in ("A", "C") if said in ("A", "B", "C") else None
    return parse_verdict(message.content or "")


@dataclass(frozen=True)
class ShadowJob:
    """One edge answer to judge: which record it is, whose, and the conversation and answer."""

    completion_id: str
    tenant: str
    tier: str
    request: ChatCompletionRequest
    answer: str

    def to_json(self) -> dict[str, Any]:
        """The job as JSON-ready data (an event for the judge function)."""
        return {
            "completion_id": self.completion_id,
            "tenant": self.tenant,
            "tier": self.tier,
            "request": self.request.model_dump(mode="json", exclude_none=True),
            "answer": self.answer,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShadowJob:
        """The job `to_json` wrote."""
        return cls(
            completion_id=str(data["completion_id"]),
            tenant=str(data["tenant"]),
            tier=str(data["tier"]),
            request=ChatCompletionRequest.model_validate(data["request"]),
            answer=str(data["answer"]),
        )


#: The counts a shadow judge keeps per tier.
SHADOW_COUNTS = (
    "sampled",  # handed on to be judged
    "judged",  # a verdict was had
    "edge_good",  # ... and it said the edge was good enough
    "unparseable",  # the judge replied with no verdict
    "failed",  # the cloud or the judge failed
    "skipped_budget",  # the tenant's shadow budget was spent
    "skipped_queue",  # too many jobs waiting
    "skipped_privacy",  # kept local on purpose
)


class ShadowStats:
    """Thread-safe counts per tier (`SHADOW_COUNTS`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, Counter[str]] = {}

    def add(self, tier: str, what: str, n: int = 1) -> None:
        """Count `n` of `what` for `tier`."""
        with self._lock:
            self._counts.setdefault(tier, Counter())[what] += n

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Every tier's counts (every name present, 0 where none)."""
        with self._lock:
            return {tier: {name: c[name] for name in SHADOW_COUNTS} for tier, c in self._counts.items()}

    def edge_good_rate(self, tier: str) -> float | None:
        """The share of `tier`'s verdicts that found the edge good enough; None before the first."""
        with self._lock:
            c = self._counts.get(tier)
            return c["edge_good"] / c["judged"] if c and c["judged"] else None


class VerdictSink(Protocol):
    """Where verdicts go: an `OutcomeWriter` (queued behind the records) or an `OutcomeStore`."""

    def judge(self, record_id: str, good: bool, judge: str) -> bool:
        """Join a verdict to record `record_id`."""
        ...


class ShadowRunner:
    """Runs one shadow job: reserve its worst case from the tenant's shadow budget, ask the cloud,
    ask the judge, settle the cost, join the verdict. Shared by the local judge and the Lambda one.

    `judges` maps a tier to its own judge backend (`TierShadowConfig.judge`); other tiers are judged
    by `cloud`. `on_verdict(tier, good)` hears every verdict (the drift observer's edge-good rate).
    `owns_cloud`: `cloud` is the runner's own client (its own circuit breaker), closed with the judge.
    """

    def __init__(
        self,
        config: RouterConfig,
        cloud: ChatBackend,
        *,
        ledger: Ledger,
        verdicts: VerdictSink | None = None,
        judges: Mapping[str, ChatBackend] | None = None,
        stats: ShadowStats | None = None,
        on_verdict: Callable[[str, bool], None] | None = None,
        owns_cloud: bool = False,
    ) -> None:
        self.config = config
        self.cloud = cloud
        self.owns_cloud = owns_cloud
        self.ledger = ledger
        self.verdicts = verdicts
        self.judges = dict(judges or {})
        self.stats = stats if stats is not None else ShadowStats()
        self.on_verdict = on_verdict

    def judge_backend(self, tier: str) -> ChatBackend:
        """The backend that judges `tier`'s answers."""
        return self.judges.get(tier, self.cloud)

    def _tier(self, name: str) -> TierConfig | None:
        return self.config.tiers.get(name)

    async def run(self, job: ShadowJob) -> bool | None:
        """Judge `job`: True (edge good enough), False, or None (no verdict: budget, failure, no parse)."""
        tier = self._tier(job.tier)
        if tier is None:
            return None
        shadow = tier.shadow
        judge = self.judge_backend(job.tier)
        judge_price = shadow.judge.price if shadow.judge is not None else self.config.cloud.price
        prompt_tokens = approximate_tokens(job.request.messages)
        cloud_max = min(
            job.request.requested_max_tokens or self.config.cloud.max_tokens,
            tier.max_tokens or self.config.cloud.max_tokens,
            max(1, self.cloud.context_window - prompt_tokens),
        )
        judge_prompt = prompt_tokens + len(job.answer) // 3 + cloud_max + _PROMPT_OVERHEAD_TOKENS
        worst = worst_case_cost_usd(prompt_tokens, cloud_max, self.config.cloud.price)
        worst += worst_case_cost_usd(judge_prompt, shadow.judge_max_tokens, judge_price)
        budget = Budget(shadow.budget_usd, shadow.budget_period)
        reservation: Reservation | None = await self._ledger(
            self.ledger.reserve, shadow_tenant(job.tenant), budget, worst
        )
        if reservation is None:
            self.stats.add(job.tier, "skipped_budget")
            return None
        spent = 0.0
        try:
            asked = job.request.model_copy(update={"stream": False, "stream_options": None})
            answered = await self.cloud.complete(asked, max_tokens=cloud_max)
            spent += _cost(answered.usage, self.config.cloud.price)
            cloud_answer = answered.choices[0].message.content if answered.choices else None
            question = conversation_text(job.request.messages)
            request = judge_request(
                judge.model_id, question, job.answer, cloud_answer or "", verdict=shadow.verdict
            )
            ruling = await judge.complete(request, max_tokens=shadow.judge_max_tokens)
            spent += _cost(ruling.usage, judge_price)
        except Exception as exc:  # best effort: a failed shadow call costs what it used, no label
            self.stats.add(job.tier, "failed")
            logger.warning("shadow judging of %s failed: %s", job.completion_id, exc)
            return None
        finally:
            await self._ledger(self.ledger.settle, reservation, spent)
        good = response_verdict(ruling)
        if good is None:
            self.stats.add(job.tier, "unparseable")
            logger.info("the judge gave no verdict on %s", job.completion_id)
            return None
        self.stats.add(job.tier, "judged")
        self.stats.add(job.tier, "edge_good", int(good))
        if self.on_verdict is not None:
            self.on_verdict(job.tier, good)
        if self.verdicts is not None and not self.verdicts.judge(
            job.completion_id, good, f"pairwise:{judge.model_id}"
        ):
            logger.warning("the verdict on %s was not joined to its record", job.completion_id)
        return good

    async def _ledger(self, call: Callable[..., Any], *args: Any) -> Any:
        """A ledger call off the event loop (a shared ledger does I/O); failures are logged: an
        unknown budget spends nothing: `reserve` then gives None and the job is skipped."""
        try:
            if isinstance(self.ledger, CostLedger):
                return call(*args)
            return await asyncio.to_thread(call, *args)
        except Exception:
            logger.exception("ledger %r failed for shadow judging", self.ledger)
            return None


def _cost(usage: Usage | None, price: CloudPrice) -> float:
    return cloud_cost_usd(usage, price) if usage is not None else 0.0


class ShadowDispatcher(Protocol):
    """Takes sampled jobs instead of running them here (Lambda: sent to the judge function)."""

    def put(self, job: ShadowJob) -> bool:
        """Take `job`; quick, never raises; False when it cannot (counted as a full queue)."""
        ...


class ShadowJudge:
    """The observer that samples edge answers for shadow judging (see the module's docstring).

    Jobs run on the loop that recorded them with `runner`, unless `dispatcher` takes them (see
    `hand_off`).
    """

    def __init__(
        self,
        config: RouterConfig,
        runner: ShadowRunner | None = None,
        *,
        dispatcher: ShadowDispatcher | None = None,
        max_pending: int = 64,
        concurrency: int = 2,
        rng: random.Random | None = None,
        stats: ShadowStats | None = None,
    ) -> None:
        if runner is None and dispatcher is None:
            raise ValueError("ShadowJudge needs a runner or a dispatcher")
        self.config = config
        self.runner = runner
        self.dispatcher = dispatcher
        self.stats = stats if stats is not None else runner.stats if runner is not None else ShadowStats()
        self.max_pending = max_pending
        self.concurrency = concurrency
        self._rng = rng or random.Random()
        self._runs_here = True
        self._tasks: set[asyncio.Task[bool | None]] = set()
        self._limits: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    def __repr__(self) -> str:
        return f"ShadowJudge(pending={len(self._tasks)})"

    def retarget(self, config: RouterConfig) -> None:
        """Follow a new config (tiers' sample rates and budgets); jobs running finish on the old one."""
        self.config = config
        if self.runner is not None:
            self.runner.config = config

    def hand_off(self, dispatcher: ShadowDispatcher | None) -> None:
        """Never run a job in this process from now on (a Lambda is frozen between invocations, and
        so would its tasks be): hand each to `dispatcher`; with none, sample no answers at all."""
        self.dispatcher = dispatcher
        self._runs_here = False

    @property
    def pending(self) -> int:
        """Jobs waiting or running on this process's loop."""
        return len(self._tasks)

    def record(self, outcome: RequestOutcome) -> None:
        """Sample `outcome` and hand it on when it is eligible; never blocks, never raises."""
        if self.dispatcher is None and not self._runs_here:
            return
        d = outcome.decision
        tier = self.config.tiers.get(d.tier)
        if tier is None or not tier.shadow_judged:
            return
        if d.target != "edge" or d.fallback or outcome.error_code or outcome.status != 200:
            return
        if outcome.answer is None or outcome.completion_id is None or outcome.request is None:
            return
        if d.personal_data or d.reason in KEPT_LOCAL:
            self.stats.add(d.tier, "skipped_privacy")
            return
        if self._rng.random() >= tier.shadow.sample_rate:
            return
        job = ShadowJob(outcome.completion_id, d.tenant, d.tier, outcome.request, outcome.answer)
        taken = self.dispatcher.put(job) if self.dispatcher is not None else self._start(job)
        self.stats.add(d.tier, "sampled" if taken else "skipped_queue")

    def _start(self, job: ShadowJob) -> bool:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # recorded off the loop: nowhere to run it in the background
            return False
        if len(self._tasks) >= self.max_pending:
            return False
        task = loop.create_task(self._run(job, loop))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, job: ShadowJob, loop: asyncio.AbstractEventLoop) -> bool | None:
        assert self.runner is not None
        limit = self._limits.get(loop)
        if limit is None:
            limit = self._limits[loop] = asyncio.Semaphore(self.concurrency)
        async with limit:
            try:
                return await self.runner.run(job)
            except Exception:  # a bug must not leave an unretrieved task exception behind
                logger.exception("shadow judging of %s failed", job.completion_id)
                return None

    async def drain(self, wait_s: float | None = None) -> bool:
        """Wait until the jobs started on this loop so far are done; False after `wait_s` seconds."""
        tasks = [t for t in self._tasks if t.get_loop() is asyncio.get_running_loop()]
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=wait_s)
        return not pending

    async def aclose(self, grace_s: float = 2.0) -> None:
        """Give running jobs `grace_s` to finish, then cancel the rest (their verdicts are lost), and
        close the judges of their own, and the runner's cloud client when it is its own (`owns_cloud`;
        else it is the engine's to close)."""
        if not await self.drain(grace_s):
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.runner is not None:
            owned = [*self.runner.judges.values(), *([self.runner.cloud] if self.runner.owns_cloud else [])]
            for judge in {id(j): j for j in owned}.values():
                try:
                    await judge.aclose()
                except Exception:
                    logger.exception("closing judge %r failed", judge)
