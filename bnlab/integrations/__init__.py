"""bnlab where researchers already train (issue 23): one line each, rank zero only.

    from bnlab.integrations.lightning import BnlabCallback      # Trainer(callbacks=[...])
    from bnlab.integrations.transformers import BnlabCallback   # HF Trainer(callbacks=[...])
    from bnlab.integrations.accelerate import BnlabTracker      # Accelerator(log_with=...)
    bnlab import tensorboard LOGDIR                             # old TensorBoard runs

Each module imports its framework at its top: only users of that framework import it. They
stand on bnlab.sdk (Run, the probe) and bnlab.core; plain DDP / torchrun needs no module here
(bnlab.init makes one run, on rank 0). docs/integrations.md has a runnable example for each.
"""
