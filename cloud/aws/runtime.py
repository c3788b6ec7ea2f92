"""The engine of one Lambda execution environment, kept current with the tier config.

Every invocation asks for the engine; the config document is fetched through powertools parameters,
which serve a cached copy until `max_age` has passed, so a changed parameter reaches every warm
environment within that time and no deploy is needed. A new document with the same backend sections
(edge, cloud, estimator) keeps the loaded model and the open connections; one that changes them
builds new backends. A document that does not validate is logged and the last good one stays.

Shadow judging never runs here (a frozen environment would freeze its tasks): every engine's shadow
judge hands its jobs to the judge function (`hyrouter.cloud.aws.shadow`), sent at the end of each
invocation by `send_shadow_jobs`, or samples nothing when no judge function is named.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import os
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from hyrouter.cloud.aws.config import ConfigSource, LambdaRouterConfig, parse_text
from hyrouter.cloud.aws.settings import LambdaSettings
from hyrouter.cloud.aws.shadow import ENV_JUDGE_FUNCTION, JudgeFunctionDispatcher, judge_dispatcher
from hyrouter.cloud.aws.telemetry import EmfRouterMetrics, emit_drift
from hyrouter.cloud.engines import EngineFactory, drift_observer
from hyrouter.router import (
    CacheStore,
    ConfigError,
    CostLedger,
    Ledger,
    RouterConfig,
    RouterMetrics,
    RoutingEngine,
    TieredCacheStore,
    engine_sections_changed,
    warn_about_demo_keys,
)

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("hybrid_router")
T = TypeVar("T")

#: Secrets Manager id of the GPU endpoint's API key, copied into the env var the config names.
#: "sagemaker": sign calls to `cloud.url` (a SageMaker runtime endpoint URL) with SigV4.
ENV_CLOUD_AUTH = LambdaSettings.env_name("cloud_auth")

#: The most seconds an invocation waits at its end for its outcome records to be written.
FLUSH_OUTCOMES_S = 2.0


async def lambda_engine(config: RouterConfig) -> RoutingEngine:
    """`cloud.engines.build_engine`, with the GPU endpoint's key from Secrets Manager or SigV4 signing."""
    return await asyncio.to_thread(_build_lambda_engine, config)


def _build_lambda_engine(config: RouterConfig) -> RoutingEngine:
    from hyrouter.cloud.engines import build_engine

    settings = LambdaSettings.from_env()  # read once per build: a secret id may have changed
    load_cloud_secret(config, settings.cloud_api_key_secret)
    config = with_outcomes_table(config, settings.outcomes_table, settings.outcomes_ttl_days)
    transport = lambda_cloud_transport(config, settings)
    # One build: the cloud client is made once, with the transport it will use. The ledger is a
    # placeholder: `LambdaEnvironment` plugs in its own (a config's SQLite file has no place here).
    return build_engine(config, cloud_transport=transport, ledger=CostLedger())


def lambda_cloud_transport(config: RouterConfig, settings: LambdaSettings) -> httpx.AsyncBaseTransport | None:
    """What carries the cloud client's calls: SigV4 signing when the template says the endpoint is
    SageMaker's (`HYBRID_ROUTER_CLOUD_AUTH=sagemaker`), else None (plain HTTPS, a bearer key)."""
    if settings.cloud_auth == "sagemaker" and config.cloud.url:
        from hyrouter.cloud.aws.sagemaker import SageMakerTransport

        return SageMakerTransport.from_env(settings)
    return None


def lambda_ledger(settings: LambdaSettings) -> Ledger:
    """The DynamoDB ledger when the template names its table (one budget for every environment),
    else one kept in this environment."""
    if settings.budget_table:
        from hyrouter.cloud.aws.ledger import DynamoDbLedger

        return DynamoDbLedger(settings.budget_table)
    return CostLedger()


def with_outcomes_table(config: RouterConfig, table: str | None, ttl_days: int | None = None) -> RouterConfig:
    """`config` with its outcome records in DynamoDB table `table` (the template's), when one is set."""
    if not table:
        return config
    update: dict[str, object] = {"store": "dynamodb", "table": table}
    if ttl_days is not None:
        update["ttl_days"] = ttl_days
    outcomes = config.outcomes.model_copy(update=update)
    return config.model_copy(update={"outcomes": outcomes})


def load_cloud_secret(config: RouterConfig, secret_id: str | None) -> None:
    """Copy the GPU endpoint's API key from Secrets Manager secret `secret_id` (when one is named) into
    the env var `config.cloud.api_key_env` names."""
    if not secret_id:
        return
    from aws_lambda_powertools.utilities import parameters

    try:
        value = parameters.get_secret(secret_id, max_age=300)
    except parameters.exceptions.GetParameterError as exc:
        raise ConfigError(f"cannot read the GPU endpoint's API key from {secret_id}: {exc}") from None
    # CloudConfig reads the key from this env var at call time; it is never logged.
    os.environ[config.cloud.api_key_env] = value if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Snapshot:
    """The engine and config one invocation runs on."""

    engine: RoutingEngine
    config: LambdaRouterConfig


class LambdaEnvironment:
    """Owns the event loop, the engine and the config of this execution environment."""

    def __init__(
        self,
        source: ConfigSource,
        *,
        engine_factory: EngineFactory = lambda_engine,
        metrics: RouterMetrics | None = None,
        ledger: Ledger | None = None,
        shared_cache: CacheStore | None = None,
        settings: LambdaSettings | None = None,
        lambda_client: Any = None,
    ) -> None:
        """Serve the config from `source` on engines `engine_factory` builds; `ledger` defaults to
        `lambda_ledger` of `settings` (those the entry point loaded; None: read from the environment
        now); `shared_cache` (the fleet's DynamoDB store, `hyrouter.cloud.aws.cache`) sits behind each
        engine's in-process cache. Shadow jobs go to the judge function `settings` name, invoked with
        `lambda_client` (a boto3 Lambda client; None: made on first use)."""
        if settings is None:
            settings = LambdaSettings.from_env()
        self.source = source
        self.shared_cache = shared_cache
        self._factory = engine_factory
        self.metrics: RouterMetrics = metrics if metrics is not None else EmfRouterMetrics()
        if ledger is None:
            ledger = lambda_ledger(settings)
        self.ledger = ledger
        self.shadow_dispatcher: JudgeFunctionDispatcher | None = judge_dispatcher(
            settings, client=lambda_client
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._snapshot: Snapshot | None = None
        self._text_digest = ""
        self._retired: list[RoutingEngine] = []
        # The streaming app asks from worker threads: one refresh at a time, so one build per config.
        self._refresh = threading.Lock()
        self.init_ms: dict[str, float] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run an engine coroutine to completion (the buffered handler; the ASGI app has its own loop).

        One loop for the life of the environment: the cloud client's connections belong to it.
        """
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def close(self) -> None:
        """Release the backends and the loop."""
        if self._snapshot is not None:
            self._retired.append(self._snapshot.engine)
            self._snapshot = None
        if self._retired:
            self.run(self.close_retired())
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def flush_outcomes(self, timeout: float = FLUSH_OUTCOMES_S) -> bool:
        """Wait (at most `timeout` seconds) until the outcome records queued so far are written.

        Lambda freezes the environment once an invocation's response is out: a record still queued
        then waits for the next invocation, and is lost when the environment is recycled first. The
        entry points call this at the end of each invocation. True when there was nothing to wait for.
        """
        snapshot = self._snapshot
        writer = snapshot.engine.outcomes if snapshot is not None else None
        if writer is None:
            return True
        if not writer.flush(timeout):
            logger.warning("outcome records not written within %.1fs of the invocation's end", timeout)
            return False
        return True

    def send_shadow_jobs(self) -> int:
        """Send the invocation's sampled edge answers to the judge function; how many were sent.

        Called at the end of each invocation, after `flush_outcomes` (a verdict joins a record that is
        written). One asynchronous invoke per job: Lambda queues it and answers at once.
        """
        return self.shadow_dispatcher.flush() if self.shadow_dispatcher is not None else 0

    async def close_retired(self) -> None:
        """Close the backends of engines a config change replaced (their requests have finished)."""
        from hyrouter.cloud.engines import close_engine

        while self._retired:
            await close_engine(self._retired.pop())

    def current(self) -> Snapshot:
        """The engine for this invocation; refreshed when the config document has changed."""
        with self._refresh:
            return self._current()

    def _current(self) -> Snapshot:
        started = time.perf_counter()
        try:
            text = self.source.fetch_text()
        except ConfigError:
            if self._snapshot is None:
                raise
            logger.exception("config source %s failed; keeping the last good config", self.source)
            return self._snapshot
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if self._snapshot is not None and digest == self._text_digest:
            return self._snapshot
        fetched_ms = (time.perf_counter() - started) * 1000.0
        try:
            config = parse_text(text, source=str(self.source))
        except ConfigError:
            if self._snapshot is None:
                raise
            logger.exception("config %s is invalid; keeping the last good config", self.source)
            self._text_digest = digest  # log once per bad document, not once per invocation
            return self._snapshot
        warn_about_demo_keys(config.router, source=str(self.source))  # each new document, at init too
        self._snapshot = self._swap(config)
        self._text_digest = digest
        self.init_ms.setdefault("config_ms", round(fetched_ms, 3))
        return self._snapshot

    def _swap(self, config: LambdaRouterConfig) -> Snapshot:
        old = self._snapshot
        if old is not None and not engine_sections_changed(old.config.router, config.router):
            engine = old.engine.reconfigured(config.router)
            logger.info("tier config changed: tiers %s", sorted(config.router.tiers))
            return Snapshot(engine, config)
        started = time.perf_counter()
        engine = self._adopt(self._build(config.router))
        self.init_ms.setdefault("engine_ms", round((time.perf_counter() - started) * 1000.0, 3))
        if old is not None:
            self._retired.append(old.engine)
            logger.info("backend config changed: backends rebuilt")
        return Snapshot(engine, config)

    def _adopt(self, engine: RoutingEngine) -> RoutingEngine:
        """Plug this environment's ledger, metrics and shared cache into an engine the factory built.

        Every engine the environment serves charges one ledger (budgets survive a backend change)
        and reports to one metrics sink (EMF), which takes the place of the engine's in-process one.
        """
        engine.ledger = self.ledger  # read at call time
        if self.shared_cache is not None and not isinstance(engine.cache.store, TieredCacheStore):
            engine.cache.store = TieredCacheStore(engine.cache.store, self.shared_cache)
        if engine.metrics is not self.metrics:
            engine.observers = [self.metrics if o is engine.metrics else o for o in engine.observers]
            engine.metrics = self.metrics
        drift = drift_observer(engine)
        if drift is not None and drift.on_update is None:  # EMF, for the template's drift alarms
            drift.on_update = emit_drift
        if engine.shadow is not None:  # never asyncio tasks here: the environment is frozen between calls
            engine.shadow.hand_off(self.shadow_dispatcher)
            if self.shadow_dispatcher is None:
                logger.warning(
                    "shadow judging is configured but %s is not set: it is off", ENV_JUDGE_FUNCTION
                )
        return engine

    def _build(self, config: RouterConfig) -> RoutingEngine:
        """Await the engine factory from this synchronous path."""

        async def build() -> RoutingEngine:
            return await self._factory(config)

        # A loop of its own: the engine binds to none (its clients connect on first use), and the
        # streaming app's worker threads must not share the buffered handler's loop.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(build())
        # uvicorn calls the streaming app's factory on its running loop, where no second loop may
        # run in this thread: build on a helper thread.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, build()).result()
