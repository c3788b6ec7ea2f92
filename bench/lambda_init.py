"""Lambda init and warm overhead, side by side with the local server path, plus deployment sizes.

    python -m bench.lambda_init [--runs 5] [--requests 2000]

init (fresh process each run, median):
  lambda  import hyrouter.cloud.aws.handler -> config (file source; SSM adds one GetParameter) -> engine
          (heuristic estimator + SmolLM2 loaded) -> first invocation of the handler with an API
          Gateway event answered on the edge (max_tokens 1)
  local   import hyrouter.cloud.app -> load_config -> build_engine -> first answer through the ASGI app
warm (one process, canned instant backend, so the numbers are the path's own work):
  direct  engine.complete()
  lambda  handler(event, context): powertools resolver, tier from the key, logger, EMF, tracer
  asgi    the local Starlette app in-process (httpx.ASGITransport, no sockets)
sizes: what a zip would hold (installed files of each distribution), against Lambda's 250 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import percentiles, report

ROOT = Path(__file__).resolve().parents[1]
EVENT = ROOT / "tests" / "fixtures" / "apigw" / "chat_completions.json"
KEY_ID = "k1free0001"
CONFIG: dict[str, Any] = {
    "edge": {"n_ctx": 512, "n_threads": 1, "max_tokens": 1},
    "cloud": {"url": None},
    "tiers": {"free": {"threshold": 0.7}},
    "api_keys": [],
    "api_key_ids": {KEY_ID: {"tenant": "bench", "tier": "free"}},
}
LAMBDA_LIMIT_MB = 250
# What the two router functions import, by distribution (boto3/botocore come with the runtime).
ZIP_DISTS = [
    "pydantic", "pydantic-core", "annotated-types", "typing-extensions", "typing-inspection",
    "pydantic-settings", "python-dotenv",
    "numpy", "httpx", "httpcore", "h11", "anyio", "idna", "certifi", "sniffio", "PyYAML",
    "aws-lambda-powertools", "aws-xray-sdk", "wrapt", "jmespath",
    "llama-cpp-python", "diskcache", "Jinja2", "MarkupSafe",
    "starlette", "uvicorn", "click",
]  # fmt: skip
RUNTIME_DISTS = ["boto3", "botocore", "s3transfer", "urllib3", "python-dateutil", "six"]


class Context:
    """A LambdaContext stand-in."""

    function_name = "bench-RouterFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 3008
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:bench-RouterFunction"
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def _event(max_tokens: int) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(EVENT.read_text())
    body = {
        "model": "hybrid-router",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    event["body"] = json.dumps(body)
    return event


# -- children (fresh interpreters) -----------------------------------------------------------------


def child_lambda_init(config_file: str) -> dict[str, float]:
    os.environ["HYBRID_ROUTER_CONFIG_FILE"] = config_file
    t0 = time.perf_counter()
    from hyrouter.cloud.aws import handler

    t1 = time.perf_counter()
    router = handler.get_environment()
    t2 = time.perf_counter()
    result = handler.handler(_event(1), Context())
    t3 = time.perf_counter()
    assert result["statusCode"] == 200, result
    return {
        "import_ms": (t1 - t0) * 1000,
        "config_ms": router.init_ms.get("config_ms", 0.0),
        "engine_ms": router.init_ms.get("engine_ms", 0.0),
        "init_total_ms": (t2 - t0) * 1000,
        "first_invocation_ms": (t3 - t2) * 1000,
        "to_first_answer_ms": (t3 - t0) * 1000,
    }


def child_local_init(config_file: str) -> dict[str, float]:
    t0 = time.perf_counter()
    from starlette.testclient import TestClient

    from hyrouter.cloud.app import create_app
    from hyrouter.router import load_config

    t1 = time.perf_counter()
    config = load_config(config_file)
    from hyrouter.cloud.engines import build_engine

    engine = build_engine(config)
    t2 = time.perf_counter()

    async def ready(_: Any) -> Any:
        return engine

    with TestClient(create_app(config, engine_factory=ready)) as client:
        headers = {"authorization": "Bearer bench-key"}
        r = client.post("/v1/chat/completions", json=json.loads(_event(1)["body"]), headers=headers)
    t3 = time.perf_counter()
    assert r.status_code == 200, r.text
    return {
        "import_ms": (t1 - t0) * 1000,
        "init_total_ms": (t2 - t0) * 1000,
        "first_invocation_ms": (t3 - t2) * 1000,
        "to_first_answer_ms": (t3 - t0) * 1000,
    }


def child_warm(config_file: str, requests: int) -> dict[str, Any]:
    import httpx

    from hyrouter.cloud.app import create_app
    from hyrouter.cloud.aws import handler
    from hyrouter.cloud.aws.config import ConfigSource
    from hyrouter.router import ChatCompletionRequest, HeuristicEstimator, RouterConfig, RoutingEngine, Tenant
    from tests.fakes import FakeBackend

    async def canned(config: RouterConfig) -> RoutingEngine:
        return RoutingEngine(config, estimator=HeuristicEstimator(), edge=FakeBackend("edge", reply="Hi!"))

    os.environ["HYBRID_ROUTER_CONFIG_FILE"] = config_file
    handler.engine_factory = canned
    router = handler.get_environment()
    engine = router.current().engine
    event, context = _event(8), Context()
    chat = ChatCompletionRequest.model_validate_json(event["body"])
    tenant = Tenant("bench", "free")
    lambda_config = ConfigSource("file", config_file).load()

    async def same_engine(_: RouterConfig) -> RoutingEngine:
        return engine

    app = create_app(lambda_config.router, engine_factory=same_engine)
    app.state.engine = engine  # no lifespan under ASGITransport: set what it would
    loop = asyncio.new_event_loop()
    asgi = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
    body = json.loads(event["body"])

    async def via_asgi() -> None:
        r = await asgi.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer bench-key"})
        assert r.status_code == 200, r.text

    samples: dict[str, list[float]] = {"direct": [], "lambda": [], "asgi": []}
    for i in range(requests + 50):  # interleaved, the first 50 of each discarded
        t0 = time.perf_counter()
        router.run(engine.complete(chat, tenant))
        t1 = time.perf_counter()
        assert handler.handler(event, context)["statusCode"] == 200
        t2 = time.perf_counter()
        loop.run_until_complete(via_asgi())
        t3 = time.perf_counter()
        if i >= 50:
            samples["direct"].append((t1 - t0) * 1000)
            samples["lambda"].append((t2 - t1) * 1000)
            samples["asgi"].append((t3 - t2) * 1000)
    loop.run_until_complete(asgi.aclose())
    return {name: percentiles(values) for name, values in samples.items()}


# -- parent ----------------------------------------------------------------------------------------


def _run_child(kind: str, config_file: Path, *extra: str) -> Any:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        env = {**os.environ, "POWERTOOLS_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
        subprocess.run(
            [sys.executable, "-m", "bench.lambda_init", "--child", kind, str(config_file), out.name, *extra],
            check=True,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,  # EMF records and logs, as CloudWatch would take them
        )
        return json.loads(Path(out.name).read_text())


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 1) for key in runs[0]}


def _dist_mb(name: str) -> float:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return 0.0
    total = 0
    for file in dist.files or []:
        path = Path(str(dist.locate_file(file)))
        if path.is_file() and "__pycache__" not in path.parts:
            total += path.stat().st_size
    return total / 1e6


def _tree_mb(path: Path) -> float:
    return (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) / 1e6
    )


def package_sizes() -> dict[str, Any]:
    from hyrouter.edge.model_files import default_model_path

    ours = sum(_tree_mb(ROOT / pkg) for pkg in ("router", "edge", "cloud", "models"))
    deps = {name: round(_dist_mb(name), 1) for name in ZIP_DISTS}
    gguf = Path(default_model_path()).stat().st_size / 1e6
    code = ours + sum(deps.values())
    runtime = sum(_dist_mb(n) for n in RUNTIME_DISTS)
    authorizer_kb = sum(p.stat().st_size for p in (ROOT / "cloud" / "aws").glob("*.py")) / 1e3
    return {
        "note": "installed sizes on this machine (x86_64, CPython 3.11 wheels; 3.12 wheels are alike)",
        "hybrid_router_packages_mb": round(ours, 1),
        "dependencies_mb": deps,
        "code_and_dependencies_mb": round(code, 1),
        "gguf_mb": round(gguf, 1),
        "zip_unzipped_with_model_mb": round(code + gguf, 1),
        "zip_limit_mb": LAMBDA_LIMIT_MB,
        "fits_zip": code + gguf <= LAMBDA_LIMIT_MB,
        "runtime_provided_boto3_mb": round(runtime, 1),
        "authorizer_zip_kb": round(authorizer_kb, 1),
        "image_app_layer_mb": round(code + gguf + runtime, 1),
        "image_note": "not built here (no Docker engine): this layer on public.ecr.aws/lambda/python:3.12",
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, config_file, out = sys.argv[2], sys.argv[3], sys.argv[4]
        if kind == "lambda":
            result: Any = child_lambda_init(config_file)
        elif kind == "local":
            result = child_local_init(config_file)
        else:
            result = child_warm(config_file, int(sys.argv[5]))
        Path(out).write_text(json.dumps(result))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    from hyrouter.router import hash_api_key

    with tempfile.TemporaryDirectory() as tmp:
        lambda_file, local_file = Path(tmp) / "lambda.json", Path(tmp) / "local.json"
        keys = [{"sha256": hash_api_key("bench-key"), "tenant": "b", "tier": "free"}]
        lambda_file.write_text(json.dumps({**CONFIG, "api_keys": keys}))
        local = {k: v for k, v in CONFIG.items() if k != "api_key_ids"}
        local_file.write_text(json.dumps({**local, "api_keys": keys}))
        lambda_runs, local_runs = [], []
        for _ in range(args.runs):  # interleaved, so that both see the same machine state
            lambda_runs.append(_run_child("lambda", lambda_file))
            local_runs.append(_run_child("local", local_file))
        warm = _run_child("warm", lambda_file, str(args.requests))
    overhead = {
        name: {
            "p50_ms": round(warm[name]["p50_ms"] - warm["direct"]["p50_ms"], 3),
            "p99_ms": round(warm[name]["p99_ms"] - warm["direct"]["p99_ms"], 3),
        }
        for name in ("lambda", "asgi")
    }
    report(
        "lambda_init",
        {
            "runs": args.runs,
            "init_lambda_handler_median": _median(lambda_runs),
            "init_local_server_median": _median(local_runs),
            "warm_requests": args.requests,
            "warm": warm,
            "warm_overhead_over_engine": overhead,
            "package_sizes": package_sizes(),
        },
    )


if __name__ == "__main__":
    main()
