"""Config sync: ETag / If-None-Match, validation before use, the last good policy on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from hyrouter.edge import ConfigSyncSettings, EdgeRouter, EdgeRouterConfig, PolicySync, StaticSignals
from hyrouter.router import NoBackendAvailable
from tests.fakes import FakeBackend

pytestmark = pytest.mark.anyio

PREMIUM_DOC = {"tier": "premium", "policy": {"routing": {"cloud": "forced"}}}
STRICT_DOC = {"tier": "strict", "policy": {"routing": {"cloud": "forced", "fallback_to_edge": False}}}


class PolicyServer:
    """Serves one document with an ETag and answers If-None-Match with 304."""

    def __init__(self, document: Any, etag: str = '"v1"') -> None:
        self.document, self.etag = document, etag
        self.seen: list[httpx.Request] = []
        self.down = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if self.down:
            raise httpx.ConnectError("no network", request=request)
        if request.headers.get("if-none-match") == self.etag:
            return httpx.Response(304, headers={"etag": self.etag})
        body = self.document if isinstance(self.document, str) else json.dumps(self.document)
        return httpx.Response(200, text=body, headers={"etag": self.etag, "content-type": "application/json"})


def sync(server: PolicyServer, state: Path | None) -> PolicySync:
    settings = ConfigSyncSettings(
        url="http://cloud.test/v1/edge/config", state_file=str(state) if state else None
    )
    return PolicySync(settings, api_key="device-key", transport=httpx.MockTransport(server))


async def test_first_fetch_applies_and_saves_then_304(tmp_path: Path) -> None:
    server, state = PolicyServer(PREMIUM_DOC), tmp_path / "policy.json"
    syncer = sync(server, state)
    result = await syncer.refresh()
    assert (result.outcome, result.etag) == ("updated", '"v1"')
    assert syncer.current is not None and syncer.current.tier == "premium"
    assert server.seen[0].headers["authorization"] == "Bearer device-key"
    assert "if-none-match" not in server.seen[0].headers
    assert json.loads(state.read_text())["etag"] == '"v1"'

    again = await syncer.refresh()
    assert again.outcome == "unchanged"
    assert server.seen[1].headers["if-none-match"] == '"v1"'


async def test_an_invalid_document_is_never_applied(tmp_path: Path) -> None:
    server, state = PolicyServer(PREMIUM_DOC), tmp_path / "policy.json"
    syncer = sync(server, state)
    await syncer.refresh()
    saved = state.read_text()
    for bad in ({"tier": "x", "policy": {"routing": {"threshold": 7}}}, {"tier": "x"}, "{not json", [1, 2]):
        server.document, server.etag = bad, '"v2"'
        result = await syncer.refresh()
        assert result.outcome == "rejected", bad
        assert syncer.current is not None and syncer.current.tier == "premium"
        assert syncer.etag == '"v1"'  # so the next fetch asks for the new document again
        assert state.read_text() == saved


async def test_the_last_good_policy_survives_a_restart(tmp_path: Path) -> None:
    server, state = PolicyServer(PREMIUM_DOC), tmp_path / "policy.json"
    await sync(server, state).refresh()
    server.down = True
    restarted = sync(server, state)
    assert restarted.current is not None and restarted.current.tier == "premium"
    assert restarted.etag == '"v1"'
    result = await restarted.refresh()
    assert result.outcome == "failed" and "no network" in result.detail
    assert restarted.current.tier == "premium"


async def test_a_corrupt_state_file_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / "policy.json"
    state.write_text('{"etag": "x", "policy": {"tier": 3}}')
    syncer = sync(PolicyServer(PREMIUM_DOC), state)
    assert syncer.current is None and syncer.etag is None
    assert (await syncer.refresh()).outcome == "updated"


async def test_an_error_status_keeps_the_current_policy() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="oops")

    settings = ConfigSyncSettings(url="http://cloud.test/cfg")
    syncer = PolicySync(settings, transport=httpx.MockTransport(broken))
    assert (await syncer.refresh()).outcome == "failed"
    assert syncer.current is None


async def test_the_router_routes_with_the_synced_policy(tmp_path: Path) -> None:
    server, state = PolicyServer(STRICT_DOC), tmp_path / "policy.json"
    config = EdgeRouterConfig.model_validate(
        {
            "cloud": {"url": None},
            "sync": {"url": "http://cloud.test/v1/edge/config", "state_file": str(state)},
        }
    )

    def make() -> EdgeRouter:
        return EdgeRouter(
            config, local=FakeBackend("edge"), signals=StaticSignals(), transport=httpx.MockTransport(server)
        )

    router = make()
    assert router.tier == "free"
    assert (await router.sync_config()).outcome == "updated"
    assert router.tier == "strict" and router.policy.routing.fallback_to_edge is False
    assert make().tier == "strict"  # a new SDK object starts from the last good policy on disk
    # The synced tier forbids local answers and this device has no cloud: a clear error.
    with pytest.raises(NoBackendAvailable, match="cannot be answered on the edge"):
        await router.plan({"messages": [{"role": "user", "content": "hi"}]})


SIGNALLED = {
    "cloud": {"url": None},
    "tiers": {
        "free": {
            "routing": {"threshold": 0.7},
            "signals": {"low_battery_pct": 50.0, "slow_link_rtt_ms": None, "local_on_metered": False},
        }
    },
}
# What the router's `GET /v1/edge/config` serves: the tier's routing, no signals.
ROUTING_ONLY_DOC = {"tier": "free", "policy": {"routing": {"threshold": 0.5}}}


def signalled_router(server: PolicyServer, state: Path, **config: Any) -> EdgeRouter:
    return EdgeRouter(
        EdgeRouterConfig.model_validate(
            {
                **SIGNALLED,
                "sync": {"url": "http://cloud.test/v1/edge/config", "state_file": str(state)},
                **config,
            }
        ),
        local=FakeBackend("edge"),
        signals=StaticSignals(),
        transport=httpx.MockTransport(server),
    )


async def test_a_sync_keeps_the_devices_signals_for_its_tier(tmp_path: Path) -> None:
    server, state = PolicyServer(ROUTING_ONLY_DOC), tmp_path / "policy.json"
    router = signalled_router(server, state)
    configured = router.policy.signals
    assert (await router.sync_config()).outcome == "updated"
    assert router.policy.routing.threshold == 0.5  # the synced routing applies
    assert router.policy.signals == configured  # the device's own signals stay
    assert signalled_router(server, state).policy.signals == configured  # and after a restart


async def test_signals_the_server_sends_replace_the_devices(tmp_path: Path) -> None:
    doc = {"tier": "free", "policy": {"routing": {"threshold": 0.5}, "signals": {"low_battery_pct": 5.0}}}
    server, state = PolicyServer(doc), tmp_path / "policy.json"
    router = signalled_router(server, state)
    assert (await router.sync_config()).outcome == "updated"
    assert router.policy.signals.low_battery_pct == 5.0
    assert router.policy.signals.local_on_metered is True  # the document's signals, whole
    assert signalled_router(server, state).policy.signals.low_battery_pct == 5.0


async def test_a_synced_tier_the_device_does_not_configure_gets_default_signals(tmp_path: Path) -> None:
    server, state = PolicyServer(PREMIUM_DOC), tmp_path / "policy.json"
    router = signalled_router(server, state)
    assert (await router.sync_config()).outcome == "updated"
    assert router.tier == "premium" and router.policy.signals.low_battery_pct == 20.0


async def test_a_state_file_from_before_signals_were_kept_is_fetched_again(tmp_path: Path) -> None:
    # Earlier versions saved the signals' defaults as if the server had sent them, with the ETag.
    state = tmp_path / "policy.json"
    old = {"tier": "free", "policy": {"routing": {"threshold": 0.5}, "signals": {}}}
    state.write_text(json.dumps({"etag": '"v1"', "policy": old}))
    server = PolicyServer(ROUTING_ONLY_DOC)
    router = signalled_router(server, state)
    assert (await router.sync_config()).outcome == "updated"
    assert "if-none-match" not in server.seen[0].headers
    assert router.policy.signals.low_battery_pct == 50.0
