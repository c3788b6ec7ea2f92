"""Config sync: the device's tier policy, fetched from the cloud with ETag / If-None-Match.

The document is a `SyncedPolicy` as JSON: the tier the device's key belongs to and that tier's policy.
A new document is validated before anything else; an invalid one is refused and the current policy
stays. The device routes with the synced routing and keeps its own signals for that tier unless the
document sends `signals` (the router's `GET /v1/edge/config` sends only `routing`): see `applied_to`.
The last good document and its ETag are written atomically to `state_file`, so a device that restarts
offline routes with the policy it last had. A 304 costs a round trip and no parsing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from hyrouter.edge._sdk_config import ConfigSyncSettings, DeviceTierPolicy
from hyrouter.router._config import validation_problems

logger = logging.getLogger("hybrid_router.edge")

#: The state file's format. Version 1 (no `version` member) saved default signals as if the server had
#: sent them; such a state is still used, but its ETag is dropped so that the next sync fetches anew.
STATE_VERSION = 2


class SyncedPolicy(BaseModel):
    """The document the cloud serves to a device: its key's tier and that tier's policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: str
    policy: DeviceTierPolicy

    def applied_to(self, tiers: Mapping[str, DeviceTierPolicy]) -> DeviceTierPolicy:
        """The policy the device routes with, given its configured `tiers`.

        The synced routing replaces the tier's routing. Signals are the device's: the document's
        `signals` replace them when it sends some; otherwise the device keeps the signals it configures
        for this tier (the defaults for a tier it does not configure).
        """
        configured = tiers.get(self.tier)
        if configured is None or "signals" in self.policy.model_fields_set:
            return self.policy
        return configured.model_copy(update={"routing": self.policy.routing})

    def sent(self) -> dict[str, Any]:
        """What the server sent, as JSON (members it left out stay out, so `applied_to` still knows)."""
        return self.model_dump(mode="json", exclude_unset=True)


@dataclass(frozen=True)
class SyncResult:
    """What one sync did: `updated`, `unchanged` (304 or same ETag), `rejected` (invalid), `failed`."""

    outcome: Literal["updated", "unchanged", "rejected", "failed"]
    etag: str | None
    detail: str = ""


class PolicySync:
    """Fetches the policy document and keeps the last good one in memory and on disk."""

    def __init__(
        self,
        settings: ConfigSyncSettings,
        *,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._api_key = api_key
        self._transport = transport
        self.current: SyncedPolicy | None = None
        self.etag: str | None = None
        self._load_state()

    def _load_state(self) -> None:
        """The last good document from `state_file`, if there is a valid one (else it is ignored)."""
        if self.settings.state_file is None:
            return
        path = Path(self.settings.state_file)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            self.current = SyncedPolicy.model_validate(state["policy"])
            self.etag = state.get("etag") if state.get("version") == STATE_VERSION else None
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
            logger.warning("ignoring unreadable config sync state %s: %s", path, exc)

    def _save_state(self) -> None:
        if self.settings.state_file is None or self.current is None:
            return
        path = Path(self.settings.state_file)
        state = {"version": STATE_VERSION, "etag": self.etag, "policy": self.current.sent()}
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed over it: a crash leaves the old file or the new one.
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(state, file, indent=2)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def refresh(self) -> SyncResult:
        """One conditional GET of the document; applies it only when valid."""
        if self.settings.url is None:
            return SyncResult("unchanged", self.etag, "no sync url configured")
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if self.etag and self.current is not None:
            headers["If-None-Match"] = self.etag
        try:
            async with httpx.AsyncClient(
                timeout=self.settings.timeout_s, transport=self._transport
            ) as client:
                response = await client.get(self.settings.url, headers=headers)
        except httpx.HTTPError as exc:
            return SyncResult("failed", self.etag, f"cannot fetch {self.settings.url}: {exc!r}")
        if response.status_code == 304:
            return SyncResult("unchanged", self.etag, "not modified")
        if response.status_code != 200:
            return SyncResult("failed", self.etag, f"{self.settings.url} answered {response.status_code}")
        etag = response.headers.get("etag")
        try:
            document = SyncedPolicy.model_validate_json(response.content)
        except ValidationError as exc:
            problems = validation_problems(exc)
            logger.warning("refusing invalid policy from %s: %s", self.settings.url, problems)
            return SyncResult("rejected", self.etag, problems)
        if self.current is not None and document.sent() == self.current.sent():
            self.etag = etag
            self._save_state()
            return SyncResult("unchanged", etag, "same document")
        self.current, self.etag = document, etag
        self._save_state()
        logger.info("applied policy for tier %s (etag %s)", document.tier, etag)
        return SyncResult("updated", etag)
