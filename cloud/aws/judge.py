"""The judge function: shadow judging in Lambda, off every user's request path.

The router functions send each sampled edge answer here as an asynchronous invocation
(`hyrouter.cloud.aws.shadow`); the event is the job's JSON (`ShadowJob.to_json`). The handler rebuilds
the job and runs it with the same `ShadowRunner` the local server uses: the tenant's shadow budget is
reserved in the budget table (ledger key `tenant#shadow`), the cloud answers the conversation again,
the pairwise judge compares the two answers, the cost is settled, and the verdict is joined to the
answer's outcome record with the DynamoDB store's `judge` (one conditional UpdateItem: the function may
do nothing else to that table). Each invocation writes one EMF record of what it found
(`emit_shadow`: ShadowJudged, ShadowEdgeGood, EdgeGoodRate ...) for its tier.

The tier config comes from the router functions' source (`HYBRID_ROUTER_CONFIG_PARAMETER` ...), so
a tier's shadow settings (budget, judge endpoint) and the cloud endpoint are theirs; the function
loads no edge model. Invocations are not retried (template.yaml): a second run would pay twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from hyrouter.cloud.aws.config import ConfigSource, parse_text
from hyrouter.cloud.aws.runtime import lambda_cloud_transport, lambda_ledger, load_cloud_secret
from hyrouter.cloud.aws.settings import LambdaSettings
from hyrouter.cloud.aws.telemetry import emit_shadow, route_core_logs, service_name
from hyrouter.router._shadow import ShadowJob, ShadowRunner, ShadowStats

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")

logger = Logger(service=service_name())

#: What carries the cloud's and the judges' calls (tests put an httpx MockTransport here); None: the
#: cloud's calls go as the router functions' do (SigV4 for a SageMaker endpoint, else plain HTTPS),
#: a tier's own judge endpoint's over plain HTTPS with its key (never SigV4: it is another host).
transport: httpx.AsyncBaseTransport | None = None
#: The outcome store's boto3 DynamoDB client (tests may put one here); None: made for the region.
dynamodb_client: Any = None


@dataclass
class _Judging:
    """The runner built for one config document (by its digest)."""

    digest: str
    runner: ShadowRunner | None


class JudgeEnvironment:
    """One execution environment of the judge function: its event loop and the runner of the current
    config (rebuilt when the document changes; the old one's clients are closed)."""

    def __init__(self, settings: LambdaSettings | None = None) -> None:
        self.settings = settings if settings is not None else LambdaSettings.from_env()
        self.source = ConfigSource.from_settings(self.settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._judging: _Judging | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the environment's one loop (the clients' connections belong to it)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def runner(self) -> ShadowRunner | None:
        """The runner of the current config; None when it names no cloud endpoint to compare with."""
        text = self.source.fetch_text()
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if self._judging is not None and self._judging.digest == digest:
            return self._judging.runner
        old, self._judging = self._judging, _Judging(digest, self._build(text))
        if old is not None and old.runner is not None:
            self.run(_close(old.runner))
        return self._judging.runner

    def _build(self, text: str) -> ShadowRunner | None:
        from hyrouter.cloud.endpoint import CloudEndpointClient
        from hyrouter.cloud.engines import shadow_judges

        config = parse_text(text, source=str(self.source)).router
        if not config.cloud.url:
            logger.warning("the tier config names no cloud endpoint: nothing to judge against")
            return None
        load_cloud_secret(config, self.settings.cloud_api_key_secret)
        carrier = transport if transport is not None else lambda_cloud_transport(config, self.settings)
        verdicts = None
        if self.settings.outcomes_table:
            from hyrouter.cloud.aws.outcomes import DynamoDbOutcomeStore

            verdicts = DynamoDbOutcomeStore(self.settings.outcomes_table, client=dynamodb_client)
        else:
            logger.warning("no outcomes table: verdicts are counted, not stored")
        return ShadowRunner(
            config,
            CloudEndpointClient(config.cloud, transport=carrier),
            ledger=lambda_ledger(self.settings),
            verdicts=verdicts,
            judges=shadow_judges(config, transport),  # never the SageMaker transport: see `transport`
        )

    def close(self) -> None:
        """Close the runner's clients and the loop."""
        if self._judging is not None and self._judging.runner is not None:
            self.run(_close(self._judging.runner))
        self._judging = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None


async def _close(runner: ShadowRunner) -> None:
    for backend in {id(b): b for b in (runner.cloud, *runner.judges.values())}.values():
        try:
            await backend.aclose()
        except Exception:
            logger.exception("closing %r failed", backend)


_environment: JudgeEnvironment | None = None


def get_environment() -> JudgeEnvironment:
    """This execution environment's `JudgeEnvironment`, made on first use."""
    global _environment
    if _environment is None:
        route_core_logs(logger)
        _environment = JudgeEnvironment()
    return _environment


def reset() -> None:
    """Forget this environment's `JudgeEnvironment` (tests)."""
    global _environment
    if _environment is not None:
        _environment.close()
    _environment = None


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The entry point: a shadow job in (`ShadowJob.to_json`), its verdict out (True: the edge's answer
    was good enough, False: not, None: no verdict: budget spent, a failed call, no parseable reply)."""
    job = ShadowJob.from_json(event)
    environment = get_environment()
    runner = environment.runner()
    if runner is None:
        return {"completion_id": job.completion_id, "tier": job.tier, "edge_good": None}
    runner.stats = ShadowStats()  # this invocation's counts only
    good = environment.run(runner.run(job))
    counts = runner.stats.snapshot().get(job.tier, {})
    emit_shadow(job.tier, counts)
    logger.info(
        {
            "event": "shadow_verdict",
            "completion_id": job.completion_id,
            "tier": job.tier,
            "edge_good": good,
            **counts,
        }
    )
    return {"completion_id": job.completion_id, "tier": job.tier, "edge_good": good}
