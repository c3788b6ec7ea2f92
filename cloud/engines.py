"""Assembles a `RoutingEngine` from a config: estimator, edge model, cloud endpoint client.

Shared by the HTTP app, the CLI and the benchmarks so that every entry point routes the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from hyrouter.router import (
    ChatBackend,
    ConfigError,
    CostLedger,
    Ledger,
    LedgerConfig,
    RouterConfig,
    RoutingEngine,
    SqliteLedger,
    load_estimator,
)
from hyrouter.router._confidence import UNCALIBRATED, Calibration
from hyrouter.router._drift import DriftObserver
from hyrouter.router._outcomes import OutcomeStore, OutcomeWriter
from hyrouter.router._settings import RouterSettings, secret_from_env
from hyrouter.router._shadow import ShadowJudge, ShadowRunner

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("hybrid_router")

#: Builds the engine for a config: the HTTP app awaits it at start-up, the Lambda runtime whenever the
#: backend sections change. Async, so that a blocking build (loading a model) can leave the event loop.
EngineFactory = Callable[[RouterConfig], Awaitable[RoutingEngine]]


def build_engine(
    config: RouterConfig,
    *,
    load_edge: bool = True,
    cloud_transport: httpx.AsyncBaseTransport | None = None,
    judge_transport: httpx.AsyncBaseTransport | None = None,
    ledger: Ledger | None = None,
) -> RoutingEngine:
    """A ready engine: the estimator loaded, the edge model loaded (when enabled and some tier can use
    it: `RouterConfig.edge_needed`), the cloud client made.

    Loading the edge model takes a fraction of a second for SmolLM2; `load_edge=False` leaves the
    edge backend unloaded (it then reports itself unavailable and counts tokens approximately).
    `cloud_transport` carries the cloud client's calls (SigV4 signing for SageMaker, a mock in tests);
    `judge_transport` the calls to the tiers' own judge endpoints (a mock in tests; else plain HTTPS).
    The ledger is `ledger`, else the one the config's `ledger` section names (`open_ledger`).
    Outcome records are written where `config.outcomes` says (`outcome_writer`); a `DriftObserver`
    watches every tier, and tiers that sample edge answers get a shadow judge (`shadow_judge`).
    Where some tier verifies edge answers, the edge model's calibration is the one `edge.calibration`
    names (`hyrouter.edge.model_files.edge_calibration`; a mismatch with the GGUF is a `ConfigError`).
    """
    register_registry(config)
    estimator = load_estimator(config.estimator.name, config.estimator.version)
    edge: ChatBackend | None = None
    calibration: Calibration = UNCALIBRATED
    if config.edge.enabled and not config.edge_needed:
        logger.info("edge model not loaded: no tier can use it (each forces the cloud, with no fallback)")
    elif config.edge.enabled:
        from hyrouter.edge.llama_cpp_backend import LlamaCppBackend
        from hyrouter.edge.model_files import edge_calibration

        calibration = edge_calibration(config.edge, verifies=config.verifies)
        edge_backend = LlamaCppBackend(config.edge)
        if load_edge:
            edge_backend.load()
        edge = edge_backend
    cloud: ChatBackend | None = None
    if config.cloud.url:
        from hyrouter.cloud.endpoint import CloudEndpointClient

        cloud = CloudEndpointClient(config.cloud, transport=cloud_transport)
    else:
        logger.warning("no cloud endpoint configured: every request is answered on the edge")
    if ledger is None:
        ledger = open_ledger(config.ledger)
    outcomes = outcome_writer(config)
    drift = DriftObserver(config)
    shadow = shadow_judge(
        config, cloud, ledger, outcomes, transport=cloud_transport, judge_transport=judge_transport
    )
    if shadow is not None and shadow.runner is not None:
        shadow.runner.on_verdict = drift.judged
    return RoutingEngine(
        config,
        estimator=estimator,
        edge=edge,
        cloud=cloud,
        ledger=ledger,
        outcomes=outcomes,
        calibration=calibration,
        shadow=shadow,
        observers=[drift],
    )


def shadows(config: RouterConfig) -> bool:
    """Whether some tier samples edge answers for shadow judging (`TierConfig.shadow_judged`)."""
    return any(t.shadow_judged for t in config.tiers.values())


def shadow_judges(
    config: RouterConfig, transport: httpx.AsyncBaseTransport | None = None
) -> dict[str, ChatBackend]:
    """The judge backends of the tiers that name one of their own (`TierShadowConfig.judge`).

    A judge endpoint is another host, called with its own key over plain HTTPS: never through the
    cloud endpoint's transport (SigV4 signing for SageMaker would rewrite the URL and the headers and
    sign with this role's credentials for that host). `transport` is for tests (a mock) only.
    """
    from hyrouter.cloud.endpoint import CloudEndpointClient
    from hyrouter.router import CloudConfig

    judges: dict[str, ChatBackend] = {}
    for name, tier in config.tiers.items():
        judge = tier.shadow.judge
        if judge is not None and tier.shadow_judged:
            section = CloudConfig(url=judge.url, model=judge.model, api_key_env=judge.api_key_env)
            judges[name] = CloudEndpointClient(section, transport=transport)
    return judges


def shadow_cloud(cloud: ChatBackend, transport: httpx.AsyncBaseTransport | None = None) -> ChatBackend:
    """The backend shadow jobs ask the cloud with: for the endpoint client, a client of its own to the
    same endpoint (same config, same `transport`), so that shadow calls have their own circuit breaker:
    a shadow call's timeouts and failures never open the breaker the users' requests go through (nor
    does the users' traffic refuse shadow calls). Any other backend (a fake in tests) is used as it is.
    """
    from hyrouter.cloud.endpoint import CloudEndpointClient

    if isinstance(cloud, CloudEndpointClient):
        return CloudEndpointClient(cloud.config, transport=transport)
    return cloud


def shadow_judge(
    config: RouterConfig,
    cloud: ChatBackend | None,
    ledger: Ledger,
    outcomes: OutcomeWriter | None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    judge_transport: httpx.AsyncBaseTransport | None = None,
) -> ShadowJudge | None:
    """The shadow judge when some tier samples edge answers and there is a cloud to compare with;
    verdicts join outcome records when they are on (else they are only counted).

    Shadow calls go to the cloud through `shadow_cloud(cloud, transport)` (`transport`: the cloud
    client's own), and to a tier's judge endpoint through `shadow_judges(config, judge_transport)`
    (`judge_transport`: tests only)."""
    if not shadows(config):
        return None
    if cloud is None:
        logger.warning("shadow judging configured, but there is no cloud endpoint: it is off")
        return None
    if outcomes is None:
        logger.warning("shadow judging without outcome records: verdicts are counted, not stored")
    own = shadow_cloud(cloud, transport)
    runner = ShadowRunner(
        config,
        own,
        ledger=ledger,
        verdicts=outcomes,
        judges=shadow_judges(config, judge_transport),
        owns_cloud=own is not cloud,
    )
    return ShadowJudge(config, runner)


def register_registry(config: RouterConfig) -> None:
    """Register the estimators of `config.estimator.registry` (a deployment's fitted versions), if named."""
    if config.estimator.registry:
        from pathlib import Path

        from hyrouter.router._onnx_estimator import register_artefacts

        register_artefacts(Path(config.estimator.registry))


def open_ledger(config: LedgerConfig) -> Ledger:
    """The ledger `config` names: this process's own, or the SQLite file every worker shares."""
    if config.kind == "sqlite":
        return SqliteLedger(config.path)
    return CostLedger()


def outcome_writer(config: RouterConfig) -> OutcomeWriter | None:
    """The writer of outcome records to the store `config.outcomes` names; None when it is off.

    The prompt hashes' salt is `HYBRID_ROUTER_OUTCOMES_SALT`, else `outcomes.salt`. A canary
    (`estimator.candidate`) is loaded here: the writer scores each request with it, off the request path.
    """
    section = config.outcomes
    store: OutcomeStore
    if section.store == "off":
        return None
    if section.store == "sqlite":
        from hyrouter.router._outcome_sqlite import SqliteOutcomeStore

        store = SqliteOutcomeStore(section.path)
    else:
        if not section.table:
            raise ConfigError("outcomes.store is dynamodb but no table is named (outcomes.table)")
        from hyrouter.cloud.aws.outcomes import DynamoDbOutcomeStore

        store = DynamoDbOutcomeStore(section.table, ttl_days=section.ttl_days)
    salt = secret_from_env(RouterSettings.SECRET_ENV["outcomes_salt"]) or section.salt
    logger.info("outcome records: %r", store)
    candidate = None
    if config.estimator.candidate is not None:
        register_registry(config)
        candidate = load_estimator(config.estimator.candidate.name, config.estimator.candidate.version)
        logger.info("canary estimator %s@%s scores in shadow", candidate.name, candidate.version)
    return OutcomeWriter(
        store,
        salt=salt,
        max_queue=section.max_queue,
        batch_size=section.batch_size,
        candidate=candidate,
    )


async def close_engine(engine: RoutingEngine) -> None:
    """Release the engine's backends (all of them, each even when another fails to close)."""
    await engine.aclose()


def drift_observer(engine: RoutingEngine) -> DriftObserver | None:
    """The engine's drift observer, if it has one."""
    return next((o for o in engine.observers if isinstance(o, DriftObserver)), None)
