"""bnlab in your own training loop: measure every BatchNorm (and find every dropout) of any
PyTorch model, and stream the run to a bnlab server's dashboard.

    import bnlab
    run = bnlab.init(name="resnet18, p=0.3", config={"lr": 0.1}, tags=["mine"])
    run.watch(model, held_out=x_val, every=20)
    ...  # after each optimizer step:
    run.step(loss=loss.detach())
    run.finish(test_acc=0.93)

`import bnlab` needs no torch; Run.watch / Run.evaluate import it. bnlab.Api reads runs back
as pandas DataFrames (the `sdk` extra).
"""

from bnlab.api import Api
from bnlab.run import Run, init
from bnlab.transport import sync

__all__ = ["Api", "Run", "init", "sync"]
