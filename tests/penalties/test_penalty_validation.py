"""Bad input: one test per rule, each checking the error type and that the argument is named."""

import math

import pytest
import torch

from beyondgd.penalties import L1, MCP, SCAD, WEEP, CappedL1, LogSum, QuadEnvelopeL0
from beyondgd.sparse import SparseRegressor, solve

ALL = [
    L1(1.0),
    MCP(1.0, 3.0),
    SCAD(1.0, 3.7),
    CappedL1(1.0, 1.0),
    LogSum(1.0, 1.0),
    QuadEnvelopeL0(1.0),
    WEEP(1.0, 1.0),
]


@pytest.mark.parametrize("a", [0.0, -1.0, math.nan, math.inf])
def test_weep_rejects_a_not_positive(a):
    with pytest.raises(ValueError, match="^a must"):
        WEEP(a, 1.0)


@pytest.mark.parametrize("b", [0.0, -0.5])
def test_weep_rejects_b_not_positive(b):
    with pytest.raises(ValueError, match="^b must"):
        WEEP(1.0, b)


def test_weep_rejects_negative_c():
    with pytest.raises(ValueError, match="^c must"):
        WEEP(1.0, 1.0, -0.1)
    WEEP(1.0, 1.0, 0.0)  # c = 0 is allowed


def test_weep_rejects_non_numbers():
    with pytest.raises(TypeError, match="^a must"):
        WEEP("1", 1.0)


def test_reference_penalties_reject_bad_parameters():
    with pytest.raises(ValueError, match="alpha"):
        L1(0.0)
    with pytest.raises(ValueError, match="gamma"):
        MCP(1.0, 0.0)
    with pytest.raises(ValueError, match="gamma"):
        SCAD(1.0, 2.0)  # SCAD needs gamma > 2
    with pytest.raises(ValueError, match="theta"):
        CappedL1(1.0, -1.0)
    with pytest.raises(ValueError, match="eps"):
        LogSum(1.0, 0.0)
    with pytest.raises(ValueError, match="mu"):
        QuadEnvelopeL0(-1.0)


@pytest.mark.parametrize("pen", ALL, ids=repr)
@pytest.mark.parametrize("tau", [0.0, -1.0, math.inf])
def test_prox_rejects_tau_not_positive(pen, tau):
    with pytest.raises(ValueError, match="tau"):
        pen.prox(torch.ones(3), tau)


@pytest.mark.parametrize("pen", ALL, ids=repr)
def test_prox_rejects_tensor_tau_not_positive(pen):
    with pytest.raises(ValueError, match="tau"):
        pen.prox(torch.ones(3), torch.tensor([1.0, 0.0, 1.0]))


@pytest.mark.parametrize("pen", ALL, ids=repr)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_value_grad_prox_reject_nan_and_inf(pen, bad):
    x = torch.tensor([1.0, bad, 0.0])
    for call in (pen.value, pen.grad, lambda z: pen.prox(z, 0.5)):
        with pytest.raises(ValueError, match="^x must"):
            call(x)


@pytest.mark.parametrize("pen", ALL, ids=repr)
def test_integer_tensors_are_rejected(pen):
    x = torch.tensor([1, 2, 3])
    for call in (pen.value, pen.grad, lambda z: pen.prox(z, 0.5), pen):
        with pytest.raises(TypeError, match="floating-point"):
            call(x)
    with pytest.raises(TypeError, match="x"):
        pen.value([1.0, 2.0])  # not a tensor


def test_solve_rejects_integer_tensors():
    A = torch.ones(4, 3, dtype=torch.int64)
    with pytest.raises(TypeError, match="^A must have a floating-point dtype"):
        solve(A, torch.ones(4), L1(1.0), 0.1)
    with pytest.raises(TypeError, match="^y must have a floating-point dtype"):
        solve(torch.ones(4, 3), torch.ones(4, dtype=torch.int32), L1(1.0), 0.1)


@pytest.mark.parametrize(
    "A_shape,y_shape",
    [((5, 3), (4,)), ((5, 3), (2, 4)), ((2, 5, 3), (5,)), ((2, 5, 3), (3, 5)), ((5, 3), (2, 2, 5))],
)
def test_solve_rejects_mismatched_shapes(A_shape, y_shape):
    with pytest.raises(ValueError, match="^y must have shape|^with A of shape"):
        solve(torch.ones(A_shape), torch.ones(y_shape), L1(1.0), 0.1)


def test_solve_rejects_bad_A_shape_and_x0_shape():
    with pytest.raises(ValueError, match="^A must have shape"):
        solve(torch.ones(5), torch.ones(5), L1(1.0), 0.1)
    with pytest.raises(ValueError, match="^x0 must have shape"):
        solve(torch.ones(5, 3), torch.ones(5), L1(1.0), 0.1, x0=torch.zeros(4))


@pytest.mark.parametrize("which", ["A", "y", "x0"])
def test_solve_rejects_nan_and_inf(which):
    args = {"A": torch.ones(5, 3), "y": torch.ones(5), "x0": torch.zeros(3)}
    args[which][0] = math.nan if which != "y" else math.inf
    with pytest.raises(ValueError, match=f"^{which} must contain only finite values"):
        solve(args["A"], args["y"], L1(1.0), 0.1, x0=args["x0"])


def test_solve_rejects_bad_lam_method_and_penalty():
    A, y = torch.ones(5, 3), torch.ones(5)
    with pytest.raises(ValueError, match="^lam must"):
        solve(A, y, L1(1.0), -1.0)
    with pytest.raises(ValueError, match="^method must be one of"):
        solve(A, y, L1(1.0), 0.1, method="newton")
    with pytest.raises(ValueError, match="smooth penalty"):
        solve(A, y, L1(1.0), 0.1, method="gd")  # L1 has no finite smoothness
    with pytest.raises(TypeError, match="lacks value, prox"):
        solve(A, y, object(), 0.1, method="fista")
    with pytest.raises(ValueError, match="admm"):
        solve(A, y, WEEP(1.0, 1.0), 0.1, method="fista", D=torch.eye(3))
    with pytest.raises(TypeError, match="^y must have the dtype of A"):
        solve(A.double(), y, L1(1.0), 0.1)


def test_estimator_rejects_bad_parameters_at_fit():
    X, y = torch.randn(10, 3).numpy(), torch.randn(10).numpy()
    with pytest.raises(ValueError, match="^lam must"):
        SparseRegressor(lam=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="^solver must be one of"):
        SparseRegressor(solver="cd").fit(X, y)
