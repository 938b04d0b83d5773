"""The ``gn`` backend: float64 Gauss-Newton for image-scale students with one hidden layer.

Levenberg-Marquardt on the mean squared error, each step solved by conjugate gradients on
Gauss-Newton-vector products ``J^T J v`` (two passes over the queries, the matrix never
formed), preconditioned by the Kronecker-factored curvature of each layer: for the input
layer ``(A^T A * D^T D) (x) X^T X`` (the queries' covariance, so pixel correlations do not
set the conditioning: whitening as a preconditioner, without amplifying the empty
directions the way whitened inputs do), for the output layer ``I (x) H^T H``. Input
features that are constant over the queries are folded into the biases exactly and their
weights kept, so blank pixels neither slow the solver nor move.

Memory beyond the queries themselves is ``O(N r)`` (the hidden layer's activations and
slopes) plus ``O(d^2)`` (the input covariance); the products run over the queries in chunks
of ``chunk_size`` rows. A problem that does not fit the memory available is refused before
any work (:class:`MemoryError`), never killed midway. The design, measurements and why not
L-BFGS or whitened inputs: docs/trainer.md.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..activations import get_activation
from ..io import available_memory
from ..mlp import MLPSpec
from .base import Budget, PhaseStats, SequentialFitMany, TrainResult

Array = np.ndarray
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
# Damping beyond which no step can lower the loss any more: the solver has converged.
MAX_DAMPING = 1e12
MIN_DAMPING = 1e-15
# Relative RMSE (to the targets' RMS) below which the loss is float64 round-off: once there,
# a run of steps that no longer halve the loss means the quadratic convergence has ended.
PRECISION_RMSE = 1e-12
STALL_STEPS = 5
# A feature whose spread over the queries is below this fraction of the largest is constant.
CONSTANT_TOL = 1e-9


class GaussNewtonTrainer(SequentialFitMany):
    """Float64 Levenberg-Marquardt with preconditioned conjugate gradients.

    Parameters
    ----------
    chunk_size : int
        Queries per block in every pass (bounds the temporaries).
    cg_max_iter : int
        Conjugate-gradient iterations per step at most.
    damping : float
        Initial Levenberg-Marquardt damping (relative to the curvature's scale).
    clock : {"cpu", "wall"}
        What ``Budget.optim_time`` measures.
    progress : callable(dict), optional
        Called after every step with ``step``, ``loss``, ``damping``, ``cg``, ``seconds``.
    """

    name = "gn"
    batched = False

    def __init__(self, chunk_size: int = 4096, cg_max_iter: int = 20, damping: float = 1.0, clock: str = "cpu",
                 progress: Callable[[dict], None] | None = None):
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size!r}; allowed: integers >= 1")
        if cg_max_iter < 1:
            raise ValueError(f"cg_max_iter={cg_max_iter!r}; allowed: integers >= 1")
        if not damping > 0:
            raise ValueError(f"damping={damping!r}; allowed: > 0")
        if clock not in CLOCKS:
            raise ValueError(f"clock={clock!r}; allowed: {', '.join(CLOCKS)}")
        self.chunk_size = chunk_size
        self.cg_max_iter = cg_max_iter
        self.damping = damping
        self.clock = clock
        self.progress = progress

    def fit(self, spec: MLPSpec, X: Array, y: Array, theta0: Array, budget: Budget | None = None,
            trainable: Array | None = None) -> TrainResult:
        """Train from ``theta0`` on ``(X, y)`` (shapes ``(N, d_in)``, ``(N, d_out)``); returns
        the best point seen. Only ``budget.optim_steps`` / ``optim_time`` (Levenberg-Marquardt
        steps), ``min_loss`` and ``min_grad`` apply."""
        budget = budget or Budget()
        if len(spec.hidden_sizes) != 1:
            raise ValueError(f"the gn backend trains networks with one hidden layer; {spec.layer_sizes} has "
                             f"{len(spec.hidden_sizes)}: use backend='flow' or 'torch'")
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(len(X), -1)
        check_memory(spec, len(X), self.chunk_size)
        now = CLOCKS[self.clock]
        t0 = now()
        problem = _Problem(spec, X, y, theta0, trainable, self.chunk_size)
        theta, loss, grad, reason, steps, curve = problem.solve(budget, self, now, t0)
        return TrainResult(
            spec=spec, params=theta, loss=loss, grad_norm=grad, stop_reason=reason,
            phases=(PhaseStats("gauss-newton", steps, now() - t0, loss),),
            loss_curve=np.array(curve, dtype=np.float64).reshape(-1, 2), backend=self.name,
        )


def memory_needed(spec: MLPSpec, n_queries: int, chunk_size: int = 4096) -> int:
    """Bytes the gn backend allocates for ``spec`` on ``n_queries`` queries (beyond them)."""
    d, r, k = spec.d_in, spec.hidden_sizes[0], spec.d_out
    rows = min(n_queries, chunk_size)
    floats = (n_queries * (d + 1)  # the varying inputs with a ones column
              + 2 * n_queries * r  # activations and slopes
              + 2 * n_queries * k  # targets and residuals
              + 6 * rows * max(r, k, 1) + 3 * (d + 1) ** 2 + 12 * spec.n_params)
    return 8 * floats


def check_memory(spec: MLPSpec, n_queries: int, chunk_size: int = 4096) -> None:
    """Raise :class:`MemoryError` with what to do when the problem does not fit."""
    need, free = memory_needed(spec, n_queries, chunk_size), available_memory()
    if free is not None and need > free:
        raise MemoryError(
            f"a gn student {'-'.join(map(str, spec.layer_sizes))} on {n_queries} queries needs about "
            f"{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB are available; use fewer queries or the torch backend")


class _Problem:
    """One least-squares problem in the trainer's own coordinates: input weights with the
    bias as last column (``V``, ``(r, d' + 1)`` over the varying inputs) and output weights
    with the bias as last column (``B``, ``(k, r + 1)``)."""

    def __init__(self, spec, X, y, theta0, trainable, chunk_size):
        self.spec, self.act = spec, get_activation(spec.activation)
        (W, b), (A, c) = spec.unpack(np.array(theta0, dtype=np.float64))
        std = X.std(axis=0)
        # Constant up to rounding (normalised blank pixels vary by 1e-14): such a column is
        # collinear with the bias and would let weight and bias drift apart along a direction
        # of zero curvature.
        self.varying = std > CONSTANT_TOL * max(float(std.max()), 1e-300)
        self.constant = X[:, ~self.varying].mean(axis=0)
        # Weights on constant inputs are not identifiable from these queries: the free ones are
        # set to zero with their contribution moved into the bias (the function on the
        # queries is unchanged), so that an input that varies elsewhere adds nothing.
        # Both reparametrisations move the bias with the weights, so they apply only when
        # every parameter is free.
        all_free = trainable is None or bool(np.all(trainable))
        W_const = W[:, ~self.varying].copy()
        self.W_fixed = np.zeros_like(W_const) if all_free else W_const
        # Centred inputs: the bias is then orthogonal to every weight, so the curvature does not
        # couple them (an exact reparametrisation; the bias absorbs W @ mean).
        self.mean = X[:, self.varying].mean(axis=0) if all_free else np.zeros(int(self.varying.sum()))
        self.X1 = np.hstack([X[:, self.varying] - self.mean, np.ones((len(X), 1))])
        self.y = y
        self.round_off = PRECISION_RMSE**2 * float(np.mean(y**2))
        self.N, self.r, self.k = len(X), W.shape[0], A.shape[0]
        self.d1 = self.X1.shape[1]
        bias = b + W_const @ self.constant + W[:, self.varying] @ self.mean
        V = np.hstack([W[:, self.varying], bias[:, None]])
        self.u0 = np.concatenate([V.ravel(), np.hstack([A, c[:, None]]).ravel()])
        self.free = None if all_free else self._free_mask(np.asarray(trainable, dtype=bool))
        self.chunks = [slice(i, min(i + chunk_size, self.N)) for i in range(0, self.N, chunk_size)]
        self.scale = 1.0 / (self.N * self.k)  # MSE = scale * sum of squared residuals
        cov = self.X1.T @ self.X1
        self.cov_eig, self.cov_vec = np.linalg.eigh(cov)
        self.cov_eig = np.maximum(self.cov_eig, 0.0)

    def _free_mask(self, trainable: Array) -> Array:
        (tW, tb), (tA, tc) = self.spec.unpack(trainable)
        return np.concatenate([np.hstack([tW[:, self.varying], tb[:, None]]).ravel(),
                               np.hstack([tA, tc[:, None]]).ravel()])

    def split(self, u: Array) -> tuple[Array, Array]:
        n = self.r * self.d1
        return u[:n].reshape(self.r, self.d1), u[n:].reshape(self.k, self.r + 1)

    def theta(self, u: Array) -> Array:
        V, B = self.split(u)
        W = np.empty((self.r, self.spec.d_in))
        W[:, self.varying], W[:, ~self.varying] = V[:, :-1], self.W_fixed
        b = V[:, -1] - self.W_fixed @ self.constant - V[:, :-1] @ self.mean
        return self.spec.pack([(W, b), (B[:, :-1], B[:, -1])])

    # ------------------------------------------------------------------ passes over the queries
    def evaluate(self, u: Array) -> tuple[float, Array, Array, Array]:
        """Sum of squared residuals / 2, and the activations, slopes and residuals."""
        V, B = self.split(u)
        H = np.empty((self.N, self.r))
        D = np.empty((self.N, self.r))
        R = np.empty((self.N, self.k))
        for s in self.chunks:
            Z = self.X1[s] @ V.T
            H[s], D[s] = self.act.f(Z), self.act.df(Z)
            R[s] = H[s] @ B[:, :-1].T + B[:, -1] - self.y[s]
        return 0.5 * float(np.einsum("ij,ij->", R, R)), H, D, R

    def gradient(self, u, H, D, R) -> Array:
        _, B = self.split(u)
        gV = np.zeros((self.r, self.d1))
        for s in self.chunks:
            gV += ((R[s] @ B[:, :-1]) * D[s]).T @ self.X1[s]
        gB = np.hstack([R.T @ H, R.sum(axis=0)[:, None]])
        return self._masked(np.concatenate([gV.ravel(), gB.ravel()]))

    def gauss_newton_product(self, u, H, D, v) -> Array:
        """``J^T J v``."""
        _, B = self.split(u)
        A = B[:, :-1]
        vV, vB = self.split(v)
        out_V = np.zeros((self.r, self.d1))
        out_B = np.zeros((self.k, self.r + 1))
        for s in self.chunks:
            dF = ((self.X1[s] @ vV.T) * D[s]) @ A.T + H[s] @ vB[:, :-1].T + vB[:, -1]
            out_V += ((dF @ A) * D[s]).T @ self.X1[s]
            out_B[:, :-1] += dF.T @ H[s]
            out_B[:, -1] += dF.sum(axis=0)
        return np.concatenate([out_V.ravel(), out_B.ravel()])

    def _masked(self, v: Array) -> Array:
        return v if self.free is None else np.where(self.free, v, 0.0)

    # ------------------------------------------------------------------ Levenberg-Marquardt
    def solve(self, budget: Budget, trainer: GaussNewtonTrainer, now, t0):
        u = self.u0.copy()
        f, H, D, R = self.evaluate(u)
        g = self.gradient(u, H, D, R)
        best = (f, u, g)
        curve = [(now() - t0, 2 * f * self.scale)]
        lam, steps, reason = trainer.damping, 0, "budget"
        stalled = 0
        while True:
            loss, grad_inf = 2 * best[0] * self.scale, float(np.abs(best[2]).max()) * 2 * self.scale
            if loss <= budget.min_loss:
                reason = "min_loss"
                break
            if grad_inf <= budget.min_grad:
                reason = "min_grad"
                break
            if steps >= budget.optim_steps or now() - t0 >= budget.optim_time:
                break
            if lam > MAX_DAMPING or stalled >= STALL_STEPS:
                reason = "converged"
                break
            step, predicted, n_cg = self._step(u, H, D, g, lam, trainer.cg_max_iter)
            f_new, H_new, D_new, R_new = self.evaluate(u + step)
            ratio = (f - f_new) / predicted if predicted > 0 else -1.0
            f_before = f
            if np.isfinite(f_new) and f_new < f:
                u, f, H, D, R = u + step, f_new, H_new, D_new, R_new
                g = self.gradient(u, H, D, R)
                if f < best[0]:
                    best = (f, u, g)
            lam = max(MIN_DAMPING, lam * (0.1 if ratio > 0.75 else 1.0 if ratio > 0.25 else 4.0))
            stalled = stalled + 1 if 2 * f * self.scale <= self.round_off and f > 0.5 * f_before else 0
            steps += 1
            curve.append((now() - t0, 2 * f * self.scale))
            if trainer.progress is not None:
                trainer.progress({"step": steps, "loss": 2 * f * self.scale, "damping": lam, "cg": n_cg,
                                  "seconds": now() - t0})
        f, u, g = best
        return self.theta(u), 2 * f * self.scale, float(np.abs(g).max()) * 2 * self.scale, reason, steps, curve

    def _step(self, u, H, D, g, lam, cg_max_iter):
        """Solve ``(J^T J + damping) s = -g`` approximately; returns ``s``, the decrease the
        quadratic model predicts, and the number of CG iterations."""
        _, B = self.split(u)
        A = B[:, :-1]
        S = (D.T @ D) * (A.T @ A)  # r x r: the input layer's neuron factor
        HH = np.zeros((self.r + 1, self.r + 1))
        HH[:-1, :-1] = H.T @ H
        HH[:-1, -1] = HH[-1, :-1] = H.sum(axis=0)
        HH[-1, -1] = self.N
        cov_mean = float(self.cov_eig.mean())
        s_mean = float(np.trace(S)) / self.r
        damp_V = lam * max(s_mean * cov_mean, 1e-300)
        damp_B = lam * max(float(np.trace(HH)) / (self.r + 1), 1e-300)
        damp = np.concatenate([np.full(self.r * self.d1, damp_V), np.full(self.k * (self.r + 1), damp_B)])
        root = np.sqrt(lam)
        S_inv = np.linalg.pinv(S + root * max(s_mean, 1e-300) * np.eye(self.r), hermitian=True)
        cov_inv_eig = 1.0 / (self.cov_eig + root * max(cov_mean, 1e-300))
        HH_inv = np.linalg.pinv(HH + lam * max(float(np.trace(HH)) / (self.r + 1), 1e-300) * np.eye(self.r + 1),
                                hermitian=True)
        Q = self.cov_vec

        def precondition(v):
            vV, vB = self.split(v)
            pV = S_inv @ (((vV @ Q) * cov_inv_eig) @ Q.T)
            return self._masked(np.concatenate([pV.ravel(), (vB @ HH_inv).ravel()]))

        def product(v):
            return self._masked(self.gauss_newton_product(u, H, D, v)) + damp * v

        x = np.zeros_like(u)
        res = -g
        z = precondition(res)
        p = z.copy()
        rz = float(res @ z)
        g_norm = float(np.sqrt(g @ g))
        tol = min(0.1, np.sqrt(g_norm)) * g_norm  # loose far away, tight near a minimum
        n = 0
        for n in range(1, cg_max_iter + 1):
            Ap = product(p)
            curvature = float(p @ Ap)
            if not curvature > 0:
                break
            alpha = rz / curvature
            x += alpha * p
            res -= alpha * Ap
            if np.sqrt(res @ res) <= tol:
                break
            z = precondition(res)
            rz_new = float(res @ z)
            p = z + (rz_new / rz) * p
            rz = rz_new
        predicted = -float(g @ x) - 0.5 * float(x @ (product(x) - damp * x))
        return x, predicted, n
