"""How `hybrid-router serve` runs the app under uvicorn: what it logs, whom it believes, how it stops.

- The access log has each request's path without its query string: a key sent as `?api_key=` must
  not end up in a log file.
- `X-Forwarded-For` and `X-Forwarded-Proto` are believed only from `server.forwarded_allow_ips`
  (default: nobody), so a caller cannot choose the address the log and the router see.
- SIGHUP: `on_hangup` is called on the event loop (the CLI reloads the config file there).
- SIGTERM (or Ctrl-C): stop accepting connections, let requests in flight finish for
  `server.shutdown_grace_s`, then end the streams still open with an error event and `data: [DONE]`
  and answer the requests still waiting with a 503 (`hyrouter.cloud.app` does, when the server calls
  `cut_in_flight`), and exit. uvicorn's own limit comes a moment later, for anything left.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.config import LOG_LEVELS, LOGGING_CONFIG

from hyrouter.cloud.server_protocol import http_protocol
from hyrouter.router import RequestIdFilter, ServerConfig
from hyrouter.router._metrics import DECISION_LOGGER

#: After the grace period, how long the streams have to send their error event before uvicorn cancels.
FAREWELL_S = 2.0


class PathWithoutQuery(logging.Filter):
    """Drops the query string from uvicorn's access log records (`client - "METHOD path HTTP/v" status`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record, with the path's query string cut off."""
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].partition("?")[0], *args[3:])
        return True


#: The router's own log lines (stderr): the request id after the logger's name, "-" outside a request.
ROUTER_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def decision_log_formatter() -> logging.Formatter:
    """The decision log's formatter: one JSON object per line, no prefix (python-json-logger).

    Each line is the decision's members (`router.decision_fields`, `request_id` among them) after
    `time` and `level`.
    """
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter("{asctime}{levelname}", style="{", rename_fields=_JSON_RENAMES)


_JSON_RENAMES = {"asctime": "time", "levelname": "level"}


def log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's logging config, with `PathWithoutQuery` on the access logger, the request id on every
    line served for a request, and the decision log as JSON lines on stdout.

    The router's loggers, the decision log's included, write from `level` (one of uvicorn's names,
    `--log-level`) up: at "warning" a request writes no line unless something went wrong.
    """
    threshold = LOG_LEVELS[level]
    config = copy.deepcopy(LOGGING_CONFIG)
    filters = config.setdefault("filters", {})
    filters["path_without_query"] = {"()": PathWithoutQuery}
    filters["request_id"] = {"()": RequestIdFilter}
    config["loggers"]["uvicorn.access"]["filters"] = ["path_without_query"]
    for name in ("default", "access"):
        config["handlers"][name]["filters"] = ["request_id"]
        config["formatters"][name]["fmt"] += " [%(request_id)s]"
    config["formatters"]["router"] = {"format": ROUTER_LOG_FORMAT}
    config["formatters"]["decisions"] = {"()": decision_log_formatter}
    config["handlers"]["router"] = {
        "class": "logging.StreamHandler",
        "formatter": "router",
        "filters": ["request_id"],
        "stream": "ext://sys.stderr",
    }
    config["handlers"]["decisions"] = {
        "class": "logging.StreamHandler",
        "formatter": "decisions",
        "stream": "ext://sys.stdout",
    }
    config["loggers"]["hybrid_router"] = {"handlers": ["router"], "level": threshold, "propagate": False}
    config["loggers"][DECISION_LOGGER.name] = {
        "handlers": ["decisions"],
        "level": threshold,
        "propagate": False,
    }
    return config


def event_loop() -> str:
    """uvicorn's event loop: "uvloop" when it is installed (the `server` extra), else "asyncio"."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def uvicorn_options(server: ServerConfig, *, log_level: str = "info") -> dict[str, Any]:
    """The `uvicorn.Config` arguments that `server` and `log_level` (`--log-level`, uvicorn's and the
    router's loggers alike) set; uvloop and httptools where installed."""
    return {
        "host": server.host,
        "port": server.port,
        "proxy_headers": bool(server.forwarded_allow_ips),
        "forwarded_allow_ips": list(server.forwarded_allow_ips),
        "timeout_graceful_shutdown": server.shutdown_grace_s + FAREWELL_S,
        "log_config": log_config(log_level),
        "log_level": log_level,
        "loop": event_loop(),
        "http": http_protocol(),  # a request uvicorn cannot read gets an OpenAI error object too
    }


class GracefulServer(uvicorn.Server):
    """uvicorn's server, which calls `cut_in_flight` once the grace period after a signal has passed."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        grace_s: float,
        cut_in_flight: Callable[[], None],
        on_hangup: Callable[[], None] | None = None,
    ) -> None:
        """Serve `config`; `cut_in_flight` ends what the app still serves, `on_hangup` answers SIGHUP
        (both called on the event loop)."""
        super().__init__(config)
        self.grace_s = grace_s
        self.cut_in_flight = cut_in_flight
        self.on_hangup = on_hangup

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up, then SIGHUP handled on the loop (between requests, never inside one)."""
        await super().startup(sockets)
        if self.on_hangup is not None and hasattr(signal, "SIGHUP"):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.on_hangup)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown (stop accepting, wait for requests), with what is in flight cut at the grace."""
        timer = asyncio.get_running_loop().call_later(self.grace_s, self.cut_in_flight)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()
