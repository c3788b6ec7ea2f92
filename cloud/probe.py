"""An active probe of the cloud endpoint: `GET {url}/models` every `cloud.probe_interval_s` seconds.

The breaker learns only from requests that went out; an operator also wants to know that the endpoint
answers while no request goes there (a quiet night, a tier that never escalates). The probe runs as a
background task of the local server (started in the app's lifespan, stopped when the engine closes);
its last result is in the admin `/healthz` detail. It never holds up a request and never changes a
routing decision: the breaker stays the one judge of the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from hyrouter.router import CloudConfig

logger = logging.getLogger("hybrid_router")

#: The longest a probe waits for an answer.
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ProbeResult:
    """One probe: whether the endpoint answered with a 2xx, its status, the round trip, any error."""

    ok: bool
    checked_at: float
    status: int | None = None
    latency_ms: float | None = None
    error: str | None = None


class CloudProbe:
    """Probes `config.url` + `/models` every `config.probe_interval_s` seconds once `start`ed."""

    def __init__(
        self,
        config: CloudConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """A probe of `config`'s endpoint (a URL and a positive interval are needed to `start`)."""
        self.config = config
        self.interval_s = config.probe_interval_s
        self.timeout_s = PROBE_TIMEOUT_S  # the next probe starts an interval after this one ends
        self.last: ProbeResult | None = None
        self._transport = transport
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """Whether there is an endpoint to probe and an interval to probe it at."""
        return bool(self.config.url) and self.interval_s > 0

    @property
    def running(self) -> bool:
        """Whether the background task runs."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Probe now and then every interval, in a task of the running loop (a no-op when not enabled
        or already running)."""
        if self.enabled and not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="cloud-probe")

    async def aclose(self) -> None:
        """Stop the background task and wait for it (a probe in flight is cancelled)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def status(self) -> dict[str, Any] | None:
        """The last result as JSON-ready data, with the interval; None before the first probe."""
        if self.last is None:
            return None
        return {**asdict(self.last), "interval_s": self.interval_s}

    async def check(self, client: httpx.AsyncClient) -> ProbeResult:
        """One probe with `client`; the result is also `last`. Never raises but for cancellation."""
        started = time.perf_counter()
        try:
            response = await client.get("models", headers=self._auth())
        except httpx.HTTPError as exc:
            result = ProbeResult(ok=False, checked_at=self._clock(), error=f"{type(exc).__name__}: {exc}")
        else:
            latency_ms = round((time.perf_counter() - started) * 1000.0, 1)
            result = ProbeResult(
                ok=response.is_success,
                checked_at=self._clock(),
                status=response.status_code,
                latency_ms=latency_ms,
            )
        if self.last is not None and self.last.ok and not result.ok:
            logger.warning("cloud probe failed: %s", result.error or f"HTTP {result.status}")
        self.last = result
        return result

    async def _run(self) -> None:
        assert self.config.url is not None
        async with httpx.AsyncClient(
            base_url=self.config.url.rstrip("/") + "/",
            timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, self.config.timeouts.connect)),
            transport=self._transport,
        ) as client:
            while True:
                await self.check(client)
                await asyncio.sleep(self.interval_s)

    def _auth(self) -> dict[str, str]:
        key = self.config.api_key
        return {"authorization": f"Bearer {key}"} if key else {}
