"""Export round trip: numpy predict.py and ONNX reproduce the trained torch model (export.py,
predict.py)."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bnlab.engine.predict import predict, predict_doc_formula
from bnlab.engine.train import train

PREDICT_PY = Path(__file__).parents[3] / "bnlab" / "engine" / "predict.py"
PROBE = {"every_steps": 50, "train_mode_test_batch_sizes": [8], "recalibrate": False}
MODELS = {
    "mlp-bn-after-linear": {"widths": [24, 24]},
    "mlp-keras-dense-relu-dropout-bn": {
        "widths": [24, 24],
        "block": ["linear", "activation", "dropout", "batchnorm"],
    },
    "cnn-max": {
        "arch": "cnn",
        "widths": [6, 8],
        "block": ["conv", "batchnorm", "activation", "dropout"],
    },
    "cnn-avg-unfoldable": {
        "arch": "cnn",
        "widths": [6, 8],
        "block": ["conv", "activation", "batchnorm"],
        "pooling": "avg",
        "batchnorm": {"affine": False},
    },
}


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp(request.param)
    cfg = {"model": MODELS[request.param], "train": {"epochs": 2, "batch_size": 64}, "probe": PROBE}
    result = train(cfg, export_dir=out)
    return result, out, np.load(out / "model.npz", allow_pickle=False)


@pytest.mark.parametrize("folded", [False, True], ids=["unfolded", "folded"])
def test_reproduce_torch_logits_with_numpy(exported, folded):
    """predict() (numpy only) gives the eval-mode logits within 1e-5 and the run's test accuracy
    exactly."""
    result, _, f = exported
    logits = predict(f, f["test.x"], folded)
    np.testing.assert_allclose(logits, f["test.logits"], atol=1e-5, rtol=0)
    assert (logits.argmax(1) == f["test.y"]).mean() == pytest.approx(
        result.summary["test_acc_eval"], abs=1e-7
    )


def test_record_where_bn_was_folded(exported):
    """Each BN has a fold note; a BN between two nonlinearities is kept in the folded ops."""
    _, _, f = exported
    notes = {k: str(f[k]) for k in f.files if k.startswith("fold.")}
    assert set(notes) == {"fold.blocks.0.bn", "fold.blocks.1.bn"}
    kept = [n for n, k in zip(f["folded.op_names"], f["folded.ops"], strict=True) if k == "bn"]
    assert kept == [k[5:] for k, v in notes.items() if v.startswith("not folded")]


def test_store_bn_statistics(exported):
    """The unfolded export holds each BN's running mean/var, gamma, beta and eps like the model."""
    result, _, f = exported
    bn = result.model.blocks[0].bn
    np.testing.assert_allclose(f["blocks.0.bn.running_var"], bn.running_var.numpy())
    assert float(f["blocks.0.bn.eps"]) == bn.eps


def test_match_onnxruntime(exported):
    """The ONNX export run by onnxruntime gives the torch eval-mode logits (float32 precision)."""
    ort = pytest.importorskip("onnxruntime")
    _, out, f = exported
    session = ort.InferenceSession(str(out / "model.onnx"))
    logits = session.run(None, {"x": f["test.x"].astype(np.float32)})[0]
    np.testing.assert_allclose(logits, f["test.logits"], atol=1e-5, rtol=0)


def test_measure_doc_formula_off(exported):
    """Without the square root the logits differ from eval mode (the study measures by how much)."""
    _, _, f = exported
    assert np.abs(predict_doc_formula(f, f["test.x"]) - f["test.logits"]).max() > 1e-3


def test_import_only_numpy_in_predict_py():
    """predict.py is standalone: it imports numpy and the standard library only."""
    tree = ast.parse(PREDICT_PY.read_text())
    modules = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    modules |= {
        n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
    }
    assert modules <= {"numpy", "argparse", "sys", "__future__"}, modules


def test_print_classes_from_command_line(exported, tmp_path):
    """`python predict.py model.npz inputs.npy` prints the eval-mode classes, one per line."""
    _, out, f = exported
    np.save(tmp_path / "x.npy", f["test.x"][:20])
    proc = subprocess.run(
        [sys.executable, str(PREDICT_PY), str(out / "model.npz"), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert [int(c) for c in proc.stdout.split()] == f["test.logits"][:20].argmax(1).tolist()
