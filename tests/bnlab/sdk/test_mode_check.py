"""The detector for a user's own mode mistakes, live in their loop (issue 23 item 4): an
evaluation under torch.no_grad / inference_mode with BN in train mode or dropout active, BN
running statistics that never move while training, train-mode BN on batches of one or mostly
tiny ones: each a BnlabWarning in the script and a note on the run (summary.notes). A correct
loop stays silent; copies of the watched model (an EMA, torch.save) carry nothing of the run."""

from __future__ import annotations

import copy
import io
import json
import warnings

import torch
import torch.nn.functional as F

import bnlab
from bnlab.sdk.run import BnlabWarning
from tests.bnlab.sdk.models import TinyResNet, cifar_like

torch.set_num_threads(1)


def loop(tmp_path, *, forget_eval=False, train_in_eval=False, batch=8, steps=20, extra=None):
    """A training loop with an evaluation every 5 steps; (warnings, the run's notes)."""
    torch.manual_seed(0)
    model = TinyResNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = cifar_like(batch * steps)
    xv, _ = cifar_like(32, seed=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = bnlab.init(name="loop", mode="offline", dir=tmp_path, progress=False)
        run.watch(model, held_out=cifar_like(32, seed=5), every=5)
        model.eval() if train_in_eval else model.train()
        for k in range(steps):
            xb, yb = x[batch * k : batch * k + batch], y[batch * k : batch * k + batch]
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.step(loss=loss.detach())
            if extra is not None:
                extra(model, k)
            if k % 5 == 4:
                if not forget_eval:
                    model.eval()
                with torch.no_grad():
                    model(xv)
                if not forget_eval and not train_in_eval:
                    model.train()
        run.finish()
    said = [str(w.message) for w in caught if issubclass(w.category, BnlabWarning)]
    end = json.loads(run.spool_path.read_text().splitlines()[-1])
    return said, end["summary"].get("notes", [])


def test_a_correct_loop_is_silent(tmp_path):
    said, notes = loop(tmp_path)
    assert said == [] and notes == []


def test_evaluating_without_model_eval_is_flagged(tmp_path):
    said, notes = loop(tmp_path, forget_eval=True)
    assert len(notes) == 2, notes
    assert "ran with 8 BatchNorm layer(s) in train mode" in notes[0]
    assert "Call model.eval() before evaluating" in notes[0]
    assert "3 dropout layer(s) active (stage1.0.drop, stage2.0.drop, head.2)" in notes[1]
    assert said == [f"bnlab: {n}" for n in notes]  # live, each once, though it repeated


def test_inference_mode_counts_as_an_evaluation(tmp_path):
    def infer(model, k):
        if k == 7:
            with torch.inference_mode():
                model(cifar_like(4, seed=1)[0])

    _, notes = loop(tmp_path, extra=infer)
    assert len(notes) == 2 and "in train mode" in notes[0]


def test_bn_statistics_that_never_move_are_flagged(tmp_path):
    said, notes = loop(tmp_path, train_in_eval=True)  # model.train() forgotten
    assert len(notes) == 1, notes
    assert "8 of 8 BatchNorm layer(s) kept their running statistics unchanged" in notes[0]
    assert "model.train() missing?" in notes[0] and len(said) == 1


def test_batches_of_one_and_tiny_batches_are_flagged(tmp_path):
    def one(model, k):
        if k == 3:  # a trailing batch of one (DataLoader without drop_last)
            model(cifar_like(1, seed=2)[0]).sum().backward()

    _, notes = loop(tmp_path, extra=one)
    assert len(notes) == 1 and "a batch of 1 sample" in notes[0], notes
    _, notes = loop(tmp_path / "tiny", batch=4)
    assert len(notes) == 1 and "fewer than 8 samples (typically 4)" in notes[0], notes


def test_copies_of_the_watched_model_carry_nothing_of_the_run(tmp_path):
    made = {}

    def ema(model, k):
        if k == 0:
            made["ema"] = copy.deepcopy(model)  # an EMA / teacher copy, still in train mode
        with torch.no_grad():
            made["ema"](cifar_like(4, seed=3)[0])  # its own no_grad forwards: not the run's
        if k == 1:
            buffer = io.BytesIO()
            torch.save(model, buffer)  # the whole module, hooks and all
            made["loaded"] = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
            with torch.no_grad():
                made["loaded"](cifar_like(4, seed=3)[0])

    said, notes = loop(tmp_path, extra=ema)
    assert said == [] and notes == []
