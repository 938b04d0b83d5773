"""Phase 2: second-order finish from where the gradient flow stopped.

Small networks get Newton's method in a trust region with the exact Hessian
(:func:`_trust_newton`). The subproblem is solved exactly in the Hessian's eigenbasis
(Moré-Sorensen, including the "hard case"), so singular and indefinite Hessians, which every
overparameterised student has near its zero-loss manifold, are handled; a rejected step costs
one gradient, not a new Hessian. Each accepted step is extended (2x, 4x, ...) while the loss
keeps falling, which helps along the degenerate directions of the zero-loss manifold, where
Newton's step is a constant factor too short. Deep networks get Levenberg-Marquardt
(:func:`_levenberg_marquardt`) on the exact Gauss-Newton matrix ``J^T J`` instead: their
students sit among saddles whose negative curvature comes from the residual term of the
Hessian, and Newton spends its steps on it, while the Gauss-Newton model aims at zero
residual directly (docs/deep.md). Large networks, where a dense matrix costs too much, get
scipy's BFGS or L-BFGS.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from .objective import Objective, Stop

Array = np.ndarray
METHODS = ("auto", "newton", "lm", "bfgs", "lbfgs")
_SCIPY = {"bfgs": "BFGS", "lbfgs": "L-BFGS-B"}
_ETA = 1e-4  # accept a step when actual / predicted decrease exceeds this
# Levenberg-Marquardt damping, relative to the largest eigenvalue of J^T J: the first value,
# and the value beyond which no step lowers the loss in float64 (converged).
LM_DAMPING = 1e-3
LM_MIN_DAMPING = 1e-15
LM_MAX_DAMPING = 1e8


def choose_method(n_free: int, method: str = "auto", newton_max_params: int = 1000, bfgs_max_params: int = 5000,
                  deep: bool = False) -> str:
    """Up to ``newton_max_params`` free parameters ``"newton"`` (``"lm"`` for a ``deep``
    network), then ``"bfgs"``, then ``"lbfgs"``."""
    if method not in METHODS:
        raise ValueError(f"optim method {method!r}; allowed: {', '.join(METHODS)}")
    if method != "auto":
        return method
    if n_free <= newton_max_params:
        return "lm" if deep else "newton"
    return "bfgs" if n_free <= bfgs_max_params else "lbfgs"


def second_order(obj: Objective, u0: Array, max_steps: int, max_time: float, method: str = "newton",
                 stall: tuple[int, float] | None = None) -> tuple[Array, int, str]:
    """Minimise from ``u0`` for at most ``max_steps`` iterations / ``max_time`` seconds.

    Parameters
    ----------
    obj : Objective
    u0 : ndarray of float64, shape (obj.n_free,)
    max_steps : int
        Iterations (Newton: accepted steps, each with a new Hessian).
    max_time : float
    method : {"newton", "lm", "bfgs", "lbfgs"}
    stall : (int, float), optional
        ``(steps, factor)``: Levenberg-Marquardt stops with ``"stalled"`` when its best loss
        fell less than ``factor`` times over the last ``steps`` steps (counted over every
        call on ``obj``, so a phase run in rounds is judged as a whole).

    Returns
    -------
    u : ndarray of float64, shape (obj.n_free,)
        The last iterate.
    steps : int
        Iterations done.
    reason : str
        ``"min_loss"``, ``"min_grad"``, ``"budget"``, ``"converged"`` (no further decrease
        is possible in float64), ``"stalled"`` or ``"optimizer: <message>"``.
    """
    obj.deadline = obj.now() + max_time
    state = {"u": np.array(u0, dtype=np.float64), "steps": 0}
    try:
        if method == "newton":
            reason = _trust_newton(obj, state, max_steps)
        elif method == "lm":
            reason = _levenberg_marquardt(obj, state, max_steps, stall)
        else:
            reason = _scipy(obj, state, max_steps, _SCIPY[method])
    except Stop as stop:
        reason = stop.reason
    return state["u"], state["steps"], reason


def _scipy(obj, state, max_steps, method):
    def callback(intermediate_result):
        state["u"], state["steps"] = intermediate_result.x, state["steps"] + 1

    options = {"maxiter": max_steps, "gtol": obj.budget.min_grad}
    res = minimize(obj.loss_grad, state["u"], jac=True, method=method, callback=callback, options=options)
    state["u"] = res.x
    if state["steps"] >= max_steps:
        return "budget"
    return "converged" if res.success else f"optimizer: {res.message}"


def trust_region_step(lam: Array, gc: Array, radius: float) -> Array:
    """Minimiser of ``gc.s + s.(lam s)/2`` over ``|s| <= radius`` (coordinates in the eigenbasis).

    Parameters
    ----------
    lam : ndarray of float64, shape (n,)
        Hessian eigenvalues, ascending.
    gc : ndarray of float64, shape (n,)
        Gradient in the eigenbasis.
    radius : float

    Returns
    -------
    s : ndarray of float64, shape (n,)
    """
    if lam[0] > 0:
        s = -gc / lam
        if np.linalg.norm(s) <= radius:
            return s
    shifted = lam + max(0.0, -lam[0])  # >= 0; s(delta) = -gc / (shifted + delta), delta > 0
    flat = shifted == 0
    if flat.any() and not gc[flat].any():
        # hard case: no gradient along the lowest eigenvector(s); if the rest of the step
        # stays inside, the boundary is reached along them
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(flat, 0.0, -gc / shifted)
        rest = radius**2 - s @ s
        if rest >= 0:
            s[np.argmax(flat)] = np.sqrt(rest)
            return s
    lo, hi = np.finfo(float).tiny, np.linalg.norm(gc) / radius + np.finfo(float).tiny
    with np.errstate(over="ignore"):  # |s| overflows to inf for tiny delta: "too long"
        for _ in range(200):  # geometric bisection on delta: robust, and n is small
            mid = np.sqrt(lo * hi)
            if np.linalg.norm(gc / (shifted + mid)) > radius:
                lo = mid
            else:
                hi = mid
            if hi <= lo * (1.0 + 1e-13):
                break
    return -gc / (shifted + hi)


def _try_step(obj, u, loss, lam, V, gc, s):
    """Evaluate the step ``V s`` of the quadratic model ``gc.s + s.(lam s)/2`` (eigenbasis):
    ``(step, loss, grad, actual / predicted decrease)`` at ``u + step``, or None when the
    model predicts no decrease (nothing is left to gain in float64)."""
    predicted = -(gc @ s + 0.5 * (lam * s) @ s)
    if not predicted > 0:
        return None
    step = V @ s
    loss1, g1 = obj.loss_grad(u + step)
    return step, loss1, g1, (loss - loss1) / predicted


def _trust_newton(obj, state, max_steps, radius=1.0):
    u = state["u"]
    loss, g = obj.loss_grad(u)
    while state["steps"] < max_steps:
        lam, V = np.linalg.eigh(obj.hessian(u))
        gc = V.T @ g
        while True:
            if not radius > 1e-300:
                return "converged"
            s = trust_region_step(lam, gc, radius)
            trial = _try_step(obj, u, loss, lam, V, gc, s)
            if trial is None:
                return "converged"
            step, loss1, g1, rho = trial
            norm = np.linalg.norm(s)
            if rho < 0.25:
                radius = 0.25 * norm
            elif rho > 0.75 and norm > 0.99 * radius:
                radius *= 2.0
            if rho > _ETA:
                break
        # along degenerate (quartic and flatter) directions Newton's step falls short by a
        # constant factor: try 2x, 4x, ... the step while the loss keeps decreasing
        alpha, best = 2.0, 1.0
        while True:
            loss2, g2 = obj.loss_grad(u + alpha * step)
            if not loss2 < loss1:
                break
            loss1, g1, best = loss2, g2, alpha
            alpha *= 2.0
        step = best * step
        u, loss, g = u + step, loss1, g1
        state["u"], state["steps"] = u, state["steps"] + 1
    return "budget"


def _levenberg_marquardt(obj, state, max_steps, stall=None):
    """Levenberg-Marquardt with Nielsen's damping update, each step solved exactly in the
    eigenbasis of the Gauss-Newton matrix (one eigendecomposition serves every damping tried;
    a rejected step costs one gradient). With ``stall = (steps, factor)`` it stops when the
    best loss fell less than ``factor`` times over the last ``steps`` steps."""
    u, damping, nu = state["u"], LM_DAMPING, 2.0
    history = obj.lm_best_losses
    while state["steps"] < max_steps:
        history.append(obj.best_loss)
        if stall is not None and len(history) > stall[0] and history[-1] * stall[1] > history[-1 - stall[0]]:
            return "stalled"
        loss, g, G = obj.gauss_newton(u)
        lam, V = np.linalg.eigh(G)
        lam = np.maximum(lam, 0.0)  # G is positive semi-definite; round-off is not curvature
        gc = V.T @ g
        scale = lam[-1] if lam[-1] > 0 else 1.0
        while True:
            if damping > LM_MAX_DAMPING:
                return "converged"
            trial = _try_step(obj, u, loss, lam, V, gc, -gc / (lam + damping * scale))
            if trial is None:
                return "converged"
            step, _, _, rho = trial
            if rho > 0:
                damping = max(LM_MIN_DAMPING, damping * max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3))
                nu = 2.0
                break
            damping, nu = damping * nu, nu * 2.0
        u = u + step
        state["u"], state["steps"] = u, state["steps"] + 1
    return "budget"
