"""bnlab's experiment engine: a pure PyTorch library (no Celery, SQL or HTTP).

    from bnlab.engine.train import train
    result = train(config, sink)   # TrainResult(status, error, summary, model)

The package imports nothing itself, so the SDK's probe (bnlab.engine.probes, evaluate, dropout)
loads without the training loop's data readers and exporters.
"""
