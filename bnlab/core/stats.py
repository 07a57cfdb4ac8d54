"""The statistics behind every conclusion bnlab's documents draw from a few seeds.

Pure Python (``math`` and ``statistics`` from the standard library): the core is torch-free and
numpy-free, and SciPy is in no install, so the Student t distribution is computed here.

- ``t_cdf`` is exact for an integer number of degrees of freedom: Abramowitz & Stegun,
  *Handbook of Mathematical Functions* (1964), 26.7.3 (odd ν) and 26.7.4 (even ν), a finite
  trigonometric sum. ``t_quantile`` inverts it by bisection (the CDF is monotone), to about
  1e-12; ``tests/bnlab/core/test_stats.py`` checks both against ``scipy.stats.t``.
- ``mean_interval``: the mean of n values with its Student t interval
  (mean ± t_{(1+level)/2, n−1} · sd/√n), the interval every headline number is quoted with.
- ``paired``: the mean paired difference (same seed, two arms) with its t interval, the number
  of seeds in which the difference has each sign, and the exact two-sided sign-test p-value.
- ``decide``: a claim about the sign of a paired difference, decided by the seeds: it *agrees*
  when the t interval excludes zero on the expected side, or when every seed has the expected
  sign and the exact sign test rejects "no effect" at 1 − level (n ≥ 6 at 95 %: three seeds of
  one sign happen one time in four by chance); it is *contradicted* by the same evidence on
  the other side, and *not resolved at this size* otherwise. ``decide_within`` decides "the
  two agree within a tolerance" (a prediction and its measurement) the same way: the interval
  inside ±tol, wholly beyond it, or neither.
- ``pearson``: Pearson's r with the Fisher z interval, atanh(r) ± z_{(1+level)/2}/√(n − 3)
  (Fisher 1921), and the pooled within-group r when the points come in groups fixed by the
  design (two clusters make a large r out of two points' worth of evidence).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

AGREES = "agrees"
CONTRADICTED = "contradicted"
UNRESOLVED = "not resolved at this size"
T_METHOD = "Student t"
FISHER_METHOD = "Fisher z"
SMALL_N = 10  # fewer points than this: a correlation's interval is wide, say so


def t_cdf(t: float, df: int) -> float:
    """P(T ≤ t) for Student's t with an integer number of degrees of freedom df ≥ 1
    (A&S 26.7.3 / 26.7.4: exact, no series truncation)."""
    if not isinstance(df, int) or isinstance(df, bool) or df < 1:
        raise ValueError(f"degrees of freedom must be an integer ≥ 1, got {df!r}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:  # odd: A = (2/π)(θ + sinθ·cosθ·(1 + (2/3)cos²θ + (2·4)/(3·5)cos⁴θ + …))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(2, df - 1, 2):  # the last term has cos^(df−2)θ
            term *= c2 * k / (k + 1)
            total += term
        a = 2 / math.pi * (theta + s * math.cos(theta) * total)
    else:  # even: A = sinθ·(1 + (1/2)cos²θ + (1·3)/(2·4)cos⁴θ + …)
        term, total = 1.0, 1.0
        for k in range(1, df - 2, 2):
            term *= c2 * k / (k + 1)
            total += term
        a = s * total
    a = min(max(a, 0.0), 1.0)  # A = P(|T| ≤ |t|)
    return 0.5 + 0.5 * a if t >= 0 else 0.5 - 0.5 * a


def t_quantile(p: float, df: int) -> float:
    """The t with P(T ≤ t) = p (0 < p < 1), by bisection on t_cdf."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability must lie in (0, 1), got {p!r}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def z_quantile(p: float) -> float:
    """The standard normal quantile (the standard library's NormalDist)."""
    return statistics.NormalDist().inv_cdf(p)


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


@dataclass(frozen=True)
class Interval:
    """A mean with its interval: lo/hi are None below two values (no spread to measure)."""

    n: int
    mean: float | None
    lo: float | None
    hi: float | None
    sd: float | None
    level: float = 0.95
    method: str = T_METHOD

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2

    def excludes(self, value: float = 0.0) -> bool:
        return self.lo is not None and self.hi is not None and not (self.lo <= value <= self.hi)

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "mean": self.mean,
            "lo": self.lo,
            "hi": self.hi,
            "sd": self.sd,
            "level": self.level,
            "method": self.method,
        }


def mean_interval(values: Sequence[float | None], level: float = 0.95) -> Interval:
    """Mean of the finite values with the Student t interval at `level` (n − 1 degrees of
    freedom). One value: the mean with no interval; none: everything None."""
    v = _finite(values)
    n = len(v)
    if n == 0:
        return Interval(0, None, None, None, None, level)
    mean = statistics.fmean(v)
    if n == 1:
        return Interval(1, mean, None, None, None, level)
    sd = statistics.stdev(v)
    half = t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n)
    return Interval(n, mean, mean - half, mean + half, sd, level)


def sign_test_p(n_pos: int, n_neg: int) -> float:
    """Exact two-sided sign test: P(a split at least this uneven | each sign has chance 1/2).
    Ties (zero differences) are left out before calling, as usual."""
    n, k = n_pos + n_neg, min(n_pos, n_neg)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class Paired:
    """Paired differences b − a (one per seed): their mean with its t interval, the signs."""

    diff: Interval
    n_pos: int
    n_neg: int
    sign_p: float

    def as_dict(self) -> dict:
        return {
            **self.diff.as_dict(),
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
            "sign_p": self.sign_p,
        }


def paired(a: Sequence[float | None], b: Sequence[float | None], level: float = 0.95) -> Paired:
    """b − a per pair (pairs with a missing side left out)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    d = [
        y - x
        for x, y in zip(a, b, strict=True)
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
    ]
    pos, neg = sum(v > 0 for v in d), sum(v < 0 for v in d)
    return Paired(mean_interval(d, level), pos, neg, sign_test_p(pos, neg))


@dataclass(frozen=True)
class Verdict:
    """A claim "b − a has sign `expected`" decided from the seeds."""

    verdict: str  # AGREES, CONTRADICTED or UNRESOLVED
    expected: int  # +1: b > a expected, −1: b < a, 0: b ≈ a (decide_within)
    paired: Paired
    reason: str

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "expected": self.expected,
            "reason": self.reason,
            **self.paired.as_dict(),
        }


def decide(
    a: Sequence[float | None], b: Sequence[float | None], expected: int, level: float = 0.95
) -> Verdict:
    """Decide "b − a has the sign of `expected` (+1 or −1)" from paired seeds (module
    docstring). A verdict needs evidence at `level`: the t interval of the mean difference
    excluding zero, or a unanimous sign the exact sign test cannot put down to chance."""
    if expected not in (1, -1):
        raise ValueError("expected must be +1 or -1")
    p = paired(a, b, level)
    d = p.diff
    n = p.n_pos + p.n_neg
    sign_ok = n > 0 and p.sign_p < 1 - level
    if d.n < 2:
        return Verdict(UNRESOLVED, expected, p, f"{d.n} seed(s): no spread to test against")
    for side, verdict in ((expected, AGREES), (-expected, CONTRADICTED)):
        by_interval = d.excludes(0.0) and (d.mean or 0.0) * side > 0
        by_sign = sign_ok and (p.n_pos if side > 0 else p.n_neg) == n
        if by_interval or by_sign:
            how = (
                f"{int(level * 100)} % {T_METHOD} interval of the mean difference excludes 0"
                if by_interval
                else f"all {n} seeds of one sign (sign test p = {p.sign_p:.3g})"
            )
            return Verdict(verdict, expected, p, how)
    return Verdict(
        UNRESOLVED,
        expected,
        p,
        f"the {int(level * 100)} % interval contains 0 and the seeds' signs split "
        f"{p.n_pos} up / {p.n_neg} down",
    )


def decide_within(
    a: Sequence[float | None],
    b: Sequence[float | None],
    tol: float,
    *,
    relative: bool = False,
    level: float = 0.95,
) -> Verdict:
    """Decide "b and a agree within tol" (a prediction against its measurement, two arms the
    literature expects to be the same): the paired differences b − a (or (b − a)/a when
    `relative`) have a t interval at `level` lying inside (−tol, tol): agrees; lying wholly
    outside it: contradicted; otherwise not resolved (an interval-inclusion test, as two
    one-sided tests at (1 − level)/2 each)."""
    if relative:
        a, b = (
            [1.0 if x is not None else None for x in a],
            [
                (y / x if x not in (None, 0.0) and y is not None else None)
                for x, y in zip(a, b, strict=True)
            ],
        )
    p = paired(a, b, level)
    d = p.diff
    what = f"{'relative ' if relative else ''}difference"
    if d.n < 2 or d.lo is None or d.hi is None:
        return Verdict(UNRESOLVED, 0, p, f"{d.n} seed(s): no spread to test against")
    if -tol < d.lo and d.hi < tol:
        return Verdict(AGREES, 0, p, f"the {what}'s interval lies within ±{tol:g}")
    if d.lo >= tol or d.hi <= -tol:
        return Verdict(CONTRADICTED, 0, p, f"the {what}'s interval lies beyond ±{tol:g}")
    return Verdict(UNRESOLVED, 0, p, f"the {what}'s interval crosses ±{tol:g}")


@dataclass(frozen=True)
class Correlation:
    """Pearson's r with its Fisher z interval (None below 4 points) and, for grouped points,
    the pooled within-group r (each group centred on its own means first)."""

    r: float | None
    n: int
    lo: float | None
    hi: float | None
    level: float = 0.95
    method: str = FISHER_METHOD
    within_r: float | None = None
    groups: int = 0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "r": self.r,
            "n": self.n,
            "lo": self.lo,
            "hi": self.hi,
            "level": self.level,
            "method": self.method,
            "within_r": self.within_r,
            "groups": self.groups,
            "warnings": list(self.warnings),
        }


def _r(xs: list[float], ys: list[float]) -> float | None:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def pearson(
    xs: Sequence[float | None],
    ys: Sequence[float | None],
    groups: Sequence[object] | None = None,
    level: float = 0.95,
) -> Correlation:
    """r of the pairs with both sides finite. `groups` (one label per point): the design's
    arms; with two or more, the within-group r is reported and a warning says that the
    overall r mixes the difference between the arms with the relation inside them."""
    keep = [
        i
        for i, (x, y) in enumerate(zip(xs, ys, strict=True))
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
    ]
    x = [float(xs[i]) for i in keep]
    y = [float(ys[i]) for i in keep]
    n = len(x)
    warnings: list[str] = []
    r = _r(x, y) if n >= 3 else None
    lo = hi = None
    if r is not None and n >= 4:
        if abs(r) >= 1.0:
            lo = hi = r
        else:
            half = z_quantile((1 + level) / 2) / math.sqrt(n - 3)
            z = math.atanh(r)
            lo, hi = math.tanh(z - half), math.tanh(z + half)
    if n < SMALL_N:
        warnings.append(f"only {n} points: the {int(level * 100)} % interval is wide")
    within, n_groups = None, 0
    if groups is not None:
        labels = [groups[i] for i in keep]
        by: dict[object, list[int]] = {}
        for i, g in enumerate(labels):
            by.setdefault(g, []).append(i)
        n_groups = len(by)
        if n_groups >= 2:
            cx, cy = [], []
            for idx in by.values():
                mx = statistics.fmean(x[i] for i in idx)
                my = statistics.fmean(y[i] for i in idx)
                cx += [x[i] - mx for i in idx]
                cy += [y[i] - my for i in idx]
            within = _r(cx, cy) if n - n_groups >= 2 else None
            warnings.append(
                f"the points form {n_groups} groups fixed by the design: r mixes the difference "
                "between them with the relation inside them"
                + (f" (within groups r = {within:.2f})" if within is not None else "")
            )
    return Correlation(r, n, lo, hi, level, FISHER_METHOD, within, n_groups, warnings)


def fmt_interval(iv: Interval, fmt: str = "{:.3f}", scale: float = 1.0) -> str:
    """'m [lo, hi]' (values × scale), or 'm' alone, or '–'; the documents' one format."""
    if iv.mean is None:
        return "–"
    m = fmt.format(iv.mean * scale)
    if iv.lo is None or iv.hi is None:
        return m
    return f"{m} [{fmt.format(iv.lo * scale)}, {fmt.format(iv.hi * scale)}]"
