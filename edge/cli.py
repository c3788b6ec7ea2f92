"""`hybrid-router edge ...`: try the on-device SDK on a device.

hybrid-router edge ask "<prompt>" [--config FILE] [--cloud-url URL] [--tier T] [--json]
hybrid-router edge chat [--config FILE] ...        # interactive; /route, /status, /reset, /quit
hybrid-router edge check [--model GGUF] [--json]   # does the llama.cpp build decode on this CPU?
hybrid-router edge schema                          # JSON Schema of the SDK config (device.yaml)

The answer goes to stdout as it is generated; where it was answered and why goes to stderr, e.g.
`[edge · score_below_threshold · score 0.08]` or `[edge · offline · OFFLINE]`. The device's API key
comes from the env var the config names (`HYBRID_ROUTER_DEVICE_KEY` by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from hyrouter.router._errors import ConfigError, RouterError
from hyrouter.router._wire import dump

if TYPE_CHECKING:  # the SDK (httpx, the model) is imported when a command runs, not when parsing
    from hyrouter.edge._router import EdgeRouter
    from hyrouter.edge._sdk_config import EdgeRouterConfig
    from hyrouter.edge._types import EdgeRoute


def add_edge_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Register `edge ask`, `edge chat` and `edge check` on an argparse sub-parsers object.

    Returns the `edge` parser.
    """
    edge: argparse.ArgumentParser = subparsers.add_parser(
        "edge", help="the on-device SDK: answer on this device, escalate when it pays"
    )
    commands = edge.add_subparsers(dest="edge_command", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="SDK config (YAML or JSON); default: built-in defaults")
        p.add_argument("--cloud-url", help="the cloud router's base URL ending in /v1 (overrides the config)")
        p.add_argument("--tier", help="this device's tier policy (overrides the config)")
        p.add_argument("--max-tokens", type=int, help="completion tokens at most")
        p.add_argument("--threads", type=int, help="CPU threads for the local model")
        p.add_argument("--n-ctx", type=int, help="context size of the local model")
        p.add_argument(
            "--keep-private-local", action="store_true", help="keep requests with personal data on the device"
        )
        p.add_argument("--signals-root", help="read /sys and /proc under this directory (a fixture tree)")
        return p

    ask = common(commands.add_parser("ask", help="answer one prompt"))
    ask.add_argument("prompt", help="the user message to answer")
    ask.add_argument("--json", action="store_true", help="print the whole answer as JSON (not streamed)")
    ask.set_defaults(func=cmd_ask)
    chat = common(commands.add_parser("chat", help="an interactive chat"))
    chat.set_defaults(func=cmd_chat)
    check = commands.add_parser(
        "check", help="decode in a child process: exit 1 if the llama.cpp build crashes here"
    )
    check.add_argument("--model", help="a GGUF file (default: the packaged SmolLM2)")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.set_defaults(func=cmd_check)
    schema = commands.add_parser("schema", help="print the JSON Schema of the SDK config, for editors")
    schema.set_defaults(func=cmd_schema)
    return edge


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the SDK config's JSON Schema (edge/device-config.schema.json is this output)."""
    from hyrouter.edge._sdk_config import edge_config_json_schema

    print(json.dumps(edge_config_json_schema(), indent=2))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Check that the installed llama.cpp build decodes on this CPU; exit 1 with a way out if not."""
    from pathlib import Path

    from hyrouter.edge.build_check import cpu_flags, explain, run_build_check
    from hyrouter.edge.llama_cpp_backend import require_llama_cpp

    require_llama_cpp()  # the child would fail on its import with a traceback

    check = run_build_check(Path(args.model) if args.model else None)
    if args.json:
        facts = {"ok": check.ok, "returncode": check.returncode, "signal": check.signal_name}
        print(json.dumps({**facts, "features": check.features, "cpu_flags": cpu_flags()}))
    else:
        print(explain(check), file=sys.stdout if check.ok else sys.stderr)
    return 0 if check.ok else 1


def config_from_args(args: argparse.Namespace) -> EdgeRouterConfig:
    """The SDK config from `--config`, with the command line's overrides applied."""
    from hyrouter.edge._sdk_config import EdgeRouterConfig, load_edge_router_config
    from hyrouter.edge._settings import EdgeSettings

    settings = EdgeSettings.from_env(edge_cloud_url=args.cloud_url)  # the flag over the env
    data = load_edge_router_config(args.config, settings=settings).model_dump(mode="json")
    if args.tier:
        if args.tier not in data["tiers"]:
            raise ConfigError(
                f"unknown tier {args.tier!r}; the config has {', '.join(sorted(data['tiers']))}"
            )
        data["tier"] = args.tier
    for option, key in (("threads", "n_threads"), ("n_ctx", "n_ctx")):
        if getattr(args, option) is not None:
            data["model"][key] = getattr(args, option)
    if args.keep_private_local:
        data["privacy"]["keep_personal_data_local"] = True
    if args.signals_root:
        data["signals_root"] = args.signals_root
    return EdgeRouterConfig.model_validate(data)


def describe_route(route: EdgeRoute) -> str:
    """A one-line summary of where an answer came from, for stderr."""
    parts = [route.target, route.reason, f"score {route.score:.2f}", route.model]
    if route.upstream is not None:
        parts.append(f"cloud router: {route.upstream.target}/{route.upstream.reason}")
    if route.signals:
        parts.append(", ".join(route.signals))
    if route.personal_data:
        parts.append("personal data: " + ", ".join(route.personal_data))
    if route.offline:
        parts.append("OFFLINE")
    return "[" + " · ".join(parts) + "]"


async def _answer(
    router: EdgeRouter, messages: list[dict[str, str]], max_tokens: int | None, out: TextIO, err: TextIO
) -> str:
    body: dict[str, Any] = {"messages": messages}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    stream = await router.stream(body)
    text: list[str] = []
    async for chunk in stream.chunks:
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
                out.write(choice.delta.content)
                out.flush()
    out.write("\n")
    err.write(describe_route(stream.route) + "\n")
    err.flush()
    return "".join(text)


def cmd_ask(args: argparse.Namespace) -> int:
    """Answer one prompt on the device or through the cloud router."""
    from hyrouter.edge._router import EdgeRouter

    config = config_from_args(args)

    async def run() -> None:
        async with EdgeRouter.open(config) as router:
            messages = [{"role": "user", "content": args.prompt}]
            if args.json:
                body: dict[str, Any] = {"messages": messages}
                if args.max_tokens is not None:
                    body["max_tokens"] = args.max_tokens
                answer = await router.complete(body)
                print(json.dumps(dump(answer), indent=2))
            else:
                await _answer(router, messages, args.max_tokens, sys.stdout, sys.stderr)

    asyncio.run(run())
    return 0


CHAT_HELP = "/route: last route as JSON · /status: link and device signals · /reset: forget · /quit"


def cmd_chat(args: argparse.Namespace) -> int:
    """An interactive chat that keeps the conversation, answering each turn where it pays."""
    from hyrouter.edge._router import EdgeRouter

    config = config_from_args(args)

    async def run() -> None:
        async with EdgeRouter.open(config) as router:
            print(f"hybrid-router edge chat · tier {router.tier} · {CHAT_HELP}", file=sys.stderr)
            history: list[dict[str, str]] = []
            last: EdgeRoute | None = None
            while True:
                try:
                    line = (await asyncio.to_thread(input, "you> ")).strip()
                except EOFError:
                    break
                if not line:
                    continue
                if line in ("/quit", "/exit"):
                    break
                if line == "/reset":
                    history.clear()
                    continue
                if line == "/route":
                    print(json.dumps(dump(last) if last else None, indent=2))
                    continue
                if line == "/status":
                    status = {
                        "tier": router.tier,
                        "offline": router.offline,
                        "last_link_error": router.link.last_error,
                        "signals": vars(router.device_signals()),
                    }
                    print(json.dumps(status, indent=2))
                    continue
                history.append({"role": "user", "content": line})
                try:
                    stream = await router.stream({"messages": history, "max_tokens": args.max_tokens})
                except RouterError as exc:
                    history.pop()
                    print(f"error: {exc.message}", file=sys.stderr)
                    continue
                text: list[str] = []
                try:
                    async for chunk in stream.chunks:
                        for choice in chunk.choices:
                            if choice.delta.content:
                                text.append(choice.delta.content)
                                sys.stdout.write(choice.delta.content)
                                sys.stdout.flush()
                except RouterError as exc:
                    print(f"\nerror: {exc.message}", file=sys.stderr)
                print()
                last = stream.route
                print(describe_route(stream.route), file=sys.stderr)
                history.append({"role": "assistant", "content": "".join(text)})

    asyncio.run(run())
    return 0
