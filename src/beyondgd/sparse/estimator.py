"""A scikit-learn-style regressor for sparse penalized least squares on top of :func:`solve`."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from beyondgd.core.validation import check_choice, check_int, check_number
from beyondgd.penalties.reference import L1
from beyondgd.sparse.continuation import GeometricContinuation
from beyondgd.sparse.solvers import METHODS, solve

__all__ = ["SparseRegressor"]


class SparseRegressor(RegressorMixin, BaseEstimator):
    r"""Linear regression with a (possibly nonconvex) sparse penalty, scikit-learn style.

    Minimizes, like :class:`sklearn.linear_model.Lasso`,

    .. math:: \frac{1}{2 n_{\mathrm{samples}}} \|X w + b - y\|_2^2 + \mathrm{lam}\, P(w)

    so that ``penalty=L1(1.0)`` gives the lasso with ``alpha = lam``. The intercept ``b`` is not
    penalized (``X`` and ``y`` are centered). The problem is handed to :func:`solve` as
    ``1/2 ||A w - y||^2 + (lam n_samples) P(w)``, so its stationarity rule applies (relative to
    ``||X^T y||_inf``).

    Parameters
    ----------
    penalty : Penalty or None, default None
        An elementwise penalty (:mod:`beyondgd.penalties`); ``None`` means ``L1(1.0)``. It is
        copied at fit time, never modified.
    lam : float, default 1.0
        Regularization weight (``>= 0``).
    solver : {"fista", "prox-grad", "gd", "adam", "lbfgs", "admm"}, default "fista"
        Method of :func:`solve` (``"gd"``/``"lbfgs"`` need a smooth penalty such as WEEP).
    fit_intercept : bool, default True
        Whether to fit an unpenalized intercept.
    max_iter : int, default 1000
        Iteration budget.
    tol : float, default 1e-4
        Relative stationarity tolerance.
    random_state : int, RandomState or None, default None
        Seeds the random initialization when ``init="random"``.
    init : {"zeros", "random"}, default "zeros"
        Starting point: zeros, or Gaussian noise of standard deviation ``init_scale``.
    init_scale : float, default 1e-2
        Standard deviation of the random initialization.
    warm_start : bool, default False
        Start from the previous ``coef_`` when refitting on data of the same width.
    continuation : GeometricContinuation or None, default None
        Continuation in a penalty parameter (WEEP's ``a``).
    solver_options : dict or None, default None
        Extra keyword arguments of :func:`solve` (``lr``, ``history_size``, ``rho``, ...).

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : float
    n_iter_ : int
    stationarity_ : float
        Stopping measure at the solution (see :func:`solve`).
    converged_ : bool
    n_features_in_ : int

    References
    ----------
    .. [1] R. Tibshirani, "Regression shrinkage and selection via the lasso", JRSS-B, 1996.
    .. [2] T. Furuhashi, H. Hontani, Q. Zhao, T. Yokota, "WEEP: A Differentiable Nonconvex Sparse
       Regularizer via Weakly-Convex Envelope", arXiv:2507.20447, 2025.

    Examples
    --------
    >>> import numpy as np
    >>> from beyondgd.penalties import MCP
    >>> from beyondgd.sparse import SparseRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 5)); y = 3.0 * X[:, 0] + 1.0
    >>> est = SparseRegressor(penalty=MCP(alpha=0.1, gamma=3.0), lam=1.0).fit(X, y)
    >>> round(float(est.coef_[0]), 3), bool(np.all(est.coef_[1:] == 0)), round(est.intercept_, 3)
    (3.0, True, 1.0)
    """

    def __init__(
        self,
        penalty=None,
        lam: float = 1.0,
        solver: str = "fista",
        fit_intercept: bool = True,
        max_iter: int = 1000,
        tol: float = 1e-4,
        random_state=None,
        init: str = "zeros",
        init_scale: float = 1e-2,
        warm_start: bool = False,
        continuation: GeometricContinuation | None = None,
        solver_options: dict | None = None,
    ) -> None:
        self.penalty = penalty
        self.lam = lam
        self.solver = solver
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.init = init
        self.init_scale = init_scale
        self.warm_start = warm_start
        self.continuation = continuation
        self.solver_options = solver_options

    def fit(self, X, y):
        """Fit the model (numpy in, numpy attributes out)."""
        lam = check_number("lam", self.lam, low=0.0)
        check_choice("solver", self.solver, METHODS)
        check_choice("init", self.init, ("zeros", "random"))
        max_iter = check_int("max_iter", self.max_iter, low=0)
        tol = check_number("tol", self.tol, low=0.0)
        init_scale = check_number("init_scale", self.init_scale, low=0.0)
        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
        n_samples, n_features = X.shape
        if self.fit_intercept:
            x_mean = X.mean(axis=0)
            y_mean = float(y.mean())
            Xc, yc = X - x_mean, y - y_mean
        else:
            x_mean, y_mean = np.zeros(n_features), 0.0
            Xc, yc = X, y
        A = torch.tensor(Xc, dtype=torch.float64)
        b = torch.tensor(yc, dtype=torch.float64)
        penalty = L1(1.0) if self.penalty is None else copy.deepcopy(self.penalty)

        x0 = None
        if (
            self.warm_start
            and hasattr(self, "coef_")
            and getattr(self, "coef_", np.empty(0)).shape == (n_features,)
        ):
            x0 = torch.tensor(self.coef_, dtype=torch.float64)
        elif self.init == "random":
            rng = check_random_state(self.random_state)
            x0 = torch.tensor(rng.normal(0.0, init_scale, n_features), dtype=torch.float64)

        res = solve(
            A,
            b,
            penalty,
            lam * n_samples,
            method=self.solver,
            x0=x0,
            max_iter=max_iter,
            tol=tol,
            continuation=self.continuation,
            **(self.solver_options or {}),
        )
        self.coef_ = res.x.numpy().copy()
        self.intercept_ = float(y_mean - x_mean @ self.coef_) if self.fit_intercept else 0.0
        self.n_iter_ = int(res.n_iter)
        self.stationarity_ = float(res.stationarity)
        self.converged_ = bool(res.converged)
        if not self.converged_:
            warnings.warn(
                f"{self.solver} did not reach the stationarity tolerance in {max_iter} "
                f"iterations (stationarity {self.stationarity_:.3g} > {float(res.tol_scale):.3g});"
                " increase max_iter or tol",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def predict(self, X):
        """Predict ``X @ coef_ + intercept_``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X @ self.coef_ + self.intercept_
