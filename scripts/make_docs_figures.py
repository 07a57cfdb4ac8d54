#!/usr/bin/env python3
"""Every figure the documents quote from a study run, written from docs/studies_results.json.

    python scripts/make_docs_figures.py            # rewrite the blocks and studies_results.md
    python scripts/make_docs_figures.py --check    # exit 1 naming each block that differs
    python scripts/make_docs_figures.py --print readme-studies   # one block (README's table)

`scripts/run_studies.py` runs the studies (every seed of every cell) and calls this at the end;
tests/test_docs_results.py fails when a document's figure differs from the results.

A document holds generated blocks between markers,

    <!-- generated: ID -->
    ...
    <!-- /generated: ID -->

and this script owns everything between them (hand edits there are overwritten; the text
around them is prose, which quotes no figure from a run). Every headline number is a mean over
the seeds with its 95 % Student t interval and n (bnlab/core/stats.py); every "agrees with the
paper" verdict is decided from the seeds by bnlab.core.stats.decide / decide_within, and a
claim the seeds cannot decide reads "not resolved at this size". Torch-free: it reads JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's bnlab, not an installed one
    sys.path.insert(0, str(ROOT))

from bnlab.core import stats  # noqa: E402

RESULTS = ROOT / "docs" / "studies_results.json"
RESULTS_MD = ROOT / "docs" / "studies_results.md"
DOCS = [
    ROOT / "docs" / "studies.md",
    ROOT / "docs" / "science.md",
    ROOT / "docs" / "user-guide.md",
    ROOT / "README.md",
]
BLOCK_RE = re.compile(
    r"(<!-- generated: (?P<id>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /generated: (?P=id) -->)", re.S
)
LEVEL = 0.95
CI = "95 % Student t interval"

Row = dict[str, Any]
Seeded = dict[str, Row]  # cell label → that cell's row for one seed
Value = Callable[[Seeded], float | None]


# ---------------------------------------------------------------- reading the results


def ok_rows(study: dict) -> list[Row]:
    return [r for r in study["rows"] if r["status"] == "succeeded"]


def cell_of(row: Row) -> str:
    # results written before rows carried their cell: the label without its seed
    return row.get("cell") or re.sub(r"\s*seed=\d+$", "", row["label"]) or "run"


def seed_of(row: Row) -> int:
    if "seed" in row:
        return int(row["seed"])
    m = re.search(r"seed=(\d+)$", row["label"])
    return int(m.group(1)) if m else int(row["summary"].get("seed", 0))


def by_seed(study: dict) -> dict[int, Seeded]:
    out: dict[int, Seeded] = {}
    for r in ok_rows(study):
        out.setdefault(seed_of(r), {})[cell_of(r)] = r
    return dict(sorted(out.items()))


def cells(study: dict) -> list[str]:
    return list(dict.fromkeys(cell_of(r) for r in study["rows"]))


def num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


# Value makers: each takes the rows of one seed (by cell) and returns a number or None.


def at(cell: str, metric: Callable[[Row], Any]) -> Value:
    return lambda rows: num(metric(rows[cell])) if cell in rows else None


def const(value: float) -> Value:
    return lambda rows: value


def minus(a: Value, b: Value) -> Value:
    def f(rows: Seeded) -> float | None:
        x, y = a(rows), b(rows)
        return None if x is None or y is None else x - y

    return f


def summ(key: str, layer: str | None = None, scale: float = 1.0) -> Callable[[Row], Any]:
    def f(r: Row) -> Any:
        v = r["summary"].get(key)
        if layer is not None:
            v = (v or {}).get(layer)
        return None if num(v) is None else v * scale

    return f


def acc(key: str, size: str | None = None) -> Callable[[Row], Any]:
    return summ(key, size, 100.0)


def gap(r: Row) -> float | None:
    """Accuracy lost to the shift: recalibrated − eval, in points."""
    a, b = num(r["summary"].get("test_acc_recalibrated")), num(r["summary"].get("test_acc_eval"))
    return None if a is None or b is None else 100 * (a - b)


def extra(key: str, index: int | str | None = None) -> Callable[[Row], Any]:
    def f(r: Row) -> Any:
        v = r.get("extra", {}).get(key)
        if index is not None and v is not None:
            v = v[index] if isinstance(v, list) else v.get(index)
        return v

    return f


def layer_mean(key: str) -> Callable[[Row], Any]:
    def f(r: Row) -> Any:
        vals = [num(v) for v in (r["summary"].get(key) or {}).values()]
        vals = [v for v in vals if v is not None]
        return statistics.fmean(vals) if vals else None

    return f


def log_grad_ratio(r: Row) -> float | None:
    """log10 of the first probe's gradient norm at the input block over the output block."""
    g = r.get("extra", {}).get("grad_norm_first") or []
    return math.log10(g[0] / g[-1]) if len(g) > 1 and g[0] > 0 and g[-1] > 0 else None


def interval(study: dict, value: Value) -> stats.Interval:
    return stats.mean_interval([value(rows) for rows in by_seed(study).values()], LEVEL)


# ---------------------------------------------------------------- formatting


def fmt(iv: stats.Interval, digits: int = 3) -> str:
    return stats.fmt_interval(iv, "{:." + str(digits) + "f}")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def n_note(study: dict) -> str:
    seeds = list(by_seed(study))
    return f"mean [{CI}] over n = {len(seeds)} seeds ({', '.join(map(str, seeds))})"


@dataclass(frozen=True)
class Col:
    head: str
    metric: Callable[[Row], Any]
    digits: int = 3


def cell_table(study: dict, cols: list[Col], only: list[str] | None = None) -> list[str]:
    body = []
    for cell in only or cells(study):
        body.append([cell] + [fmt(interval(study, at(cell, c.metric)), c.digits) for c in cols])
    return table(["cell"] + [c.head for c in cols], body)


# ---------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """A claim of the literature (or of docs/science.md) put to the seeds: `b − a` has the sign
    `expected` (+1 / −1), or, with expected 0, b agrees with a within `tol`."""

    text: str
    source: str
    a: Value
    b: Value
    expected: int
    tol: float = 0.0
    relative: bool = False
    unit: str = ""

    def decide(self, study: dict) -> stats.Verdict:
        seeded = list(by_seed(study).values())
        a = [self.a(rows) for rows in seeded]
        b = [self.b(rows) for rows in seeded]
        if self.expected == 0:
            return stats.decide_within(a, b, self.tol, relative=self.relative, level=LEVEL)
        return stats.decide(a, b, self.expected, LEVEL)


def claim_rows(study: dict, claims: list[Claim]) -> list[str]:
    body = []
    for c in claims:
        v = c.decide(study)
        d = v.paired.diff
        digits = 3 if c.relative or not c.unit else 2
        diff = fmt(d, digits) + (f" {c.unit}" if c.unit and d.mean is not None else "")
        what = "(b − a)/a" if c.relative else "b − a"
        seeds = f"{v.paired.n_pos} up, {v.paired.n_neg} down of {d.n}"
        body.append([c.text, c.source, f"{what}: {diff}", seeds, f"**{v.verdict}**"])
    return table(
        ["claim", "from", f"mean difference [{CI}]", "seeds", "verdict (bnlab.core.stats)"], body
    )


def tally(study: dict, claims: list[Claim]) -> dict[str, int]:
    out = {stats.AGREES: 0, stats.CONTRADICTED: 0, stats.UNRESOLVED: 0}
    for c in claims:
        out[c.decide(study).verdict] += 1
    return out


def tally_text(t: dict[str, int]) -> str:
    parts = [f"{t[stats.AGREES]} agree"]
    if t[stats.CONTRADICTED]:
        parts.append(f"{t[stats.CONTRADICTED]} contradicted")
    if t[stats.UNRESOLVED]:
        parts.append(f"{t[stats.UNRESOLVED]} {stats.UNRESOLVED}")
    return ", ".join(parts)


# ---------------------------------------------------------------- the studies

BEFORE = "block=linear>dropout>batchnorm>activation"
HEAD = "block=linear>batchnorm>activation"
B0, B1, B2 = "blocks.0.bn", "blocks.1.bn", "blocks.2.bn"
LI = "Li et al. 2019"
SCI2 = "science.md §2"


def within5(text: str, cell: str, measured: Callable, predicted: Callable, src: str = SCI2):
    return Claim(text, src, at(cell, measured), at(cell, predicted), 0, 0.05, relative=True)


def variance_shift() -> tuple[list[Col], list[Claim]]:
    cols = [
        Col("`shift_li` blocks.0", summ("shift_li_by_layer", B0)),
        Col("its prediction", summ("shift_li_predicted_by_layer", B0)),
        Col("`shift` blocks.0", summ("shift_by_layer", B0)),
        Col("its prediction", summ("shift_predicted_by_layer", B0)),
        Col("`shift` blocks.1", summ("shift_by_layer", B1), 2),
        Col("`shift` blocks.2", summ("shift_by_layer", B2), 2),
        Col("test acc eval %", acc("test_acc_eval"), 1),
        Col("recalibrated %", acc("test_acc_recalibrated"), 1),
        Col("train mode @64 %", acc("test_acc_train_mode", "64"), 1),
    ]
    vb, vg, vu = (f"{BEFORE} kind={k}" for k in ("bernoulli", "gaussian", "uniform"))
    hb = f"{HEAD} kind=bernoulli"
    li0 = summ("shift_li_by_layer", B0)
    claims = [
        Claim(
            "Dropout(0.5) before BN shifts the first BN's variance "
            "(bernoulli; a: head dropout only, b: before BN)",
            LI,
            at(hb, li0),
            at(vb, li0),
            +1,
        ),
        Claim(
            "the same for gaussian dropout", LI, at(f"{HEAD} kind=gaussian", li0), at(vg, li0), +1
        ),
        within5(
            "first BN: `shift` within 5 % of its prediction (bernoulli)",
            vb,
            summ("shift_by_layer", B0),
            summ("shift_predicted_by_layer", B0),
        ),
        within5(
            "first BN: `shift_li` within 5 % of its prediction (bernoulli)",
            vb,
            summ("shift_li_by_layer", B0),
            summ("shift_li_predicted_by_layer", B0),
        ),
        Claim(
            "eval-mode accuracy falls below the recalibrated one with dropout before BN "
            "(bernoulli; a: eval, b: recalibrated)",
            LI,
            at(vb, acc("test_acc_eval")),
            at(vb, acc("test_acc_recalibrated")),
            +1,
            unit="pt",
        ),
        Claim(
            "Uout (β = 0.5) shifts less than bernoulli at the same rate (a: bernoulli, b: uniform)",
            "Li et al. 2019 §5",
            at(vb, li0),
            at(vu, li0),
            -1,
        ),
        Claim(
            "head dropout only: `shift_li` at blocks.0 within 2 % of 1 (a: 1, b: measured)",
            "Li et al. 2019",
            const(1.0),
            at(hb, li0),
            0,
            0.02,
            relative=True,
        ),
        Claim(
            "head dropout only: recalibration moves accuracy by less than a point",
            "preset's expected outcome",
            at(hb, acc("test_acc_eval")),
            at(hb, acc("test_acc_recalibrated")),
            0,
            1.0,
            unit="pt",
        ),
    ]
    return cols, claims


def variance_shift_rates() -> tuple[list[Col], list[Claim]]:
    cols = [
        Col("`shift` blocks.0", summ("shift_by_layer", B0)),
        Col("its prediction", summ("shift_predicted_by_layer", B0)),
        Col("`shift_li` blocks.0", summ("shift_li_by_layer", B0)),
        Col("its prediction", summ("shift_li_predicted_by_layer", B0)),
        Col("test acc eval %", acc("test_acc_eval"), 1),
        Col("recalibrated %", acc("test_acc_recalibrated"), 1),
    ]
    li0 = summ("shift_li_by_layer", B0)
    claims = [
        Claim(
            "the first BN's shift rises with the rate (a: 0.1, b: 0.5)",
            LI,
            at("rate=0.1", li0),
            at("rate=0.5", li0),
            +1,
        ),
        within5(
            "rate 0.1: `shift` within 5 % of its prediction",
            "rate=0.1",
            summ("shift_by_layer", B0),
            summ("shift_predicted_by_layer", B0),
        ),
        within5(
            "rate 0.5: `shift` within 5 % of its prediction",
            "rate=0.5",
            summ("shift_by_layer", B0),
            summ("shift_predicted_by_layer", B0),
        ),
        Claim(
            "the accuracy lost to the shift (recalibrated − eval) grows with the rate "
            "(a: 0.1, b: 0.5)",
            LI,
            at("rate=0.1", gap),
            at("rate=0.5", gap),
            +1,
            unit="pt",
        ),
    ]
    return cols, claims


def dropout_equal_noise() -> tuple[list[Col], list[Claim]]:
    cols = [
        Col("`shift` blocks.0", summ("shift_by_layer", B0)),
        Col("its prediction", summ("shift_predicted_by_layer", B0)),
        Col("`shift_li` blocks.0", summ("shift_li_by_layer", B0)),
        Col("test acc eval %", acc("test_acc_eval"), 1),
        Col("recalibrated %", acc("test_acc_recalibrated"), 1),
    ]
    b, g = "dropout=bernoulli:0.5", "dropout=gaussian:0.5"
    u, un = "dropout=uniform:0.5", "dropout=uniform:1.732"
    li0 = summ("shift_li_by_layer", B0)
    claims = [
        Claim(
            "equal rate: Uout β = 0.5 shifts less than bernoulli 0.5",
            "Li et al. 2019 §5",
            at(b, li0),
            at(u, li0),
            -1,
        ),
        Claim(
            "equal noise: Uout β = √3 within 5 % of bernoulli 0.5 "
            "(the shift depends on the noise variance only)",
            SCI2,
            at(b, li0),
            at(un, li0),
            0,
            0.05,
            relative=True,
        ),
        Claim(
            "gaussian 0.5 within 5 % of bernoulli 0.5 (same noise variance)",
            SCI2,
            at(b, li0),
            at(g, li0),
            0,
            0.05,
            relative=True,
        ),
    ]
    return cols, claims


def population_stats() -> tuple[list[Col], list[Claim]]:
    cols = [
        Col("test acc eval %", acc("test_acc_eval"), 1),
        Col("recalibrated %", acc("test_acc_recalibrated"), 1),
        Col("`shift` blocks.2", summ("shift_by_layer", B2)),
    ] + [
        Col(f"train mode @{b} %", acc("test_acc_train_mode", b), 1) for b in ("2", "8", "64", "256")
    ]
    ev = acc("test_acc_eval")
    claims = [
        Claim(
            "the cumulative average (momentum null) is worst: eval accuracy below momentum 0.1's",
            "preset's expected outcome",
            at("momentum=0.1", ev),
            at("momentum=None", ev),
            -1,
            unit="pt",
        ),
        Claim(
            "the cumulative average shifts the last BN more than momentum 0.1",
            "preset's expected outcome",
            at("momentum=0.1", summ("shift_by_layer", B2)),
            at("momentum=None", summ("shift_by_layer", B2)),
            +1,
        ),
        Claim(
            "momentum 0.01 lags the weights: eval accuracy below momentum 0.1's",
            "preset's expected outcome",
            at("momentum=0.1", ev),
            at("momentum=0.01", ev),
            -1,
            unit="pt",
        ),
        Claim(
            "recalibration recovers the cumulative average's loss (a: eval, b: recalibrated)",
            "Wu & Johnson 2021",
            at("momentum=None", ev),
            at("momentum=None", acc("test_acc_recalibrated")),
            +1,
            unit="pt",
        ),
        Claim(
            "momentum 0.1: recalibration within a point of the moving average",
            "Wu & Johnson 2021",
            at("momentum=0.1", ev),
            at("momentum=0.1", acc("test_acc_recalibrated")),
            0,
            1.0,
            unit="pt",
        ),
        Claim(
            "train-mode accuracy falls as the test batch shrinks "
            "(momentum 0.1; a: batch 256, b: batch 8)",
            "preset's expected outcome",
            at("momentum=0.1", acc("test_acc_train_mode", "256")),
            at("momentum=0.1", acc("test_acc_train_mode", "8")),
            -1,
            unit="pt",
        ),
    ]
    return cols, claims


def affine_off() -> tuple[list[Col], list[Claim]]:
    cols = [
        Col("test acc eval %", acc("test_acc_eval"), 1),
        Col("train loss after epoch 1", extra("train_loss_epoch1")),
        Col("val acc after epoch 1 %", lambda r: _pct(extra("val_acc_epoch1")(r)), 1),
    ]
    ev = acc("test_acc_eval")
    on_s, off_s = "affine=True activation=sigmoid", "affine=False activation=sigmoid"
    on_r, off_r = "affine=True activation=relu", "affine=False activation=relu"
    claims = [
        Claim(
            "affine off costs accuracy before a sigmoid",
            "Ioffe & Szegedy 2015 §3",
            at(on_s, ev),
            at(off_s, ev),
            -1,
            unit="pt",
        ),
        Claim(
            "affine off costs accuracy before a ReLU",
            "Ioffe & Szegedy 2015 §3",
            at(on_r, ev),
            at(off_r, ev),
            -1,
            unit="pt",
        ),
        Claim(
            "it costs more before a sigmoid than before a ReLU (a: ReLU's cost, b: sigmoid's)",
            "preset's expected outcome",
            minus(at(on_r, ev), at(off_r, ev)),
            minus(at(on_s, ev), at(off_s, ev)),
            +1,
            unit="pt",
        ),
    ]
    return cols, claims


def _pct(v: Any) -> float | None:
    return None if num(v) is None else 100 * v


def gamma_init_relu() -> tuple[list[Col], list[Claim]]:
    cols = [
        Col("test acc eval %", acc("test_acc_eval"), 1),
        Col("train loss after epoch 1", extra("train_loss_epoch1")),
        Col("val acc after epoch 1 %", lambda r: _pct(extra("val_acc_epoch1")(r)), 1),
    ]
    one, root2 = "gamma_init=1.0", "gamma_init=1.4142135623730951"
    claims = [
        Claim(
            "γ = √2 before ReLU speeds up early training (lower train loss after epoch 1)",
            "He et al. 2015's gain argument",
            at(one, extra("train_loss_epoch1")),
            at(root2, extra("train_loss_epoch1")),
            -1,
        ),
        Claim(
            "γ = √2 changes final eval accuracy by less than 2 points",
            "preset's expected outcome",
            at(one, acc("test_acc_eval")),
            at(root2, acc("test_acc_eval")),
            0,
            2.0,
            unit="pt",
        ),
    ]
    return cols, claims


def beta_init_sigmoid() -> tuple[list[Col], list[Claim]]:
    cols = [
        Col("mean sigmoid activity at init", extra("activity_init")),
        Col("after training", extra("activity_end")),
        Col("train loss after epoch 1", extra("train_loss_epoch1")),
        Col("test acc eval %", acc("test_acc_eval"), 1),
    ]
    b0, b1, b2 = "beta_init=0.0", "beta_init=-1.0", "beta_init=-2.0"
    act, loss = extra("activity_init"), extra("train_loss_epoch1")
    claims = [
        Claim(
            "β = −1 gives sparse activity (mean activity at init below β = 0's)",
            "science.md §7",
            at(b0, act),
            at(b1, act),
            -1,
        ),
        Claim(
            "β = −2 sparser still (a: β = −1, b: β = −2)",
            "science.md §7",
            at(b1, act),
            at(b2, act),
            -1,
        ),
        Claim(
            "β = −1 trains faster early (train loss after epoch 1 below β = 0's)",
            "science.md §7",
            at(b0, loss),
            at(b1, loss),
            -1,
        ),
        Claim("β = −2 trains faster early", "science.md §7", at(b0, loss), at(b2, loss), -1),
        Claim(
            "β = −1 raises the final eval accuracy over β = 0",
            "measured here (no literature claim)",
            at(b0, acc("test_acc_eval")),
            at(b1, acc("test_acc_eval")),
            +1,
            unit="pt",
        ),
    ]
    return cols, claims


def saturating() -> tuple[list[Col], list[Claim]]:
    cols = [
        Col("test acc eval %", acc("test_acc_eval"), 1),
        Col("log10 grad norm blocks.0 / blocks.11, first probe", log_grad_ratio, 2),
        Col("grad norm blocks.0, first probe", extra("grad_norm_first", 0), 3),
        Col("grad norm blocks.11", extra("grad_norm_first", -1), 3),
    ]
    claims = []
    for act in ("sigmoid", "tanh", "gaussian"):
        bn, plain = (
            f"activation={act} block=linear>batchnorm>activation",
            f"activation={act} block=linear>activation",
        )
        claims += [
            Claim(
                f"{act}: without BN the gradient decays towards the input "
                "(log10 ratio lower without BN)",
                "Ioffe & Szegedy 2015 §1",
                at(bn, log_grad_ratio),
                at(plain, log_grad_ratio),
                -1,
            ),
            Claim(
                f"{act}: with BN the net reaches a higher accuracy (a: no BN, b: BN)",
                "Ioffe & Szegedy 2015 §1",
                at(plain, acc("test_acc_eval")),
                at(bn, acc("test_acc_eval")),
                +1,
                unit="pt",
            ),
        ]
    return cols, claims


def dropout_masks() -> tuple[list[Col], list[Claim]]:
    cols = [
        Col("grad_cos (2nd half)", extra("grad_cos_mean")),
        Col("grad_norm CV (blocks mean)", extra("grad_norm_cv_mean")),
        Col("running_var CV blocks.0", extra("running_var_cv_blocks0")),
        Col("test acc eval %", acc("test_acc_eval"), 1),
        Col("recalibrated %", acc("test_acc_recalibrated"), 1),
        Col("`shift` blocks.0", summ("shift_by_layer", B0), 2),
        Col("`shift` blocks.1", summ("shift_by_layer", B1), 2),
    ]
    s, b = "mask=per_sample", "mask=per_batch"
    claims = [
        Claim(
            "per-batch masks make the mini-batch gradient noisier (lower grad_cos)",
            "science.md §6",
            at(s, extra("grad_cos_mean")),
            at(b, extra("grad_cos_mean")),
            -1,
        ),
        Claim(
            "per-batch masks make the gradient norm fluctuate more",
            "science.md §6",
            at(s, extra("grad_norm_cv_mean")),
            at(b, extra("grad_norm_cv_mean")),
            +1,
        ),
        Claim(
            "per-batch masks make running_var fluctuate more",
            "science.md §6",
            at(s, extra("running_var_cv_blocks0")),
            at(b, extra("running_var_cv_blocks0")),
            +1,
        ),
        Claim(
            "per-batch masks lower the final eval accuracy",
            "preset's expected outcome",
            at(s, acc("test_acc_eval")),
            at(b, acc("test_acc_eval")),
            -1,
            unit="pt",
        ),
    ]
    return cols, claims


def zero_mean_rule(r: Row) -> float | None:
    """1/q for bernoulli, 1 + β²/3 for uniform: the shift of zero-mean input."""
    m = re.search(r"kind=(\w+) rate=([\d.]+)", cell_of(r))
    if not m:
        return None
    rate = float(m.group(2))
    return 1 / (1 - rate) if m.group(1) == "bernoulli" else 1 + rate * rate / 3


def dropout_std() -> tuple[list[Col], list[Claim]]:
    cols = [
        Col("`shift` blocks.0", summ("shift_by_layer", B0)),
        Col("its prediction", summ("shift_predicted_by_layer", B0)),
        Col("zero-mean rule", zero_mean_rule),
        Col("`shift_li` blocks.0", summ("shift_li_by_layer", B0)),
        Col("its prediction", summ("shift_li_predicted_by_layer", B0)),
        Col("test acc eval %", acc("test_acc_eval"), 1),
        Col("recalibrated %", acc("test_acc_recalibrated"), 1),
    ]
    claims = [
        within5(
            f"{kind} {rate}: `shift` within 5 % of its prediction",
            f"kind={kind} rate={rate}",
            summ("shift_by_layer", B0),
            summ("shift_predicted_by_layer", B0),
        )
        for kind, rate in (
            ("bernoulli", 0.1),
            ("bernoulli", 0.3),
            ("bernoulli", 0.5),
            ("uniform", 0.5),
        )
    ] + [
        Claim(
            "bernoulli 0.5 with nonzero-mean input shifts more than 1/q = 2 (a: 2)",
            SCI2,
            const(2.0),
            at("kind=bernoulli rate=0.5", summ("shift_by_layer", B0)),
            +1,
        ),
    ]
    return cols, claims


def pooling() -> tuple[list[Col], list[Claim]]:
    cols = [
        Col("`shift` blocks.0", summ("shift_by_layer", B0)),
        Col("its prediction", summ("shift_predicted_by_layer", B0)),
        Col("`shift` blocks.1", summ("shift_by_layer", B1)),
        Col("test acc eval %", acc("test_acc_eval"), 1),
        Col("recalibrated %", acc("test_acc_recalibrated"), 1),
    ]
    before, after = (
        "block=conv>dropout>batchnorm>activation",
        "block=conv>batchnorm>activation>dropout",
    )
    s0, s1 = summ("shift_by_layer", B0), summ("shift_by_layer", B1)
    claims = [
        Claim(
            "dropout before the pooling: average pooling lowers the next BN's shift "
            "(a: max, b: avg)",
            "science.md §7",
            at(f"pooling=max {after}", s1),
            at(f"pooling=avg {after}", s1),
            -1,
        ),
        Claim(
            "dropout right before BN: the first BN's shift does not depend on the pooling "
            "(within 5 %)",
            "science.md §7",
            at(f"pooling=max {before}", s0),
            at(f"pooling=avg {before}", s0),
            0,
            0.05,
            relative=True,
        ),
        within5(
            "dropout right before BN (max): `shift` within 5 % of its prediction",
            f"pooling=max {before}",
            s0,
            summ("shift_predicted_by_layer", B0),
        ),
    ]
    return cols, claims


LI_FIRST_BN = {"li_preresnet": "stage1.unit1.bn2", "li_wrn": "stage1.unit1.bn2"}


def li_family(pid: str) -> tuple[list[Col], list[Claim]]:
    cols = [
        Col("test acc eval %", acc("test_acc_eval"), 1),
        Col("recalibrated %", acc("test_acc_recalibrated"), 1),
        Col("mean `shift_li` over BN", layer_mean("shift_li_by_layer"), 2),
        Col("mean `shift`", layer_mean("shift_by_layer"), 2),
        Col("largest `shift_li`", extra("shift_li_max"), 2),
    ]
    if pid == "li_preresnet":
        cols.insert(2, Col("train mode @32 %", acc("test_acc_train_mode", "32"), 1))
    ms = layer_mean("shift_li_by_layer")
    ev, rc = acc("test_acc_eval"), acc("test_acc_recalibrated")

    def c(ds: str, at_: str, rate: str) -> str:
        return f"dataset={ds} dropout_at={at_} rate={rate}"

    claims = [
        Claim(
            "Dropout-(a) shifts BN's variance (CIFAR-10, rate 0.5; a: after all BN, b: before BN)",
            LI,
            at(c("cifar10", "head", "0.5"), ms),
            at(c("cifar10", "before_bn", "0.5"), ms),
            +1,
        ),
        Claim(
            "… and more with the rate (CIFAR-10, before BN; a: 0.1, b: 0.5)",
            LI,
            at(c("cifar10", "before_bn", "0.1"), ms),
            at(c("cifar10", "before_bn", "0.5"), ms),
            +1,
        ),
        Claim(
            "the same on CIFAR-100 (rate 0.5; a: after all BN, b: before BN)",
            LI,
            at(c("cifar100", "head", "0.5"), ms),
            at(c("cifar100", "before_bn", "0.5"), ms),
            +1,
        ),
        Claim(
            "it costs eval-mode accuracy (CIFAR-10; a: rate 0, b: before BN at 0.5)",
            LI,
            at(c("cifar10", "before_bn", "0.0"), ev),
            at(c("cifar10", "before_bn", "0.5"), ev),
            -1,
            unit="pt",
        ),
        Claim(
            "recalibration recovers part of it "
            "(CIFAR-10, before BN at 0.5; a: eval, b: recalibrated)",
            "Li et al. 2019 Table 3",
            at(c("cifar10", "before_bn", "0.5"), ev),
            at(c("cifar10", "before_bn", "0.5"), rc),
            +1,
            unit="pt",
        ),
        Claim(
            "after all BN every BN stays at rate 0's shift (CIFAR-10, rate 0.5, within 3 %)",
            LI,
            at(c("cifar10", "head", "0.0"), ms),
            at(c("cifar10", "head", "0.5"), ms),
            0,
            0.03,
            relative=True,
        ),
        Claim(
            "after all BN the accuracy is about that of rate 0 "
            "(CIFAR-10, rate 0.5, within 2 points)",
            "Li et al. 2019 Table 4",
            at(c("cifar10", "head", "0.0"), ev),
            at(c("cifar10", "head", "0.5"), ev),
            0,
            2.0,
            unit="pt",
        ),
    ]
    first = LI_FIRST_BN.get(pid)
    if first:
        claims.append(
            within5(
                f"the first BN after a dropout (`{first}`, CIFAR-10, 0.5) "
                "within 5 % of its prediction",
                c("cifar10", "before_bn", "0.5"),
                summ("shift_by_layer", first),
                summ("shift_predicted_by_layer", first),
            )
        )
    return cols, claims


WIDTH_LAYERS = ("stage2.unit1.bn1", "stage3.unit1.bn1", "head.bn")


def li_wrn_width_cells(study: dict) -> tuple[str, str]:
    ks = sorted(cells(study), key=lambda c: int(c.split("=")[1]))
    return ks[0], ks[-1]


def li_wrn_width(study: dict) -> tuple[list[Col], list[Claim]]:
    cols = [
        Col("test acc eval %", acc("test_acc_eval"), 1),
        Col("recalibrated %", acc("test_acc_recalibrated"), 1),
        Col("mean `shift_li` over BN", layer_mean("shift_li_by_layer"), 3),
        Col("mean `shift`", layer_mean("shift_by_layer"), 3),
    ] + [Col(f"`shift_li` {L}", summ("shift_li_by_layer", L), 3) for L in WIDTH_LAYERS]
    lo, hi = li_wrn_width_cells(study)
    ms, first = layer_mean("shift_li_by_layer"), WIDTH_LAYERS[0]
    claims = [
        Claim(
            f"width lowers the shift: mean `shift_li` over the BN layers (a: {lo}, b: {hi})",
            LI,
            at(lo, ms),
            at(hi, ms),
            -1,
        ),
        Claim(
            f"… at `head.bn`, which sums every unit's dropout (a: {lo}, b: {hi})",
            LI,
            at(lo, summ("shift_li_by_layer", "head.bn")),
            at(hi, summ("shift_li_by_layer", "head.bn")),
            -1,
        ),
        Claim(
            f"… at the first BN after a dropout, `{first}`, "
            "the single dropout → conv → BN shift of "
            f"the paper's Eq. 14 (a: {lo}, b: {hi})",
            LI,
            at(lo, summ("shift_li_by_layer", first)),
            at(hi, summ("shift_li_by_layer", first)),
            -1,
        ),
        within5(
            f"`{first}` ({hi}): `shift_li` within 5 % of its prediction (science.md §2)",
            hi,
            summ("shift_li_by_layer", first),
            summ("shift_li_predicted_by_layer", first),
        ),
    ]
    return cols, claims


SPECS: dict[str, Callable[[], tuple[list[Col], list[Claim]]]] = {
    "variance_shift": variance_shift,
    "variance_shift_rates": variance_shift_rates,
    "dropout_equal_noise": dropout_equal_noise,
    "population_stats": population_stats,
    "affine_off": affine_off,
    "gamma_init_relu": gamma_init_relu,
    "beta_init_sigmoid": beta_init_sigmoid,
    "saturating": saturating,
    "dropout_masks": dropout_masks,
    "dropout_std": dropout_std,
    "pooling": pooling,
}


def spec(pid: str, study: dict) -> tuple[list[Col], list[Claim]]:
    if pid in SPECS:
        return SPECS[pid]()
    if pid == "li_wrn_width":
        return li_wrn_width(study)
    if pid in ("li_preresnet", "li_wrn", "li_densenet"):
        return li_family(pid)
    return [], []


# ---------------------------------------------------------------- blocks

# The overview table's rows: (number, study, preset ids), in docs/studies.md's order.
OVERVIEW = [
    (1, "variance shift", ["variance_shift", "variance_shift_rates", "dropout_equal_noise"]),
    (2, "population statistics", ["population_stats"]),
    (3, "learnable scale and shift", ["affine_off", "gamma_init_relu", "beta_init_sigmoid"]),
    (4, "saturating nonlinearities", ["saturating"]),
    (5, "dropout masks", ["dropout_masks"]),
    (6, "dropout's effect on std", ["dropout_std"]),
    (7, "max vs avg pooling", ["pooling"]),
    (8, "custom inference", ["custom_inference"]),
    (
        9,
        "research-scale nets (Li et al.)",
        ["li_preresnet", "li_wrn", "li_densenet", "li_wrn_width"],
    ),
]


def cpu_s(study: dict) -> float:
    return study.get("total_cpu_s") or study["total_s"]


def runs_text(study: dict) -> str:
    seeds = len(by_seed(study)) or 1
    return f"{len(cells(study))} × {seeds}"


def overview(results: dict) -> list[str]:
    body = []
    for number, name, ids in OVERVIEW:
        present = [i for i in ids if i in results]
        verdicts = []
        for pid in present:
            claims = spec(pid, results[pid])[1]
            verdicts.append(
                f"`{pid}`: "
                + (tally_text(tally(results[pid], claims)) if claims else "exact check")
            )
        body.append(
            [
                str(number),
                name,
                ", ".join(f"`{i}`" for i in present),
                " + ".join(runs_text(results[i]) for i in present),
                f"{sum(cpu_s(results[i]) for i in present) / 60:.0f}",
                "; ".join(verdicts),
            ]
        )
    return table(
        [
            "#",
            "study",
            "preset(s)",
            "runs (cells × seeds)",
            "CPU min",
            "claims decided by the seeds",
        ],
        body,
    )


def study_block(pid: str, study: dict) -> list[str]:
    cols, claims = spec(pid, study)
    lines = [f"`{pid}`, {n_note(study)}:", ""]
    lines += cell_table(study, cols)
    if claims:
        lines += [
            "",
            f"Claims (a and b paired by seed; {stats.UNRESOLVED} unless the seeds decide):",
            "",
        ]
        lines += claim_rows(study, claims)
    return lines


def custom_inference_block(study: dict) -> list[str]:
    r = ok_rows(study)[0]
    ex = r["extra"]
    names = {
        "numpy": "numpy, sqrt(var + ε)",
        "numpy_folded": "numpy, BN folded into the next Dense",
        "onnxruntime": "ONNX Runtime (model.onnx)",
        "doc_formula_no_sqrt": "numpy, (var + ε) without the square root",
    }
    body = [
        [
            names.get(k, k),
            f"{100 * v['acc']:.1f} %",
            f"{100 * v['same_class_as_eval']:.1f} %",
            f"{v['max_abs_logit_err']:.2g}",
            f"{v['median_rel_logit_err']:.2g}",
        ]
        for k, v in ex.items()
        if isinstance(v, dict) and "acc" in v
    ]
    lo, hi = ex["running_var_range"]
    n_test = r["summary"].get("n_test")
    lines = [
        f"One run (the check is exact, not statistical), eval-mode test accuracy "
        f"{100 * r['summary']['test_acc_eval']:.1f} %"
        + (f" on {n_test} test images" if n_test else "")
        + ":",
        "",
    ]
    lines += table(
        [
            "forward",
            "test acc",
            "same class as torch eval",
            "max abs logit error",
            "median relative logit error",
        ],
        body,
    )
    lines += ["", f"BN running_var over all channels: {lo:.2g} … {hi:.3g}."]
    return lines


def variance_shift_statistics(study: dict) -> list[str]:
    """science.md §1: bnlab's statistic, Li et al.'s, their floors and predictions per layer."""
    vb, hb = f"{BEFORE} kind=bernoulli", f"{HEAD} kind=bernoulli"
    keys = [
        ("shift_by_layer", "`shift`"),
        ("shift_floor_by_layer", "`shift_floor`"),
        ("shift_predicted_by_layer", "predicted `shift`"),
        ("shift_li_by_layer", "`shift_li`"),
        ("shift_li_floor_by_layer", "`shift_li_floor`"),
        ("shift_li_predicted_by_layer", "predicted `shift_li`"),
    ]
    body = []
    for cell, name in (
        (vb, "Dropout(0.5) → BN, bernoulli"),
        (hb, "dropout only before the classifier"),
    ):
        for i, layer in enumerate((B0, B1, B2)):
            row = [name if i == 0 else "", layer]
            for key, _ in keys:
                iv = interval(study, at(cell, summ(key, layer)))
                row.append(fmt(iv) if iv.n else "—")
            body.append(row)
    lines = [f"`variance_shift`, test set after training, {n_note(study)}:", ""]
    lines += table(["run", "layer"] + [k[1] for k in keys], body)
    q = {
        cell: [
            interval(
                study,
                at(
                    cell,
                    lambda r, k=k: (
                        (r["summary"].get("shift_log_by_layer") or {}).get(B0, {}).get(k)
                    ),
                ),
            )
            for k in ("q1", "median", "q3")
        ]
        for cell in (vb, hb)
    }
    lines += [
        "",
        "Quartiles over channels of log r_c at blocks.0.bn (means over the seeds): "
        + " / ".join(fmt(iv) for iv in q[vb])
        + " with dropout before BN, "
        + " / ".join(fmt(iv) for iv in q[hb])
        + " without.",
    ]
    return lines


def shift_vs_li(study: dict) -> list[str]:
    """studies.md intro: how far bnlab's statistic and Li et al.'s read apart."""
    befores = [c for c in cells(study) if c.startswith(BEFORE)]
    heads = [c for c in cells(study) if c.startswith(HEAD)]

    def ratios(cs: list[str], layers: tuple[str, ...]) -> list[float]:
        out = []
        for rows in by_seed(study).values():
            for c in cs:
                if c in rows:
                    s = rows[c]["summary"]
                    out += [
                        s["shift_by_layer"][L] / s["shift_li_by_layer"][L] - 1
                        for L in layers
                        if num(s.get("shift_li_by_layer", {}).get(L))
                    ]
        return out

    def values(cs: list[str], key: str) -> list[float]:
        return [
            v
            for rows in by_seed(study).values()
            for c in cs
            if c in rows
            for v in rows[c]["summary"].get(key, {}).values()
        ]

    first, deep = ratios(befores, (B0,)), ratios(befores, (B1, B2))
    ours, li = values(heads, "shift_by_layer"), values(heads, "shift_li_by_layer")
    if not (first and deep and ours and li):
        return ["(these results hold no `shift_li`: rerun `variance_shift`)"]
    gap = [
        v
        for rows in by_seed(study).values()
        for c in heads
        if c in rows
        for v in (rows[c].get("extra", {}).get("running_var_vs_population") or {}).values()
    ]
    lines = [
        f"On the `variance_shift` runs (every kind and seed, {len(by_seed(study))} seeds), at the "
        f"first BN after dropout bnlab's `shift` reads {100 * min(first):+.1f} % to "
        f"{100 * max(first):+.1f} % from Li et al.'s `shift_li`; at the deeper BN layers "
        f"{100 * min(deep):+.1f} % to {100 * max(deep):+.1f} %; with no dropout before BN `shift` "
        f"reads {min(ours):.3f}–{max(ours):.3f} where `shift_li` reads {min(li):.3f}–{max(li):.3f}."
    ]
    if gap:
        lines.append(
            "With dropout only before the classifier the running variance lies within a median "
            f"{100 * min(gap):.1f}–{100 * max(gap):.1f} % (per layer and seed) of the trained "
            "network's population variance on the training set."
        )
    return lines


def first_bn_sentence(study: dict) -> list[str]:
    vb = f"{BEFORE} kind=bernoulli"
    m = interval(study, at(vb, summ("shift_by_layer", B0)))
    p = interval(study, at(vb, summ("shift_predicted_by_layer", B0)))
    ml = interval(study, at(vb, summ("shift_li_by_layer", B0)))
    pl = interval(study, at(vb, summ("shift_li_predicted_by_layer", B0)))
    return [
        f"The `variance_shift` preset's first BN (bernoulli 0.5, {n_note(study)}) reads "
        f"`shift` {fmt(m)} against {fmt(p)} predicted, and `shift_li` {fmt(ml)} against "
        f"{fmt(pl)} predicted."
    ]


def equal_noise_sentence(study: dict) -> list[str]:
    parts = []
    for cell, name in (
        ("dropout=bernoulli:0.5", "bernoulli 0.5"),
        ("dropout=gaussian:0.5", "gaussian 0.5"),
        ("dropout=uniform:0.5", "uniform β = 0.5 (equal rate)"),
        ("dropout=uniform:1.732", "uniform β = 1.732 (equal noise)"),
    ):
        s = interval(study, at(cell, summ("shift_by_layer", B0)))
        a = interval(study, at(cell, acc("test_acc_eval")))
        parts.append(f"{name}: `shift` {fmt(s)}, eval accuracy {fmt(a, 1)} %")
    return [f"`dropout_equal_noise`, blocks.0.bn, {n_note(study)}: " + "; ".join(parts) + "."]


def width_table(study: dict) -> list[str]:
    body = []
    for cell in sorted(cells(study), key=lambda c: int(c.split("=")[1])):
        row = [cell.replace("widen=", "k = ")]
        for L in WIDTH_LAYERS:
            m = interval(study, at(cell, summ("shift_li_by_layer", L)))
            p = interval(study, at(cell, summ("shift_li_predicted_by_layer", L)))
            row.append(f"{fmt(m)} / {fmt(p)}")
        body.append(row)
    lines = [
        f"`li_wrn_width`, `shift_li` measured / predicted (its own dropout only), {n_note(study)}:",
        "",
    ]
    return lines + table(["k"] + [f"`{L}`" for L in WIDTH_LAYERS], body)


def train_mode_sentence(study: dict) -> list[str]:
    vb = f"{BEFORE} kind=bernoulli"
    draws = {r["summary"].get("test_acc_train_mode_draws") for r in ok_rows(study)} - {None}
    se = [
        100 * v
        for rows in by_seed(study).values()
        if vb in rows
        for v in (rows[vb]["summary"].get("test_acc_train_mode_se") or {}).values()
        if num(v)
    ]
    out = []
    for b in ("64", "8"):
        vals = [
            fmt(interval(study, at(vb, f)), 1)
            for f in (
                acc("test_acc_eval"),
                acc("test_acc_train_mode", b),
                acc("test_acc_train_bn", b),
                acc("test_acc_recalibrated"),
            )
        ]
        out.append(
            f"at test batch {b}: eval mode {vals[0]} %, real train mode {vals[1]} %, BN-only "
            f"train mode {vals[2]} %, recalibrated {vals[3]} %"
        )
    between = interval(study, at(vb, acc("test_acc_train_mode", "64"))).sd
    if not se:
        return [""]
    return [
        f"On the `variance_shift` preset (bernoulli 0.5 before BN, {n_note(study)}) "
        + "; ".join(out)
        + f". Each run's train-mode accuracy is the mean of {', '.join(map(str, sorted(draws)))} "
        f"dropout draws, with a standard error of {min(se):.2f}–{max(se):.2f} points within a "
        "run" + (f"; between seeds (batch 64) the sd is {between:.2f} points." if between else ".")
    ]


def li_cost(results: dict) -> list[str]:
    body = []
    for pid in ("li_preresnet", "li_wrn", "li_densenet", "li_wrn_width"):
        if pid not in results:
            continue
        st = results[pid]
        loads = [r.get("load_avg") for r in st["rows"] if num(r.get("load_avg")) is not None]
        body.append(
            [
                f"`{pid}`",
                runs_text(st),
                f"{st['total_s']:.0f} s",
                f"{st.get('total_cpu_s', 0):.0f} s",
                f"{min(loads):.1f}–{max(loads):.1f}" if loads else "–",
            ]
        )
    return table(["study", "runs (cells × seeds)", "wall", "process CPU", "load average"], body)


def readme_studies(results: dict) -> list[str]:
    """README's table of the small studies: one headline each, with its interval and n."""

    def get(pid: str) -> dict | None:
        return results.get(pid)

    rows = []
    vs = get("variance_shift")
    if vs:
        vb = f"{BEFORE} kind=bernoulli"
        rows.append(
            [
                "Variance shift (Li et al. 2019)",
                "`variance_shift`, `variance_shift_rates`",
                f"Dropout(0.5)→BN, first BN: Li et al.'s `shift_li` "
                f"{fmt(interval(vs, at(vb, summ('shift_li_by_layer', B0))), 2)} vs "
                f"{fmt(interval(vs, at(vb, summ('shift_li_predicted_by_layer', B0))), 2)} "
                "predicted; "
                f"eval {fmt(interval(vs, at(vb, acc('test_acc_eval'))), 1)} % vs "
                f"{fmt(interval(vs, at(vb, acc('test_acc_recalibrated'))), 1)} % recalibrated "
                f"(n = {len(by_seed(vs))} seeds)",
            ]
        )
    for ids, name in (
        (["population_stats"], "Population statistics"),
        (["affine_off", "gamma_init_relu", "beta_init_sigmoid"], "Learnable scale and shift"),
        (["saturating"], "Saturating nonlinearities"),
        (["dropout_masks"], "Dropout masks"),
        (["dropout_std"], "Dropout's effect on std"),
        (["pooling"], "Max vs average pooling"),
    ):
        present = [i for i in ids if get(i)]
        if not present:
            continue
        total = {stats.AGREES: 0, stats.CONTRADICTED: 0, stats.UNRESOLVED: 0}
        for pid in present:
            for k, v in tally(results[pid], spec(pid, results[pid])[1]).items():
                total[k] += v
        rows.append(
            [
                name,
                ", ".join(f"`{i}`" for i in present),
                tally_text(total) + " (claims decided by the seeds, docs/studies.md)",
            ]
        )
    ci = get("custom_inference")
    if ci:
        ex = ok_rows(ci)[0]["extra"]
        rows.append(
            [
                "Custom inference from weights",
                "`custom_inference`",
                "numpy `predict.py` reproduces eval-mode logits within "
                f"{ex['numpy']['max_abs_logit_err']:.1g}; without √ the logits are off by a median "
                f"{100 * ex['doc_formula_no_sqrt']['median_rel_logit_err']:.0f} %",
            ]
        )
    return table(["study", "preset(s)", "measured here (CPU), mean [95 % t interval]"], rows)


def user_guide_statistics(vs: dict, en: dict | None) -> list[str]:
    """docs/user-guide.md's "Measurement statistics": the first BN of each kind of run."""
    rows = [
        (vs, f"{BEFORE} kind=bernoulli", "bernoulli 0.5 before BN"),
        (vs, f"{BEFORE} kind=uniform", "uniform β = 0.5 before BN (equal rate)"),
    ]
    if en is not None:
        rows.append(
            (
                en,
                "dropout=uniform:1.732",
                "uniform β = √3 before BN (equal noise, `dropout_equal_noise`)",
            )
        )
    rows.append((vs, f"{HEAD} kind=bernoulli", "dropout only before the classifier"))
    keys = [
        ("shift_by_layer", 3),
        ("shift_floor_by_layer", 3),
        ("shift_li_by_layer", 3),
        ("shift_li_floor_by_layer", 3),
        ("shift_predicted_by_layer", 3),
        ("shift_li_predicted_by_layer", 3),
    ]
    body = []
    for study, cell, name in rows:
        row = [name]
        for key, digits in keys:
            iv = interval(study, at(cell, summ(key, B0)))
            row.append(fmt(iv, digits) if iv.n else "—")
        med = interval(
            study,
            at(
                cell,
                lambda r: ((r["summary"].get("shift_log_by_layer") or {}).get(B0) or {}).get(
                    "median"
                ),
            ),
        )
        row.append(fmt(med))
        body.append(row)
    head = [
        "run",
        "`shift` (bnlab, per channel)",
        "`shift_floor`",
        "`shift_li` (Li et al.)",
        "`shift_li_floor`",
        "predicted `shift`",
        "predicted `shift_li`",
        "log-ratio median",
    ]
    return [f"blocks.0.bn, {n_note(vs)}:", ""] + table(head, body)


def blocks(results: dict) -> dict[str, list[str]]:
    """Every generated block, by id."""
    out: dict[str, list[str]] = {"studies-overview": overview(results)}
    for pid, study in results.items():
        if pid == "custom_inference":
            out[f"study-{pid}"] = custom_inference_block(study)
        else:
            out[f"study-{pid}"] = study_block(pid, study)
    if "variance_shift" in results:
        vs = results["variance_shift"]
        out["science-shift-statistics"] = variance_shift_statistics(vs)
        out["shift-vs-li"] = shift_vs_li(vs)
        out["science-first-bn"] = first_bn_sentence(vs)
        out["science-train-mode"] = train_mode_sentence(vs)
        out["user-guide-statistics"] = user_guide_statistics(vs, results.get("dropout_equal_noise"))
    if "dropout_equal_noise" in results:
        out["science-equal-noise"] = equal_noise_sentence(results["dropout_equal_noise"])
    if "li_wrn_width" in results:
        out["science-width"] = width_table(results["li_wrn_width"])
    out["li-cost"] = li_cost(results)
    out["readme-studies"] = readme_studies(results)
    return out


def results_md(results: dict) -> str:
    """docs/studies_results.md: every run of every study (each seed a row)."""
    torch_version = next((s.get("torch") for s in results.values() if s.get("torch")), "?")
    lines = [
        "# Study results (CPU size)",
        "",
        "Written by `python scripts/make_docs_figures.py` from `studies_results.json` (the runs: "
        "`python scripts/run_studies.py`, one torch thread, runs in sequence, on a shared 2-core "
        f"machine; torch {torch_version}). Every run of every seed; docs/studies.md gives the "
        "means with their intervals and the claims decided from the seeds. Accuracies are on "
        "each dataset's fixed test split; `shift` is bnlab's per-channel statistic and "
        "`shift_li` Li et al.'s (docs/science.md §1), measured on the test set after training, "
        "each with docs/science.md §2's prediction in brackets where a closed form covers the "
        "layer. Train-mode accuracies are means over the run's dropout draws.",
        "",
    ]
    for pid in sorted(results):
        st = results[pid]
        lines += [
            f"## {pid}",
            "",
            f"{st['title']} — {len(st['rows'])} runs, {st['total_s']:.0f} s wall"
            + (f", process CPU {st['total_cpu_s']:.0f} s." if st.get("total_cpu_s") else "."),
            "",
        ]
        header = [
            "cell",
            "seed",
            "test acc eval %",
            "recalibrated %",
            "train mode % by test batch",
            "`shift` by BN layer (predicted)",
            "`shift_li` by BN layer (predicted)",
        ]
        body = []
        for r in st["rows"]:
            if r["status"] != "succeeded":
                body.append([cell_of(r), str(seed_of(r)), r["status"], "", "", "", ""])
                continue
            s = r["summary"]
            tm = " / ".join(
                f"{b}: " + ("undefined" if v is None else f"{100 * v:.1f}")
                for b, v in (s.get("test_acc_train_mode") or {}).items()
            )
            body.append(
                [
                    cell_of(r),
                    str(seed_of(r)),
                    _p(s.get("test_acc_eval")),
                    _p(s.get("test_acc_recalibrated")),
                    tm or "–",
                    _layers(s, "shift_by_layer", "shift_predicted_by_layer"),
                    _layers(s, "shift_li_by_layer", "shift_li_predicted_by_layer"),
                ]
            )
        lines += table(header, body) + [""]
    return "\n".join(lines)


def _p(v: Any) -> str:
    return "–" if num(v) is None else f"{100 * v:.1f}"


def _layers(s: dict, key: str, pred_key: str) -> str:
    meas, pred = s.get(key) or {}, s.get(pred_key) or {}
    return " / ".join(
        f"{v:.3f}" + (f" ({pred[k]:.3f})" if num(pred.get(k)) is not None else "")
        for k, v in meas.items()
        if num(v) is not None
    )


# ---------------------------------------------------------------- writing and checking


def render(text: str, made: dict[str, list[str]]) -> tuple[str, list[str]]:
    """text with every generated block's body replaced; and the ids it holds that `made` lacks."""
    unknown: list[str] = []

    def sub(m: re.Match) -> str:
        bid = m.group("id")
        if bid not in made:
            unknown.append(bid)
            return m.group(0)
        return m.group(1) + "\n".join(made[bid]) + "\n" + m.group(4)

    return BLOCK_RE.sub(sub, text), unknown


def check(
    results: dict, docs: list[Path] | None = None, results_md_path: Path | None = None
) -> list[str]:
    """What differs between the documents and the results: one line per block (or file)."""
    made = blocks(results)
    problems = []
    for path in docs if docs is not None else DOCS:
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        new, unknown = render(text, made)
        problems += [f"{path.name}: block '{b}' is not made from the results" for b in unknown]
        if new != text:
            for m in BLOCK_RE.finditer(text):
                bid = m.group("id")
                if bid in made and m.group("body") != "\n".join(made[bid]) + "\n":
                    problems.append(f"{path.name}: block '{bid}' differs from the results")
    md = results_md_path or RESULTS_MD
    if not md.exists() or md.read_text(encoding="utf-8") != results_md(results):
        problems.append(f"{md.name} differs from the results")
    return problems


def write_all(results: dict, docs: list[Path] | None = None) -> list[Path]:
    made = blocks(results)
    changed = []
    for path in docs if docs is not None else DOCS:
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        new, unknown = render(text, made)
        if unknown:
            raise SystemExit(f"{path}: generated blocks with no maker: {unknown}")
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    md = results_md(results)
    if not RESULTS_MD.exists() or RESULTS_MD.read_text(encoding="utf-8") != md:
        RESULTS_MD.write_text(md, encoding="utf-8")
        changed.append(RESULTS_MD)
    return changed


def load(path: Path = RESULTS) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--check", action="store_true", help="exit 1 if a document differs")
    p.add_argument("--print", metavar="BLOCK", help="print one generated block")
    args = p.parse_args(argv)
    results = load(Path(args.results))
    if args.print:
        print("\n".join(blocks(results)[args.print]))
        return 0
    if args.check:
        problems = check(results)
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    for path in write_all(results):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
