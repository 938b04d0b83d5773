"""Phase 1: integrate the gradient flow ``du/dt = -grad L(u)``.

Following the flow (rather than taking optimiser steps) is what lets the paper's students
find zero-loss configurations. Near minima the flow is stiff (Hessian eigenvalues spread over
ten or more orders of magnitude) and slow (the loss decays algebraically along degenerate
directions, so the flow time ``t`` must grow geometrically).

The default integrator for networks with a dense Hessian that is cheap to decompose is the
exponential Rosenbrock-Euler method (:func:`exponential_euler`): each step solves the flow of
the local quadratic model exactly,

``u_{n+1} = u_n - V phi(Lambda, h) V^T g_n``,  ``phi(lam, h) = (1 - exp(-lam h)) / lam``,

with ``H = V Lambda V^T`` the exact Hessian. It is second order, unconditionally stable for
the stiff directions, follows unstable (negative-curvature) directions away from saddles as
the flow does, and becomes a Newton step once ``h`` outgrows the curvature scales. The step
size is controlled by the defect of the quadratic model, ``d = g(u_{n+1}) - g_n - H D``,
propagated over the step. A Hessian is reused for later steps (they are then first order,
like a W-method) until a step fails, which is blamed on the stale Hessian first: steps cost
one gradient instead of a Hessian and an eigendecomposition wherever the curvature changes
slowly. Larger networks use a scipy ``solve_ivp`` method.
"""

from __future__ import annotations

import numpy as np
from scipy import integrate

from .objective import Objective, Stop

Array = np.ndarray
SCIPY_METHODS = ("BDF", "Radau", "LSODA", "RK45", "DOP853")
METHODS = ("auto", "exp-euler", *SCIPY_METHODS)
_IMPLICIT = ("BDF", "Radau", "LSODA")
_MAX_REJECTS = 40  # consecutive rejections (h shrinks >= 2x each) before giving up
_STALL_STEPS, _STALL_DECREASE = 100, 1e-9  # no relative decrease > 1e-9 in 100 steps: a minimum


def choose_method(n_free: int, method: str = "auto", exp_euler_max_params: int = 1000) -> str:
    """``"exp-euler"`` up to ``exp_euler_max_params`` free parameters, ``"DOP853"`` above."""
    if method not in METHODS:
        raise ValueError(f"ode method {method!r}; allowed: {', '.join(METHODS)}")
    if method != "auto":
        return method
    return "exp-euler" if n_free <= exp_euler_max_params else "DOP853"


def gradient_flow(
    obj: Objective,
    u0: Array,
    max_steps: int,
    max_time: float,
    method: str = "exp-euler",
    rtol: float = 1e-3,
    atol: float = 1e-6,
) -> tuple[Array, int, str]:
    """Follow the gradient flow from ``u0`` for at most ``max_steps`` steps / ``max_time`` s.

    Parameters
    ----------
    obj : Objective
        Evaluates the loss, keeps the best point and says when to stop.
    u0 : ndarray of float64, shape (obj.n_free,)
    max_steps : int
        Accepted solver steps.
    max_time : float
        Seconds (of ``obj``'s clock).
    method : str
        ``"exp-euler"`` or a scipy ``solve_ivp`` method; implicit scipy methods get the
        exact Jacobian ``-H``.
    rtol, atol : float
        Local error tolerances: the root mean square of the local error is kept below
        ``atol + rtol * rms(u)`` (scipy methods: per coordinate ``atol + rtol * |u_i|``).

    Returns
    -------
    u : ndarray of float64, shape (obj.n_free,)
        Where the flow ended.
    steps : int
        Accepted steps.
    reason : str
        ``"min_loss"``, ``"min_grad"``, ``"budget"``, ``"converged"`` (exp-euler: the loss
        stalled at a minimum) or ``"solver: <message>"`` when the solver gave up.
    """
    method = choose_method(obj.n_free, method)
    obj.deadline = obj.now() + max_time
    run = _exp_euler if method == "exp-euler" else _scipy
    state = {"u": np.array(u0, dtype=np.float64), "steps": 0}
    try:
        reason = run(obj, state, max_steps, method, rtol, atol)
    except Stop as stop:
        reason = stop.reason
    return state["u"], state["steps"], reason


def _scipy(obj, state, max_steps, method, rtol, atol):
    jac = {"jac": lambda t, u: -obj.hessian(u)} if method in _IMPLICIT else {}
    solver = getattr(integrate, method)(
        lambda t, u: -obj.loss_grad(u)[1], 0.0, state["u"], np.inf, rtol=rtol, atol=atol, **jac
    )
    while state["steps"] < max_steps:
        message = solver.step()
        if solver.status == "failed":
            return f"solver: {message}"
        state["u"], state["steps"] = solver.y, state["steps"] + 1
    return "budget"


def _phi(lam: Array, h: float) -> Array:
    """``(1 - exp(-lam h)) / lam`` (``h`` where ``lam h`` is tiny), growth capped at e^50."""
    x = lam * h
    small = np.abs(x) < 1e-8
    safe = np.where(small, 1.0, lam)
    return np.where(small, h * (1.0 - 0.5 * x), -np.expm1(-np.maximum(x, -50.0)) / safe)


def _exp_euler(obj, state, max_steps, method, rtol, atol, h=1.0):
    u = state["u"]
    loss, g = obj.loss_grad(u)
    checkpoint = loss
    H = None
    rejects = 0
    while state["steps"] < max_steps:
        if H is None:  # (re)factorise at u; between refreshes steps reuse an older Hessian
            H = obj.hessian(u)
            lam, V = np.linalg.eigh(H)
            fresh = True
        p = _phi(lam, h)
        D = -(V @ (p * (V.T @ g)))
        loss1, g1 = obj.loss_grad(u + D)
        # local error: the flow of the model's defect over the step, one scale for all
        # coordinates (weights differ by orders of magnitude; per-coordinate tolerances
        # would let the tiniest dictate h)
        defect = V @ (p * (V.T @ (g1 - g - H @ D)))
        err = 0.5 * np.sqrt(np.mean(defect * defect)) / (atol + rtol * np.sqrt(np.mean(u * u)))
        factor = min(5.0, max(0.2, 0.9 * max(err, 1e-10) ** (-1.0 / 3.0)))
        if not (err <= 1.0 and loss1 <= loss):
            rejects += 1
            if rejects > _MAX_REJECTS:  # only at the rounding floor of the loss
                return "solver: no decrease"
            if fresh:
                h *= min(factor, 0.5)
            else:
                H = None  # first blame the stale Hessian, retry with the same h
            continue
        rejects = 0
        u, loss, g = u + D, loss1, g1
        state["u"], state["steps"] = u, state["steps"] + 1
        h *= factor
        fresh = False
        if state["steps"] % _STALL_STEPS == 0:
            if loss > checkpoint * (1.0 - _STALL_DECREASE):
                return "converged"
            checkpoint = loss
    return "budget"
