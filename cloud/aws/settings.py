"""The Lambda functions' environment variables (see `hyrouter.router._settings` for the conventions).

The template sets them (template.yaml); powertools and the Lambda runtime set the last five.
"""

from __future__ import annotations

from pydantic import Field

from hyrouter.router._settings import HybridRouterSettings


class LambdaSettings(HybridRouterSettings):
    """Where the tier config lives, how the GPU endpoint is called, idempotency, and the runtime's facts."""

    config_parameter: str | None = Field(
        None,
        validation_alias="HYBRID_ROUTER_CONFIG_PARAMETER",
        description="SSM parameter holding the tier config (String or SecureString, YAML or JSON).",
    )
    config_appconfig: str | None = Field(
        None,
        validation_alias="HYBRID_ROUTER_CONFIG_APPCONFIG",
        description="The tier config in AWS AppConfig, as 'application/environment/profile'.",
    )
    config_file: str | None = Field(
        None,
        validation_alias="HYBRID_ROUTER_CONFIG_FILE",
        description="A tier config file (local runs, benchmarks); none of the three: an error at init.",
    )
    config_max_age_s: int = Field(
        60,
        validation_alias="HYBRID_ROUTER_CONFIG_MAX_AGE_S",
        description="Seconds a fetched config is reused.",
    )
    cloud_api_key_secret: str | None = Field(
        None,
        validation_alias="HYBRID_ROUTER_CLOUD_API_KEY_SECRET",
        description="Secrets Manager id of the GPU endpoint's API key, copied into the variable "
        "`cloud.api_key_env` names at each engine build.",
    )
    cloud_auth: str | None = Field(
        None,
        validation_alias="HYBRID_ROUTER_CLOUD_AUTH",
        description="'sagemaker': sign calls to cloud.url (a SageMaker runtime URL) with SigV4; "
        "else a bearer key.",
    )
    idempotency_table: str | None = Field(
        None,
        validation_alias="HYBRID_ROUTER_IDEMPOTENCY_TABLE",
        description="DynamoDB table: a retried call that repeats its Idempotency-Key gets the first answer.",
    )
    idempotency_ttl_s: int = Field(
        3600,
        validation_alias="HYBRID_ROUTER_IDEMPOTENCY_TTL_S",
        description="Seconds an idempotent answer is kept.",
    )
    budget_table: str | None = Field(
        None,
        validation_alias="HYBRID_ROUTER_BUDGET_TABLE",
        description="DynamoDB table of tenants' cloud spend: one budget across every environment; "
        "none: each environment keeps its own.",
    )
    cache_table: str | None = Field(
        None,
        validation_alias="HYBRID_ROUTER_CACHE_TABLE",
        description="DynamoDB table of the response cache shared by every environment (tiers turn the "
        "cache on); none: each environment keeps its own in memory.",
    )
    outcomes_table: str | None = Field(
        None,
        validation_alias="HYBRID_ROUTER_OUTCOMES_TABLE",
        description="DynamoDB table of outcome records (and their feedback); set: records on, in that table.",
    )
    outcomes_ttl_days: int | None = Field(
        None,
        validation_alias="HYBRID_ROUTER_OUTCOMES_TTL_DAYS",
        description="Days an outcome record is kept in that table (TTL); unset: outcomes.ttl_days.",
    )
    judge_function: str | None = Field(
        None,
        validation_alias="HYBRID_ROUTER_JUDGE_FUNCTION",
        description="The judge function (name or ARN) that sampled edge answers are sent to for shadow "
        "judging (`hyrouter.cloud.aws.judge`); unset: shadow judging is off in Lambda.",
    )
    metrics_namespace: str = Field(
        "HybridRouter", validation_alias="POWERTOOLS_METRICS_NAMESPACE", description="CloudWatch namespace."
    )
    service_name: str = Field(
        "hybrid-router", validation_alias="POWERTOOLS_SERVICE_NAME", description="The service dimension."
    )
    function_name: str | None = Field(
        None,
        validation_alias="AWS_LAMBDA_FUNCTION_NAME",
        description="Set by Lambda: the function's name (the ColdStart metric's dimension).",
    )
    initialization_type: str | None = Field(
        None,
        validation_alias="AWS_LAMBDA_INITIALIZATION_TYPE",
        description="Set by Lambda: when set, the handler builds its engine in the init phase.",
    )
    aws_region: str | None = Field(
        None,
        validation_alias="AWS_REGION",
        description="Set by Lambda: the region SageMaker calls are signed for.",
    )
