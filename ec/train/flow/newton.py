"""Phase 2: second-order finish from where the gradient flow stopped.

Small networks get Newton's method in a trust region with the exact Hessian (scipy's
``trust-exact``), which converges quadratically to a minimum even where the Hessian is
singular, as it is at every zero-loss point of an overparameterised student. Large ones,
where a dense Hessian costs too much, get BFGS or L-BFGS.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.optimize import minimize

from .objective import Objective, Stop

Array = np.ndarray
METHODS = ("auto", "newton", "bfgs", "lbfgs")
_SCIPY = {"newton": "trust-exact", "bfgs": "BFGS", "lbfgs": "L-BFGS-B"}


def choose_method(n_free: int, method: str = "auto", newton_max_params: int = 1000, bfgs_max_params: int = 5000) -> str:
    """``"newton"`` up to ``newton_max_params`` free parameters, then ``"bfgs"``, then ``"lbfgs"``."""
    if method not in METHODS:
        raise ValueError(f"optim method {method!r}; allowed: {', '.join(METHODS)}")
    if method != "auto":
        return method
    if n_free <= newton_max_params:
        return "newton"
    return "bfgs" if n_free <= bfgs_max_params else "lbfgs"


def second_order(obj: Objective, u0: Array, max_steps: int, max_time: float, method: str = "newton") -> tuple[Array, int, str]:
    """Minimise from ``u0`` for at most ``max_steps`` iterations / ``max_time`` seconds.

    Parameters
    ----------
    obj : Objective
    u0 : ndarray of float64, shape (obj.n_free,)
    max_steps : int
    max_time : float
    method : {"newton", "bfgs", "lbfgs"}

    Returns
    -------
    u : ndarray of float64, shape (obj.n_free,)
        The optimiser's last iterate.
    steps : int
        Iterations done.
    reason : str
        ``"min_loss"``, ``"min_grad"``, ``"budget"``, ``"converged"`` (the optimiser's own
        test) or ``"optimizer: <message>"``.
    """
    obj.deadline = time.perf_counter() + max_time
    state = {"u": np.array(u0, dtype=np.float64), "steps": 0}

    def callback(intermediate_result):
        state["u"], state["steps"] = intermediate_result.x, state["steps"] + 1

    hess = {"hess": obj.hessian} if method == "newton" else {}
    options = {"maxiter": max_steps, "gtol": obj.budget.min_grad}
    try:
        res = minimize(obj.loss_grad, state["u"], jac=True, method=_SCIPY[method], callback=callback, options=options, **hess)
    except Stop as stop:
        return state["u"], state["steps"], stop.reason
    if res.nit >= max_steps:
        return res.x, int(res.nit), "budget"
    return res.x, int(res.nit), "converged" if res.success else f"optimizer: {res.message}"
