"""How sure the edge model was of its answer: features over its tokens' signals, and a calibration.

The second stage of routing (the first is the prompt-only estimator): the edge answers, and what its
model thought of each token it drew (`TokenSignal`: the token's log-probability, the entropy of the
distribution it came from, the top-1/top-2 margin; `hyrouter.edge`'s `TokenLogprob` is one) is
summarised as `AnswerFeatures`. A `Calibration` maps those to a confidence in [0, 1], read as the
probability that the answer is good enough; below the tier's `verify.min_confidence` the engine
escalates to the cloud (`RouteReason.EDGE_UNSURE`) before any byte reaches the caller.

`UNCALIBRATED` is the default mapping: the geometric mean of the tokens' probabilities,
exp(mean log-probability). It orders answers the way the model's own certainty does, but it is not
fitted to graded answers of any model: 0.5 means "the model's average token had probability 0.5",
not "right half the time". A calibration fitted per GGUF is a later step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

#: The quantile of the tokens' log-probabilities kept as `AnswerFeatures.low_logprob`.
LOW_QUANTILE = 0.1


class TokenSignal(Protocol):
    """What the model thought of one token it generated (`hyrouter.edge.TokenLogprob` is one)."""

    @property
    def logprob(self) -> float:
        """The drawn token's log-probability."""
        ...

    @property
    def entropy(self) -> float:
        """The entropy (nats) of the distribution it was drawn from."""
        ...

    @property
    def margin(self) -> float:
        """The log-probability of the most likely token minus that of the second."""
        ...


@dataclass(frozen=True)
class AnswerFeatures:
    """A summary of an answer's token signals: what a `Calibration` reads."""

    tokens: int
    mean_logprob: float
    min_logprob: float
    #: the `LOW_QUANTILE` quantile (nearest rank) of the log-probabilities
    low_logprob: float
    mean_entropy: float
    mean_margin: float

    @classmethod
    def of(cls, signals: Sequence[TokenSignal]) -> AnswerFeatures | None:
        """The features of `signals`, in the order generated; None for an answer with no tokens."""
        if not signals:
            return None
        logprobs = sorted(s.logprob for s in signals)
        n = len(signals)
        rank = max(0, math.ceil(LOW_QUANTILE * n) - 1)
        return cls(
            tokens=n,
            mean_logprob=sum(logprobs) / n,
            min_logprob=logprobs[0],
            low_logprob=logprobs[rank],
            mean_entropy=sum(s.entropy for s in signals) / n,
            mean_margin=sum(s.margin for s in signals) / n,
        )


class Calibration(Protocol):
    """Maps an answer's features to a confidence in [0, 1] that the answer is good enough."""

    #: reported with the confidence (logs, docs): which mapping gave it
    name: str

    def confidence(self, features: AnswerFeatures) -> float:
        """The confidence in [0, 1]."""
        ...


class UncalibratedConfidence:
    """exp(mean token log-probability), clipped to [0, 1]: the default, fitted to no graded data."""

    name = "uncalibrated-exp-mean-logprob"

    def confidence(self, features: AnswerFeatures) -> float:
        """The geometric mean of the answer's token probabilities."""
        return min(1.0, max(0.0, math.exp(features.mean_logprob)))


#: The calibration used when a model has none (see the module's docstring).
UNCALIBRATED: Calibration = UncalibratedConfidence()


def answer_confidence(
    signals: Sequence[TokenSignal], calibration: Calibration = UNCALIBRATED
) -> float | None:
    """The confidence of an answer with these token signals; None when there are none to judge."""
    features = AnswerFeatures.of(signals)
    return None if features is None else calibration.confidence(features)
