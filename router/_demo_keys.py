"""The demo config's public keys, and the check that a real deployment accepts none of them.

`hybrid-router demo` serves `router/demo-config.yaml` with these keys; they are printed in its banner
and in the README, so anyone can use them. A config for anything else (`serve`, the Lambda) that
still lists one of their digests is logged as a loud warning at start.
"""

from __future__ import annotations

import logging

from hyrouter.router._config import RouterConfig, hash_api_key

logger = logging.getLogger("hybrid_router")

#: The demo config's keys by the tier they open ("admin": an operator's key); public, for trying out.
DEMO_KEYS: dict[str, str] = {
    "free": "demo-free-key",
    "standard": "demo-standard-key",
    "premium": "demo-premium-key",
    "admin": "demo-admin-key",  # reads /metrics and /healthz detail
}
_DEMO_DIGESTS = {hash_api_key(key): key for key in DEMO_KEYS.values()}


def demo_keys_in(config: RouterConfig) -> list[str]:
    """The public demo keys that `config` accepts (as tenants' or operators' keys), in config order."""
    digests = [entry.sha256 for entry in config.api_keys] + [entry.sha256 for entry in config.admin_keys]
    return [_DEMO_DIGESTS[digest] for digest in digests if digest in _DEMO_DIGESTS]


def warn_about_demo_keys(config: RouterConfig, *, source: str) -> bool:
    """Log a WARNING when `config` (read from `source`) accepts a public demo key; whether it does."""
    found = demo_keys_in(config)
    if found:
        logger.warning(
            "SECURITY: config %s accepts the PUBLIC demo key(s) %s, printed in the README: anyone can "
            "call this router with them. Replace them (hybrid-router hash-key NEW_KEY) before any real use.",
            source,
            ", ".join(found),
        )
    return bool(found)
