"""Documents against results: every figure docs/studies.md, docs/science.md, README.md and
docs/studies_results.md quote from a study run is generated from docs/studies_results.json by
scripts/make_docs_figures.py; a figure that differs from the results fails here (and a planted
mismatch is caught). Also: each study's claims are decided from its seeds (a real effect is
resolved, pure noise is not), and the results hold what the engine measures today."""

from __future__ import annotations

import importlib.util
import random
import re
import shutil
import sys
from pathlib import Path

import pytest

from bnlab.core import stats

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "make_docs_figures", ROOT / "scripts" / "make_docs_figures.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


mdf = _load_script()


@pytest.fixture(scope="module")
def results():
    return mdf.load()


def test_match_every_generated_figure_to_the_results(results):
    """`python scripts/make_docs_figures.py --check` finds nothing to change."""
    assert mdf.check(results) == []


def test_hold_generated_blocks_in_every_document():
    """The documents quote run figures only through generated blocks: each has some."""
    for name in ("studies.md", "science.md"):
        text = (ROOT / "docs" / name).read_text(encoding="utf-8")
        assert mdf.BLOCK_RE.search(text), name


def _copies(tmp_path: Path) -> tuple[list[Path], Path]:
    docs = []
    for src in mdf.DOCS:
        if src.exists():
            dst = tmp_path / src.name
            shutil.copy(src, dst)
            docs.append(dst)
    md = tmp_path / "studies_results.md"
    shutil.copy(mdf.RESULTS_MD, md)
    return docs, md


def test_fail_on_a_planted_mismatch(results, tmp_path):
    """One digit changed inside one generated block of a copy of docs/studies.md: check()
    names that block, and only it; the same for docs/studies_results.md."""
    docs, md = _copies(tmp_path)
    studies = next(p for p in docs if p.name == "studies.md")
    text = studies.read_text(encoding="utf-8")
    m = next(b for b in mdf.BLOCK_RE.finditer(text) if re.search(r"\d\.\d", b.group("body")))
    body = m.group("body")
    digit = re.search(r"\d\.(\d)", body)
    planted = body[: digit.start(1)] + str((int(digit.group(1)) + 1) % 10) + body[digit.end(1) :]
    studies.write_text(text[: m.start("body")] + planted + text[m.end("body") :], encoding="utf-8")
    assert mdf.check(results, docs, md) == [
        f"studies.md: block '{m.group('id')}' differs from the results"
    ]
    md.write_text(md.read_text(encoding="utf-8").replace("| 0 |", "| 7 |", 1), encoding="utf-8")
    assert "studies_results.md differs from the results" in mdf.check(results, docs, md)


def test_fail_on_a_block_the_results_do_not_make(results, tmp_path):
    docs, md = _copies(tmp_path)
    docs[0].write_text(
        docs[0].read_text(encoding="utf-8")
        + "\n<!-- generated: no-such-block -->\n1.23\n<!-- /generated: no-such-block -->\n",
        encoding="utf-8",
    )
    assert any("'no-such-block' is not made" in p for p in mdf.check(results, docs, md))


def test_quote_every_study_figure_with_its_interval_and_n(results):
    blocks = mdf.blocks(results)
    for pid in results:
        if pid == "custom_inference":  # one run, an exact check
            continue
        text = "\n".join(blocks[f"study-{pid}"])
        assert "95 % Student t interval" in text and "n = " in text, pid


def test_run_every_sweep_study_with_three_seeds_or_more(results):
    from backend.presets import load_presets

    presets = {p.id: p for p in load_presets()}
    assert set(results) == set(presets), "a preset without results, or results of no preset"
    for pid, study in results.items():
        if presets[pid].kind != "sweep":
            continue
        seeds = {}
        for row in study["rows"]:
            seeds.setdefault(mdf.cell_of(row), set()).add(mdf.seed_of(row))
        assert all(len(s) >= 3 for s in seeds.values()), (pid, seeds)


def test_keep_real_train_mode_in_the_variance_shift_results(results):
    """The stored `test_acc_train_mode` is real model.train() (dropout on), not the BN-only
    measure, and a batch of one is undefined (null) for the MLP's BatchNorm1d."""
    rows = [r for r in results["variance_shift"]["rows"] if r["status"] == "succeeded"]
    dropout_before_bn = [r for r in rows if mdf.cell_of(r).startswith(mdf.BEFORE)]
    assert dropout_before_bn
    for r in rows:
        s = r["summary"]
        assert s["test_acc_train_mode"]["1"] is None and s["test_acc_train_bn"]["1"] is None
        assert s["test_acc_train_mode_draws"] >= 3
    for r in dropout_before_bn:
        s = r["summary"]
        assert s["test_acc_train_mode"]["64"] != s["test_acc_train_bn"]["64"]
        assert s["test_acc_train_mode_se"]["64"] > 0


def _study(arms: dict[str, list[float]]) -> dict:
    rows = [
        {"label": f"{cell} seed={i}", "cell": cell, "seed": i, "status": "succeeded",
         "summary": {"x": v}}
        for cell, values in arms.items()
        for i, v in enumerate(values)
    ]  # fmt: skip
    return {"id": "synthetic", "title": "", "rows": rows, "total_s": 0.0}


def test_decide_a_real_study_effect_and_leave_pure_noise_unresolved():
    """A claim put to a study's seeds: a real effect (the arms 0.5 apart, seed noise 0.1) is
    resolved; arms drawn from one distribution (pure noise) are not, for 200 such studies at
    most a few percent; and the seeds of a study decide, not its first seed."""
    claim = mdf.Claim(
        "b above a", "test", mdf.at("a", mdf.summ("x")), mdf.at("b", mdf.summ("x")), +1
    )
    rng = random.Random(0)
    base = [rng.gauss(1.0, 0.3) for _ in range(3)]
    real = _study({"a": base, "b": [v + 0.5 + rng.gauss(0, 0.1) for v in base]})
    assert claim.decide(real).verdict == stats.AGREES
    called = 0
    for _ in range(200):
        noise = _study({k: [rng.gauss(1.0, 0.3) for _ in range(3)] for k in "ab"})
        called += claim.decide(noise).verdict != stats.UNRESOLVED
    assert called <= 16, called
    one_lucky_seed = _study({"a": [1.0, 1.3, 1.1], "b": [1.4, 1.2, 1.0]})
    assert claim.decide(one_lucky_seed).verdict == stats.UNRESOLVED
    text = "\n".join(mdf.claim_rows(one_lucky_seed, [claim]))
    assert stats.UNRESOLVED in text and "1 up, 2 down of 3" in text
