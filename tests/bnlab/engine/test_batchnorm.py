"""Matrix-form BN against torch's BatchNorm (bnlab/engine/batchnorm.py, docs/science.md §4)."""

import pytest
import torch
from torch import nn

from bnlab.engine.batchnorm import (
    MatrixBatchNorm1d,
    MatrixBatchNorm2d,
    get_norm_layer,
    matrix_batch_norm,
)

CASES = [
    (nn.BatchNorm1d, MatrixBatchNorm1d, (32, 6)),
    (nn.BatchNorm2d, MatrixBatchNorm2d, (8, 4, 5, 5)),
]


def _pair(ref_cls, mat_cls, momentum=0.1, affine=True):
    torch.manual_seed(0)
    ref, mat = (
        ref_cls(6 if ref_cls is nn.BatchNorm1d else 4, momentum=momentum, affine=affine),
        None,
    )
    mat = mat_cls(ref.num_features, momentum=momentum, affine=affine)
    if affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5), ref.bias.uniform_(-0.5, 0.5)
        mat.load_state_dict(ref.state_dict())
    return ref, mat


def _run(layer, x, dy):
    x = x.clone().requires_grad_()
    y = layer(x)
    y.backward(dy)
    return y, x.grad


@pytest.mark.parametrize("ref_cls,mat_cls,shape", CASES)
def test_match_torch_outputs_and_grads(ref_cls, mat_cls, shape):
    """Outputs, input grads and γ/β grads equal torch's BatchNorm in train mode."""
    ref, mat = _pair(ref_cls, mat_cls)
    x, dy = torch.randn(shape) * 3 + 1, torch.randn(shape)
    (y1, g1), (y2, g2) = _run(ref, x, dy), _run(mat, x, dy)
    torch.testing.assert_close(y2, y1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mat.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mat.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("ref_cls,mat_cls,shape", CASES)
def test_match_torch_running_buffers(ref_cls, mat_cls, shape, momentum):
    """After several steps running_mean/var and num_batches_tracked equal torch's (EMA and
    cumulative)."""
    ref, mat = _pair(ref_cls, mat_cls, momentum=momentum)
    for i in range(5):
        x = torch.randn(shape) * (i + 1) + i
        ref(x), mat(x)
    torch.testing.assert_close(mat.running_mean, ref.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mat.running_var, ref.running_var, rtol=1e-5, atol=1e-6)
    assert int(mat.num_batches_tracked) == int(ref.num_batches_tracked) == 5


@pytest.mark.parametrize("ref_cls,mat_cls,shape", CASES)
def test_match_torch_in_eval_mode(ref_cls, mat_cls, shape):
    """In eval mode both normalise with the same running statistics."""
    ref, mat = _pair(ref_cls, mat_cls)
    x = torch.randn(shape) + 2
    ref(x), mat(x)
    torch.testing.assert_close(mat.eval()(x), ref.eval()(x))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(7, 3), (4, 3, 3, 2)])
def test_pass_gradcheck_float64(shape, affine):
    """The matrix-form backward passes torch.autograd.gradcheck in float64."""
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True) + 0.5 if affine else None
    b = torch.randn(3, dtype=torch.float64, requires_grad=True) if affine else None
    inputs = (x, w, b) if affine else (x,)
    fn = (
        (lambda x, w, b: matrix_batch_norm(x, w, b))
        if affine
        else (lambda x: matrix_batch_norm(x, None, None))
    )
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


def test_share_state_dict_keys_with_torch():
    """The matrix BN's state_dict keys are torch's, so checkpoints and comparisons line up."""
    assert MatrixBatchNorm2d(4).state_dict().keys() == nn.BatchNorm2d(4).state_dict().keys()


def test_init_gamma_and_beta_from_factory():
    """get_norm_layer applies gamma_init / beta_init and picks the implementation."""
    layer = get_norm_layer("matrix", 1, 5, gamma_init=1.5, beta_init=-0.5)
    assert isinstance(layer, MatrixBatchNorm1d)
    assert torch.all(layer.weight == 1.5) and torch.all(layer.bias == -0.5)
