"""Probe overhead on a research-scale net: probed PreResNet-20 training vs a plain PyTorch loop.

    python benchmarks/bench_resnet.py [--repeats 5] [--batches 10] [--epochs 10] [--every 20 50]
    python benchmarks/bench_resnet.py --device cuda --arch wrn --depth 28 --widen 10 \
        --precision bf16

Two loops train the same model instance (built once from the config and seed, taking turns
epoch by epoch, rotating who goes first, as benchmarks/bench_engine.py does) on the same
CIFAR-format images, resident on the device (a batch is an index gather, no host-to-device
copy per step):
- plain: forward, cross-entropy, zero_grad, backward, SGD step over randperm index slices;
- probed: bnlab's loop (train()'s Run.run_epoch): the same, plus the probe's on-device sum per
  step, the metric window, and every `--every` steps a probe (an eval-mode pass with BN-input
  statistics on probe.eval_batches held-out batches, one record; at one probe in
  probe.train_mode_every, `--train-mode-every`, also a real train-mode pass on them).
The timed steps follow one untimed epoch; by default (10 untimed, 100 timed steps) they hold
exactly 100 / every probes for every `--every` dividing 100, and the table counts them.
Both use the same autocast (--precision) and, on CUDA, channels-last memory and cuDNN
benchmark mode (Run sets them; the plain loop shares the model and gets the same layout).
The images are synthetic CIFAR-10 (bnlab/engine/cifar.py's generator, in memory): speed
does not depend on the pixel values. Times: process CPU seconds on CPU (a shared machine's
neighbours do not count), wall seconds with torch.cuda.synchronize on CUDA. Reported: the
median over repeats of each loop's images/s and of the ratio probed / plain, with the
lowest and highest ratio in brackets, and the probes and train-mode passes in the timed steps.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from benchlib import Figures, add_figures_argument

from bnlab.core.schema.experiment import ExperimentConfig
from bnlab.engine.cifar import synthetic_images
from bnlab.engine.data import assemble, batches
from bnlab.engine.sinks import MemorySink
from bnlab.engine.train import Run


def config(args: argparse.Namespace, every: int) -> ExperimentConfig:
    probe = {"every_steps": every, "train_mode_test_batch_sizes": [64], "recalibrate": False}
    if args.train_mode_every is not None:
        probe["train_mode_every"] = args.train_mode_every
    model = {"arch": args.arch, "depth": args.depth}
    if args.arch == "wrn":
        model["widen"] = args.widen
    return ExperimentConfig.model_validate(
        {
            "dataset": {"name": "cifar10", "path": "in-memory"},
            "model": model,
            "train": {
                # The loops run epoch by epoch for as long as the benchmark asks; a schedule
                # length far beyond that keeps the run's last-step probe (and any lr decay)
                # out of the timed epochs, so `every` alone sets the probe rate.
                "epochs": 10_000,
                "batch_size": args.batch_size,
                "lr": 0.1,
                "momentum": 0.9,
                "nesterov": True,
                "weight_decay": 5e-4,
                "seed": 0,
                "device": args.device,
                "precision": args.precision,
            },
            "probe": probe,
        }
    )


def dataset(n_train: int, device: str):
    x, y = synthetic_images(n_train, 10, seed=0)
    xt, yt = synthetic_images(1024, 10, seed=1)
    shape = (-1, 3, 32, 32)
    data = assemble(
        x.reshape(shape).astype(np.float32),
        y,
        xt.reshape(shape).astype(np.float32),
        yt,
        val_fraction=0.2,
        seed=0,
        name="synthetic CIFAR-10",
    )
    return data.to(device)


def plain_loop(run: Run) -> Iterator[None]:
    cfg, data, model, opt = run.cfg, run.data, run.model, run.opt
    yield
    while True:
        model.train()
        for idx in batches(len(data.x_train), cfg.train.batch_size, run.device):
            with run.autocast:
                loss = F.cross_entropy(model(run.prep(data.x_train[idx])), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        yield


def probed_loop(run: Run) -> Iterator[None]:
    yield
    while True:
        assert run.run_epoch(None) is None
        yield


def interleaved(cfg: ExperimentConfig, data, epochs: int, rotation: int, clock) -> dict[str, float]:
    """One shared model; the two loops take turns epoch by epoch; summed seconds per loop, and
    the probes and train-mode passes in the timed epochs."""
    run = Run(cfg, data, torch.device(cfg.train.device), MemorySink())
    gens = {"plain": plain_loop(run), "probed": probed_loop(run)}
    names = list(gens)[rotation % 2 :] + list(gens)[: rotation % 2]
    for g in gens.values():
        next(g)  # set up
        next(g)  # one untimed epoch each: allocator, caches and (CUDA) cuDNN autotuning settle
    spent = dict.fromkeys(names, 0.0)
    untimed = len(run.sink.records)
    for epoch in range(epochs):  # timed epochs (the config's length is only a horizon)
        for k in names[epoch % 2 :] + names[: epoch % 2]:
            tic = clock()
            next(gens[k])
            spent[k] += clock() - tic
    timed = run.sink.records[untimed:]
    spent["probes"] = len(timed)
    spent["train_mode"] = sum(r.metrics["val_acc_train_mode"] is not None for r in timed)
    return spent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--arch", default="resnet", choices=["resnet", "wrn", "densenet"])
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--widen", type=int, default=10, help="wrn: k")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=10, help="training batches per epoch")
    p.add_argument("--epochs", type=int, default=10, help="timed epochs per repeat (interleaved)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--every", type=int, nargs="*", default=[20], help="probe.every_steps")
    p.add_argument(
        "--train-mode-every",
        type=int,
        default=None,
        help="probe.train_mode_every (default: the schema's)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    add_figures_argument(p)
    args = p.parse_args()
    figures = Figures("resnet", args.figures)
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if cuda:

        def clock() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()

    else:
        clock = time.process_time
    n_train = round(args.batches * args.batch_size / 0.8) + 1  # 20 % held out for validation
    data = dataset(n_train, args.device)
    images = args.epochs * (len(data.x_train) // args.batch_size) * args.batch_size
    name = f"{args.arch}-{args.depth}" + (f"-{args.widen}" if args.arch == "wrn" else "")
    print(
        f"{name} on {args.device} ({args.precision}), batch {args.batch_size}, "
        f"{len(data.x_train) // args.batch_size} steps/epoch x {args.epochs} epochs, "
        f"{args.repeats} repeats; {'wall' if cuda else 'process CPU'} seconds"
    )
    print(
        f"{'every':>5} {'plain img/s':>12} {'probed img/s':>13} {'probed/plain':>13}  [min, max]"
        "        probes (train-mode passes) in the timed steps"
    )
    for every in args.every:
        cfg = config(args, every)
        runs = [interleaved(cfg, data, args.epochs, r, clock) for r in range(args.repeats)]
        ratio = [r["probed"] / r["plain"] for r in runs]
        ips = {k: images / statistics.median(r[k] for r in runs) for k in ("plain", "probed")}
        print(
            f"{every:5d} {ips['plain']:12.1f} {ips['probed']:13.1f} "
            f"{statistics.median(ratio):13.3f}  [{min(ratio):.3f}, {max(ratio):.3f}]"
            f"  {runs[0]['probes']} ({runs[0]['train_mode']})",
            flush=True,
        )
        med = statistics.median(ratio)
        figures.add(
            f"{name} ({args.device}, {args.precision}), probe every {every} steps: "
            f"probed / plain ({runs[0]['probes']} probes in the timed steps)",
            round(med, 3),
            "x",
            spread=f"[{min(ratio):.3f}, {max(ratio):.3f}]",
            target="≤ 1.03",
            met=round(med, 3) <= 1.03,  # as shown: 3 decimals
            baseline=f"plain {ips['plain']:.1f} img/s, probed {ips['probed']:.1f} img/s",
        )


if __name__ == "__main__":
    main()
