"""The optional ``julia`` backend: MLPGradientFlow.jl (jbrea/MLPGradientFlow.jl) through juliacall.

MLPGradientFlow integrates the gradient flow of an MLP's loss with a stiff ODE solver, then
finishes with Newton / BFGS, in Float64, like our ``flow`` backend. This module holds the pure
Python half of the bridge, testable without Julia:

* the parameter layout: ours is, per layer, ``W`` (n_out, n_in) row-major then ``b``;
  MLPGradientFlow's is, per layer, the matrix ``[W b]`` of shape (n_out, n_in + 1) flattened
  column-major (:func:`to_mgf`, :func:`from_mgf`);
* :func:`train_kwargs`: our :class:`Budget` as ``MLPGradientFlow.train`` keyword arguments;
* :func:`result_from_mgf`: its result dictionary as our :class:`TrainResult`.

Julia is found *before* juliacall is imported (:func:`locate_julia`): importing juliacall
without Julia makes it try to download one, which fails here only after a network timeout.
Without Julia, :meth:`JuliaTrainer.fit` raises :class:`JuliaUnavailableError` at once, naming
what is missing and how to install it. The Julia environment is ``julia/Project.toml`` at the
repository root (or ``$EC_JULIA_PROJECT``); ``julia/ec_glue.jl`` builds the network there.

Losses: MLPGradientFlow's MSE sums the squared error over outputs and averages over samples
only, so its losses and gradients are ``d_out`` times ours; the conversions below rescale.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..mlp import MLPSpec, mse
from .base import Budget, PhaseStats, SequentialFitMany, TrainResult

Array = np.ndarray

#: Our hidden activation -> MLPGradientFlow's function of the same formula.
JULIA_ACTIVATIONS = {
    "g": "g",  # both: softplus(x) + sigmoid(4x)
    "softplus": "softplus",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "gelu": "gelu",  # both exact: x * Phi(x)
    "silu": "silu",
}

#: Why each of our other hidden activations is refused.
UNSUPPORTED_ACTIVATIONS = {
    "selu": "MLPGradientFlow's selu rounds its two constants to 9 digits, so its networks differ from ours",
    "leaky_relu": "MLPGradientFlow has no leaky_relu",
    "mish": "MLPGradientFlow has no mish",
}

#: Variables naming a Julia executable, in the order juliacall / juliapkg honour them;
#: JULIA_EXE is ours and is handed to juliapkg as PYTHON_JULIAPKG_EXE.
JULIA_EXE_VARIABLES = ("PYTHON_JULIACALL_EXE", "PYTHON_JULIAPKG_EXE", "JULIA_EXE")

INSTALL_HINT = (
    "to enable the julia backend: install Julia >= 1.11 (https://julialang.org/downloads or juliaup) "
    "so that `julia` is on PATH, or set JULIA_EXE=/path/to/julia; then `pip install 'ec[julia]'` "
    "(juliacall) and run `ec backends --setup-julia` once (installs and compiles MLPGradientFlow.jl)"
)


class JuliaUnavailableError(RuntimeError):
    """The julia backend cannot run here (no Julia, no juliacall, or the Julia setup failed)."""


# --- parameter layout -----------------------------------------------------------------------


def to_mgf_layers(spec: MLPSpec, theta: Array) -> list[Array]:
    """Our flat vector as MLPGradientFlow's per-layer matrices.

    Returns
    -------
    list of ndarray of float64, shapes ``(n_out, n_in + 1)``
        ``[W b]``: the bias is the last column (MLPGradientFlow appends a row of ones to the input).
    """
    return [np.column_stack([W, b]).astype(np.float64) for W, b in spec.unpack(theta)]


def from_mgf_layers(spec: MLPSpec, layers: Sequence[Array]) -> Array:
    """Inverse of :func:`to_mgf_layers`: matrices ``[W b]`` -> our flat float64 vector."""
    layers = [np.asarray(M, dtype=np.float64) for M in layers]
    shapes = [(o, i + 1) for o, i in spec.layer_shapes]
    if [M.shape for M in layers] != shapes:
        raise ValueError(f"MLPGradientFlow layer shapes {[M.shape for M in layers]}; expected {shapes}")
    return spec.pack([(M[:, :-1], M[:, -1]) for M in layers])


def to_mgf(spec: MLPSpec, theta: Array) -> Array:
    """Our flat vector in MLPGradientFlow's flat order, shape ``(spec.n_params,)``: per layer
    ``[W b]`` flattened column-major (Julia's order), layers concatenated."""
    return np.concatenate([M.ravel(order="F") for M in to_mgf_layers(spec, theta)])


def from_mgf(spec: MLPSpec, flat: Array) -> Array:
    """Inverse of :func:`to_mgf`."""
    flat = np.asarray(flat, dtype=np.float64)
    if flat.shape != (spec.n_params,):
        raise ValueError(f"flat has shape {flat.shape}, expected ({spec.n_params},)")
    layers, pos = [], 0
    for o, i in spec.layer_shapes:
        size = o * (i + 1)
        layers.append(flat[pos : pos + size].reshape((o, i + 1), order="F"))
        pos += size
    return from_mgf_layers(spec, layers)


# --- activations, budget, results ---------------------------------------------------------------


def julia_activation(name: str) -> str:
    """MLPGradientFlow's name for our hidden activation ``name``.

    Raises
    ------
    ValueError
        For an activation MLPGradientFlow does not implement identically; lists the supported ones.
    """
    if name in JULIA_ACTIVATIONS:
        return JULIA_ACTIVATIONS[name]
    why = UNSUPPORTED_ACTIVATIONS.get(name, "unknown activation")
    raise ValueError(
        f"the julia backend cannot train activation {name!r} ({why}); supported: {', '.join(JULIA_ACTIVATIONS)}"
    )


def train_kwargs(budget: Budget, spec: MLPSpec) -> dict:
    """``MLPGradientFlow.train`` keyword arguments for ``budget``.

    Loss and gradient thresholds are multiplied by ``spec.d_out`` because MLPGradientFlow's loss
    sums over outputs where ours averages.
    """
    return {
        "maxiterations_ode": int(budget.ode_steps),
        "maxtime_ode": float(budget.ode_time),
        "maxiterations_optim": int(budget.optim_steps),
        "maxtime_optim": float(budget.optim_time),
        "minloss": float(budget.min_loss) * spec.d_out,
        "min_gnorm": float(budget.min_grad) * spec.d_out,
    }


# MLPGradientFlow's ``*_stopped_by`` texts ("minloss ≤ 1e-31", "maxtime > 60.0s", "maxeval", ...)
# by prefix; anything else ("", "converged", "patience (…)", NLopt codes) is the solver
# stopping by itself.
_STOP_PREFIXES = (
    ("minloss", "min_loss"),
    ("min_gnorm", "min_grad"),
    ("maxtime", "budget"),
    ("maxiterations", "budget"),
    ("maxeval", "budget"),
)


def stop_reason(stopped_by: str | None) -> str:
    """Our ``stop_reason`` for one of MLPGradientFlow's ``ode_stopped_by`` / ``optim_stopped_by``."""
    text = (stopped_by or "").strip()
    for prefix, reason in _STOP_PREFIXES:
        if text.startswith(prefix):
            return reason
    return "converged"


def result_from_mgf(
    spec: MLPSpec, res: Mapping, X: Array, y: Array, theta0: Array, trainable: Array | None = None
) -> TrainResult:
    """Our :class:`TrainResult` from MLPGradientFlow's result dictionary.

    Parameters
    ----------
    spec : MLPSpec
    res : mapping
        ``MLPGradientFlow.train``'s dictionary with plain Python / numpy values: ``"x"`` (best
        parameters, ``{"w1": [W b], ...}``), ``"gnorm"``, ``"ode_loss"``, ``"ode_iterations"``,
        ``"ode_time_run"``, ``"ode_stopped_by"``, ``"optim_iterations"``, ``"optim_time_run"``,
        ``"optim_stopped_by"``, ``"total_time"``; entries of phases that did not run are absent.
    X : ndarray of float64, shape (n_samples, d_in)
    y : ndarray of float64, shape (n_samples, d_out)
    theta0 : ndarray of float64, shape (spec.n_params,)
        The initial point (loss-curve start; frozen entries are restored from it exactly).
    trainable : ndarray of bool, shape (spec.n_params,), optional

    Returns
    -------
    TrainResult
        ``loss`` is recomputed with :func:`ec.mlp.mse`; phases are ``"ode"`` and ``"optim"``;
        ``loss_curve`` has the start and the end of each phase that ran (MLPGradientFlow
        samples its own curve in ODE time, not in seconds).
    """
    d = spec.d_out
    params = from_mgf_layers(spec, [res["x"][f"w{i + 1}"] for i in range(spec.n_layers)])
    if trainable is not None:
        params[~trainable] = theta0[~trainable]
    loss = mse(spec, params, X, y)
    total = float(res.get("total_time", 0.0))
    # ode_time_run is measured from the first solver callback; clamp it to the total.
    ode_s = min(float(res.get("ode_time_run", 0.0)), total)
    optim_s = float(res.get("optim_time_run", 0.0))
    phases, curve = [], [(0.0, mse(spec, theta0, X, y))]
    stopped_by = None
    if res.get("ode_loss") is not None:
        phases.append(PhaseStats("ode", int(res["ode_iterations"]), ode_s, float(res["ode_loss"]) / d))
        curve.append((ode_s, phases[-1].loss))
        stopped_by = res.get("ode_stopped_by")
    if res.get("optim_stopped_by") is not None:
        phases.append(PhaseStats("optim", int(res.get("optim_iterations", 0)), optim_s, loss))
        curve.append((ode_s + optim_s, loss))
        stopped_by = res["optim_stopped_by"]
    return TrainResult(
        spec=spec,
        params=params,
        loss=loss,
        grad_norm=float(res["gnorm"]) / d,
        stop_reason=stop_reason(stopped_by),
        phases=tuple(phases),
        loss_curve=np.array(curve, dtype=np.float64),
        backend="julia",
    )


# --- finding Julia without importing juliacall ------------------------------------------------------


@dataclass(frozen=True)
class JuliaLocation:
    """Where Julia was found: ``exe`` (None if nowhere) and ``source``, or ``problem`` if not."""

    exe: str | None
    source: str = ""
    problem: str = ""


def locate_julia() -> JuliaLocation:
    """Find the Julia juliacall would use, without running or importing anything.

    Looks, in order, at juliacall's and juliapkg's overrides (``-X juliacall-exe``,
    ``PYTHON_JULIACALL_EXE``, ``-X juliapkg-exe``, ``PYTHON_JULIAPKG_EXE``), our ``JULIA_EXE``,
    then ``juliaup`` and ``julia`` on ``PATH``. A variable that is set must name an executable.
    """
    env = os.environ
    configured = [
        ("-X juliacall-exe", sys._xoptions.get("juliacall-exe")),
        ("PYTHON_JULIACALL_EXE", env.get("PYTHON_JULIACALL_EXE")),
        ("-X juliapkg-exe", sys._xoptions.get("juliapkg-exe")),
        ("PYTHON_JULIAPKG_EXE", env.get("PYTHON_JULIAPKG_EXE")),
        ("JULIA_EXE", env.get("JULIA_EXE")),
    ]
    if bool(env.get("PYTHON_JULIACALL_EXE")) != bool(env.get("PYTHON_JULIACALL_PROJECT")):
        return JuliaLocation(None, problem="juliacall needs PYTHON_JULIACALL_EXE and PYTHON_JULIACALL_PROJECT set together")
    path = env.get("PATH", "")
    for source, value in configured:
        if value:
            exe = shutil.which(value, path=path)
            if exe is None:
                return JuliaLocation(None, problem=f"{source}={value!r} is not an executable file")
            return JuliaLocation(exe, source)
    for name in ("juliaup", "julia"):
        exe = shutil.which(name, path=path)
        if exe is not None:
            return JuliaLocation(exe, f"{name} on PATH")
    return JuliaLocation(
        None,
        problem=f"no Julia executable: none of {', '.join(JULIA_EXE_VARIABLES)} is set "
        "and neither julia nor juliaup is on PATH",
    )


def julia_project_dir() -> Path:
    """The Julia environment of this backend: ``$EC_JULIA_PROJECT`` or ``<repo>/julia``."""
    configured = os.environ.get("EC_JULIA_PROJECT")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "julia"


def juliacall_installed() -> bool:
    """Whether the Python package juliacall is importable (found, not imported)."""
    return importlib.util.find_spec("juliacall") is not None


def julia_problems() -> list[str]:
    """What stops the julia backend here; empty when it can try to start."""
    problems = []
    if not juliacall_installed():
        problems.append("the Python package juliacall is not installed")
    where = locate_julia()
    if where.exe is None:
        problems.append(where.problem)
    project = julia_project_dir()
    for name in ("Project.toml", "ec_glue.jl"):
        if not (project / name).is_file():
            problems.append(f"{project / name} is missing (set EC_JULIA_PROJECT to ec's julia/ directory)")
    return problems


# --- the Julia session (one per process) ----------------------------------------------------------

_GLUE = None


def load_julia():
    """Start Julia, instantiate the backend's Julia environment and load the glue module.

    The first call in a process takes long (minutes the very first time: MLPGradientFlow is
    installed and compiled); later calls return the cached module.

    Raises
    ------
    JuliaUnavailableError
        At once, before importing juliacall, if Julia or juliacall is missing; or if starting
        Julia or installing MLPGradientFlow fails.
    """
    global _GLUE
    if _GLUE is not None:
        return _GLUE
    problems = julia_problems()
    if problems:
        raise JuliaUnavailableError(f"the julia backend cannot run here: {'; '.join(problems)}; {INSTALL_HINT}")
    where = locate_julia()
    if where.source == "JULIA_EXE":
        os.environ["PYTHON_JULIAPKG_EXE"] = where.exe  # juliapkg does not know our variable
    project = julia_project_dir()
    try:
        import juliacall

        jl = juliacall.newmodule("ECJulia")
        jl.seval("import Pkg")
        jl.seval("d -> (Pkg.activate(d; io = devnull); Pkg.instantiate(; io = devnull))")(str(project))
        _GLUE = jl.seval("p -> Base.include(@__MODULE__, p)")(str(project / "ec_glue.jl"))
    except Exception as exc:  # juliacall failing to start, Pkg failing to install: one clear error
        raise JuliaUnavailableError(
            f"starting Julia ({where.exe}, from {where.source}) with the environment {project} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return _GLUE


def _to_python(value):
    """juliacall values (dicts, arrays) as plain dicts and numpy arrays."""
    if hasattr(value, "to_numpy"):
        return np.array(value.to_numpy())
    if hasattr(value, "items"):
        return {str(k): _to_python(v) for k, v in value.items()}
    return value


class JuliaTrainer(SequentialFitMany):
    """Trainer backend running ``MLPGradientFlow.train`` (ODE gradient flow, then Newton/BFGS).

    Parameters
    ----------
    abstol, reltol : float
        Tolerances of the ODE solver (MLPGradientFlow's defaults).
    patience : int
        MLPGradientFlow stops a phase after this many loss evaluations without improvement.

    Notes
    -----
    Every layer has biases; the output layer is the identity. A ``trainable`` mask is honoured
    in the ODE phase only (its time constants are set to 0 for frozen entries); MLPGradientFlow
    resets them in its second-order phase, so a mask requires ``budget.optim_steps == 0``.
    """

    name = "julia"
    batched = False

    def __init__(self, abstol: float = 1e-6, reltol: float = 1e-6, patience: int = 10**6):
        self.abstol = abstol
        self.reltol = reltol
        self.patience = patience

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """``(usable, reason)``, decided without starting Julia (well under a second)."""
        problems = julia_problems()
        if problems:
            return False, f"{'; '.join(problems)}; {INSTALL_HINT}"
        where = locate_julia()
        return True, f"juliacall installed, Julia {where.exe} ({where.source}); MLPGradientFlow loads on first use"

    def fit(
        self, spec: MLPSpec, X: Array, y: Array, theta0: Array, budget: Budget, trainable: Array | None = None
    ) -> TrainResult:
        """Train one network from ``theta0``.

        Parameters
        ----------
        spec : MLPSpec
        X : ndarray of float64, shape (n_samples, d_in)
        y : ndarray of float64, shape (n_samples, d_out)
        theta0 : ndarray of float64, shape (spec.n_params,)
        budget : Budget
        trainable : ndarray of bool, shape (spec.n_params,), optional

        Raises
        ------
        ValueError
            Unsupported activation, bad shapes, or a ``trainable`` mask with ``optim_steps > 0``.
        JuliaUnavailableError
            Julia or juliacall missing (raised at once) or failing to start.
        """
        activation = julia_activation(spec.activation)
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != spec.d_in:
            raise ValueError(f"X has shape {X.shape}, expected (n_samples, {spec.d_in})")
        y = np.asarray(y, dtype=np.float64).reshape(len(X), spec.d_out)
        theta0 = np.array(theta0, dtype=np.float64)
        if theta0.shape != (spec.n_params,):
            raise ValueError(f"theta0 has shape {theta0.shape}, expected ({spec.n_params},)")
        tauinv = None
        if trainable is not None:
            trainable = np.asarray(trainable, dtype=bool).reshape(spec.n_params)
            if not trainable.all():
                if budget.optim_steps > 0:
                    raise ValueError(
                        "the julia backend cannot keep parameters fixed in MLPGradientFlow's second-order "
                        "phase (it resets the time constants); use Budget(optim_steps=0) or the flow backend"
                    )
                tauinv = to_mgf(spec, trainable.astype(np.float64))
        glue = load_julia()
        res = glue.fit(
            np.array(spec.layer_sizes, dtype=np.int64),
            activation,
            X.T,
            y.T,
            to_mgf(spec, theta0),
            tauinv=tauinv,
            abstol=float(self.abstol),
            reltol=float(self.reltol),
            patience=int(self.patience),
            **train_kwargs(budget, spec),
        )
        return result_from_mgf(spec, _to_python(res), X, y, theta0, trainable)



def julia_version() -> str:
    """Start Julia (see :func:`load_julia`) and return the loaded MLPGradientFlow version."""
    return str(load_julia().version())


__all__ = [
    "JULIA_ACTIVATIONS",
    "JuliaLocation",
    "JuliaTrainer",
    "JuliaUnavailableError",
    "from_mgf",
    "from_mgf_layers",
    "julia_activation",
    "julia_version",
    "load_julia",
    "locate_julia",
    "result_from_mgf",
    "stop_reason",
    "to_mgf",
    "to_mgf_layers",
    "train_kwargs",
]
