"""bnlab in your own training loop: measure every BatchNorm (and find every dropout) of any
PyTorch model, and stream the run to a bnlab server's dashboard.

    import bnlab
    run = bnlab.init(name="resnet18, p=0.3", config={"lr": 0.1}, total_steps=5000)
    run.watch(model, held_out=x_val, every=20)
    ...  # after each optimizer step (raises bnlab.Cancelled after Cancel in the dashboard):
    run.step(loss=loss.detach())
    run.finish(test_acc=0.93)

`import bnlab` needs no torch; Run.watch / Run.evaluate import it. bnlab.Api reads runs back
as pandas DataFrames (the `sdk` extra).
"""

from bnlab.api import Api
from bnlab.run import Cancelled, Run, init
from bnlab.transport import sync

__all__ = ["Api", "Cancelled", "Run", "init", "sync"]
