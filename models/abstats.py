"""The statistics of an A/B comparison: two-proportion z-test, Welch's t-test, and the sample size
still needed, with `math` alone (no scipy).

Two-sided tests at 5% significance; the sample size is per arm, for 80% power to detect the observed
difference (the classic normal-approximation formulas: Fleiss for proportions, the two-sample formula
for means). Welch's p-value comes from Student's t distribution (the regularised incomplete beta).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: z of a two-sided 5% test, and of 80% power.
Z_ALPHA = 1.959963984540054
Z_POWER = 0.8416212335729143


@dataclass(frozen=True)
class Comparison:
    """One metric compared between arm a and arm b: values, test statistic, p-value, n still needed."""

    a: float
    b: float
    statistic: float | None
    p_value: float | None
    #: requests per arm that 80% power at 5% significance needs for the observed difference (None:
    #: no difference observed, or no spread)
    needed_per_arm: int | None

    @property
    def significant(self) -> bool:
        """Whether p < 0.05."""
        return self.p_value is not None and self.p_value < 0.05

    def as_dict(self) -> dict[str, float | int | bool | None]:
        """The comparison as plain values (rounded)."""
        return {
            "a": round(self.a, 6),
            "b": round(self.b, 6),
            "difference": round(self.b - self.a, 6),
            "statistic": None if self.statistic is None else round(self.statistic, 4),
            "p_value": None if self.p_value is None else round(self.p_value, 6),
            "significant": self.significant,
            "needed_per_arm": self.needed_per_arm,
        }


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def two_proportions(hits_a: int, n_a: int, hits_b: int, n_b: int) -> Comparison:
    """The pooled two-proportion z-test of hits_a/n_a against hits_b/n_b."""
    if n_a <= 0 or n_b <= 0:
        raise ValueError("both arms need at least one observation")
    p_a, p_b = hits_a / n_a, hits_b / n_b
    pooled = (hits_a + hits_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b))
    z = None if spread == 0 else (p_b - p_a) / spread
    return Comparison(
        p_a, p_b, z, None if z is None else normal_two_sided_p(z), proportion_sample_size(p_a, p_b)
    )


def proportion_sample_size(p_a: float, p_b: float) -> int | None:
    """Observations per arm for 80% power to tell p_a from p_b at 5% (two-sided)."""
    if p_a == p_b:
        return None
    mean = (p_a + p_b) / 2.0
    root = Z_ALPHA * math.sqrt(2.0 * mean * (1.0 - mean)) + Z_POWER * math.sqrt(
        p_a * (1.0 - p_a) + p_b * (1.0 - p_b)
    )
    return math.ceil(root**2 / (p_a - p_b) ** 2)


def welch(mean_a: float, var_a: float, n_a: int, mean_b: float, var_b: float, n_b: int) -> Comparison:
    """Welch's t-test of two means from their sample variances (ddof 1)."""
    if n_a < 2 or n_b < 2:
        return Comparison(mean_a, mean_b, None, None, None)
    se2_a, se2_b = var_a / n_a, var_b / n_b
    spread = math.sqrt(se2_a + se2_b)
    needed = mean_sample_size(mean_b - mean_a, var_a, var_b)
    if spread == 0:
        return Comparison(mean_a, mean_b, None, None, needed)
    t = (mean_b - mean_a) / spread
    df = (se2_a + se2_b) ** 2 / (se2_a**2 / (n_a - 1) + se2_b**2 / (n_b - 1))
    return Comparison(mean_a, mean_b, t, student_two_sided_p(t, df), needed)


def mean_sample_size(difference: float, var_a: float, var_b: float) -> int | None:
    """Observations per arm for 80% power to detect `difference` in means at 5% (two-sided)."""
    if difference == 0 or var_a + var_b == 0:
        return None
    return math.ceil((Z_ALPHA + Z_POWER) ** 2 * (var_a + var_b) / difference**2)


def student_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom: I_{df/(df+t²)}(df/2, 1/2)."""
    return _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta I_x(a, b) (continued fraction, Numerical Recipes' betacf)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-12:
            break
    return h
