"""What each integration costs a training loop (issue 23: at most 1.03x at one probe per 20 steps).

    python benchmarks/bench_integrations.py [--repeats 5] [--steps 200] [--quick]

The same training, with and without bnlab, in each of the frameworks bnlab integrates with: a
CNN (3x32x32 input, three conv blocks with dropout before each BatchNorm2d, batch 64; the one
bench_sdk.py times), `steps` optimizer steps over resident tensors, one torch thread.

  plain loop + bnlab.init/watch/step   (what a torchrun/DDP script runs on rank 0; the mode
                                        check's hooks on, as by default)
  plain loop + mirror=SummaryWriter    (the TensorBoard bridge on top; the writer is the
                                        user's, made and closed in both runs)
  Lightning Trainer.fit + BnlabCallback
  HF Trainer.train + BnlabCallback     (the same CNN returning logits)
  Accelerate loop + BnlabTracker       (watch(optimizer=) counting steps by a hook)

bnlab probes every 20 steps (train-mode pass at one probe in 5, the default), and streams every
probe to a real `bnlab serve` (SQLite, started here). Two figures per case:

  A/B: a repeat is one run each way from the same initial weights, in alternating order,
       each timed as the process's CPU seconds (the SDK's sender thread included; the server
       is another process); its ratio with/without, as the median over repeats [lowest,
       highest]. It includes each framework's run setup and finish. On a loaded machine whole
       runs minutes apart see different loads: this figure is as noisy as the load.
  attributed: bnlab's own CPU in the with-runs, measured where it is spent: every call from
       the training thread into bnlab (init, watch, step, log, finish, each integration's
       callbacks, the mode check's hooks inside the model's forward; outermost calls only)
       on the thread's CPU clock, plus the sender thread's CPU; 1 + that / the without-runs'
       CPU (median). A load change hits it only in proportion to bnlab's own time, so it is
       the steady figure; it leaves out what bnlab costs the training indirectly (caches).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import benchlib  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset, TensorDataset  # noqa: E402

import bnlab  # noqa: E402
from tests.bnlab.sdk.servers import make_server  # noqa: E402

torch.set_num_threads(1)
BATCH, EVERY = 64, 20


def cnn() -> nn.Module:
    layers: list[nn.Module] = []
    c = 3
    for w in (16, 32, 32):
        layers += [
            nn.Conv2d(c, w, 3, padding=1),
            nn.Dropout(0.3),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        c = w
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


def data(steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * BATCH, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (steps * BATCH,), generator=g)
    return x, y, torch.randn(BATCH, 3, 32, 32, generator=g)


class Attribution:
    """bnlab's own CPU seconds (see the module docstring): timing wrappers on bnlab's entry
    points, installed before the runs are made (hooks bind the wrapped methods)."""

    def __init__(self) -> None:
        self.cpu, self.depth, self.patches = 0.0, 0, []

    def wrap(self, owner, name: str) -> None:
        orig = getattr(owner, name)

        def timed(*args, **kwargs):
            if self.depth:  # inside another bnlab call: counted there
                return orig(*args, **kwargs)
            self.depth += 1
            t0 = time.thread_time()
            try:
                return orig(*args, **kwargs)
            finally:
                self.cpu += time.thread_time() - t0
                self.depth -= 1

        setattr(owner, name, timed)
        self.patches.append((owner, name, orig))

    def wrap_thread(self, owner, name: str) -> None:
        orig = getattr(owner, name)

        def run(*args, **kwargs):
            try:
                return orig(*args, **kwargs)
            finally:  # the thread's whole CPU, read on that thread as it ends
                self.cpu += time.thread_time()

        setattr(owner, name, run)
        self.patches.append((owner, name, orig))

    def install(self) -> None:
        import bnlab.sdk.probe as probe
        import bnlab.sdk.run as run
        import bnlab.sdk.transport as transport

        self.wrap(run, "init")
        bnlab.init = run.init  # `bnlab.init` is the cached first lookup: the timed one
        for name in ("watch", "step", "log", "finish", "evaluate", "note"):
            self.wrap(run.Run, name)
        for name in ("_forward", "_first_bn"):
            self.wrap(probe.ModeCheck, name)
        self.wrap(probe.ModelProbe, "_learn_batch")
        self.wrap_thread(transport.Sender, "run")
        for module, cls in (
            ("lightning", "BnlabCallback"),
            ("transformers", "BnlabCallback"),
            ("accelerate", "BnlabTracker"),
        ):
            owner = getattr(importlib.import_module(f"bnlab.integrations.{module}"), cls)
            for name, value in list(vars(owner).items()):
                if callable(value) and (name.startswith("on_") or name in INTEGRATION_CALLS):
                    self.wrap(owner, name)

    def take(self) -> float:
        spent, self.cpu = self.cpu, 0.0
        return spent


INTEGRATION_CALLS = ("teardown", "store_init_configuration", "watch", "_stepped", "step", "log")
INTEGRATION_CALLS += ("finish",)


def cpu(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


# ----------------------------------------------------------------------------- the cases
def plain_loop(init, x, y, held, mirror: bool):
    def go(with_bnlab: bool) -> None:
        model = copy.deepcopy(init)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        run = None
        writer = None
        if mirror:  # the user's own writer, in both arms: only the mirroring is bnlab's
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(tempfile.mkdtemp())
        if with_bnlab:
            kw = {"mirror": writer} if mirror else {}
            run = bnlab.init(name="bench plain", dir=tempfile.mkdtemp(), progress=False, **kw)
            run.watch(model, held_out=held, every=EVERY, batch_size=BATCH)
        model.train()
        for i in range(0, len(x), BATCH):
            loss = F.cross_entropy(model(x[i : i + BATCH]), y[i : i + BATCH])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if run is not None:
                run.step(loss=loss.detach())
        if run is not None:
            run.finish()
        if writer is not None:
            writer.close()

    return go


def lightning_fit(init, x, y, held):
    import lightning.pytorch as L

    from bnlab.integrations.lightning import BnlabCallback

    class Lit(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = copy.deepcopy(init)

        def forward(self, xb):
            return self.net(xb)

        def training_step(self, batch, _i):
            return F.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH)

    def go(with_bnlab: bool) -> None:
        callbacks = []
        if with_bnlab:
            callbacks.append(
                BnlabCallback(held_out=held, every=EVERY, dir=tempfile.mkdtemp(), progress=False)
            )
        trainer = L.Trainer(
            max_epochs=1,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks,
        )
        trainer.fit(Lit(), loader)

    return go


class Pairs(Dataset):
    def __init__(self, x, y) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "labels": self.y[i]}


class HFModel(nn.Module):
    """The CNN as a Trainer model: its loss from (x, labels), logits alongside."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x, labels=None):
        logits = self.net(x)
        if labels is None:
            return {"logits": logits}
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


def hf_train(init, x, y, held):
    from transformers import Trainer, TrainingArguments

    from bnlab.integrations.transformers import BnlabCallback

    out = tempfile.mkdtemp()

    def go(with_bnlab: bool) -> None:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=BATCH,
            num_train_epochs=1,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            learning_rate=0.05,
            optim="sgd",
        )
        callbacks = []
        if with_bnlab:
            callbacks.append(
                BnlabCallback(held_out=held, every=EVERY, dir=tempfile.mkdtemp(), progress=False)
            )
        model = HFModel(copy.deepcopy(init))
        Trainer(model=model, args=args, train_dataset=Pairs(x, y), callbacks=callbacks).train()

    return go


def accelerate_loop(init, x, y, held):
    from accelerate import Accelerator

    from bnlab.integrations.accelerate import BnlabTracker

    def go(with_bnlab: bool) -> None:
        tracker = (
            BnlabTracker("bench accelerate", dir=tempfile.mkdtemp(), progress=False)
            if with_bnlab
            else None
        )
        accelerator = Accelerator(log_with=tracker, cpu=True) if tracker else Accelerator(cpu=True)
        if tracker:
            accelerator.init_trackers("bench")
        model = copy.deepcopy(init)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        loader = DataLoader(TensorDataset(x, y), batch_size=BATCH)
        model, opt, loader = accelerator.prepare(model, opt, loader)
        if tracker:
            tracker.watch(model, held, optimizer=opt, every=EVERY, batch_size=BATCH)
        model.train()
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if tracker:
                tracker.step(loss=loss.detach())
        accelerator.end_training()

    return go


CASES = {
    "plain loop + bnlab (torchrun rank 0)": lambda i, x, y, h: plain_loop(i, x, y, h, False),
    "plain loop + bnlab + TensorBoard mirror": lambda i, x, y, h: plain_loop(i, x, y, h, True),
    "Lightning + BnlabCallback": lightning_fit,
    "HF Trainer + BnlabCallback": hf_train,
    "Accelerate + BnlabTracker": accelerate_loop,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    ap.add_argument("--quick", action="store_true", help="3 repeats of 60 steps (a smoke run)")
    ap.add_argument("--only", default="", help="run the cases whose name contains this")
    benchlib.add_figures_argument(ap)
    a = ap.parse_args()
    repeats, steps = (3, 60) if a.quick else (a.repeats, a.steps)
    figures = benchlib.Figures("bench_integrations", a.figures)
    print(f"machine: {benchlib.machine()}; load {benchlib.load()}")
    torch.manual_seed(0)
    init = cnn()
    x, y, held = data(steps)
    attribution = Attribution()
    attribution.install()
    server = make_server(Path(tempfile.mkdtemp()) / "server").start()
    os.environ["BNLAB_URL"] = server.url
    try:
        for name, make in CASES.items():
            if a.only and a.only not in name:
                continue
            go = make(init, x, y, held)
            go(True)  # warm-up: imports, allocator, the framework's first-call costs
            go(False)
            attribution.take()
            ratios, plain_s, own_s = [], [], []
            for r in range(repeats):
                first = r % 2 == 1
                t = {}
                for with_bnlab in (first, not first):
                    t[with_bnlab] = cpu(lambda w=with_bnlab, run=go: run(w))
                    if with_bnlab:
                        time.sleep(0.5)  # the sender thread's end (its CPU is read as it ends)
                        own_s.append(attribution.take())
                ratios.append(t[True] / t[False])
                plain_s.append(t[False])
            median, spread = benchlib.ratio_cell(ratios)
            plain = statistics.median(plain_s)
            per_step = 1e3 * plain / steps
            attributed = [1 + o / plain for o in own_s]
            a_median, a_spread = benchlib.ratio_cell(attributed)
            print(
                f"{name:42s} A/B {median:.3f} {spread}; attributed {a_median:.4f} {a_spread} "
                f"(bnlab {1e3 * statistics.median(own_s) / steps:.2f} ms/step; plain "
                f"{per_step:.1f} ms CPU/step, {steps} steps, load "
                f"{tuple(round(v, 2) for v in benchlib.load())})",
                flush=True,
            )
            baseline = f"the same {steps}-step training without bnlab ({per_step:.1f} ms/step)"
            figures.add(
                f"{name}: CPU with / without (A/B), probe every {EVERY} steps",
                round(median, 3),
                "x",
                spread=spread,
                target="≤ 1.03",
                met=median <= 1.03,
                baseline=baseline,
            )
            figures.add(
                f"{name}: 1 + bnlab's own CPU / without (attributed), probe every {EVERY} steps",
                round(a_median, 4),
                "x",
                spread=a_spread,
                target="≤ 1.03",
                met=a_median <= 1.03,
                baseline=baseline,
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
