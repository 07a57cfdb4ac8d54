"""bnlab.core.stats against scipy.stats (installed with scikit-learn in the dev extra; no
install of bnlab needs it), and the claim rule on a real effect and on pure noise."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from bnlab.core import stats

sp = pytest.importorskip("scipy.stats")

DFS = [1, 2, 3, 4, 5, 6, 7, 9, 10, 15, 29, 30, 31, 64, 99, 200, 1001]


@pytest.mark.parametrize("df", DFS)
def test_match_scipy_t_cdf(df):
    for t in (-40.0, -6.3, -2.0, -0.5, 0.0, 0.01, 0.7, 1.96, 2.5, 4.3, 12.7, 300.0):
        assert stats.t_cdf(t, df) == pytest.approx(sp.t.cdf(t, df), rel=1e-10, abs=1e-13)


@pytest.mark.parametrize("df", DFS)
def test_match_scipy_t_quantile(df):
    for p in (0.001, 0.025, 0.05, 0.3, 0.5, 0.8, 0.9, 0.95, 0.975, 0.995, 0.9995):
        assert stats.t_quantile(p, df) == pytest.approx(sp.t.ppf(p, df), rel=1e-9, abs=1e-12)


def test_refuse_bad_arguments():
    with pytest.raises(ValueError, match="integer"):
        stats.t_cdf(1.0, 2.5)
    with pytest.raises(ValueError, match="integer"):
        stats.t_cdf(1.0, 0)
    with pytest.raises(ValueError, match="probability"):
        stats.t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="equal lengths"):
        stats.paired([1.0], [1.0, 2.0])


@pytest.mark.parametrize("n", [2, 3, 5, 8, 30])
def test_match_scipy_mean_interval(n):
    rng = random.Random(n)
    values = [rng.gauss(1.5, 0.3) for _ in range(n)]
    iv = stats.mean_interval(values)
    lo, hi = sp.t.interval(0.95, n - 1, loc=statistics.fmean(values), scale=sp.sem(values))
    assert iv.n == n and iv.method == "Student t"
    assert iv.lo == pytest.approx(lo, rel=1e-9) and iv.hi == pytest.approx(hi, rel=1e-9)
    assert iv.sd == pytest.approx(statistics.stdev(values))


def test_give_no_interval_below_two_values():
    assert stats.mean_interval([]).mean is None
    one = stats.mean_interval([2.0, None, float("nan")])
    assert (one.n, one.mean, one.lo, one.hi) == (1, 2.0, None, None)
    assert stats.fmt_interval(one) == "2.000"
    assert stats.fmt_interval(stats.mean_interval([1.0, 3.0]), "{:.1f}") == "2.0 [-10.7, 14.7]"


def test_match_scipy_paired_t_and_sign_test():
    a = [0.61, 0.58, 0.66, 0.59, 0.63]
    b = [0.64, 0.60, 0.65, 0.63, 0.69]
    p = stats.paired(a, b)
    d = [y - x for x, y in zip(a, b, strict=True)]
    lo, hi = sp.t.interval(0.95, len(d) - 1, loc=statistics.fmean(d), scale=sp.sem(d))
    assert (p.diff.lo, p.diff.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert (p.n_pos, p.n_neg) == (4, 1)
    assert p.sign_p == pytest.approx(sp.binomtest(4, 5).pvalue)
    assert stats.sign_test_p(6, 0) == pytest.approx(sp.binomtest(6, 6).pvalue)


@pytest.mark.parametrize("n", [4, 6, 12, 50])
def test_match_scipy_pearson_fisher_interval(n):
    rng = random.Random(7 * n)
    xs = [rng.gauss(0, 1) for _ in range(n)]
    ys = [0.6 * x + rng.gauss(0, 1) for x in xs]
    c = stats.pearson(xs, ys)
    ref = sp.pearsonr(xs, ys)
    ci = ref.confidence_interval(0.95)  # SciPy's Fisher z interval
    assert c.r == pytest.approx(ref.statistic, rel=1e-9)
    assert (c.lo, c.hi) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
    assert c.n == n and c.method == "Fisher z"
    assert bool(c.warnings) == (n < stats.SMALL_N)


def test_warn_about_design_fixed_clusters():
    """Two arms far apart on both axes, no relation inside either: r is large, the within-arm
    r is not, and the warning says so (the story panel's 'shift vs accuracy lost' case)."""
    rng = random.Random(3)
    xs = [1.0 + rng.gauss(0, 0.02) for _ in range(3)] + [2.5 + rng.gauss(0, 0.02) for _ in range(3)]
    ys = [0.5 + rng.gauss(0, 1) for _ in range(3)] + [12 + rng.gauss(0, 1) for _ in range(3)]
    arms = ["head"] * 3 + ["before_bn"] * 3
    c = stats.pearson(xs, ys, groups=arms)
    assert c.r > 0.9 and c.groups == 2
    assert abs(c.within_r) < 0.95 and c.within_r != pytest.approx(c.r)
    assert any("2 groups fixed by the design" in w for w in c.warnings)
    assert any("only 6 points" in w for w in c.warnings)


def test_resolve_a_real_effect():
    """Paired seeds with a real effect (0.5 ± noise 0.1): agrees; the opposite claim is
    contradicted."""
    rng = random.Random(0)
    a = [rng.gauss(1.0, 0.3) for _ in range(3)]
    b = [x + 0.5 + rng.gauss(0, 0.1) for x in a]
    v = stats.decide(a, b, expected=+1)
    assert v.verdict == stats.AGREES and "interval" in v.reason
    assert stats.decide(a, b, expected=-1).verdict == stats.CONTRADICTED


def test_leave_pure_noise_unresolved():
    """Pure noise (the arms differ only by their seeds' luck): over 2000 simulated 3-seed and
    6-seed studies at most ~5 % are called either way, the rate the 95 % level promises, and a
    fixed noise study is not resolved."""
    rng = random.Random(1)
    for n in (3, 6):
        called = 0
        for _ in range(2000):
            a = [rng.gauss(1.0, 0.3) for _ in range(n)]
            b = [rng.gauss(1.0, 0.3) for _ in range(n)]
            called += stats.decide(a, b, expected=-1).verdict != stats.UNRESOLVED
        assert called / 2000 < 0.08, (n, called)
    v = stats.decide([1.884, 1.555, 1.9], [2.137, 1.827, 1.7], expected=-1)
    assert v.verdict == stats.UNRESOLVED and v.paired.n_pos == 2


def test_unanimous_signs_decide_only_when_the_sign_test_can():
    """Three seeds of one sign are chance one time in four: not enough; six are (p = 1/32)."""
    a3, b3 = [1.0, 2.0, 3.0], [1.1, 2.5, 2.9 + 0.2]
    assert stats.decide(a3, [0.0, 5.0, 3.01], expected=1).verdict == stats.UNRESOLVED
    a6 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    b6 = [1.01, 9.0, 3.02, 4.5, 5.03, 6.6]  # wide spread: the t interval alone includes 0
    assert not stats.paired(a6, b6).diff.excludes(0.0)
    v = stats.decide(a6, b6, expected=1)
    assert v.verdict == stats.AGREES and "sign test" in v.reason
    assert stats.decide(a3, b3, expected=1).paired.n_pos == 3
    assert math.isclose(stats.sign_test_p(3, 0), 0.25)


def test_decide_agreement_within_a_tolerance():
    """A prediction within 1 % of its measurement in every seed agrees within 5 %; one 20 % off
    is contradicted; a noisy one (±10 % between seeds) is not resolved."""
    measured = [2.03, 2.10, 1.97]
    assert stats.decide_within(measured, [2.06, 2.11, 1.99], 0.05, relative=True).verdict == (
        stats.AGREES
    )
    far = stats.decide_within(measured, [2.45, 2.50, 2.38], 0.05, relative=True)
    assert far.verdict == stats.CONTRADICTED
    noisy = stats.decide_within(measured, [1.85, 2.35, 2.0], 0.05, relative=True)
    assert noisy.verdict == stats.UNRESOLVED
    assert stats.decide_within([0.0, 0.0], [0.01, -0.01], 0.05).verdict == stats.UNRESOLVED
