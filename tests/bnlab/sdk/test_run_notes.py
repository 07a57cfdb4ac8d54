"""A model bnlab cannot probe says so (issue 21 item 11): `watch` warns, and the run carries a
note (summary.notes, shown on the run page) naming the normalisation it did find: LayerNorm,
GroupNorm, F.batch_norm calls on the model's own tensors, or none. A model with BN modules
gets no such note. Offline spools and a real `bnlab serve` (SQLite) both keep the note."""

from __future__ import annotations

import json
import warnings

import httpx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnlab
from bnlab.sdk.run import BnlabWarning
from tests.bnlab.sdk.models import TinyResNet, cifar_like
from tests.bnlab.sdk.servers import make_server

torch.set_num_threads(1)


class FunctionalBN(nn.Module):
    """Batch norm on its own buffers through F.batch_norm (no BN module), twice a forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        for i in (1, 2):
            self.register_buffer(f"mean{i}", torch.zeros(8))
            self.register_buffer(f"var{i}", torch.ones(8))
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.batch_norm(self.conv1(x), self.mean1, self.var1, training=self.training)
        h = F.batch_norm(self.conv2(torch.relu(h)), self.mean2, self.var2, training=self.training)
        return self.fc(torch.relu(h).mean((2, 3)))


class LayerNormed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(3 * 16 * 16, 32), nn.LayerNorm(32), nn.ReLU(),
            nn.Linear(32, 32), nn.LayerNorm(32), nn.Dropout(0.1), nn.Linear(32, 10),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GroupNormed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.gn(self.conv(x))).mean((2, 3)))


def plain_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 16), nn.ReLU(), nn.Linear(16, 10))


def watched_notes(model: nn.Module, tmp_path) -> tuple[list[str], list[str], dict]:
    """(the warnings watch gave, the finish line's summary.notes, its normalisation)."""
    run = bnlab.init(name="notes", mode="offline", dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.watch(model, held_out=cifar_like(16, seed=3), every=2)
    x, y = cifar_like(32)
    for k in range(4):
        run.step(loss=F.cross_entropy(model(x[8 * k : 8 * k + 8]), y[8 * k : 8 * k + 8]))
    run.finish()
    end = json.loads(run.spool_path.read_text().splitlines()[-1])
    said = [str(w.message) for w in caught if issubclass(w.category, BnlabWarning)]
    return said, end["summary"].get("notes", []), end["summary"]["model"]["normalisation"]


@pytest.mark.parametrize(
    "make, found",
    [
        (FunctionalBN, "F.batch_norm calls x2"),
        (LayerNormed, "LayerNorm x2"),
        (GroupNormed, "GroupNorm x1"),
        (plain_mlp, "no normalisation at all"),
    ],
    ids=["functional-bn", "layernorm", "groupnorm", "none"],
)
def test_a_model_without_bn_modules_is_told_what_it_has(tmp_path, make, found):
    said, notes, norm = watched_notes(make(), tmp_path)
    assert len(notes) == 1 and "no BatchNorm module to probe" in notes[0], notes
    assert found in notes[0], notes
    assert said == [f"bnlab: {notes[0]}"]  # the same words in the script, at watch()
    if make is FunctionalBN:
        assert norm == {"F.batch_norm calls": 2}
        assert "F.batch_norm called on the model's own tensors cannot be probed" in notes[0]


def test_a_bn_model_gets_no_note(tmp_path):
    model = TinyResNet()
    said, notes, norm = watched_notes(model, tmp_path)
    assert said == [] and notes == []
    # its F.batch_norm calls are the modules' own: not counted as functional ones
    assert norm == {"BatchNorm2d": sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())}


def test_the_note_reaches_the_server_run(tmp_path):
    server = make_server(tmp_path / "server").start()
    try:
        model = FunctionalBN()
        with pytest.warns(BnlabWarning, match="no BatchNorm module to probe"):
            run = bnlab.init(name="functional", url=server.url, dir=tmp_path / "spool")
            run.watch(model, held_out=cifar_like(16, seed=3), every=2)
        x, y = cifar_like(32)
        for k in range(4):
            run.step(loss=F.cross_entropy(model(x[8 * k : 8 * k + 8]), y[8 * k : 8 * k + 8]))
        run.note("a note of the script's own", warn=False)
        run.finish()
        got = httpx.get(f"{server.url}/api/runs/{run.id}", timeout=30).json()
    finally:
        server.stop()
    assert got["status"] == "succeeded"
    notes = got["summary"]["notes"]
    assert len(notes) == 2 and "F.batch_norm calls x2" in notes[0]
    assert notes[1] == "a note of the script's own"
    assert got["summary"]["model"]["normalisation"] == {"F.batch_norm calls": 2}
