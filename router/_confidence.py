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
not "right half the time".

`FittedCalibration` is a mapping fitted to graded answers of one GGUF (`hybrid-router models`
writes it): a linear score over standardised features, through a sigmoid (Platt) or an isotonic
step function. Its JSON document (`CalibrationDocument`) names the GGUF's sha256, so that it is
never applied to another model's signals; `hyrouter.router._calibrations` registers and resolves them.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hyrouter.router._errors import ConfigError

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
    #: the first token's log-probability (how the answer opened)
    first_logprob: float

    @property
    def log_tokens(self) -> float:
        """ln(tokens): the answer's length on the scale a calibration reads it."""
        return math.log(self.tokens)

    def value(self, name: str) -> float:
        """The feature `name` (one of `CALIBRATION_FEATURES`)."""
        return float(getattr(self, name))

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
            first_logprob=signals[0].logprob,
        )


#: The name of an `AnswerFeatures` feature a fitted calibration may read.
CalibrationFeature = Literal[
    "tokens",
    "mean_logprob",
    "min_logprob",
    "low_logprob",
    "mean_entropy",
    "mean_margin",
    "first_logprob",
    "log_tokens",
]
#: The `AnswerFeatures` a fitted calibration may read, by name (`CalibrationFeature`'s values).
CALIBRATION_FEATURES: tuple[CalibrationFeature, ...] = get_args(CalibrationFeature)


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


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibratedGguf(_Document):
    """The GGUF file a calibration was fitted on: its name (for people) and sha256 (what is checked)."""

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class IsotonicPoints(_Document):
    """An isotonic link's knots: z strictly increasing, confidences non-decreasing in [0, 1]."""

    x: list[float] = Field(min_length=1)
    y: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _monotone(self) -> IsotonicPoints:
        if len(self.x) != len(self.y):
            raise ValueError(f"isotonic x has {len(self.x)} points but y has {len(self.y)}")
        if any(b <= a for a, b in zip(self.x, self.x[1:], strict=False)):
            raise ValueError("isotonic x must be strictly increasing")
        if any(b < a for a, b in zip(self.y, self.y[1:], strict=False)):
            raise ValueError("isotonic y must be non-decreasing")
        return self


class CalibrationDocument(_Document):
    """A fitted calibration's JSON document (format 1), as `hybrid-router models` writes it.

    z = intercept + sum(coef[i] * (feature[i] - center[i]) / scale[i]); the confidence is sigmoid(z)
    for link "sigmoid" (Platt scaling), or z interpolated linearly over the `isotonic` knots (clipped
    at the ends) for link "isotonic". `metrics` and `training` are for people, not read here.
    """

    format: Literal[1]
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    gguf: CalibratedGguf
    features: list[CalibrationFeature] = Field(min_length=1)
    center: list[float]
    scale: list[Annotated[float, Field(gt=0.0)]]
    coef: list[float]
    intercept: float
    link: Literal["sigmoid", "isotonic"]
    isotonic: IsotonicPoints | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> CalibrationDocument:
        if len(set(self.features)) != len(self.features):
            raise ValueError("features are listed more than once")
        n = len(self.features)
        for name in ("center", "scale", "coef"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} values for {n} features")
        if self.link == "isotonic" and self.isotonic is None:
            raise ValueError("link 'isotonic' needs the isotonic points")
        if self.link == "sigmoid" and self.isotonic is not None:
            raise ValueError("isotonic points are given but the link is 'sigmoid'")
        return self


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _interpolate(z: float, points: IsotonicPoints) -> float:
    xs, ys = points.x, points.y
    if z <= xs[0]:
        return ys[0]
    if z >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, z)  # xs[i - 1] <= z < xs[i]
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (z - x0) / (x1 - x0)


class FittedCalibration:
    """A `Calibration` fitted to graded answers of one GGUF (`CalibrationDocument`)."""

    def __init__(self, document: CalibrationDocument, source: str = "<memory>") -> None:
        """The calibration `document` describes; `source` (its file) is named in errors."""
        self.document = document
        self.source = source
        #: "name@version", reported with the confidence
        self.name = f"{document.name}@{document.version}"
        self._terms = list(
            zip(document.features, document.center, document.scale, document.coef, strict=True)
        )

    @property
    def gguf_sha256(self) -> str:
        """The sha256 of the GGUF file this calibration was fitted on."""
        return self.document.gguf.sha256

    @classmethod
    def load(cls, path: Path) -> FittedCalibration:
        """The calibration in the JSON file `path`; a `ConfigError` of one line when it is unreadable
        or not a valid document."""
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"calibration {path} is unreadable: {exc}") from None
        try:
            document = CalibrationDocument.model_validate(payload)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'document'}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(f"calibration {path} is not a valid calibration document: {problems}") from None
        return cls(document, str(path))

    def score(self, features: AnswerFeatures) -> float:
        """z, the linear score before the link."""
        z = self.document.intercept
        for name, center, scale, coef in self._terms:
            z += coef * (features.value(name) - center) / scale
        return z

    def confidence(self, features: AnswerFeatures) -> float:
        """The calibrated confidence in [0, 1]."""
        z = self.score(features)
        if self.document.isotonic is not None:
            return _interpolate(z, self.document.isotonic)
        return _sigmoid(z)

    def __repr__(self) -> str:
        return f"FittedCalibration({self.name!r}, {self.source!r})"
