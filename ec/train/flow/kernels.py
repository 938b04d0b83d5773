"""Loss, gradient and exact Hessian of the mean squared error of an MLP, in float64.

The loss is ``L(theta) = sum((f(X; theta) - y)**2) / (N * K)`` for ``N`` samples and ``K``
outputs (the mean over all elements, as :func:`ec.mlp.mse`). Its Hessian is exact:

``H = 2 / (N K) * (J^T J + sum_{n,k} r_nk * d2 f_k(x_n) / d theta^2)``,

the Gauss-Newton part ``J^T J`` (``J`` the Jacobian of the outputs) plus the
residual-weighted second derivatives of the network. Networks with one hidden layer (the
paper's students) use fused numba kernels (:mod:`ec.train.flow._shallow`); deeper ones a
numpy implementation that propagates forward Jacobians block by block.

Every function takes ``X`` of shape ``(N, d_in)`` and ``y`` of shape ``(N, d_out)`` (or
``(N,)`` when ``d_out == 1``) and the flat parameter vector of :class:`ec.mlp.MLPSpec`.
"""

from __future__ import annotations

import numpy as np

from ...activations import get_activation
from ...mlp import MLPSpec
from . import _shallow

Array = np.ndarray
_BLOCK = 2048  # samples per block of the deep Hessian: bounds the forward-Jacobian memory


def _check_data(spec: MLPSpec, X: Array, y: Array) -> tuple[Array, Array]:
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != spec.d_in:
        raise ValueError(f"X has shape {X.shape}, expected (n_samples, {spec.d_in})")
    y = y.reshape(len(X), -1)
    if y.shape[1] != spec.d_out:
        raise ValueError(f"y has {y.shape[1]} outputs, expected {spec.d_out}")
    return X, np.ascontiguousarray(y)


def _forward(spec: MLPSpec, layers, X: Array):
    """Pre-activations ``zs`` (hidden layers, then the output) and inputs ``hs`` of each layer."""
    act = get_activation(spec.activation)
    zs, hs = [], [X]
    for W, b in layers:
        zs.append(hs[-1] @ W.T + b)
        if len(zs) < len(layers):
            hs.append(act.f(zs[-1]))
    return zs, hs


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
        return _loss_grad_deep(self.spec, theta, self.X, self.y)

    def hessian(self, theta: Array) -> Array:
        """Exact Hessian, shape ``(n_params, n_params)``."""
        theta = _theta(self.spec, theta)
        if self.shallow:
            return _shallow.hessian(self.spec, theta, self.data)
        return _hessian_deep(self.spec, theta, self.X, self.y)


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


def _loss_grad_deep(spec, theta, X, y):
    act = get_activation(spec.activation)
    layers = spec.unpack(theta)
    zs, hs = _forward(spec, layers, X)
    r = zs[-1] - y
    g = r * (2.0 / r.size)  # dL/d(output)
    grad = np.empty(spec.n_params)
    for l in range(len(layers) - 1, -1, -1):
        w0, b0, end = spec.offsets()[l]
        grad[w0:b0] = (g.T @ hs[l]).ravel()
        grad[b0:end] = g.sum(axis=0)
        if l > 0:
            g = (g @ layers[l][0]) * act.df(zs[l - 1])
    return float(np.einsum("ij,ij->", r, r) / r.size), grad


def hessian(spec: MLPSpec, theta: Array, X: Array, y: Array) -> Array:
    """Exact Hessian of the loss, shape ``(n_params, n_params)``, float64, symmetric."""
    return MSE(spec, X, y).hessian(theta)


def _hessian_deep(spec, theta, X, y):
    H = np.zeros((spec.n_params, spec.n_params))
    for start in range(0, len(X), _BLOCK):
        _hessian_block_deep(spec, theta, X[start : start + _BLOCK], y[start : start + _BLOCK], H)
    H = (H + H.T) * (1.0 / y.size)  # exactly symmetric; 2/(N K) scaling
    return H


def _hessian_block_deep(spec, theta, X, y, H):
    """Add ``J^T J + sum r d2f`` of one sample block to ``H`` (unscaled).

    ``Zs[l]`` has shape ``(B, h_l, P_l)``: the Jacobian of layer ``l``'s pre-activation with
    respect to the ``P_l`` parameters of layers ``0..l``. The second-order part collects,
    for every node, its adjoint times its second derivative applied to two tangents:
    ``sigma''(z) dz dz`` for each activation and ``dW dh`` for each product ``W h``.
    """
    act = get_activation(spec.activation)
    layers = spec.unpack(theta)
    offs = spec.offsets()
    zs, hs = _forward(spec, layers, X)
    B = len(X)
    Zs, dHs = [], [None]  # dHs[l]: Jacobian of layer l's input, (B, h_{l-1}, P_{l-1})
    for l, (W, _) in enumerate(layers):
        w0, b0, end = offs[l]
        n_out, n_in = W.shape
        Z = np.zeros((B, n_out, end))
        if l > 0:
            Z[:, :, :w0] = np.einsum("ji,nip->njp", W, dHs[l])
        own = Z[:, :, w0:b0].reshape(B, n_out, n_out, n_in)
        for j in range(n_out):
            own[:, j, j, :] = hs[l]
            Z[:, j, b0 + j] = 1.0
        Zs.append(Z)
        if l < len(layers) - 1:
            dHs.append(act.df(zs[l])[:, :, None] * Z)
    J = Zs[-1].reshape(-1, spec.n_params)
    H += J.T @ J
    g = zs[-1] - y  # adjoint of the output for phi = sum(r * f)
    for l in range(len(layers) - 1, -1, -1):
        w0, b0, end = offs[l]
        if l > 0:
            # product term: d2/dW_l dtheta' of g_l . (W_l h_{l-1})
            C = np.einsum("nj,nip->jip", g, dHs[l]).reshape(b0 - w0, w0)
            H[w0:b0, :w0] += C
            H[:w0, w0:b0] += C.T
            a = g @ layers[l][0]  # adjoint of h_{l-1}
            Zp = Zs[l - 1]
            Pp = Zp.shape[2]
            wZ = (a * act.d2f(zs[l - 1]))[:, :, None] * Zp
            H[:Pp, :Pp] += wZ.reshape(-1, Pp).T @ Zp.reshape(-1, Pp)
            g = a * act.df(zs[l - 1])
