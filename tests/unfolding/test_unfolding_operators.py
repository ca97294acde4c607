"""Measurement operators: adjointness, power-method norm, dense matrices, devices and dtypes."""

import pytest
import torch
from torch.nn import functional as F

from beyondgd.unfolding import (
    FunctionOperator,
    GaussianCS,
    LinearOperator,
    MatrixOperator,
    haar_analysis_matrix,
)


class Subsample(LinearOperator):
    """A user-written operator: keep every second entry."""

    def __init__(self, n):
        super().__init__(n, (n + 1) // 2)

    def forward(self, x):
        return x[..., ::2]

    def adjoint(self, y):
        x = y.new_zeros(*y.shape[:-1], self.in_features)
        x[..., ::2] = y
        return x


def _blur(k=3):
    kernel = torch.tensor([[[1.0, 2.0, 1.0]]], dtype=torch.float64) / 4

    def fwd(x):  # (B, 20) -> (B, 18), 'valid' correlation
        return F.conv1d(x[:, None], kernel.to(x.dtype))[:, 0]

    def adj(y):
        return F.conv_transpose1d(y[:, None], kernel.to(y.dtype))[:, 0]

    return FunctionOperator(fwd, adj, in_shape=20, out_shape=18, dtype=torch.float64)


def _image_op():
    # 2-D operator on 6 x 5 images: keep the top-left 3 x 4 block (shapes, not vectors).
    def fwd(x):
        return x[:, :3, :4]

    def adj(y):
        return F.pad(y, (0, 1, 0, 3))

    return FunctionOperator(fwd, adj, in_shape=(6, 5), out_shape=(3, 4), dtype=torch.float64)


OPERATORS = {
    "gaussian": lambda: GaussianCS(30, 70, seed=3, dtype=torch.float64),
    "matrix": lambda: MatrixOperator(
        torch.randn(12, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ),
    "function-1d": _blur,
    "function-2d": _image_op,
    "subclass": lambda: Subsample(11),
}


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_adjoint_and_norm(name):
    op = OPERATORS[name]()
    assert op.check_adjoint(dtype=torch.float64) < 1e-12
    dense = op.to_matrix(dtype=torch.float64)
    assert dense.shape == op.shape
    x = torch.randn(4, op.in_features, dtype=torch.float64)
    y = torch.randn(4, op.out_features, dtype=torch.float64)
    torch.testing.assert_close(op(x), x @ dense.T)
    torch.testing.assert_close(op.adjoint(y), y @ dense)
    expected = float(torch.linalg.matrix_norm(dense, ord=2))
    assert op.norm(dtype=torch.float64) == pytest.approx(expected, rel=1e-6)


def test_wrong_adjoint_is_detected():
    a = torch.randn(5, 7, dtype=torch.float64)
    wrong = FunctionOperator(
        lambda x: x @ a.T,
        lambda y: 1.1 * (y @ a),
        in_shape=7,
        out_shape=5,
        dtype=torch.float64,
        check_adjoint=False,
    )
    assert wrong.check_adjoint() > 1e-3
    bad_shape = FunctionOperator(
        lambda x: x[:, :4], lambda y: y, in_shape=7, out_shape=5, check_adjoint=False
    )
    with pytest.raises(ValueError, match="forward function returned shape"):
        bad_shape.check_adjoint()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_function_operator_checks_its_adjoint_at_construction(dtype):
    a = torch.randn(5, 7, dtype=dtype)
    with pytest.raises(ValueError, match=r"blur: adjoint is not the adjoint of forward"):
        FunctionOperator(lambda x: x @ a.T, lambda y: 1.1 * (y @ a), 7, 5, dtype=dtype, name="blur")
    with pytest.raises(ValueError, match=r"A: adjoint is not"):  # a transposed sign flip
        FunctionOperator(lambda x: x @ a.T, lambda y: -(y @ a), 7, 5, dtype=dtype, name="A")
    with pytest.raises(ValueError, match="forward function returned shape.*check_adjoint=False"):
        FunctionOperator(lambda x: x[:, :4], lambda y: y, in_shape=7, out_shape=5, dtype=dtype)
    right = FunctionOperator(lambda x: x @ a.T, lambda y: y @ a, 7, 5, dtype=dtype)
    assert right.check_adjoint() < 1e-5
    # a loose tolerance accepts the slightly wrong pair; a bad tolerance is refused by name
    FunctionOperator(
        lambda x: x @ a.T, lambda y: 1.01 * (y @ a), 7, 5, dtype=dtype, adjoint_tol=0.1
    )
    with pytest.raises(ValueError, match="adjoint_tol"):
        FunctionOperator(lambda x: x @ a.T, lambda y: y @ a, 7, 5, dtype=dtype, adjoint_tol=0.0)
    with pytest.raises(TypeError, match="check_adjoint must be a bool"):
        FunctionOperator(lambda x: x @ a.T, lambda y: y @ a, 7, 5, dtype=dtype, check_adjoint="no")


def test_gaussian_is_seeded_scaled_and_follows_dtype():
    a = GaussianCS(50, 200, seed=0).matrix
    assert torch.equal(a, GaussianCS(50, 200, seed=0).matrix)
    assert not torch.equal(a, GaussianCS(50, 200, seed=1).matrix)
    assert a.dtype == torch.float32
    assert float(a.double().pow(2).mean()) == pytest.approx(1 / 50, rel=0.05)
    op64 = GaussianCS(50, 200, seed=0, dtype=torch.float64)
    assert op64(torch.zeros(3, 200, dtype=torch.float64)).dtype == torch.float64
    moved = GaussianCS(50, 200, seed=0).to(torch.float64)
    assert moved.matrix.dtype == torch.float64


def test_haar_is_orthonormal_and_sparsifies_constants():
    w = haar_analysis_matrix(8, 4, levels=2, dtype=torch.float64)
    torch.testing.assert_close(w @ w.T, torch.eye(32, dtype=torch.float64))
    coeffs = w @ torch.ones(32, dtype=torch.float64)
    assert int((coeffs.abs() > 1e-12).sum()) == 2  # 2 x 1 low-pass block after two levels
    with pytest.raises(ValueError, match="divisible"):
        haar_analysis_matrix(14, 14, levels=2)


def test_operator_argument_errors():
    with pytest.raises(ValueError, match="m must be >= 1"):
        GaussianCS(0, 10)
    with pytest.raises(ValueError, match="matrix must be 2-D"):
        MatrixOperator(torch.ones(3))
    with pytest.raises(ValueError, match="matrix must contain only finite"):
        MatrixOperator(torch.tensor([[float("nan")]]))
    with pytest.raises(TypeError, match="forward must be callable"):
        FunctionOperator(None, lambda y: y, 3, 3)
    with pytest.raises(ValueError, match="in_shape"):
        FunctionOperator(lambda x: x, lambda y: y, (3, 0), 3)
