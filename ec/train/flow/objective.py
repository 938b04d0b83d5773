"""The loss seen by the solvers: restricted to the trainable coordinates, with bookkeeping.

Every evaluation goes through :class:`Objective`, which therefore keeps the best point ever
seen, a (seconds, loss) curve of improvements, and raises :class:`Stop` as soon as a
stopping rule holds, whatever solver is running (scipy's included).
"""

from __future__ import annotations

import time

import numpy as np

from ..base import Budget
from .kernels import MSE

Array = np.ndarray
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class Stop(Exception):
    """Raised inside an evaluation to end the current phase; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Objective:
    """Loss, gradient and Hessian of an MLP in its free coordinates ``u = theta[trainable]``.

    Parameters
    ----------
    mse : MSE
        The loss on the training data.
    theta0 : ndarray of float64, shape (n_params,)
        Initial parameters; the fixed ones keep these values.
    trainable : ndarray of bool, shape (n_params,), optional
        Coordinates to train (default: all).
    budget : Budget
        ``min_loss`` and ``min_grad`` end training.
    clock : {"wall", "cpu"}
        What budgets and the loss curve measure: wall-clock seconds, or this process's CPU
        seconds (for single-threaded runs on a shared machine, where wall time depends on
        the load).

    Attributes
    ----------
    best_u : ndarray of float64, shape (n_free,)
    best_loss, best_grad : float
        Loss and gradient infinity norm at ``best_u``.
    curve : list of (float, float)
        ``(seconds since creation, loss)`` each time the best loss improved.
    deadline : float
        :meth:`now` value after which evaluations raise ``Stop("budget")``.
    """

    def __init__(self, mse: MSE, theta0: Array, trainable: Array | None, budget: Budget, clock: str = "wall"):
        if clock not in CLOCKS:
            raise ValueError(f"clock={clock!r}; allowed: {', '.join(CLOCKS)}")
        self.clock = clock
        self.now = CLOCKS[clock]
        self.mse = mse
        n = mse.spec.n_params
        self.theta0 = np.array(theta0, dtype=np.float64)
        if self.theta0.shape != (n,):
            raise ValueError(f"theta0 has shape {self.theta0.shape}, expected ({n},)")
        if trainable is None:
            self.free = np.arange(n)
        else:
            mask = np.asarray(trainable)
            if mask.dtype != bool or mask.shape != (n,):
                raise ValueError(f"trainable must be a boolean mask of shape ({n},), got {mask.dtype} {mask.shape}")
            self.free = np.flatnonzero(mask)
        self.all_free = len(self.free) == n
        self.budget = budget
        self.start = self.now()
        self.deadline = np.inf
        self.best_u = self.theta0[self.free].copy()
        self.best_loss = np.inf
        self.best_grad = np.inf
        self.lm_best_losses: list[float] = []  # best loss before each Levenberg-Marquardt step (stall rule)
        self.curve: list[tuple[float, float]] = []
        self.n_grad = 0
        self.n_hess = 0

    @property
    def n_free(self) -> int:
        return len(self.free)

    def theta(self, u: Array) -> Array:
        """Full parameter vector for free coordinates ``u``."""
        if self.all_free:
            return np.array(u, dtype=np.float64)
        theta = self.theta0.copy()
        theta[self.free] = u
        return theta

    def loss_grad(self, u: Array) -> tuple[float, Array]:
        """``(loss, grad)`` at ``u``; grad of shape ``(n_free,)``. May raise :class:`Stop`."""
        loss, grad = self.mse.loss_grad(self.theta(u))
        if not self.all_free:
            grad = grad[self.free]
        self.n_grad += 1
        self._book(u, loss, grad)
        return loss, grad

    def _book(self, u: Array, loss: float, grad: Array) -> None:
        """Keep the best point and raise :class:`Stop` when a stopping rule holds."""
        gmax = float(np.max(np.abs(grad))) if len(grad) else 0.0
        if loss < self.best_loss:
            self.best_loss, self.best_grad, self.best_u = loss, gmax, np.array(u, dtype=np.float64)
            self.curve.append((self.now() - self.start, loss))
        if loss <= self.budget.min_loss:
            raise Stop("min_loss")
        if gmax <= self.budget.min_grad:
            raise Stop("min_grad")
        if self.now() > self.deadline:
            raise Stop("budget")

    def gauss_newton(self, u: Array) -> tuple[float, Array, Array]:
        """``(loss, grad, G)`` in the free coordinates, ``G`` the Gauss-Newton matrix, shape
        ``(n_free, n_free)``. May raise :class:`Stop` (as :meth:`loss_grad`)."""
        loss, grad, G = self.mse.gauss_newton(self.theta(u))
        self.n_hess += 1
        if not self.all_free:
            grad, G = grad[self.free], G[np.ix_(self.free, self.free)]
        self._book(u, loss, grad)
        return loss, grad, G

    def hessian(self, u: Array) -> Array:
        """Exact Hessian in the free coordinates, shape ``(n_free, n_free)``."""
        H = self.mse.hessian(self.theta(u))
        self.n_hess += 1
        return H if self.all_free else H[np.ix_(self.free, self.free)]
