"""bnlab's experiment engine: a pure PyTorch library (no Celery, SQL or HTTP).

from worker.engine import train
result = train(config, sink)   # TrainResult(status, error, summary, model)
"""

from .batchnorm import MatrixBatchNorm1d, MatrixBatchNorm2d, get_norm_layer
from .data import Data, load_dataset
from .dropout import get_dropout_layer
from .evaluate import (
    evaluate,
    evaluate_mc_dropout,
    evaluate_train_mode,
    predict_logits,
    recalibrate,
    summary_accuracies,
)
from .export import export_all, export_npz, export_onnx
from .model import build_model, count_params
from .probes import BNProbe
from .sinks import JsonlSink, MemorySink, MetricSink, ProbeRecord
from .train import ConfigError, TrainResult, resolve_device, train, validate_config

__all__ = [
    "BNProbe",
    "ConfigError",
    "Data",
    "JsonlSink",
    "MatrixBatchNorm1d",
    "MatrixBatchNorm2d",
    "MemorySink",
    "MetricSink",
    "ProbeRecord",
    "TrainResult",
    "build_model",
    "count_params",
    "evaluate",
    "evaluate_mc_dropout",
    "evaluate_train_mode",
    "export_all",
    "export_npz",
    "export_onnx",
    "get_dropout_layer",
    "get_norm_layer",
    "load_dataset",
    "predict_logits",
    "recalibrate",
    "resolve_device",
    "summary_accuracies",
    "train",
    "validate_config",
]
