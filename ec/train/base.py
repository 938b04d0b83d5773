"""The trainer interface shared by every backend, its one result type, and the front door.

A backend is a class implementing :class:`Trainer`; it registers under a name with
:func:`register_backend` (lazily, by import path, so that ``torch`` or ``juliacall`` are
imported only when asked for). :func:`train_students` trains N students with different
seeds through any backend and returns one :class:`TrainResult` per student, in seed order.
A student that raises is returned with ``failed=True`` and never stops the others.
"""

from __future__ import annotations

import importlib
import math
import multiprocessing
import numbers
import os
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from ..mlp import MLPSpec

Array = np.ndarray


@dataclass(frozen=True)
class Budget:
    """Stopping rules and budgets of one training run.

    Attributes
    ----------
    ode_steps, ode_time : int, float
        Gradient-flow phase: at most this many solver steps / seconds (flow, julia).
    optim_steps, optim_time : int, float
        Second-order (or, for torch, Adam) phase: at most this many steps / seconds.
    min_loss : float
        Stop as soon as the loss is at or below this (paper: 1e-31).
    min_grad : float
        Stop as soon as the gradient's infinity norm is at or below this (paper: 1e-16).
    max_epochs : int
        Torch backend: epochs over the data (mini-batch training).
    """

    ode_steps: int = 5000
    ode_time: float = 60.0
    optim_steps: int = 5000
    optim_time: float = 60.0
    min_loss: float = 1e-31
    min_grad: float = 1e-16
    max_epochs: int = 1000

    def __post_init__(self):
        for name in ("ode_steps", "optim_steps", "max_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"Budget.{name}={getattr(self, name)}: must be >= 0")
        for name in ("ode_time", "optim_time", "min_loss", "min_grad"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"Budget.{name}={getattr(self, name)}: must be >= 0")


@dataclass(frozen=True)
class PhaseStats:
    """What one training phase did."""

    name: str
    steps: int
    seconds: float
    loss: float


@dataclass(frozen=True)
class TrainResult:
    """The outcome of training one network, whatever the backend.

    Attributes
    ----------
    spec : MLPSpec
    params : ndarray of float64, shape (spec.n_params,)
        The best (lowest-loss) parameters seen during training.
    loss : float
        Training MSE at ``params``.
    grad_norm : float
        Infinity norm of the gradient at ``params``.
    stop_reason : str
        ``"min_loss"``, ``"min_grad"``, ``"budget"``, ``"converged"``, ``"stalled"`` (flow:
        Levenberg-Marquardt made too little progress) or ``"error"``.
    phases : tuple of PhaseStats
    loss_curve : ndarray of float64, shape (k, 2)
        ``(seconds since start, loss)`` samples.
    seed : int or None
    backend : str
    failed : bool
    error : str or None
        Traceback text when ``failed``.
    """

    spec: MLPSpec
    params: Array
    loss: float
    grad_norm: float
    stop_reason: str
    phases: tuple[PhaseStats, ...] = ()
    loss_curve: Array = field(default_factory=lambda: np.zeros((0, 2)))
    seed: int | None = None
    backend: str = ""
    failed: bool = False
    error: str | None = None

    @property
    def seconds(self) -> float:
        return float(sum(p.seconds for p in self.phases))

    def summary(self) -> dict:
        """JSON-friendly scalars (no arrays)."""
        return {
            "seed": self.seed,
            "backend": self.backend,
            "layer_sizes": list(self.spec.layer_sizes),
            "activation": self.spec.activation,
            "loss": self.loss,
            "grad_norm": self.grad_norm,
            "stop_reason": self.stop_reason,
            "seconds": self.seconds,
            "phases": [asdict(p) for p in self.phases],
            "failed": self.failed,
            "error": self.error,
        }

    def to_arrays(self, prefix: str = "") -> dict[str, Array]:
        """Arrays and a JSON summary for ``np.savez``; inverse of :meth:`from_arrays`."""
        import json

        return {
            f"{prefix}params": self.params,
            f"{prefix}loss_curve": np.asarray(self.loss_curve, dtype=np.float64),
            f"{prefix}summary": np.array(json.dumps(self.summary())),
        }

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> "TrainResult":
        import json

        s = json.loads(str(arrays[f"{prefix}summary"]))
        return cls(
            spec=MLPSpec(tuple(s["layer_sizes"]), s["activation"]),
            params=np.array(arrays[f"{prefix}params"], dtype=np.float64),
            loss=float(s["loss"]),
            grad_norm=float(s["grad_norm"]),
            stop_reason=s["stop_reason"],
            phases=tuple(PhaseStats(**p) for p in s["phases"]),
            loss_curve=np.array(arrays[f"{prefix}loss_curve"], dtype=np.float64),
            seed=s["seed"],
            backend=s["backend"],
            failed=bool(s["failed"]),
            error=s["error"],
        )


@runtime_checkable
class Trainer(Protocol):
    """What a backend implements.

    ``trainable`` is an optional boolean mask over the flat parameter vector: entries that
    are False keep their value from ``theta0`` (used to retrain with reconstructed layers
    fixed). ``fit_many`` trains several initial points on the same data; backends that
    batch students (torch) make it cheaper than repeated ``fit`` calls. Backends with
    ``batched = False`` are fanned out over processes by :func:`train_students`.
    """

    name: str
    batched: bool

    def fit(
        self, spec: MLPSpec, X: Array, y: Array, theta0: Array, budget: Budget, trainable: Array | None = None
    ) -> TrainResult: ...

    def fit_many(
        self,
        spec: MLPSpec,
        X: Array,
        y: Array,
        theta0s: Sequence[Array],
        budget: Budget,
        trainable: Array | None = None,
    ) -> list[TrainResult]: ...


class SequentialFitMany:
    """Mixin for non-batched backends: ``fit_many`` is ``fit`` from each initial point in turn."""

    def fit_many(self, spec, X, y, theta0s, budget, trainable=None) -> list[TrainResult]:
        return [self.fit(spec, X, y, t, budget, trainable) for t in theta0s]


_REGISTRY: dict[str, str] = {}


def register_backend(name: str, target: str) -> None:
    """Register ``"package.module:ClassName"`` under ``name`` (imported on first use)."""
    _REGISTRY[name] = target


def backend_names() -> list[str]:
    return list(_REGISTRY)


def _backend_class(name: str):
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; allowed: {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_backend(name: str, **options) -> Trainer:
    """Instantiate a registered backend; ``options`` go to its constructor."""
    return _backend_class(name)(**options)


def backend_availability(name: str) -> tuple[bool, str]:
    """``(usable, reason)`` for a backend, without raising."""
    try:
        cls = _backend_class(name)
    except Exception as exc:  # an optional dependency that fails to import
        return False, f"{type(exc).__name__}: {exc}"
    check = getattr(cls, "availability", None)
    return check() if check else (True, "ok")


def failed_result(spec: MLPSpec, theta0: Array, seed, backend: str, error: str) -> TrainResult:
    return TrainResult(
        spec=spec,
        params=np.asarray(theta0, dtype=np.float64),
        loss=math.inf,
        grad_norm=math.inf,
        stop_reason="error",
        seed=seed,
        backend=backend,
        failed=True,
        error=error,
    )


def _fit_one(cls, backend_name, options, spec, X, y, theta0, budget, trainable, seed):
    try:
        trainer = cls(**options)
        res = trainer.fit(spec, X, y, theta0, budget, trainable)
        if not np.all(np.isfinite(res.params)) or not np.isfinite(res.loss):
            return failed_result(spec, theta0, seed, backend_name, "diverged: non-finite parameters or loss")
        return replace(res, seed=seed, backend=backend_name)
    except Exception:
        return failed_result(spec, theta0, seed, backend_name, traceback.format_exc())


def train_students(
    spec: MLPSpec,
    X: Array,
    y: Array,
    seeds: Sequence[int],
    backend: str = "flow",
    budget: Budget | None = None,
    n_jobs: int | None = None,
    theta0s: Sequence[Array] | None = None,
    trainable: Array | None = None,
    on_result: Callable[[int, TrainResult], None] | None = None,
    **options,
) -> list[TrainResult]:
    """Train one student per seed on ``(X, y)``.

    Parameters
    ----------
    spec : MLPSpec
        Student architecture.
    X : ndarray of float64, shape (n_samples, d_in)
    y : ndarray of float64, shape (n_samples, d_out)
    seeds : sequence of int
        One student per seed; the seed sets its Glorot-normal initialisation.
    backend : str
        A registered backend name (``"flow"``, ``"torch"``, ``"julia"``).
    budget : Budget, optional
    n_jobs : int, optional
        Worker processes for non-batched backends (default: all cores; 1 runs in-process).
    theta0s : sequence of ndarray, optional
        Initial parameters per student instead of the seeded Glorot initialisation.
    trainable : ndarray of bool, shape (spec.n_params,), optional
        Mask of parameters to train; the others stay at their initial values.
    on_result : callable(index, TrainResult), optional
        Called in the parent process as each student finishes (progress, saving).
    **options
        Passed to the backend's constructor.

    Returns
    -------
    list of TrainResult, in the order of ``seeds``.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.ascontiguousarray(np.asarray(y, dtype=np.float64).reshape(len(X), -1))
    budget = budget or Budget()
    seeds = [int(s) for s in seeds]
    if theta0s is None:
        theta0s = [spec.init_params(s) for s in seeds]
    elif len(theta0s) != len(seeds):
        raise ValueError(f"{len(theta0s)} initial points for {len(seeds)} seeds")
    results: list[TrainResult | None] = [None] * len(seeds)

    def done(i, res):
        results[i] = res
        if on_result is not None:
            on_result(i, res)

    cls = _backend_class(backend)
    usable, reason = cls.availability() if hasattr(cls, "availability") else (True, "")
    if not usable:  # one clear error, not one failed student per seed
        raise RuntimeError(f"backend {backend!r} cannot run here: {reason}")
    if getattr(cls, "batched", False):
        try:
            batch = cls(**options).fit_many(spec, X, y, theta0s, budget, trainable)
        except Exception:
            err = traceback.format_exc()
            batch = [failed_result(spec, t, s, backend, err) for t, s in zip(theta0s, seeds)]
        for i, (res, s) in enumerate(zip(batch, seeds)):
            done(i, replace(res, seed=s, backend=backend))
        return results

    n_jobs = _n_workers(n_jobs)
    args = [(cls, backend, options, spec, X, y, t, budget, trainable, s) for t, s in zip(theta0s, seeds)]
    if n_jobs == 1 or len(seeds) == 1:
        for i, a in enumerate(args):
            done(i, _fit_one(*a))
        return results
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # This is a spawned worker re-running the user's script, which trains at top level.
        raise RuntimeError(MAIN_GUARD_HINT)
    from ..runs.executors import init_worker_process  # ec.runs imports ec.train

    with ProcessPoolExecutor(
        max_workers=min(n_jobs, len(seeds)), mp_context=get_context("spawn"),
        initializer=init_worker_process, initargs=(os.getpid(),),  # workers die with this process
    ) as pool:
        futures = {pool.submit(_fit_one, *a): i for i, a in enumerate(args)}
        n_returned = 0
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                res = fut.result()
                n_returned += 1
            except BrokenProcessPool as exc:
                if n_returned == 0:  # no worker ever returned: they die at start-up
                    raise RuntimeError(f"the {min(n_jobs, len(seeds))} worker processes that train the students "
                                       f"died before any student finished ({exc}). {MAIN_GUARD_HINT}") from None
                res = failed_result(spec, theta0s[i], seeds[i], backend, traceback.format_exc())
            except Exception:  # the worker process itself died
                res = failed_result(spec, theta0s[i], seeds[i], backend, traceback.format_exc())
            done(i, res)
    return results


MAIN_GUARD_HINT = (
    "Students are trained in worker processes started with 'spawn', and each worker imports the main script "
    "again: a script that calls fit (or train_students) at top level makes every worker train too, and they fail. "
    "Put the call under `if __name__ == \"__main__\":`, or pass n_jobs=1 to train in this process."
)


def _n_workers(n_jobs: int | None) -> int:
    """Worker processes for ``n_jobs``: None, 0 or -1 mean all cores.

    Raises
    ------
    ValueError
        Any other value below 1, or not an integer.
    """
    integer = isinstance(n_jobs, numbers.Integral) and not isinstance(n_jobs, (bool, np.bool_))
    if n_jobs is None or (integer and n_jobs in (0, -1)):
        return os.cpu_count() or 1
    if not integer or n_jobs < 1:
        raise ValueError(f"n_jobs={n_jobs!r}; allowed: None, 0 or -1 (all cores), or an integer >= 1")
    return int(n_jobs)
