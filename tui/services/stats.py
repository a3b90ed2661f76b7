"""The statistics behind comparing two checkpoints, on the standard library alone.

A difference of means is judged by its standard error: with the normal distribution, or
with Student's t when there are few degrees of freedom. Student's t tail is the
regularized incomplete beta function, `I_x(df/2, 1/2)` with `x = df / (df + t²)`, here
evaluated by its continued fraction (modified Lentz); its quantile is found by bisection
on that tail, which is monotone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

# Student's t is used below this many degrees of freedom (for pairs: n < 30).
T_MAX_DF = 29
_CF_ITERATIONS = 400
_CF_EPSILON = 1e-15
_TINY = 1e-300
_BISECTIONS = 200


@dataclass
class Running:
    """Count, mean and sum of squared deviations of a stream (Welford), in O(1) memory."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        """Take one value into account."""
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    @property
    def variance(self) -> float | None:
        """The sample variance (n − 1 in the denominator); None below two values."""
        return self.m2 / (self.n - 1) if self.n > 1 else None


@dataclass(frozen=True)
class Estimate:
    """A difference `diff = mean_b - mean_a` with its standard error, interval and
    two-sided p-value; `se` and what follows are None when they cannot be estimated."""

    n: int
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    se: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    paired: bool


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The continued fraction converges fast only on this side of the mean; use symmetry.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _CF_ITERATIONS + 1):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            step = d * c
            h *= step
        if abs(step - 1.0) < _CF_EPSILON:
            break
    return h


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return min(1.0, betainc(df / 2.0, 0.5, df / (df + t * t)))


def t_quantile(p: float, df: float) -> float:
    """The value q with P(T <= q) = p, for 0 < p < 1."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, not {p}")
    if p == 0.5:
        return 0.0
    tail = 2.0 * (1.0 - p) if p > 0.5 else 2.0 * p
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > tail:
        low, high = high, high * 2.0
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2.0
        if t_two_sided_p(middle, df) > tail:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * high:
            break
    q = (low + high) / 2.0
    return q if p > 0.5 else -q


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for the standard normal."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def critical_value(alpha: float, df: float | None) -> float:
    """The multiplier of the standard error for a two-sided interval of level 1 - alpha:
    Student's t when `df` < 29, else the normal (1.96 for alpha 0.05)."""
    if df is not None and df < T_MAX_DF:
        return t_quantile(1.0 - alpha / 2.0, df)
    return NormalDist().inv_cdf(1.0 - alpha / 2.0)


def two_sided_p(statistic: float, df: float | None) -> float:
    """The p-value of `statistic` under the distribution `critical_value` uses."""
    if df is not None and df < T_MAX_DF:
        return t_two_sided_p(statistic, df)
    return normal_two_sided_p(statistic)


def paired(a: Running, b: Running, diffs: Running, alpha: float) -> Estimate:
    """The mean of per-sample differences B − A over `diffs.n` pairs, its standard error
    sd(diffs) / √n, and the interval and p-value on n − 1 degrees of freedom."""
    n = diffs.n
    if n == 0:
        return Estimate(0, None, None, None, None, None, None, None, True)
    variance = diffs.variance
    se = math.sqrt(variance / n) if variance is not None else None
    return _estimate(n, a.mean, b.mean, diffs.mean, se, n - 1, alpha, paired=True)


def welch(a: Running, b: Running, alpha: float) -> Estimate:
    """B − A from two independent samples: se = √(var_a/n_a + var_b/n_b), degrees of
    freedom by Welch–Satterthwaite."""
    n = a.n + b.n
    if a.n == 0 or b.n == 0:
        mean_a = a.mean if a.n else None
        mean_b = b.mean if b.n else None
        return Estimate(n, mean_a, mean_b, None, None, None, None, None, False)
    diff = b.mean - a.mean
    va, vb = a.variance, b.variance
    if va is None or vb is None:
        return Estimate(n, a.mean, b.mean, diff, None, None, None, None, False)
    sa, sb = va / a.n, vb / b.n
    se = math.sqrt(sa + sb)
    df = (sa + sb) ** 2 / (sa**2 / (a.n - 1) + sb**2 / (b.n - 1)) if se > 0 else None
    return _estimate(n, a.mean, b.mean, diff, se, df, alpha, paired=False)


def _estimate(
    n: int,
    mean_a: float,
    mean_b: float,
    diff: float,
    se: float | None,
    df: float | None,
    alpha: float,
    *,
    paired: bool,
) -> Estimate:
    if se is None:
        return Estimate(n, mean_a, mean_b, diff, None, None, None, None, paired)
    if se == 0.0:
        # Every difference the same: no spread to weigh it against.
        p_value = 1.0 if diff == 0.0 else 0.0
        return Estimate(n, mean_a, mean_b, diff, 0.0, diff, diff, p_value, paired)
    half = critical_value(alpha, df) * se
    p_value = two_sided_p(diff / se, df)
    return Estimate(n, mean_a, mean_b, diff, se, diff - half, diff + half, p_value, paired)
