"""Probe overhead: bnlab's probed training vs a plain PyTorch loop (and an idiomatic DataLoader loop).

    python benchmarks/bench_engine.py [--repeats 5] [--threads 1] [--quick]

For each case (digits and an MNIST-sized synthetic set, 60000×784; MLP and CNN) three loops
train the same model (same config, seed, data resident as tensors, same batches):
- plain: forward, loss, zero_grad, backward, step over randperm index slices; nothing else;
- probed: bnlab's train() with probes every 20 steps (hooks, on-device accumulators, the
  eval-mode pass, train-mode val accuracy), timed over its training loop (summary
  steps_per_s; final test evaluation excluded);
- dataloader: the plain loop fed by torch.utils.data.DataLoader(TensorDataset) (shuffle, drop_last).
Repeats alternate the three loops and the table reports each loop's median time, the median
over repeats of the paired ratio to plain (loops of one repeat ran back to back under the same
load) and, in brackets, the ratio of the minima. Times are process CPU seconds
(time.process_time) with one torch thread: on a machine shared with other jobs, CPU time
counts this process's work only, where wall time would count the neighbours' too. On an
idle machine (or with --clock wall) the two agree.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from backend.schema.experiment import ExperimentConfig
from worker.engine import MemorySink, build_model
from worker.engine.data import assemble, batches, load_dataset, make_synthetic
from worker.engine.train import Run, make_optimizer

CLOCK = time.process_time

MLP = {
    "arch": "mlp",
    "widths": [256, 256, 256],
    "block": ["linear", "dropout", "batchnorm", "activation"],
}
CNN = {
    "arch": "cnn",
    "widths": [16, 32, 32],
    "block": ["conv", "dropout", "batchnorm", "activation"],
}


def config(model: dict, epochs: int, every: int) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "model": {**model, "dropout": {"rate": 0.3}},
            "train": {"epochs": epochs, "batch_size": 128, "lr": 0.05, "seed": 0, "device": "cpu"},
            "probe": {
                "every_steps": every,
                "eval_batches": 4,
                "train_mode_test_batch_sizes": [64],
                "recalibrate": False,
            },
        }
    )


def plain_loop(cfg: ExperimentConfig, data, max_steps: int) -> float:
    """The reference: the same model and batches with nothing but the optimisation step."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, data.in_shape, data.n_classes)
    opt = make_optimizer(cfg, model)
    model.train()
    step, tic = 0, CLOCK()
    for _ in range(cfg.train.epochs):
        for idx in batches(len(data.x_train), cfg.train.batch_size, "cpu"):
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step >= max_steps:
                return CLOCK() - tic
    return CLOCK() - tic


def dataloader_loop(cfg: ExperimentConfig, data, max_steps: int) -> float:
    """The idiomatic loop: a DataLoader over a TensorDataset (per-sample indexing + collate)."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, data.in_shape, data.n_classes)
    opt = make_optimizer(cfg, model)
    loader = DataLoader(
        TensorDataset(data.x_train, data.y_train),
        batch_size=cfg.train.batch_size,
        shuffle=True,
        drop_last=True,
    )
    model.train()
    step, tic = 0, CLOCK()
    for _ in range(cfg.train.epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step >= max_steps:
                return CLOCK() - tic
    return CLOCK() - tic


def probed_loop(cfg: ExperimentConfig, data, max_steps: int) -> float:
    """bnlab's training loop (train()'s Run.run_epoch) with its probes, hooks and metric windows."""
    run = Run(cfg, data, torch.device("cpu"), MemorySink())
    tic = CLOCK()
    for _ in range(cfg.train.epochs):
        run.run_epoch(None)
    elapsed = CLOCK() - tic
    run.probe.detach()
    assert run.step == max_steps, (run.step, max_steps)
    return elapsed


def cases(quick: bool):
    digits = load_dataset(ExperimentConfig().dataset)
    n = 12000 if quick else 60000
    x, y = make_synthetic(n, 784)
    xt, yt = make_synthetic(2000, 784, seed=1)
    synth = assemble(x, y, xt, yt, val_fraction=1 / 6, seed=0, name="synthetic-784")
    return [
        ("digits", "mlp", digits, config(MLP, 20, 20)),
        ("digits", "cnn", digits, config(CNN, 10, 20)),
        (
            "synthetic 60000x784" if not quick else "synthetic 12000x784",
            "mlp",
            synth,
            config(MLP, 1, 20),
        ),
        (
            "synthetic 60000x784" if not quick else "synthetic 12000x784",
            "cnn",
            synth,
            config(CNN, 1, 20),
        ),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (the dev machine's 2 cores are shared)",
    )
    p.add_argument(
        "--quick", action="store_true", help="a 12000-sample synthetic set instead of 60000"
    )
    p.add_argument(
        "--eval-batches", type=int, default=4, help="probe.eval_batches of the probed loop"
    )
    p.add_argument(
        "--only", nargs="*", help="run only cases whose 'dataset arch' contains one of these"
    )
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    p.add_argument(
        "--cnn-steps",
        type=int,
        default=120,
        help="steps of the CNN on the synthetic set (per loop)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    header = (
        f"{'dataset':22} {'model':5} {'steps':>5} {'plain s':>8} {'probed s':>9} {'loader s':>9} "
        f"{'probed/plain':>13} {'loader/plain':>13}"
    )
    print(header)
    print(" " * 56 + "median of paired ratios [ratio of minima]")
    for name, arch, data, cfg in cases(args.quick):
        if args.only and not any(o in f"{name} {arch}" for o in args.only):
            continue
        cfg = cfg.model_copy(
            update={"probe": cfg.probe.model_copy(update={"eval_batches": args.eval_batches})}
        )
        steps = cfg.train.epochs * (len(data.x_train) // cfg.train.batch_size)
        if arch == "cnn" and name.startswith("synthetic"):
            steps = min(steps, args.cnn_steps)
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 1})})
            data = assemble_subset(data, steps * cfg.train.batch_size)
        times = {"plain": [], "probed": [], "loader": []}
        loops = [("plain", plain_loop), ("probed", probed_loop), ("loader", dataloader_loop)]
        for r in range(args.repeats):
            for key, loop in (
                loops[r % 3 :] + loops[: r % 3]
            ):  # rotate the order: no loop always runs first
                times[key].append(loop(cfg, data, steps))
        med = {k: statistics.median(v) for k, v in times.items()}
        # Paired ratios (each repeat's loops ran back to back under the same load), then their median.
        pr = statistics.median(p / q for p, q in zip(times["probed"], times["plain"]))
        lr = statistics.median(p / q for p, q in zip(times["loader"], times["plain"]))
        low = {k: min(v) for k, v in times.items()}
        print(
            f"{name:22} {arch:5} {steps:5d} {med['plain']:8.2f} {med['probed']:9.2f} {med['loader']:9.2f} "
            f"{pr:8.3f} [{low['probed'] / low['plain']:.3f}] "
            f"{lr:7.3f} [{low['loader'] / low['plain']:.3f}]",
            flush=True,
        )


def assemble_subset(data, n: int):
    """The first n training samples (a CNN epoch on 60000 images takes minutes on 2 shared cores)."""
    from dataclasses import replace

    return replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])


if __name__ == "__main__":
    main()
