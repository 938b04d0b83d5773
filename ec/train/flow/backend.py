"""The ``flow`` backend: gradient flow (phase 1), then a second-order finish (phase 2)."""

from __future__ import annotations

import numpy as np

from ...io import available_memory
from ...mlp import MLPSpec, output_variance
from ..base import Budget, PhaseStats, SequentialFitMany, TrainResult
from .kernels import MSE
from .newton import choose_method, second_order
from .objective import CLOCKS, Objective, Stop
from .reduce import reduction_finish
from .ode import choose_method as choose_ode_method
from .ode import gradient_flow

Array = np.ndarray
_FINAL = ("min_loss", "min_grad")
# Phases that hold dense n_free x n_free matrices, and how many of them at once (the matrix,
# its factorisation or eigendecomposition, and work copies).
DENSE_METHODS = ("exp-euler", "newton", "lm", "bfgs", "BDF", "Radau", "LSODA")
DENSE_COPIES = 4


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
    optim_method : {"auto", "newton", "lm", "bfgs", "lbfgs"}
        Phase 2; ``"auto"`` takes Newton trust region with the exact Hessian (for networks
        with several hidden layers Levenberg-Marquardt with the exact Gauss-Newton matrix,
        ``"lm"``) up to ``newton_max_params`` free parameters, BFGS above, L-BFGS above
        ``bfgs_max_params``.
    newton_max_params, bfgs_max_params : int
    clock : {"wall", "cpu"}
        What the budget's seconds measure: wall-clock time, or this process's CPU time
        (fair budgets for single-threaded students on a loaded machine).
    reduce : bool
        Between rounds of both phases, finish students on the smaller network they approach
        (near-duplicates merged, parallel groups refit by one neuron, nearly constant neurons
        dropped, layer by layer) and map the result back exactly
        (:mod:`ec.train.flow.reduce`): it removes the slow tails of degenerate minima. Only
        when every parameter is trainable.
    reduce_deep : bool
        Also reduce students with several hidden layers, in the second-order phase (reduced
        networks finished by Levenberg-Marquardt, a rung abandoned after 10 steps without
        progress). 3-8-8-1 students at 1e-12 .. 1e-17, converging linearly, reach 1e-31 in
        a few seconds (docs/trainer.md).
    stall_steps, stall_factor : int, float
        Levenberg-Marquardt (the second-order phase of deep students, and of students with
        fixed layers) stops when its best loss fell less than ``stall_factor`` times over the
        last ``stall_steps`` steps (``stall_steps=0``: never). Deep students and retrained
        students that level off in an imitation valley stay there: 3-8-8-1 students given
        270 s of it instead of 30 ended where 30 s leaves them; students on their way to
        zero loss gain orders of magnitude per 100 steps (docs/trainer.md).
    reduce_deep_below : float
        A deep student tries the reduction only once its loss is below this fraction of the
        outputs' variance: the 3-8-8-1 students that reduce do so from 1e-12 .. 1e-17, and
        the attempts of students stuck at 1e-6 .. 1e-8 took 3-23 s of their 30-s
        second-order phase (docs/trainer.md).
    reduce_after : int
        Each phase runs in rounds of ``reduce_after``, then 2x, 4x, ... as many steps; a
        reduction is tried before each round when the best loss fell since the last try
        (and when a phase ends), so its cost grows only with the log of the steps.
    reduce_steps : int
        Newton steps on each reduced network tried.
    """

    name = "flow"
    batched = False

    def __init__(
        self,
        ode_method: str = "auto",
        exp_euler_max_params: int = 1000,
        rtol: float = 1e-3,
        atol: float = 1e-6,
        optim_method: str = "auto",
        newton_max_params: int = 1000,
        bfgs_max_params: int = 5000,
        clock: str = "wall",
        reduce: bool = True,
        reduce_after: int = 100,
        reduce_steps: int = 50,
        reduce_deep: bool = True,
        reduce_deep_below: float = 1e-9,
        stall_steps: int = 200,
        stall_factor: float = 2.0,
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
        for option, value in (("reduce_after", reduce_after), ("reduce_steps", reduce_steps)):
            if value < 1:
                raise ValueError(f"{option}={value}; allowed: integers >= 1")
        self.reduce = reduce
        self.reduce_after = reduce_after
        self.reduce_steps = reduce_steps
        self.reduce_deep = reduce_deep
        if not reduce_deep_below > 0:
            raise ValueError(f"reduce_deep_below={reduce_deep_below!r}; allowed: > 0 (inf: from the start)")
        self.reduce_deep_below = reduce_deep_below
        if isinstance(stall_steps, bool) or not isinstance(stall_steps, (int, np.integer)) or stall_steps < 0:
            raise ValueError(f"stall_steps={stall_steps!r}; allowed: an int >= 0 (0: never stop as stalled)")
        if not stall_factor >= 1:
            raise ValueError(f"stall_factor={stall_factor!r}; allowed: >= 1")
        self.stall_steps = int(stall_steps)
        self.stall_factor = float(stall_factor)

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
        n_free = spec.n_params if trainable is None else int(np.count_nonzero(trainable))
        deep = len(spec.hidden_sizes) > 1
        self._check_memory(n_free, budget, deep)
        _warm_up(spec, X, y)
        obj = Objective(MSE(spec, X, y), theta0, trainable, budget, self.clock)
        log = _PhaseLog(obj)
        reducible = self.reduce and obj.all_free and (len(spec.hidden_sizes) == 1 or self.reduce_deep)
        # Constant outputs (variance 0) keep the threshold a plain loss.
        reduce_below = self.reduce_deep_below * (output_variance(y) or 1.0) if deep else np.inf
        reason = "budget"
        if budget.ode_steps > 0 and budget.ode_time > 0:
            method = choose_ode_method(obj.n_free, self.ode_method, self.exp_euler_max_params)

            def flow(u, steps, seconds):
                return gradient_flow(obj, u, steps, seconds, method, self.rtol, self.atol)

            # Deep students are far from any reducible network during the flow: attempts there
            # took a quarter to half of 3-8-8-1 students' time. The second-order phase starts
            # with one.
            reason = self._in_rounds(obj, log, method, flow, budget.ode_steps, budget.ode_time, reducible and not deep,
                                     reduce_below)
        if reason not in _FINAL and budget.optim_steps > 0 and budget.optim_time > 0:
            method = choose_method(obj.n_free, self.optim_method, self.newton_max_params, self.bfgs_max_params, deep)

            stall = (self.stall_steps, self.stall_factor) if self.stall_steps else None

            def optimise(u, steps, seconds):
                return second_order(obj, u, steps, seconds, method, stall)

            reason = self._in_rounds(obj, log, method, optimise, budget.optim_steps, budget.optim_time, reducible,
                                     reduce_below)
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
            stop_reason=reason if reason in (*_FINAL, "budget", "stalled") else "converged",
            phases=log.stats(),
            loss_curve=np.array(obj.curve, dtype=np.float64).reshape(-1, 2),
            backend=self.name,
        )

    def _check_memory(self, n_free: int, budget: Budget, deep: bool) -> None:
        """Refuse up front a student whose dense phases (exact Hessian, BFGS, implicit ODE:
        n_free^2 floats, with their factorisations about four such matrices) do not fit in
        the memory available, instead of being killed by the kernel midway."""
        dense = []
        if budget.ode_steps > 0 and budget.ode_time > 0:
            dense.append(choose_ode_method(n_free, self.ode_method, self.exp_euler_max_params))
        if budget.optim_steps > 0 and budget.optim_time > 0:
            dense.append(choose_method(n_free, self.optim_method, self.newton_max_params, self.bfgs_max_params, deep))
        dense = [m for m in dense if m in DENSE_METHODS]
        need, free = DENSE_COPIES * 8 * n_free**2, available_memory()
        if dense and free is not None and need > free:
            raise MemoryError(
                f"a flow student with {n_free} free parameters needs about {need / 2**30:.1f} GiB for "
                f"{', '.join(dense)} (dense {n_free} x {n_free} matrices), {free / 2**30:.1f} GiB are available; "
                "use ode_method='auto' and optim_method='auto' (gradient-only DOP853 and L-BFGS above "
                f"{self.exp_euler_max_params} / {self.bfgs_max_params} parameters) or the torch backend"
            )

    def _in_rounds(
        self, obj: Objective, log: "_PhaseLog", name: str, phase, steps: int, seconds: float, reducible: bool,
        reduce_below: float = np.inf,
    ) -> str:
        """Run ``phase(u, steps, seconds) -> (u, steps, reason)`` in rounds of ``reduce_after``,
        then twice, four times, ... as many steps; after each round (and at the start of a
        later phase) when the best loss has fallen since the last try, try the reduction and
        go on from its result when it helped: a student that has reached a degenerate zero-loss
        configuration need not crawl on. No try while the best loss is at or above
        ``reduce_below``. Rounds end on steps, not seconds, so the same seed
        gives the same student whenever the time budget is not what stops it."""
        u, end, size = obj.best_u, obj.now() + seconds, self.reduce_after if reducible else steps
        reason, over = "budget", False
        while True:
            if reducible and log.rounds and obj.best_loss < min(log.reduced_at, reduce_below) and end > obj.now():
                log.reduced_at = tried_at = obj.best_loss
                _, _, why = log.run("reduce", reduction_finish, obj, end - obj.now(), self.reduce_steps)
                if why in _FINAL:
                    return why
                if obj.best_loss < tried_at:
                    u = obj.best_u
            if over:
                return reason
            u, done, reason = log.run(name, phase, u, min(steps, size), end - obj.now())
            steps, size, log.rounds = steps - done, 2 * size, log.rounds + 1
            if reason in _FINAL:
                return reason
            over = reason != "budget" or steps <= 0 or end <= obj.now()


def _warm_up(spec: MLPSpec, X: Array, y: Array) -> None:
    """Compile (or load from numba's cache) the kernels before any budget clock starts:
    compiling takes ~15 s of CPU once per process (one hidden layer: the fused kernels;
    deeper: the activation kernels), which would otherwise come out of the first student's
    time budget. The kernels are compiled per argument type, not per size, so a network of
    the same depth and activation with two neurons per layer compiles them: the student's own
    Hessian (n_params^2 floats: 8.3 GiB for a 510-64-10 student) is never formed here."""
    shallow = len(spec.hidden_sizes) == 1
    if shallow not in _warm:
        small = MLPSpec((2, *(2 for _ in spec.hidden_sizes), 1), spec.activation)
        tiny = MSE(small, np.linspace(-1.0, 1.0, 4).reshape(2, 2), np.zeros((2, 1)))
        theta = small.init_params(0)
        tiny.loss_grad(theta)
        tiny.hessian(theta)
        _warm.add(shallow)


_warm: set[bool] = set()  # kinds of kernels (shallow or not) this process has compiled or loaded


class _PhaseLog:
    """Steps, seconds and best loss after the last round, per phase name (phases may run in
    several rounds)."""

    def __init__(self, obj: Objective):
        self.obj = obj
        self.entries: dict[str, list] = {}
        self.rounds = 0  # rounds of any phase so far
        self.reduced_at = np.inf  # best loss at the last reduction attempt

    def run(self, name: str, phase, *args):
        """Call ``phase(*args) -> (u, steps, reason)`` and book its steps and time."""
        t0 = self.obj.now()
        u, steps, reason = phase(*args)
        entry = self.entries.setdefault(name, [0, 0.0, np.inf])
        entry[0] += steps
        entry[1] += self.obj.now() - t0
        entry[2] = self.obj.best_loss
        return u, steps, reason

    def stats(self) -> tuple[PhaseStats, ...]:
        return tuple(PhaseStats(name, *entry) for name, entry in self.entries.items())
