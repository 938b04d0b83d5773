"""Loss, gradient and exact Hessian of the mean squared error of an MLP, in float64.

The loss is ``L(theta) = sum((f(X; theta) - y)**2) / (N * K)`` for ``N`` samples and ``K``
outputs (the mean over all elements, as :func:`ec.mlp.mse`). Its Hessian is exact:

``H = 2 / (N K) * (J^T J + sum_{n,k} r_nk * d2 f_k(x_n) / d theta^2)``,

the Gauss-Newton part ``J^T J`` (``J`` the Jacobian of the outputs) plus the
residual-weighted second derivatives of the network; :meth:`MSE.gauss_newton` gives the
first part alone (any depth). Networks with one hidden layer (the
paper's students) use fused numba kernels (:mod:`ec.train.flow._shallow`); deeper ones
assemble the Hessian from Kronecker-structured blocks with BLAS (:mod:`ec.train.flow._deep`).

Every function takes ``X`` of shape ``(N, d_in)`` and ``y`` of shape ``(N, d_out)`` (or
``(N,)`` when ``d_out == 1``) and the flat parameter vector of :class:`ec.mlp.MLPSpec`.
"""

from __future__ import annotations

import numpy as np

from ...mlp import MLPSpec
from . import _deep, _shallow

Array = np.ndarray


def _check_data(spec: MLPSpec, X: Array, y: Array) -> tuple[Array, Array]:
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != spec.d_in:
        raise ValueError(f"X has shape {X.shape}, expected (n_samples, {spec.d_in})")
    y = y.reshape(len(X), -1)
    if y.shape[1] != spec.d_out:
        raise ValueError(f"y has {y.shape[1]} outputs, expected {spec.d_out}")
    return X, np.ascontiguousarray(y)


class MSE:
    """The loss of ``spec`` on fixed data, with the data prepared once for repeated calls.

    Parameters
    ----------
    spec : MLPSpec
    X : ndarray of float64, shape (N, d_in)
    y : ndarray of float64, shape (N, d_out) or (N,)
    """

    def __init__(self, spec: MLPSpec, X: Array, y: Array):
        self.X, self.y = _check_data(spec, X, y)
        self.spec = spec
        self.shallow = len(spec.hidden_sizes) == 1
        if self.shallow:
            self.data = _shallow.prepare(self.X, self.y)

    def loss_grad(self, theta: Array) -> tuple[float, Array]:
        """``(loss, grad)``; grad of shape ``(n_params,)``; NaN for non-finite ``theta``."""
        theta = _theta(self.spec, theta)
        if not np.isfinite(theta).all():  # the fast activations would not propagate NaN
            return np.nan, np.full(self.spec.n_params, np.nan)
        if self.shallow:
            return _shallow.loss_grad(self.spec, theta, self.data)
        return _deep.loss_grad(self.spec, theta, self.X, self.y)

    def hessian(self, theta: Array) -> Array:
        """Exact Hessian, shape ``(n_params, n_params)``."""
        theta = _theta(self.spec, theta)
        if self.shallow:
            return _shallow.hessian(self.spec, theta, self.data)
        return _deep.hessian(self.spec, theta, self.X, self.y)

    def gauss_newton(self, theta: Array) -> tuple[float, Array, Array]:
        """``(loss, grad, G)`` with ``G = 2 / (N K) J^T J``, shape ``(n_params, n_params)``,
        the Hessian without its residual-weighted (indefinite) part."""
        theta = _theta(self.spec, theta)
        if not np.isfinite(theta).all():
            n = self.spec.n_params
            return np.nan, np.full(n, np.nan), np.full((n, n), np.nan)
        return _deep.gauss_newton(self.spec, theta, self.X, self.y)


def _theta(spec, theta):
    theta = np.asarray(theta, dtype=np.float64)
    if theta.shape != (spec.n_params,):
        raise ValueError(f"theta has shape {theta.shape}, expected ({spec.n_params},)")
    return theta


def loss(spec: MLPSpec, theta: Array, X: Array, y: Array) -> float:
    """Mean squared error over all ``N * K`` elements (float)."""
    return loss_grad(spec, theta, X, y)[0]


def loss_grad(spec: MLPSpec, theta: Array, X: Array, y: Array) -> tuple[float, Array]:
    """Loss and its gradient.

    Returns
    -------
    loss : float
    grad : ndarray of float64, shape (spec.n_params,)
    """
    return MSE(spec, X, y).loss_grad(theta)


def hessian(spec: MLPSpec, theta: Array, X: Array, y: Array) -> Array:
    """Exact Hessian of the loss, shape ``(n_params, n_params)``, float64, symmetric."""
    return MSE(spec, X, y).hessian(theta)
