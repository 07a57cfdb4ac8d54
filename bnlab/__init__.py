"""bnlab: run, watch and compare BatchNorm / Dropout experiments.

In your own training loop (the client SDK, bnlab.sdk):

    import bnlab
    run = bnlab.init(name="resnet18, p=0.3", config={"lr": 0.1}, total_steps=5000)
    run.watch(model, held_out=x_val, every=20)
    ...  # after each optimizer step (raises bnlab.Cancelled after Cancel in the dashboard):
    run.step(loss=loss.detach())
    run.finish(test_acc=0.93)

The package is layered (docs/design.md, "Layers"; `lint-imports` checks it):
    bnlab.core     torch-free: config schema, registry of names, wire format
    bnlab.engine   pure torch: models, dropout, BN probes, the training loop
    bnlab.sdk      the client: spool, sender, Run, Api (torch only inside `watch`)
    bnlab.cli      the `bnlab` command, on top of everything
The server (`backend`) and the worker (`worker`) import bnlab.core and bnlab.engine, so this
file loads the client only when one of its names is used: the server never loads the SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bnlab.sdk.alerts import Alerts
    from bnlab.sdk.api import Api
    from bnlab.sdk.run import BnlabWarning, Cancelled, RankRun, Run, Terminated, init
    from bnlab.sdk.transport import sync

# name -> the bnlab.sdk module that defines it
_SDK = {
    "Alerts": "alerts",
    "Api": "api",
    "BnlabWarning": "run",
    "Cancelled": "run",
    "RankRun": "run",
    "Run": "run",
    "Terminated": "run",
    "init": "run",
    "sync": "transport",
}
__all__ = [
    "Alerts",
    "Api",
    "BnlabWarning",
    "Cancelled",
    "RankRun",
    "Run",
    "Terminated",
    "init",
    "sync",
]


def __getattr__(name: str) -> Any:  # PEP 562: `bnlab.init` loads bnlab.sdk on first use
    if name not in _SDK:
        raise AttributeError(f"module 'bnlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bnlab.sdk.{_SDK[name]}"), name)
    globals()[name] = value
    return value
