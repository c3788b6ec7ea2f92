"""The `hybrid-router` command line.

hybrid-router serve --config FILE [--host H] [--port P]   # SIGHUP reloads FILE
hybrid-router demo                     # stand-in GPU endpoint + router on the demo config (public keys)
hybrid-router route "<prompt>" --tier T [--config FILE]
hybrid-router schema                   # JSON Schema of the config, for editors
hybrid-router hash-key KEY             # the sha256 to store for an API key
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from hyrouter.router import (
    DEMO_KEYS,
    ConfigError,
    MissingExtra,
    RouterConfig,
    RouterError,
    RouterSettings,
    RoutingEngine,
    config_json_schema,
    hash_api_key,
    import_extra,
    load_config,
    warn_about_demo_keys,
)

if TYPE_CHECKING:
    from starlette.applications import Starlette

#: Why `serve` has no default config: the demo config's keys are public.
SERVE_NEEDS_CONFIG = (
    "serve needs --config FILE (a config with keys of your own); the embedded demo config's keys "
    "are public: `hybrid-router demo` serves it, for trying out on this machine"
)


def _load(args: argparse.Namespace, settings: RouterSettings | None = None) -> RouterConfig:
    config = load_config(args.config, settings=settings or RouterSettings.from_args(args))
    server_update = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if server_update:
        config = config.model_copy(update={"server": config.server.model_copy(update=server_update)})
    return config


#: uvicorn's log levels, for `--log-level`.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
logger = logging.getLogger("hybrid_router")


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the router over HTTP until interrupted, on the config `--config` names (never the demo's);
    SIGHUP reloads the file."""
    _ignore_hangups_until_started()
    if not args.config:
        raise ConfigError(SERVE_NEEDS_CONFIG)
    config = _load(args)
    warn_about_demo_keys(config, source=args.config)
    return _serve(config, args, reload=lambda: _load(args))


def _serve(config: RouterConfig, args: argparse.Namespace, *, reload: Callable[[], RouterConfig]) -> int:
    _require_server_extra(args.command)
    if config.edge_needed:  # no tier may use the edge: no model, no llama.cpp
        from hyrouter.edge.llama_cpp_backend import require_llama_cpp

        require_llama_cpp()  # before the build check, whose child would fail with a traceback
    import uvicorn

    from hyrouter.cloud.app import create_app, cut_in_flight
    from hyrouter.cloud.engines import build_engine
    from hyrouter.cloud.server import GracefulServer, uvicorn_options

    if config.edge_needed:
        from hyrouter.edge.model_files import resolve_model_path

        resolve_model_path(config.edge)  # a missing GGUF is one line now, not a trace at start-up
        if args.edge_check and not _edge_build_runs(config):
            return 1
    listener = _listen(config.server.host, config.server.port)
    # Built before uvicorn starts, so that a config the engine cannot be built from (an estimator
    # without its extra, a missing model file) is one line on stderr, not uvicorn's start-up traceback.
    try:
        engine = build_engine(config)
    except BaseException:
        listener.close()
        raise
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    async def built(config: RouterConfig) -> RoutingEngine:
        return engine

    app = create_app(config, engine_factory=built)
    options = uvicorn_options(config.server, log_level=args.log_level)
    server = GracefulServer(
        uvicorn.Config(app, **options, access_log=args.access_log),
        grace_s=config.server.shutdown_grace_s,
        cut_in_flight=lambda: cut_in_flight(app),
        on_hangup=lambda: _reload(app, reload),
    )
    server.run(sockets=[listener])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` as uvicorn binds one; a port in use is a `ConfigError`.

    Bound before the engine is built: the error is one line at once, not a log after the model loaded.
    """
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (set --host/--port or server.host/port)"
        ) from None
    listener.set_inheritable(True)
    return listener


def _ignore_hangups_until_started() -> None:
    """Until the server has started, a SIGHUP (a reload) is logged and ignored: its default action
    would kill the process, and loading the edge model takes seconds on a busy machine."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _hangup_before_start)


def _hangup_before_start(signum: int, frame: FrameType | None) -> None:
    logger.warning("SIGHUP before the server has started: ignored (the config file is read at start)")


def _reload(app: Starlette, load: Callable[[], RouterConfig]) -> None:
    """Reload the config on SIGHUP; an invalid one is logged on one line and the last good one kept."""
    from hyrouter.cloud.app import reload_config

    try:
        reload_config(app, load())
    except RouterError as exc:
        problem = " ".join(exc.message.split())  # a YAML error spans lines: keep the log's one line
        logger.error("config reload failed, keeping the last good config: %s", problem)


def _require_server_extra(command: str) -> None:
    """Raise `MissingExtra` naming the `server` extra unless uvicorn and starlette are installed."""
    for module in ("uvicorn", "starlette"):
        import_extra(module, feature=command, extra="server")


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # uvicorn raises the signal again once it has shut down: exit through `finally` blocks (the
    # stand-in's stop) instead of dying where the signal lands.
    raise SystemExit(128 + signum)


def _edge_build_runs(config: RouterConfig) -> bool:
    """Whether the llama.cpp build decodes on this CPU (a child process); explains on stderr if not.

    In this process the same crash (SIGILL) would kill the server at its start-up decode with no
    word of why; in a child it is a message that names the CPU's flags and the rebuild command.
    """
    from hyrouter.edge.build_check import explain, run_build_check
    from hyrouter.edge.model_files import resolve_model_path

    check = run_build_check(resolve_model_path(config.edge))
    if not check.ok:
        print(f"hybrid-router: {explain(check)}", file=sys.stderr)
    return check.ok


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the stand-in GPU endpoint (unless a cloud URL is set) and serve the demo config."""
    from hyrouter.cloud.standin import start_standin

    _ignore_hangups_until_started()  # the stand-in's model loads first: a SIGHUP must not orphan it
    _require_server_extra(args.command)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so that SIGTERM stops the stand-in too
    settings = RouterSettings.from_args(args)
    standin = None
    try:
        if not settings.cloud_url:
            print(
                f"starting the stand-in GPU endpoint (llama-cpp-python) on 127.0.0.1:{args.cloud_port} ...",
                flush=True,
            )
            standin = start_standin(port=args.cloud_port, log_file=Path(args.cloud_log))
            settings = RouterSettings.from_args(args, cloud_url=standin.url)
        config = _load(args, settings)
        print(_demo_banner(config), flush=True)
        return _serve(config, args, reload=lambda: _load(args, settings))
    finally:
        if standin is not None:
            standin.stop()


def _demo_banner(config: RouterConfig) -> str:
    base = f"http://{config.server.host}:{config.server.port}"
    return f"""
hybrid-router on {base}  (cloud endpoint: {config.cloud.url}, model {config.cloud.model})
DEMO keys (public; replace them before any real use): {", ".join(f"{t}={k}" for t, k in DEMO_KEYS.items())}

  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer demo-free-key' \\
       -H 'Content-Type: application/json' -i \\
       -d '{{"model": "{config.served_model_name}",
            "messages": [{{"role": "user", "content": "What is the capital of France?"}}]}}'

  python -c "from openai import OpenAI; c = OpenAI(base_url='{base}/v1', api_key='demo-premium-key'); \\
r = c.chat.completions.with_raw_response.create(model='{config.served_model_name}', \\
messages=[{{'role': 'user', 'content': 'Say hello'}}]); \\
print(r.headers['x-route-target'], r.headers['x-route-reason'], r.parse().choices[0].message.content)"

  curl -s {base}/metrics -H 'Authorization: Bearer demo-admin-key'   # counters, tokens, cost
  hybrid-router route "Prove that sqrt(2) is irrational" --tier standard   # the decision, no generation
Ctrl-C (or SIGTERM) stops both servers.
"""


def cmd_route(args: argparse.Namespace) -> int:
    """Print the routing decision for a prompt as JSON, without generating."""
    from hyrouter.cloud.engines import build_engine
    from hyrouter.router import ChatCompletionRequest, Tenant

    config = load_config(args.config)
    if args.tier not in config.tiers:
        raise ConfigError(f"unknown tier {args.tier!r}; the config has {', '.join(sorted(config.tiers))}")
    engine = build_engine(config)
    request = ChatCompletionRequest.model_validate(
        {
            "model": config.served_model_name,
            "max_tokens": args.max_tokens,
            "messages": [{"role": "user", "content": args.prompt}],
        }
    )
    plan = engine.plan(request, Tenant(name="cli", tier=args.tier))
    d = plan.decision
    print(
        json.dumps(
            {
                "target": d.target,
                "reason": str(d.reason),
                "score": round(d.score, 4),
                "threshold": d.threshold,
                "tier": d.tier,
                "estimator": d.estimator,
                "prompt_tokens": plan.prompt_tokens,
                "model": engine.backend(d.target).model_id,
                "fallback": d.fallback,
            },
            indent=2,
        )
    )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the config's JSON Schema."""
    print(json.dumps(config_json_schema(), indent=2))
    return 0


def cmd_hash_key(args: argparse.Namespace) -> int:
    """Print the SHA-256 digest to store in the config for an API key."""
    print(hash_api_key(args.key))
    return 0


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with each option's default; a default of None is said in words by the help itself."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose every sub-parser shows defaults and reports a bad argument on one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """`argparse.ArgumentParser`, with `HelpFormatter` unless another is given."""
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """`hybrid-router: <command>: <message>` on stderr, exit status 2 (no usage dump)."""
        command = self.prog.removeprefix("hybrid-router").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"hybrid-router: {where}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `hybrid-router`."""
    from hyrouter.cloud._version import installed_version

    parser = CommandParser(prog="hybrid-router", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(
        p: argparse.ArgumentParser, default: str = "the embedded demo config"
    ) -> argparse.ArgumentParser:
        p.add_argument("--config", help=f"tier config (YAML or JSON); default: {default}")
        return p

    for name, func, help_text, default in (
        (
            "serve",
            cmd_serve,
            "serve the router over HTTP (SIGHUP reloads the config)",
            "none: required (the demo's keys are public)",
        ),
        ("demo", cmd_demo, "start the stand-in GPU endpoint and serve the demo config", "the demo config"),
    ):
        p = with_config(sub.add_parser(name, help=help_text), default)
        p.add_argument("--host", help="address to listen on; default: server.host of the config")
        p.add_argument("--port", type=int, help="port to listen on; default: server.port of the config")
        RouterSettings.add_arguments(p)  # --cloud-url, --cloud-model: over the env and the file
        p.add_argument(
            "--log-level",
            default="info",
            choices=LOG_LEVELS,
            help="uvicorn's and the router's log level, the decision log's included",
        )
        p.add_argument(
            "--access-log",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="log one line per request (paths without their query string)",
        )
        p.add_argument(
            "--edge-check",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="decode in a child process first, to explain a llama.cpp build that crashes on this CPU",
        )
        p.set_defaults(func=func)
    demo = sub.choices["demo"]
    demo.add_argument("--cloud-port", type=int, default=8081, help="port of the stand-in GPU endpoint")
    demo.add_argument("--cloud-log", default="standin-endpoint.log", help="the stand-in endpoint's log file")

    route = with_config(sub.add_parser("route", help="print the decision for a prompt, without generating"))
    route.add_argument("prompt", help="the user message to route")
    route.add_argument("--tier", required=True, help="the tier whose policy decides")
    route.add_argument("--max-tokens", type=int, help="the request's max_tokens; default: none set")
    route.set_defaults(func=cmd_route)

    sub.add_parser("schema", help="print the config JSON Schema").set_defaults(func=cmd_schema)
    hk = sub.add_parser("hash-key", help="print the sha256 to store for an API key")
    hk.add_argument("key", help="the API key to hash")
    hk.set_defaults(func=cmd_hash_key)
    # Commands of the other packages (`eval` from models/, ...), registered as entry points.
    for entry_point in importlib.metadata.entry_points(group="hybrid_router.commands"):
        try:
            add_command = entry_point.load()
        except ModuleNotFoundError as exc:  # its extra is not installed: the command says which
            if (exc.name or "").partition(".")[0] in OUR_PACKAGES:
                raise  # one of our own modules is missing: a bug, not an install to complete
            _add_missing_extra_command(sub, entry_point.name, exc.name)
        else:
            add_command(sub)
    return parser


#: Our top-level package: a module of it missing is a bug, never an extra to install.
OUR_PACKAGES = frozenset({"hyrouter"})
#: The extra each entry-point command needs beyond the core, named when its module cannot be imported.
COMMAND_EXTRAS = {"eval": "eval", "calibrate": "eval", "labels": "edge", "models": "models", "edge": "edge"}


def _add_missing_extra_command(subparsers: Any, name: str, missing: str | None) -> None:
    """Register `name` as a command that only says which extra it needs (any arguments accepted)."""
    extra = COMMAND_EXTRAS.get(name, "dev")
    # No prefix characters: every argument, `--help` too, is taken as it comes and answered the same.
    p = subparsers.add_parser(name, help=f"(needs the {extra} extra)", add_help=False, prefix_chars="\0")
    p.add_argument("args", nargs="*")

    def needs_extra(args: argparse.Namespace) -> int:
        raise MissingExtra(name, extra, missing)

    p.set_defaults(func=needs_extra)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `hybrid-router`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call is noise here
    try:
        return int(args.func(args))
    except RouterError as exc:
        print(f"hybrid-router: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
