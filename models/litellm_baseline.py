"""LiteLLM's rule-based complexity router as an evaluation baseline (`hybrid-router eval`).

It is the heuristic most users of an LLM gateway have today: LiteLLM's `complexity_router`
(`model: auto_router/complexity_router` in a LiteLLM `Router`; `classifier_type: "heuristic"`, the
default). It scores the request's last user ask on weighted keyword dimensions (code, reasoning
markers, technical terms, simple indicators), a length estimate (characters / 4), multi-step
patterns and question marks, with no network call and no model, then maps the score to a tier:
SIMPLE < 0.15 <= MEDIUM < 0.35 <= COMPLEX < 0.60 <= REASONING, where two or more reasoning
markers promote a request to REASONING once its score clears the SIMPLE/MEDIUM boundary.

How it is run here (checked with litellm 1.106.2, from PyPI):

- `litellm.router_strategy.complexity_router.complexity_router.ComplexityRouter` with its default
  `ComplexityRouterConfig()` (default keywords, weights, boundaries) and no `litellm.Router`:
  the heuristic classifier never reads the router instance, which LiteLLM only uses for model
  selection and savings accounting after classification;
- the text classified is what LiteLLM's own pre-routing hook classifies: the newest user message
  with text, and the last system prompt (which the heuristic ignores), taken by LiteLLM's
  `_extract_current_ask_and_system_prompt` (falling back to the newest user message on a version
  without it). On MT-Bench's two-turn conversations that is the second turn only;
- `ComplexityRouter.classify(ask, system_prompt)` returns `(tier, score, signals)`; the scorer
  turns it into one number (see `litellm_complexity_scorer`).

No network: `LITELLM_LOCAL_MODEL_COST_MAP=True` is set before the import, so LiteLLM reads the
model cost map bundled in the package instead of fetching it from GitHub at import time; the
import starts no thread and opens no socket (the tests run it under a socket guard). The import
costs about 2 s and loads the whole `litellm` package once per process; a call then takes about
0.2 to 0.4 ms (p50 on a shared 2-core machine), mostly LiteLLM's per-keyword regex matching.
"""

from __future__ import annotations

import importlib
import math
import os
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Literal

from hyrouter.router import ChatMessage

LITELLM_MODULE = "litellm.router_strategy.complexity_router.complexity_router"
# The four tiers the heuristic produces, cheapest first.
TIERS = ("SIMPLE", "MEDIUM", "COMPLEX", "REASONING")

LiteLLMScorer = Callable[[Sequence[ChatMessage]], float]
"""A router's score for a conversation: higher sends it to the strong model first."""


def _import_complexity_router() -> ModuleType | None:
    """LiteLLM's complexity-router module, imported without network I/O; None when litellm is absent."""
    # Read the bundled cost map: otherwise `import litellm` fetches it from GitHub.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    try:
        with warnings.catch_warnings():
            # Scoped to the import: whatever LiteLLM's own dependencies deprecate is not ours to fix.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            return importlib.import_module(LITELLM_MODULE)
    except ImportError:
        return None


def litellm_version() -> str | None:
    """The installed litellm version, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("litellm")
    except PackageNotFoundError:
        return None


def litellm_complexity_scorer(key: Literal["tier", "score"] = "tier") -> LiteLLMScorer | None:
    """LiteLLM's default complexity router as a scorer, or None when litellm is not installed.

    `key="tier"` (the default) orders conversations as LiteLLM's routing decision does: by tier
    (SIMPLE 0 .. REASONING 3), then by LiteLLM's continuous weighted score within a tier, as
    `tier + (1 + tanh(score)) / 2`. Every cut LiteLLM could make between tiers is a cut on this
    number, and the score breaks the ties that the four tiers alone would leave.
    `key="score"` is the raw weighted score only, which ignores the reasoning-marker promotion.
    """
    module = _import_complexity_router()
    if module is None:
        return None
    # The default config (heuristic classifier). The Router instance is only used after
    # classification (deployment choice, savings baseline), never by `classify`.
    router: Any = module.ComplexityRouter(
        model_name="hybrid-router-eval-baseline", litellm_router_instance=None
    )
    extract: Callable[[Sequence[dict[str, str]]], tuple[str | None, str | None]] = getattr(
        module, "_extract_current_ask_and_system_prompt", _newest_user_ask
    )

    def score(messages: Sequence[ChatMessage]) -> float:
        ask, system_prompt = extract([m.to_plain() for m in messages])
        # With no user ask LiteLLM skips classification and routes to its default model;
        # classifying the empty ask (SIMPLE) keeps such a conversation at the cheap end.
        tier, weighted, _signals = router.classify(ask or "", system_prompt)
        weighted = float(weighted)
        if key == "score":
            return weighted
        return TIERS.index(str(tier.value)) + (1.0 + math.tanh(weighted)) / 2.0

    return score


def _newest_user_ask(messages: Sequence[dict[str, str]]) -> tuple[str | None, str | None]:
    """The newest non-empty user message and the last system prompt: for a LiteLLM without its own helper."""
    asks = (m["content"].strip() for m in reversed(messages) if m["role"] == "user")
    systems = (m["content"] for m in reversed(messages) if m["role"] == "system" and m["content"])
    return next((a for a in asks if a), None), next(systems, None)
