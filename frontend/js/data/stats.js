// Intervals and claims for the dashboard's grouped views: the same statistics as
// bnlab/core/stats.py (the documents' figures), in pure functions with no DOM.
//
// - tCdf: Student t CDF, exact for an integer number of degrees of freedom (Abramowitz &
//   Stegun 26.7.3 / 26.7.4); tQuantile inverts it by bisection.
// - zQuantile: the standard normal quantile, Acklam's rational approximation refined by one
//   Halley step on an erfc from Numerical Recipes (relative error far below a chart's needs).
// - meanInterval: mean with its Student t interval ("95 % t interval", n − 1 df).
// - paired / decide: paired differences (same seed, two arms) and the claim rule of
//   bnlab.core.stats.decide: "agrees" when the t interval of the mean difference excludes 0 on
//   the expected side (or every seed has that sign and the exact sign test rejects chance),
//   "contradicted" on the other side, else "not resolved at this size".
// - pearson: r with its Fisher z interval, and for design-fixed groups the within-group r and
//   a warning; small n warns too.

export const AGREES = "agrees";
export const CONTRADICTED = "contradicted";
export const UNRESOLVED = "not resolved at this size";
export const T_METHOD = "Student t";
export const FISHER_METHOD = "Fisher z";
export const SMALL_N = 10;

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

export function tCdf(t, df) {
  if (!Number.isInteger(df) || df < 1)
    throw new RangeError(`degrees of freedom must be an integer ≥ 1, got ${df}`);
  if (t === Infinity) return 1;
  if (t === -Infinity) return 0;
  const theta = Math.atan(Math.abs(t) / Math.sqrt(df));
  const s = Math.sin(theta);
  const c2 = Math.cos(theta) ** 2;
  let a;
  if (df % 2) {
    let term = 1;
    let total = df > 1 ? 1 : 0;
    for (let k = 2; k < df - 1; k += 2) {
      term *= (c2 * k) / (k + 1);
      total += term;
    }
    a = (2 / Math.PI) * (theta + s * Math.cos(theta) * total);
  } else {
    let term = 1;
    let total = 1;
    for (let k = 1; k < df - 2; k += 2) {
      term *= (c2 * k) / (k + 1);
      total += term;
    }
    a = s * total;
  }
  a = Math.min(Math.max(a, 0), 1);
  return t >= 0 ? 0.5 + 0.5 * a : 0.5 - 0.5 * a;
}

export function tQuantile(p, df) {
  if (!(p > 0 && p < 1)) throw new RangeError(`probability must lie in (0, 1), got ${p}`);
  if (p < 0.5) return -tQuantile(1 - p, df);
  if (p === 0.5) return 0;
  let lo = 0;
  let hi = 1;
  while (tCdf(hi, df) < p) {
    lo = hi;
    hi *= 2;
  }
  for (let i = 0; i < 200; i += 1) {
    const mid = (lo + hi) / 2;
    if (mid === lo || mid === hi) break;
    if (tCdf(mid, df) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

// erfc with fractional error < 1.2e-7 (Numerical Recipes, Chebyshev fit).
function erfc(x) {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t *
                  (0.09678418 +
                    t *
                      (-0.18628806 +
                        t *
                          (0.27886807 +
                            t *
                              (-1.13520398 +
                                t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? r : 2 - r;
}

export function zQuantile(p) {
  if (!(p > 0 && p < 1)) throw new RangeError(`probability must lie in (0, 1), got ${p}`);
  const a = [
    -39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716,
    2.506628277459239,
  ];
  const b = [
    -54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972,
    -13.28068155288572,
  ];
  const c = [
    -0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734,
    4.374664141464968, 2.938163982698783,
  ];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const pl = 0.02425;
  let x;
  if (p < pl) {
    const q = Math.sqrt(-2 * Math.log(p));
    x =
      (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
      ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p <= 1 - pl) {
    const q = p - 0.5;
    const r = q * q;
    x =
      ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q) /
      (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    const q = Math.sqrt(-2 * Math.log(1 - p));
    x =
      -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
      ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  const e = 0.5 * erfc(-x / Math.SQRT2) - p; // one Halley step
  const u = e * Math.sqrt(2 * Math.PI) * Math.exp((x * x) / 2);
  return x - u / (1 + (x * u) / 2);
}

// Mean with its Student t interval; lo/hi null below two values (no spread to measure).
export function meanInterval(values, level = 0.95) {
  const v = values.filter(isNum);
  const n = v.length;
  const base = { n, level, method: T_METHOD };
  if (!n) return { ...base, mean: null, lo: null, hi: null, sd: null };
  const mean = v.reduce((x, y) => x + y, 0) / n;
  if (n === 1) return { ...base, mean, lo: null, hi: null, sd: null };
  const sd = Math.sqrt(v.reduce((x, y) => x + (y - mean) ** 2, 0) / (n - 1));
  const half = (tQuantile((1 + level) / 2, n - 1) * sd) / Math.sqrt(n);
  return { ...base, mean, lo: mean - half, hi: mean + half, sd };
}

// "m [lo, hi]" (values × scale), "m" for one value, "–" for none.
export function formatInterval(iv, digits = 3, scale = 1) {
  if (!isNum(iv?.mean)) return "–";
  const f = (x) => (x * scale).toFixed(digits);
  return isNum(iv.lo) && isNum(iv.hi) ? `${f(iv.mean)} [${f(iv.lo)}, ${f(iv.hi)}]` : f(iv.mean);
}

function binom(n, k) {
  let r = 1;
  for (let i = 1; i <= k; i += 1) r = (r * (n - k + i)) / i;
  return r;
}

export function signTestP(nPos, nNeg) {
  const n = nPos + nNeg;
  if (!n) return 1;
  const k = Math.min(nPos, nNeg);
  let tail = 0;
  for (let i = 0; i <= k; i += 1) tail += binom(n, i);
  return Math.min(1, (2 * tail) / 2 ** n);
}

// b − a per pair (pairs with a missing side left out).
export function paired(a, b, level = 0.95) {
  if (a.length !== b.length) throw new RangeError("paired values need equal lengths");
  const d = a
    .map((x, i) => [x, b[i]])
    .filter(([x, y]) => isNum(x) && isNum(y))
    .map(([x, y]) => y - x);
  const nPos = d.filter((v) => v > 0).length;
  const nNeg = d.filter((v) => v < 0).length;
  return { diff: meanInterval(d, level), nPos, nNeg, signP: signTestP(nPos, nNeg) };
}

// Decide "b − a has the sign of expected (+1 / −1)" from paired seeds (see the header).
export function decide(a, b, expected, level = 0.95) {
  if (expected !== 1 && expected !== -1) throw new RangeError("expected must be +1 or -1");
  const p = paired(a, b, level);
  const d = p.diff;
  const n = p.nPos + p.nNeg;
  const signOk = n > 0 && p.signP < 1 - level;
  if (d.n < 2)
    return {
      verdict: UNRESOLVED,
      expected,
      ...p,
      reason: `${d.n} seed(s): no spread to test against`,
    };
  for (const [side, verdict] of [
    [expected, AGREES],
    [-expected, CONTRADICTED],
  ]) {
    const byInterval = isNum(d.lo) && (d.lo > 0 || d.hi < 0) && d.mean * side > 0;
    const bySign = signOk && (side > 0 ? p.nPos : p.nNeg) === n;
    if (byInterval || bySign) {
      const reason = byInterval
        ? `${Math.round(level * 100)} % ${T_METHOD} interval of the mean difference excludes 0`
        : `all ${n} seeds of one sign (sign test p = ${p.signP.toPrecision(3)})`;
      return { verdict, expected, ...p, reason };
    }
  }
  return {
    verdict: UNRESOLVED,
    expected,
    ...p,
    reason: `the ${Math.round(level * 100)} % interval contains 0 and the seeds' signs split ${p.nPos} up / ${p.nNeg} down`,
  };
}

function corr(xs, ys) {
  const n = xs.length;
  const mx = xs.reduce((s, v) => s + v, 0) / n;
  const my = ys.reduce((s, v) => s + v, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i += 1) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
    syy += (ys[i] - my) ** 2;
  }
  return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : null;
}

// Pearson's r of the pairs with both sides finite, its Fisher z interval (n ≥ 4), and with
// `groups` (one label per point: the design's arms) the pooled within-group r; `warnings`
// holds the sentences a panel should print beside r.
export function pearson(xs, ys, groups = null, level = 0.95) {
  const keep = xs.map((x, i) => i).filter((i) => isNum(xs[i]) && isNum(ys[i]));
  const x = keep.map((i) => xs[i]);
  const y = keep.map((i) => ys[i]);
  const n = x.length;
  const warnings = [];
  const r = n >= 3 ? corr(x, y) : null;
  let lo = null;
  let hi = null;
  if (r !== null && n >= 4) {
    if (Math.abs(r) >= 1) {
      lo = r;
      hi = r;
    } else {
      const half = zQuantile((1 + level) / 2) / Math.sqrt(n - 3);
      const z = Math.atanh(r);
      lo = Math.tanh(z - half);
      hi = Math.tanh(z + half);
    }
  }
  if (n < SMALL_N)
    warnings.push(`only ${n} points: the ${Math.round(level * 100)} % interval is wide`);
  let withinR = null;
  let nGroups = 0;
  if (groups) {
    const by = new Map();
    keep.forEach((i, j) => {
      const g = groups[i];
      if (!by.has(g)) by.set(g, []);
      by.get(g).push(j);
    });
    nGroups = by.size;
    if (nGroups >= 2) {
      const cx = [];
      const cy = [];
      for (const idx of by.values()) {
        const mx = idx.reduce((s, j) => s + x[j], 0) / idx.length;
        const my = idx.reduce((s, j) => s + y[j], 0) / idx.length;
        for (const j of idx) {
          cx.push(x[j] - mx);
          cy.push(y[j] - my);
        }
      }
      withinR = n - nGroups >= 2 ? corr(cx, cy) : null;
      warnings.push(
        `the points form ${nGroups} groups fixed by the design: r mixes the difference between them ` +
          "with the relation inside them" +
          (withinR !== null ? ` (within groups r = ${withinR.toFixed(2)})` : ""),
      );
    }
  }
  return { r, n, lo, hi, level, method: FISHER_METHOD, withinR, groups: nGroups, warnings };
}

// The one-line label a correlation panel prints: "r = 0.94 [0.56, 0.99] (Fisher z, 95 %), n = 6".
export function correlationLabel(c, digits = 2) {
  if (!isNum(c?.r)) return `n = ${c?.n ?? 0}`;
  const ci = isNum(c.lo)
    ? ` [${c.lo.toFixed(digits)}, ${c.hi.toFixed(digits)}] (${c.method}, ${Math.round(c.level * 100)} %)`
    : "";
  return `r = ${c.r.toFixed(digits)}${ci}, n = ${c.n}`;
}

// The sentence a correlation panel prints under its chart: what r is computed from and every
// warning; a relation is attributed to no paper here (the data are ours).
export function correlationNote(c, what = "One point per run") {
  const parts = [
    `${what}; r is Pearson's with its ${Math.round((c?.level ?? 0.95) * 100)} % Fisher z interval.`,
  ];
  for (const w of c?.warnings ?? []) parts.push(`${w[0].toUpperCase()}${w.slice(1)}.`);
  if (isNum(c?.lo) && c.lo <= 0 && c.hi >= 0)
    parts.push("The interval includes 0: no relation is shown.");
  return parts.join(" ");
}
