// frontend/js/data/stats.js against SciPy's values (scipy.stats 1.17: t.ppf, t.cdf, norm.ppf,
// pearsonr(...).confidence_interval, t.interval; printed once and pasted here as references)
// and the claim rule on a real effect and on pure noise. Run: node --test tests/frontend/unit/

import assert from "node:assert/strict";
import test from "node:test";

import {
  AGREES,
  CONTRADICTED,
  UNRESOLVED,
  correlationLabel,
  correlationNote,
  decide,
  formatInterval,
  meanInterval,
  paired,
  pearson,
  signTestP,
  tCdf,
  tQuantile,
  zQuantile,
} from "../../../frontend/js/data/stats.js";

const close = (got, want, rel = 1e-9, abs = 1e-12) =>
  assert.ok(Math.abs(got - want) <= Math.max(abs, rel * Math.abs(want)), `${got} vs ${want}`);

// [df, p, scipy.stats.t.ppf(p, df)]
const T_PPF = [
  [1, 0.975, 12.706204736174694],
  [1, 0.995, 63.656741162871526],
  [2, 0.025, -4.302652729749464],
  [2, 0.9, 1.8856180831641272],
  [3, 0.975, 3.1824463052837078],
  [4, 0.975, 2.7764451051977934],
  [5, 0.995, 4.032142983555228],
  [9, 0.975, 2.262157162798205],
  [29, 0.975, 2.045229642132703],
  [100, 0.975, 1.9839715185235518],
  [100, 0.9, 1.290074761346516],
];
// [df, t, scipy.stats.t.cdf(t, df)]
const T_CDF = [
  [1, -3.1, 0.09932609219911853],
  [1, 2.2, 0.8642002512199081],
  [2, 0.4, 0.6360827634879543],
  [7, -3.1, 0.008661144712748757],
  [30, 2.2, 0.9821757800015821],
  [30, 0.4, 0.654004741742904],
];

test("t quantiles and CDF match scipy.stats.t", () => {
  for (const [df, p, want] of T_PPF) close(tQuantile(p, df), want);
  for (const [df, t, want] of T_CDF) close(tCdf(t, df), want);
  assert.throws(() => tCdf(1, 2.5), RangeError);
  assert.throws(() => tQuantile(1, 3), RangeError);
});

test("normal quantile matches scipy.stats.norm.ppf", () => {
  close(zQuantile(0.975), 1.959963984540054, 1e-7);
  close(zQuantile(0.995), 2.5758293035489004, 1e-7);
  close(zQuantile(0.9), 1.2815515655446004, 1e-7);
  close(zQuantile(0.001), -3.090232306167813, 1e-7);
});

test("mean interval matches scipy.stats.t.interval", () => {
  const iv = meanInterval([0.61, 0.58, 0.66, 0.59, 0.63, null, NaN]);
  assert.equal(iv.n, 5);
  close(iv.mean, 0.614);
  close(iv.lo, 0.5741505160765108);
  close(iv.hi, 0.6538494839234892);
  assert.equal(formatInterval(iv, 3, 100), "61.400 [57.415, 65.385]");
  assert.equal(formatInterval(meanInterval([2])), "2.000");
  assert.equal(formatInterval(meanInterval([])), "–");
});

test("Pearson r and its Fisher z interval match scipy.stats.pearsonr", () => {
  const c = pearson([1.0, 2.0, 3.5, 4.1, 5.2, 6.0, 7.7], [2.1, 2.9, 4.2, 3.9, 6.1, 5.5, 8.4]);
  close(c.r, 0.965344761131238);
  close(c.lo, 0.7774948599429898, 1e-7);
  close(c.hi, 0.995044571539394, 1e-7);
  assert.equal(c.n, 7);
  assert.match(c.warnings[0], /only 7 points/);
  assert.match(correlationLabel(c), /^r = 0\.97 \[0\.78, 1\.00\] \(Fisher z, 95 %\), n = 7$/);
});

test("two design-fixed clusters: a large r, a warning and the within-group r", () => {
  const xs = [1.0, 1.01, 0.99, 2.5, 2.52, 2.49];
  const ys = [0.4, -0.6, 1.1, 12.3, 11.2, 12.9];
  const c = pearson(xs, ys, ["head", "head", "head", "before", "before", "before"]);
  assert.ok(c.r > 0.9);
  assert.equal(c.groups, 2);
  assert.ok(c.warnings.some((w) => /2 groups fixed by the design/.test(w)));
  assert.ok(Math.abs(c.withinR - c.r) > 0.05);
  const note = correlationNote(c);
  assert.match(note, /Only 6 points/);
  assert.match(note, /The points form 2 groups fixed by the design/);
  assert.doesNotMatch(note, /Li et al/);
  const none = pearson([1, 2, 3, 4, 5], [2, 1, 3, 1, 2]);
  assert.match(correlationNote(none), /includes 0: no relation is shown/);
});

test("a real effect is resolved, pure noise is not", () => {
  const a = [1.2, 0.8, 1.5];
  const real = decide(
    a,
    a.map((v, i) => v + 0.5 + [0.05, -0.08, 0.02][i]),
    1,
  );
  assert.equal(real.verdict, AGREES);
  assert.equal(
    decide(
      a,
      a.map((v) => v + 0.5),
      -1,
    ).verdict,
    CONTRADICTED,
  );
  // the width study's reseeded k = 1 → 2 (docs issue 24): two of three seeds rise
  assert.equal(decide([1.884, 1.555, 1.9], [2.137, 1.827, 1.7], -1).verdict, UNRESOLVED);
  // seeded noise: a linear congruential stream, 2000 three-seed studies, ≤ 8 % called
  let s = 12345;
  const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  const gauss = () => Math.sqrt(-2 * Math.log(rnd() || 1e-12)) * Math.cos(2 * Math.PI * rnd());
  let called = 0;
  for (let i = 0; i < 2000; i += 1) {
    const x = [gauss(), gauss(), gauss()];
    const y = [gauss(), gauss(), gauss()];
    if (decide(x, y, -1).verdict !== UNRESOLVED) called += 1;
  }
  assert.ok(called / 2000 < 0.08, `${called} of 2000 noise studies called`);
});

test("sign test: three seeds of one sign are not enough, six are", () => {
  close(signTestP(3, 0), 0.25);
  close(signTestP(6, 0), 0.03125);
  const p = paired([1, 2, 3], [1.1, 2.5, 3.2]);
  assert.equal(p.nPos, 3);
  const a6 = [1, 2, 3, 4, 5, 6];
  const b6 = [1.01, 9, 3.02, 4.5, 5.03, 6.6];
  assert.equal(decide(a6, b6, 1).verdict, AGREES);
  assert.match(decide(a6, b6, 1).reason, /sign test/);
});
