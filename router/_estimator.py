"""Complexity estimators: `score(messages) -> float` in [0, 1].

The score is the estimated probability that the edge model's answer is not good enough, so that
escalating to the cloud pays. Estimators are registered by name and version; the config names one.
Other packages add estimators through the entry-point group `hybrid_router.estimators` (each entry
is a function that calls `register_estimator`; `models/` registers its committed ONNX artefacts that
way), discovered the first time an estimator is looked up. The heuristic below is the dependency-free
fallback.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from hyrouter.router._errors import EstimatorError
from hyrouter.router._wire import ChatMessage

if TYPE_CHECKING:
    from hyrouter.router._plan import Tenant
    from hyrouter.router._wire import ChatCompletionRequest


@runtime_checkable
class ComplexityEstimator(Protocol):
    """Scores a conversation: the probability that the edge answer is not good enough."""

    name: str
    version: str

    def score(self, messages: Sequence[ChatMessage]) -> float:
        """A score in [0, 1]; higher means escalate."""
        ...


@runtime_checkable
class FeatureEstimator(ComplexityEstimator, Protocol):
    """An estimator that can hand over the features it scored from, for outcome records.

    The ONNX estimator's are its pooled embedding (when its artefact exports them); the heuristic
    has none. `models fit` (later) trains a per-deployment head on them.
    """

    def score_with_features(self, messages: Sequence[ChatMessage]) -> tuple[float, Sequence[float] | None]:
        """The score, and the features it was computed from (None when this input has none)."""
        ...


def conversation_text(messages: Sequence[ChatMessage]) -> str:
    """The text an estimator reads for a conversation: the latest user turn first, then earlier turns.

    Estimators truncate from the end, so the request being answered now always survives and the
    most recent context is kept before older context (RouteLLM routers see only the last turn).
    """
    turns = [m for m in messages if m.role in ("user", "system", "developer", "assistant") and m.text]
    last_user = max((i for i, m in enumerate(turns) if m.role == "user"), default=len(turns) - 1)
    if last_user < 0:
        return ""
    rest = [f"{m.role}: {m.text}" for m in reversed(turns[:last_user])]
    return "\n\n".join([turns[last_user].text, *rest])


EstimatorFactory = Callable[[], ComplexityEstimator]
_REGISTRY: dict[tuple[str, str], EstimatorFactory] = {}
ENTRY_POINT_GROUP = "hybrid_router.estimators"
_discovered = False


def register_estimator(name: str, version: str, factory: EstimatorFactory) -> None:
    """Make an estimator available to configs under `name` and `version`."""
    _REGISTRY[(name, version)] = factory


def available_estimators() -> list[str]:
    """`name@version` of every registered estimator, sorted."""
    discover_plugins()
    return sorted(f"{name}@{version}" for name, version in _REGISTRY)


def load_estimator(name: str, version: str | None = None) -> ComplexityEstimator:
    """Build the registered estimator `name` at `version` (None: the newest registered)."""
    discover_plugins()
    versions = sorted((v for n, v in _REGISTRY if n == name), key=_version_key)
    if not versions:
        raise EstimatorError(f"unknown estimator {name!r}; available: {', '.join(available_estimators())}")
    chosen = version or versions[-1]
    if (name, chosen) not in _REGISTRY:
        raise EstimatorError(
            f"estimator {name!r} has no version {chosen!r}; available: {', '.join(versions)}"
        )
    return _REGISTRY[(name, chosen)]()


def discover_plugins() -> None:
    """Run each `hybrid_router.estimators` entry point once, so that plugins register their estimators
    (and the calibrations they ship: `hyrouter.router._calibrations`)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()()
        except Exception as exc:  # a broken plugin must say so, not hide the others
            raise EstimatorError(
                f"estimator plugin {ep.name!r} ({ep.value}) failed to register: {exc}"
            ) from exc


def _version_key(version: str) -> tuple[int | str, ...]:
    return tuple(int(p) if p.isdigit() else p for p in version.split("."))


# Signals that a request needs more than a 135M-parameter model: reasoning, math, code, long output.
_HARD_PATTERNS: tuple[tuple[re.Pattern[str], float], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), weight)
    for pattern, weight in (
        (r"\b(prove|proof|derive|theorem|lemma)\b", 1.6),
        (r"\b(step[- ]by[- ]step|reason(ing)?|justify|explain|analy[sz]e|compar(e|ing)|evaluate)\b", 1.0),
        (r"\b(integral|derivative|equation|matrix|probability|eigen\w*|polynomial)\b", 1.2),
        (r"\b(implement|function|algorithm|refactor|debug|complexity|regex|sql|python|javascript)\b", 1.0),
        (r"```|def |class |\breturn\b|[{};]\s*$", 1.0),
        (r"\b(essay|report|detailed|comprehensive|in depth|thorough)\b", 0.8),
        (r"\d+\s*[-+*/^%]\s*\d+.*[-+*/^%]", 0.8),
        (r"\b(translate|summari[sz]e)\b", 0.4),
    )
)


class HeuristicEstimator:
    """A dependency-free estimator from prompt length, turns and keyword signals.

    It is the default until a learned estimator is configured: cheap (tens of microseconds) and
    monotone in the obvious signals, but blind to meaning.
    """

    name = "heuristic"
    version = "1.0.0"

    def __init__(
        self,
        *,
        bias: float = -2.5,
        per_100_words: float = 0.35,
        per_turn: float = 0.15,
        signal_gain: float = 1.6,
    ) -> None:
        self._bias = bias
        self._signal_gain = signal_gain
        self._per_100_words = per_100_words
        self._per_turn = per_turn

    def score(self, messages: Sequence[ChatMessage]) -> float:
        """A logistic score of the conversation's length and keyword signals."""
        user_text = "\n".join(m.text for m in messages if m.role in ("user", "system", "developer"))
        words = len(user_text.split())
        logit = self._bias + self._per_100_words * min(words, 2000) / 100.0
        logit += self._per_turn * max(0, sum(1 for m in messages if m.role == "user") - 1)
        logit += self._signal_gain * sum(w for pattern, w in _HARD_PATTERNS if pattern.search(user_text))
        return 1.0 / (1.0 + math.exp(-logit))


register_estimator(HeuristicEstimator.name, HeuristicEstimator.version, HeuristicEstimator)


class EstimatorSelector(Protocol):
    """The engine's seam for scoring: which estimator scores a request (one today; a canary next)."""

    @property
    def primary(self) -> ComplexityEstimator:
        """The estimator that decides when nothing else applies (reported at start-up and in health)."""
        ...

    def select(self, request: ChatCompletionRequest, tenant: Tenant) -> ComplexityEstimator:
        """The estimator whose score decides this request."""
        ...


class SingleEstimator:
    """Every request scored by one estimator."""

    def __init__(self, estimator: ComplexityEstimator) -> None:
        """Score with `estimator`."""
        self.primary = estimator

    def select(self, request: ChatCompletionRequest, tenant: Tenant) -> ComplexityEstimator:
        """The one estimator."""
        return self.primary
