"""The ``flow`` backend: gradient flow (phase 1), then a second-order finish (phase 2)."""

from __future__ import annotations

import numpy as np

from ...mlp import MLPSpec
from ..base import Budget, PhaseStats, SequentialFitMany, TrainResult
from .kernels import MSE
from .newton import choose_method, second_order
from .objective import CLOCKS, Objective, Stop
from .ode import choose_method as choose_ode_method
from .ode import gradient_flow

Array = np.ndarray
_FINAL = ("min_loss", "min_grad")


class FlowTrainer(SequentialFitMany):
    """Float64 full-batch training to (near) machine precision, as MLPGradientFlow.jl does.

    Parameters
    ----------
    ode_method : str
        Phase 1 integrator: ``"exp-euler"`` (exponential Rosenbrock-Euler with the exact
        Hessian, see :mod:`ec.train.flow.ode`), a scipy method (``"BDF"``, ``"Radau"``,
        ``"LSODA"`` get the exact Jacobian; ``"RK45"``, ``"DOP853"`` are explicit), or
        ``"auto"``: exp-euler up to ``exp_euler_max_params`` free parameters, else DOP853.
    exp_euler_max_params : int
    rtol, atol : float
        Local error tolerances of phase 1.
    optim_method : {"auto", "newton", "bfgs", "lbfgs"}
        Phase 2; ``"auto"`` takes Newton trust region with the exact Hessian up to
        ``newton_max_params`` free parameters, BFGS above, L-BFGS above ``bfgs_max_params``.
    newton_max_params, bfgs_max_params : int
    clock : {"wall", "cpu"}
        What the budget's seconds measure: wall-clock time, or this process's CPU time
        (fair budgets for single-threaded students on a loaded machine).
    """

    name = "flow"
    batched = False

    def __init__(
        self,
        ode_method: str = "auto",
        exp_euler_max_params: int = 600,
        rtol: float = 1e-3,
        atol: float = 1e-6,
        optim_method: str = "auto",
        newton_max_params: int = 1000,
        bfgs_max_params: int = 5000,
        clock: str = "wall",
    ):
        choose_ode_method(0, ode_method)  # validate the names
        choose_method(0, optim_method)
        self.ode_method = ode_method
        self.exp_euler_max_params = exp_euler_max_params
        self.rtol = rtol
        self.atol = atol
        self.optim_method = optim_method
        self.newton_max_params = newton_max_params
        self.bfgs_max_params = bfgs_max_params
        if clock not in CLOCKS:
            raise ValueError(f"clock={clock!r}; allowed: {', '.join(CLOCKS)}")
        self.clock = clock

    def fit(
        self,
        spec: MLPSpec,
        X: Array,
        y: Array,
        theta0: Array,
        budget: Budget | None = None,
        trainable: Array | None = None,
    ) -> TrainResult:
        """Train from ``theta0`` on ``(X, y)``; returns the best point seen.

        Parameters
        ----------
        spec : MLPSpec
        X : ndarray of float64, shape (N, d_in)
        y : ndarray of float64, shape (N, d_out) or (N,)
        theta0 : ndarray of float64, shape (spec.n_params,)
        budget : Budget, optional
        trainable : ndarray of bool, shape (spec.n_params,), optional
            Parameters to train; the others keep their ``theta0`` values exactly.
        """
        budget = budget or Budget()
        obj = Objective(MSE(spec, X, y), theta0, trainable, budget, self.clock)
        phases, reason = [], "budget"
        if budget.ode_steps > 0 and budget.ode_time > 0:
            method = choose_ode_method(obj.n_free, self.ode_method, self.exp_euler_max_params)
            t0 = obj.now()
            _, steps, reason = gradient_flow(
                obj, obj.best_u, budget.ode_steps, budget.ode_time, method, self.rtol, self.atol
            )
            phases.append(PhaseStats(method, steps, obj.now() - t0, obj.best_loss))
        if reason not in _FINAL and budget.optim_steps > 0 and budget.optim_time > 0:
            method = choose_method(obj.n_free, self.optim_method, self.newton_max_params, self.bfgs_max_params)
            t0 = obj.now()
            _, steps, reason = second_order(obj, obj.best_u, budget.optim_steps, budget.optim_time, method)
            phases.append(PhaseStats(method, steps, obj.now() - t0, obj.best_loss))
        if not np.isfinite(obj.best_loss):  # no phase ran: evaluate the starting point
            obj.deadline = np.inf
            try:
                obj.loss_grad(obj.best_u)
            except Stop:
                pass
        return TrainResult(
            spec=spec,
            params=obj.theta(obj.best_u),
            loss=float(obj.best_loss),
            grad_norm=float(obj.best_grad),
            stop_reason=reason if reason in (*_FINAL, "budget") else "converged",
            phases=tuple(phases),
            loss_curve=np.array(obj.curve, dtype=np.float64).reshape(-1, 2),
            backend=self.name,
        )

